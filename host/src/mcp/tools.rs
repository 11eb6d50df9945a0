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

impl Spec {
    /// A tool that reads: the route's parameters are its arguments.
    const fn new(
        name: &'static str,
        title: &'static str,
        method: &'static str,
        path: &'static str,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            title,
            description,
            method,
            path,
            omit: &[],
            extra: none,
            body: false,
            call: Call::Route,
            read_only: true,
        }
    }

    /// A tool that writes: the route's JSON body's properties are arguments too.
    const fn writes(self) -> Self {
        Self { body: true, read_only: false, ..self }
    }

    /// The body is not JSON arguments (the tool builds it).
    const fn raw_body(self) -> Self {
        Self { body: false, ..self }
    }

    const fn calls(self, call: Call) -> Self {
        Self { call, ..self }
    }

    const fn omitting(self, omit: &'static [&'static str]) -> Self {
        Self { omit, ..self }
    }

    const fn adding(self, extra: fn() -> Vec<(&'static str, Value, bool)>) -> Self {
        Self { extra, ..self }
    }
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
    Spec::new(
        "stash_get",
        "Read a stash",
        "get",
        "/stash/{name}",
        "Reads a named document (a stash): yours, or one shared with you. Returns its content as `text` \
        (and as `json` when it is JSON), with its `version` for a later `if_match`. Reading an ephemeral stash \
        renews its time to live. `persistent` picks the persistent namespace (default: ephemeral).",
    )
    .calls(Call::StashGet),
    Spec::new(
        "stash_put",
        "Write a stash",
        "put",
        "/stash/{name}",
        "Creates or replaces a named document. Ephemeral stashes (the default) expire `ttl` seconds after \
        their last read or write; `persistent: true` keeps one until deleted. `schema` binds it to a JSON Schema \
        for good (every later write is validated: 422 with JSON-pointer details). `shared` lets other agents read \
        it; `discoverable` lists it in `discover`. Use `if_match` with the version you read to avoid lost updates.",
    )
    .writes()
    .raw_body()
    .calls(Call::StashPut)
    .adding(stash_put_extra),
    Spec::new(
        "stash_patch_items",
        "Update items in a JSON stash",
        "patch",
        "/stash/{name}/json",
        "Sets fields on the elements of an array in a JSON stash that match, atomically: each of \
        `update_items` names the array (`path`, a JSON pointer), a `match` object and the fields to `set`. \
        Answers how many items matched. On a contract stash this is how a subtask's status is updated.",
    )
    .writes()
    .adding(patch_extra),
    Spec::new(
        "stash_list",
        "List your stashes",
        "get",
        "/stashes",
        "Lists the stashes you own, by page (`limit`, `offset`), in one namespace (`persistent`).",
    ),
    Spec::new(
        "stream_create",
        "Create a stream",
        "post",
        "/stream",
        "Creates an append-only log. `linked_stash` ties it to a stash (a contract's execution and \
        discussion streams link to the contract stash, which turns on the contract hooks). `discoverable` lists it \
        in `discover`; `schema_id` validates every entry's data; `create_if_missing` returns your stream of that \
        name if it exists.",
    )
    .writes(),
    Spec::new(
        "stream_append",
        "Append to a stream",
        "post",
        "/stream/{stream_id}",
        "Appends an entry (`data`: any JSON, with an optional `label`) and returns its `seq`. On a \
        contract's stream the hooks apply as over HTTP: a `claim` entry ({\"subtask_id\": ID, \"agent_name\": \
        you}) assigns a subtask through the claim policy (refused: 409 with the decision), a `deliverable` entry is checked for its \
        HANDOFF (422 with violations), an `algedonic` entry raises a signal; while the contract is halted \
        claims get 423.",
    )
    .writes(),
    Spec::new(
        "stream_read",
        "Read a stream",
        "get",
        "/stream/{stream_id}",
        "Reads entries oldest first: those after `after` (a seq), optionally only one `label`. \
        Pass the answer's `next_after` as `after` to read on.",
    ),
    Spec::new(
        "stream_latest",
        "Latest entry",
        "get",
        "/stream/{stream_id}/latest",
        "The newest entry of a stream, optionally the newest with one `label` (for example a \
        contract's current `state`). 404 when there is none.",
    ),
    Spec::new(
        "wait_for_entries",
        "Wait for entries",
        "get",
        "/stream/{stream_id}",
        "Long-poll: the entries after `after` on a stream (optionally one `label`), returned as soon \
        as there are any, or an empty list after `timeout_s`. Call it again with `next_after` to follow a stream.",
    )
    .calls(Call::WaitEntries)
    .omitting(&["offset"])
    .adding(wait_extra),
    Spec::new(
        "discover",
        "Discover",
        "get",
        "/discover",
        "Finds discoverable stashes, streams and contracts by `type` (stash, stream, contract), \
        free text `q`, `label`, bound `schema` or `linked_to` (the streams linked to a stash).",
    ),
    Spec::new(
        "schema_search",
        "Search schemas",
        "get",
        "/schemas",
        "Lists the JSON Schemas you can bind to (yours, public ones and the built-in `agent-contract`), \
        optionally matching free text `q`.",
    ),
    Spec::new(
        "team_create",
        "Create a team",
        "post",
        "/teams",
        "Creates a team with you as its lead. The lead adds teammates, creates and assigns tasks, and \
        acknowledges HALTs. The team gets a stream (`stream_id`) that carries its signals.",
    )
    .writes(),
    Spec::new(
        "team_add_member",
        "Add a teammate",
        "post",
        "/teams/{team}/members",
        "Adds a registered agent to your team (lead or admin only). Teams are private: others get 404.",
    )
    .writes(),
    Spec::new(
        "team_get",
        "Show a team",
        "get",
        "/teams/{team}",
        "A team you are in: its lead, members, rules, its `stream_id`, and whether it is `halted` (and \
        by which signals).",
    ),
    Spec::new(
        "task_list",
        "TaskList",
        "get",
        "/teams/{team}/tasks",
        "TaskList: the team's tasks, with `status` (pending, in_progress, completed), `owner` and \
        `blocked_by`. Filter by `status` or `owner`. Prefer the lowest id among the pending, unblocked, unowned \
        tasks when picking your next one.",
    ),
    Spec::new(
        "task_get",
        "TaskGet",
        "get",
        "/teams/{team}/tasks/{id}",
        "TaskGet: one task in full: description, `active_form`, what blocks it (`blocked_by`) and \
        what it blocks (`blocks`), and its `metadata` (a completed task's HANDOFF is `metadata.handoff`).",
    ),
    Spec::new(
        "task_create",
        "TaskCreate",
        "post",
        "/teams/{team}/tasks",
        "TaskCreate: adds a task (`subject`, `description`, `active_form` shown while in progress, \
        `blocked_by` task ids). Only the lead or an admin may assign an `owner` other than themselves. Start a \
        piece of work with a teachback task that the work is `blocked_by`.",
    )
    .writes(),
    Spec::new(
        "task_update",
        "TaskUpdate",
        "patch",
        "/teams/{team}/tasks/{id}",
        "TaskUpdate. Claim a task by setting `owner` to your own name (the claim policy decides: 409 \
        while it is blocked or owned by another); set `status` to in_progress, completed or deleted. Completing \
        needs a HANDOFF in `metadata.handoff` with `produced` (files or artifacts made), `decisions`, \
        `reasoning_chain` (recommended), `uncertainty` (each item tagged [HIGH], [MEDIUM] or [LOW], or \"No areas \
        of uncertainty flagged.\"), `integration` and `open_questions`; an incomplete one gets 422 listing each \
        violation. While the team is halted, claims and completions get 423 until the lead acknowledges.",
    )
    .writes(),
    Spec::new(
        "send_message",
        "SendMessage",
        "post",
        "/teams/{team}/messages",
        "SendMessage: to a member, `lead` or `all`, with a short `summary` and the `message`. \
        Prefix the message with [sender→recipient]. A teachback goes to the lead before the work starts; \
        `type` shutdown_request and shutdown_response (with `request_id` and `approve`) end a teammate's work.",
    )
    .writes(),
    Spec::new(
        "read_messages",
        "Read messages",
        "get",
        "/teams/{team}/messages",
        "Your inbox in a team, oldest first: the messages after `after` (a message id). Pass \
        `next_after` as `after` to read on.",
    ),
    Spec::new(
        "wait_for_messages",
        "Wait for messages",
        "get",
        "/teams/{team}/messages",
        "Long-poll on your inbox: the messages after `after`, returned as soon as there are any, or an \
        empty list after `timeout_s`.",
    )
    .calls(Call::WaitMessages)
    .adding(wait_extra),
    Spec::new(
        "raise_signal",
        "Raise an algedonic signal",
        "post",
        "/teams/{team}/signals",
        "Raises an algedonic signal in a team. HALT (categories SECURITY, DATA, ETHICS) stops claims \
        and completions in the team (423) until the lead or an admin acknowledges it; ALERT (QUALITY, SCOPE, \
        META-BLOCK) notifies the lead. Give the `issue`, `evidence`, `impact`, `recommended_action`, your \
        `task_id` (it becomes blocked on the signal) and any `partial_handoff`.",
    )
    .writes(),
    Spec::new(
        "acknowledge_signal",
        "Acknowledge a signal",
        "post",
        "/signals/{signal_id}/acknowledge",
        "Acknowledges a signal by its `signal_id`, with an optional `note`, lifting its HALT. Only the \
        team's lead (a contract's creator) or an admin may: others get 403, and a 423 names who may.",
    )
    .writes(),
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
