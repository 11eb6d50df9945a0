//! The tools, in the order they are listed: each names the route it calls
//! and says what the protocol says, so that an agent can follow it without
//! other documents.

use serde_json::{Value, json};

/// How a tool turns into a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// The route, with the arguments placed as its schema says.
    Route,
    /// `GET /stash/{name}`: the stored bytes become text or JSON.
    StashGet,
    /// `PUT /stash/{name}`: `content` becomes the body.
    StashPut,
    /// The route, again on every append to the stream, until entries come.
    WaitEntries,
    /// The route, again on every message to the caller, until messages come.
    WaitMessages,
}

pub struct Spec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub omit: &'static [&'static str],
    pub extra: fn() -> Vec<(&'static str, Value, bool)>,
    pub body: bool,
    pub call: Call,
    pub read_only: bool,
}

/// The longest a wait tool waits, and its default.
pub const MAX_WAIT_SECS: u64 = 60;
pub const DEFAULT_WAIT_SECS: u64 = 30;

fn none() -> Vec<(&'static str, Value, bool)> {
    Vec::new()
}

fn if_match() -> (&'static str, Value, bool) {
    (
        "if_match",
        json!({"type": "integer", "description": "Write only if the stash is at this version (its `version`); otherwise 412 precondition_failed."}),
        false,
    )
}

fn stash_put_extra() -> Vec<(&'static str, Value, bool)> {
    vec![
        (
            "content",
            json!({"description": "The document. A string is stored as text; any other JSON value is stored as JSON (application/json)."}),
            true,
        ),
        (
            "content_type",
            json!({"type": "string", "description": "Overrides the stored Content-Type (default: text/plain for a string, application/json otherwise)."}),
            false,
        ),
        if_match(),
    ]
}

fn patch_extra() -> Vec<(&'static str, Value, bool)> {
    vec![if_match()]
}

fn wait_extra() -> Vec<(&'static str, Value, bool)> {
    vec![(
        "timeout_s",
        json!({"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS,
               "description": format!("How long to wait for something new, in seconds (default {DEFAULT_WAIT_SECS}, at most {MAX_WAIT_SECS}).")}),
        false,
    )]
}

pub const TOOLS: &[Spec] = &[
    Spec {
        name: "stash_get",
        title: "Read a stash",
        description: "Reads a named document (a stash): yours, or one shared with you. Returns its content as `text` \
            (and as `json` when it is JSON), with its `version` for a later `if_match`. Reading an ephemeral stash \
            renews its time to live. `persistent` picks the persistent namespace (default: ephemeral).",
        method: "get",
        path: "/stash/{name}",
        omit: &[],
        extra: none,
        body: false,
        call: Call::StashGet,
        read_only: true,
    },
    Spec {
        name: "stash_put",
        title: "Write a stash",
        description: "Creates or replaces a named document. Ephemeral stashes (the default) expire `ttl` seconds after \
            their last read or write; `persistent: true` keeps one until deleted. `schema` binds it to a JSON Schema \
            for good (every later write is validated: 422 with JSON-pointer details). `shared` lets other agents read \
            it; `discoverable` lists it in `discover`. Use `if_match` with the version you read to avoid lost updates.",
        method: "put",
        path: "/stash/{name}",
        omit: &[],
        extra: stash_put_extra,
        body: false,
        call: Call::StashPut,
        read_only: false,
    },
    Spec {
        name: "stash_patch_items",
        title: "Update items in a JSON stash",
        description: "Sets fields on the elements of an array in a JSON stash that match, atomically: each of \
            `update_items` names the array (`path`, a JSON pointer), a `match` object and the fields to `set`. \
            Answers how many items matched. On a contract stash this is how a subtask's status is updated.",
        method: "patch",
        path: "/stash/{name}/json",
        omit: &[],
        extra: patch_extra,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "stash_list",
        title: "List your stashes",
        description: "Lists the stashes you own, by page (`limit`, `offset`), in one namespace (`persistent`).",
        method: "get",
        path: "/stashes",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "stream_create",
        title: "Create a stream",
        description: "Creates an append-only log. `linked_stash` ties it to a stash (a contract's execution and \
            discussion streams link to the contract stash, which turns on the contract hooks). `discoverable` lists it \
            in `discover`; `schema_id` validates every entry's data; `create_if_missing` returns your stream of that \
            name if it exists.",
        method: "post",
        path: "/stream",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "stream_append",
        title: "Append to a stream",
        description: "Appends an entry (`data`: any JSON, with an optional `label`) and returns its `seq`. On a \
            contract's stream the hooks apply as over HTTP: a `claim` entry ({\"subtask\": ID}) assigns a subtask \
            through the claim policy (refused: 409 with the decision), a `deliverable` entry is checked for its \
            HANDOFF (422 with violations), an `algedonic` entry raises a signal; while the contract is halted \
            claims get 423.",
        method: "post",
        path: "/stream/{stream_id}",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "stream_read",
        title: "Read a stream",
        description: "Reads entries oldest first: those after `after` (a seq), optionally only one `label`. \
            Pass the answer's `next_after` as `after` to read on.",
        method: "get",
        path: "/stream/{stream_id}",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "stream_latest",
        title: "Latest entry",
        description: "The newest entry of a stream, optionally the newest with one `label` (for example a \
            contract's current `state`). 404 when there is none.",
        method: "get",
        path: "/stream/{stream_id}/latest",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "wait_for_entries",
        title: "Wait for entries",
        description: "Long-poll: the entries after `after` on a stream (optionally one `label`), returned as soon \
            as there are any, or an empty list after `timeout_s`. Call it again with `next_after` to follow a stream.",
        method: "get",
        path: "/stream/{stream_id}",
        omit: &["offset"],
        extra: wait_extra,
        body: false,
        call: Call::WaitEntries,
        read_only: true,
    },
    Spec {
        name: "discover",
        title: "Discover",
        description: "Finds discoverable stashes, streams and contracts by `type` (stash, stream, contract), \
            free text `q`, `label`, bound `schema` or `linked_to` (the streams linked to a stash).",
        method: "get",
        path: "/discover",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "schema_search",
        title: "Search schemas",
        description: "Lists the JSON Schemas you can bind to (yours, public ones and the built-in `agent-contract`), \
            optionally matching free text `q`.",
        method: "get",
        path: "/schemas",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "team_create",
        title: "Create a team",
        description: "Creates a team with you as its lead. The lead adds teammates, creates and assigns tasks, and \
            acknowledges HALTs. The team gets a stream (`stream_id`) that carries its signals.",
        method: "post",
        path: "/teams",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "team_add_member",
        title: "Add a teammate",
        description: "Adds a registered agent to your team (lead or admin only). Teams are private: others get 404.",
        method: "post",
        path: "/teams/{team}/members",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "team_get",
        title: "Show a team",
        description: "A team you are in: its lead, members, rules, its `stream_id`, and whether it is `halted` (and \
            by which signals).",
        method: "get",
        path: "/teams/{team}",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "task_list",
        title: "TaskList",
        description: "TaskList: the team's tasks, with `status` (pending, in_progress, completed), `owner` and \
            `blocked_by`. Filter by `status` or `owner`. Prefer the lowest id among the pending, unblocked, unowned \
            tasks when picking your next one.",
        method: "get",
        path: "/teams/{team}/tasks",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "task_get",
        title: "TaskGet",
        description: "TaskGet: one task in full: description, `active_form`, what blocks it (`blocked_by`) and \
            what it blocks (`blocks`), and its `metadata` (a completed task's HANDOFF is `metadata.handoff`).",
        method: "get",
        path: "/teams/{team}/tasks/{id}",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "task_create",
        title: "TaskCreate",
        description: "TaskCreate: adds a task (`subject`, `description`, `active_form` shown while in progress, \
            `blocked_by` task ids). Only the lead or an admin may assign an `owner` other than themselves. Start a \
            piece of work with a teachback task that the work is `blocked_by`.",
        method: "post",
        path: "/teams/{team}/tasks",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "task_update",
        title: "TaskUpdate",
        description: "TaskUpdate. Claim a task by setting `owner` to your own name (the claim policy decides: 409 \
            while it is blocked or owned by another); set `status` to in_progress, completed or deleted. Completing \
            needs a HANDOFF in `metadata.handoff` with `produced` (files or artifacts made), `decisions`, \
            `reasoning_chain` (recommended), `uncertainty` (each item tagged [HIGH], [MEDIUM] or [LOW], or \"No areas \
            of uncertainty flagged.\"), `integration` and `open_questions`; an incomplete one gets 422 listing each \
            violation. While the team is halted, claims and completions get 423 until the lead acknowledges.",
        method: "patch",
        path: "/teams/{team}/tasks/{id}",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "send_message",
        title: "SendMessage",
        description: "SendMessage: to a member, `lead` or `all`, with a short `summary` and the `message`. \
            Prefix the message with [sender→recipient]. A teachback goes to the lead before the work starts; \
            `type` shutdown_request and shutdown_response (with `request_id` and `approve`) end a teammate's work.",
        method: "post",
        path: "/teams/{team}/messages",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "read_messages",
        title: "Read messages",
        description: "Your inbox in a team, oldest first: the messages after `after` (a message id). Pass \
            `next_after` as `after` to read on.",
        method: "get",
        path: "/teams/{team}/messages",
        omit: &[],
        extra: none,
        body: false,
        call: Call::Route,
        read_only: true,
    },
    Spec {
        name: "wait_for_messages",
        title: "Wait for messages",
        description: "Long-poll on your inbox: the messages after `after`, returned as soon as there are any, or an \
            empty list after `timeout_s`.",
        method: "get",
        path: "/teams/{team}/messages",
        omit: &[],
        extra: wait_extra,
        body: false,
        call: Call::WaitMessages,
        read_only: true,
    },
    Spec {
        name: "raise_signal",
        title: "Raise an algedonic signal",
        description: "Raises an algedonic signal in a team. HALT (categories SECURITY, DATA, ETHICS) stops claims \
            and completions in the team (423) until the lead or an admin acknowledges it; ALERT (QUALITY, SCOPE, \
            META-BLOCK) notifies the lead. Give the `issue`, `evidence`, `impact`, `recommended_action`, your \
            `task_id` (it becomes blocked on the signal) and any `partial_handoff`.",
        method: "post",
        path: "/teams/{team}/signals",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
    Spec {
        name: "acknowledge_signal",
        title: "Acknowledge a signal",
        description: "Acknowledges a signal by its `signal_id`, with an optional `note`, lifting its HALT. Only the \
            team's lead (a contract's creator) or an admin may: others get 403, and a 423 names who may.",
        method: "post",
        path: "/signals/{signal_id}/acknowledge",
        omit: &[],
        extra: none,
        body: true,
        call: Call::Route,
        read_only: false,
    },
];

/// The output of `stash_get`, which is not the route's (raw bytes).
pub fn stash_get_output() -> Value {
    json!({
        "type": "object",
        "required": ["name", "persistent", "version", "content_type", "size"],
        "properties": {
            "name": {"type": "string"},
            "persistent": {"type": "boolean"},
            "version": {"type": "integer"},
            "content_type": {"type": "string"},
            "size": {"type": "integer", "description": "Bytes stored."},
            "expires_at": {"type": ["string", "null"], "description": "When an ephemeral stash expires (RFC 3339)."},
            "text": {"type": "string", "description": "The content, when it is UTF-8."},
            "json": {"description": "The content parsed, when it is JSON."},
            "base64": {"type": "string", "description": "The content, when it is not UTF-8."}
        }
    })
}
