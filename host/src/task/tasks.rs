//! TaskCreate, TaskList, TaskGet and TaskUpdate.
//!
//! An update that takes a task (owner set to oneself, or moved to
//! in_progress) is a claim; one that moves it to completed checks its
//! HANDOFF. Both are decided inside the team's writer, against the team as
//! it stands, and commit with their decision records. That is how fifty
//! racing claims end with one owner: they are decided one after another,
//! and every claim after the first sees an owned task.

mod api;

pub use api::routes;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::store::{self, MessageRow, Snapshot, Status, TaskRow, TeamRow, Write};
use super::{graph, lead_only, rules_of, team_for};
use crate::agent::Caller;
use crate::clock;
use crate::error::{Error, Json, Path, Query, Result, Violation};
use crate::policy::input::{ClaimInput, HandoffInput, TargetInput, TaskRefInput};
use crate::policy::registry::Scope;
use crate::policy::store::DecisionRow;
use crate::policy::{Decider, Decision, Input, Request, Verdict};
const MAX_SUBJECT: usize = 1_000;
const MAX_TEXT: usize = 64 * 1024;

#[derive(Serialize, ToSchema)]
pub struct TaskView {
    id: i64,
    subject: String,
    description: String,
    active_form: String,
    status: Status,
    owner: Option<String>,
    blocked_by: Vec<i64>,
    blocks: Vec<i64>,
    #[schema(value_type = Object)]
    metadata: Value,
    created_by: String,
    created_at: String,
    updated_at: String,
}

fn task_view(t: &TaskRow, blocked_by: Vec<i64>, blocks: Vec<i64>) -> TaskView {
    TaskView {
        id: t.id,
        subject: t.subject.clone(),
        description: t.description.clone(),
        active_form: t.active_form.clone(),
        status: t.status,
        owner: t.owner.clone(),
        blocked_by,
        blocks,
        metadata: serde_json::from_str(&t.metadata).unwrap_or_else(|_| json!({})),
        created_by: t.created_by.clone(),
        created_at: clock::rfc3339(t.created_at),
        updated_at: clock::rfc3339(t.updated_at),
    }
}

fn view_in(s: &Snapshot, t: &TaskRow) -> TaskView {
    task_view(t, s.blocked_by(t.id), s.blocks(t.id))
}

/// What happened to a task, as the team's stream tells followers.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEvent {
    Created,
    /// Taken by the caller: a claim, decided by the claim policies.
    Claimed,
    /// Completed, its HANDOFF accepted.
    Completed,
    /// Any other change (owner assigned by the lead, status, text, blockers).
    Updated,
    Deleted,
}

/// A `task` entry for the team's stream, written by the host in the same
/// commit as the change: `{"event", "task": {...}, "by"}`.
pub(crate) fn event(event: TaskEvent, task: &TaskRow, blocked_by: &[i64], by: &str) -> Write {
    let data = json!({
        "event": event,
        "task": {
            "id": task.id, "subject": task.subject, "status": task.status, "owner": task.owner,
            "active_form": task.active_form, "blocked_by": blocked_by,
        },
        "by": by,
    });
    Write::Append { label: TASK_LABEL.into(), data: data.to_string(), agent: crate::agent::SYSTEM.into() }
}

/// The label of task events on a team's stream.
pub const TASK_LABEL: &str = "task";

fn task_not_found(team: &str, id: i64) -> Error {
    Error::not_found(format!("task #{id} in team {team}"))
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::validation(
            format!("{field} is {} bytes; the limit is {max}", value.len()),
            vec![Violation { path: format!("/{field}"), message: format!("at most {max} bytes") }],
        ));
    }
    Ok(())
}

fn check_subject(subject: &str) -> Result<()> {
    if subject.trim().is_empty() {
        return Err(Error::validation(
            "subject must not be empty: give the task a short imperative title",
            vec![Violation { path: "/subject".into(), message: "empty".into() }],
        ));
    }
    check_text("subject", subject, MAX_SUBJECT)
}

fn object(field: &str, v: Value) -> Result<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(Error::validation(
            format!("{field} must be a JSON object, got {}", kind(&other)),
            vec![Violation { path: format!("/{field}"), message: "not an object".into() }],
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn unknown_tasks(team: &str, field: &str, ids: &[i64]) -> Error {
    let list: Vec<String> = ids.iter().map(|i| format!("#{i}")).collect();
    Error::validation(
        format!("{field} names tasks that do not exist in team {team}: {}", list.join(", ")),
        ids.iter().map(|i| Violation { path: format!("/{field}"), message: format!("no task #{i}") }).collect(),
    )
}

fn cycle_error(cycle: &[i64]) -> Error {
    let path: Vec<String> = cycle.iter().map(|i| format!("#{i}")).collect();
    Error::validation(
        format!("that dependency would make a cycle ({}), so none of those tasks could ever start", path.join(" → ")),
        vec![Violation { path: "/blocked_by".into(), message: format!("cycle {}", path.join(" → ")) }],
    )
    .with_code("dependency_cycle")
}

fn not_member(team: &TeamRow, agent: &str, field: &str) -> Error {
    Error::validation(
        format!("{agent} is not a member of team {}; the lead adds members first", team.name),
        vec![Violation { path: format!("/{field}"), message: "not a member".into() }],
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    subject: String,
    #[serde(default)]
    description: String,
    /// Shown while the task is in progress ("Building the parser").
    #[serde(default)]
    active_form: String,
    /// Assign it now; only the lead or an admin may assign someone else.
    owner: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Tasks that must complete before this one can start.
    #[serde(default)]
    blocked_by: Vec<i64>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    status: Option<Status>,
    owner: Option<String>,
    /// `full`: each task whole, as TaskGet gives it (all its blockers and
    /// what it blocks), so a board needs one request, not one per task.
    #[param(inline)]
    detail: Option<Detail>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    Summary,
    Full,
}

/// One task of a TaskList: its summary, or with `detail=full` the whole task.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TaskItem {
    Summary(TaskSummary),
    Full(TaskView),
}

#[derive(Serialize, ToSchema)]
pub struct TaskSummary {
    id: i64,
    subject: String,
    status: Status,
    owner: Option<String>,
    /// Only the blockers not completed yet.
    blocked_by: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    tasks: Vec<TaskItem>,
}

/// `status` in an update: a task status, or `deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewStatus {
    Pending,
    InProgress,
    Completed,
    Deleted,
}

/// `null` and absent differ for `owner`: null releases the task.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The update as sent is also the claim policy's `request`, hence Serialize.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<NewStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_form: Option<String>,
    /// An agent takes the task by naming itself; `null` releases it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    owner: Option<Option<String>>,
    /// Merged key by key; a `null` value deletes the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Tasks that wait for this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    add_blocks: Vec<i64>,
    /// Tasks this one waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    add_blocked_by: Vec<i64>,
}

/// What an update does to a task, worked out before anything is decided.
struct Plan {
    claim: bool,
    complete: bool,
    delete: bool,
    /// The task as it will be, deps aside.
    next: TaskRow,
}

fn plan(task: &TaskRow, req: &TaskUpdate, caller: &Caller, team: &TeamRow) -> Result<Plan> {
    let is_lead = caller.admin || caller.name == team.lead;
    let owns = task.owner.as_deref() == Some(caller.name.as_str());
    if req.status == Some(NewStatus::Deleted) {
        if !(is_lead || owns || (task.owner.is_none() && task.created_by == caller.name)) {
            return Err(Error::forbidden(format!(
                "only the task's owner, its creator while unowned, or the lead ({}) may delete it",
                team.lead
            )));
        }
        return Ok(Plan { claim: false, complete: false, delete: true, next: task.clone() });
    }
    let mut next = task.clone();
    let mut claim = false;
    match &req.owner {
        Some(Some(o)) if *o == caller.name => claim |= !owns,
        Some(Some(o)) => {
            lead_only(caller, team, &format!("assign a task to {o}"))?;
            next.owner = Some(o.clone());
        }
        Some(None) => {
            if !(is_lead || owns) {
                return Err(Error::forbidden("only the task's owner or the lead may release it"));
            }
            next.owner = None;
        }
        None => {}
    }
    if claim {
        next.owner = Some(caller.name.clone());
    }
    // Who may complete is the team's rule; whoever may complete may also
    // attach the HANDOFF (metadata) in the same update.
    let completing = req.status == Some(NewStatus::Completed) && task.status != Status::Completed;
    if completing {
        super::rules_of(team).may_complete(&caller.name, &team.lead, next.owner.as_deref(), caller.admin).map_err(
            |why| Error::forbidden(format!("cannot complete task #{}: {why}", task.id)).with_code("not_allowed"),
        )?;
    }
    let edits = req.subject.is_some()
        || req.description.is_some()
        || req.active_form.is_some()
        || (req.metadata.is_some() && !completing)
        || !req.add_blocks.is_empty()
        || !req.add_blocked_by.is_empty();
    let own_or_open = owns || task.owner.is_none() || is_lead || claim;
    if edits && !own_or_open {
        return Err(Error::forbidden(format!(
            "task #{} is {}'s; only its owner or the lead may change it",
            task.id,
            task.owner.as_deref().unwrap_or_default()
        )));
    }
    let mut complete = false;
    let status = req.status.and_then(|s| match s {
        NewStatus::Pending => Some(Status::Pending),
        NewStatus::InProgress => Some(Status::InProgress),
        NewStatus::Completed => Some(Status::Completed),
        NewStatus::Deleted => None, // returned above
    });
    if let Some(status) = status
        && status != task.status
    {
        match status {
            Status::InProgress => {
                claim = true;
                if next.owner.is_none() {
                    next.owner = Some(caller.name.clone());
                }
            }
            Status::Completed => complete = true,
            Status::Pending => {
                if !(is_lead || owns) {
                    return Err(Error::forbidden("only the task's owner or the lead may move it back to pending"));
                }
            }
        }
        next.status = status;
    }
    if let Some(s) = &req.subject {
        check_subject(s)?;
        next.subject = s.clone();
    }
    if let Some(d) = &req.description {
        check_text("description", d, MAX_TEXT)?;
        next.description = d.clone();
    }
    if let Some(a) = &req.active_form {
        check_text("active_form", a, MAX_SUBJECT)?;
        next.active_form = a.clone();
    }
    if let Some(m) = &req.metadata {
        let patch = object("metadata", m.clone())?;
        let mut merged = object("metadata", serde_json::from_str(&task.metadata).unwrap_or_else(|_| json!({})))?;
        for (k, v) in patch {
            if v.is_null() {
                merged.remove(&k);
            } else {
                merged.insert(k, v);
            }
        }
        next.metadata = Value::Object(merged).to_string();
    }
    Ok(Plan { claim, complete, delete: false, next })
}

fn halted(team: &str, halts: &[String]) -> Error {
    Error::locked(format!(
        "team {team} is halted by an algedonic HALT ({}); claims and completions wait until the lead acknowledges it",
        halts.join(", ")
    ))
}

fn blocked(id: i64, open: &[i64]) -> Error {
    let list: Vec<String> = open.iter().map(|b| format!("#{b}")).collect();
    Error::conflict(
        "blocked",
        format!("task #{id} cannot start: it is blocked by {}, not yet completed", list.join(", ")),
    )
}

/// What an update came to; the refusals among them still commit their
/// decision records (and, for an escalation, the lead's message).
enum Updated {
    Done(Box<TaskView>),
    /// Each with the decision that refused.
    Denied(String, Option<String>),
    /// With the lead who was asked.
    Escalated(String, String, Option<String>),
    Rejected(String, Vec<Violation>, Option<String>),
}

/// The whole update against the team as its writer holds it: the rules,
/// then the claim and handoff decisions on that same snapshot, then the
/// writes. Takes only message ids from the snapshot.
fn plan_update(
    s: &mut Snapshot,
    decider: &Decider,
    caller: &Caller,
    id: i64,
    req: &TaskUpdate,
    request: Value,
) -> Result<(Vec<Write>, Updated)> {
    let team = s.team.name.clone();
    // The writer's snapshot knows the members: outsiders get the 404 of a
    // team that does not exist.
    if !(caller.admin || s.members.contains(&caller.name)) {
        return Err(super::team_not_found(&team));
    }
    let current = s.tasks.get(&id).cloned().ok_or_else(|| task_not_found(&team, id))?;
    let plan = plan(&current, req, caller, &s.team)?;
    if (plan.claim || plan.complete) && !s.halts.is_empty() {
        return Err(halted(&team, &s.halts));
    }
    if plan.delete {
        let gone = event(TaskEvent::Deleted, &current, &s.blocked_by(id), &caller.name);
        return Ok((vec![Write::DeleteTask(id), gone], Updated::Done(Box::new(view_in(s, &current)))));
    }
    if let Some(o) = &plan.next.owner
        && !s.members.contains(o)
    {
        return Err(not_member(&s.team, o, "owner"));
    }
    let new_edges: Vec<(i64, i64)> =
        req.add_blocked_by.iter().map(|&b| (id, b)).chain(req.add_blocks.iter().map(|&t| (t, id))).collect();
    let missing: Vec<i64> =
        req.add_blocked_by.iter().chain(&req.add_blocks).copied().filter(|i| !s.tasks.contains_key(i)).collect();
    if !missing.is_empty() {
        let field =
            if req.add_blocked_by.iter().any(|i| missing.contains(i)) { "add_blocked_by" } else { "add_blocks" };
        return Err(unknown_tasks(&team, field, &missing));
    }
    if let Some(cycle) = graph::cycle(s.deps.edges(), &new_edges) {
        return Err(cycle_error(&cycle));
    }
    let mut blocked_by = s.blocked_by(id);
    blocked_by.extend(req.add_blocked_by.iter().filter(|b| !blocked_by.contains(b)).copied().collect::<Vec<_>>());
    let open: Vec<i64> =
        blocked_by.iter().copied().filter(|b| s.tasks.get(b).is_some_and(|t| t.status != Status::Completed)).collect();
    if plan.next.status == Status::InProgress && current.status != Status::InProgress && !open.is_empty() {
        return Err(blocked(id, &open));
    }
    let reader = caller.reader();
    let scope = Scope::Team(team.clone());
    let now = clock::now_ms();
    let mut records: Vec<DecisionRow> = Vec::new();
    if plan.claim {
        let input = Input::Claim(ClaimInput {
            claimant: caller.name.clone(),
            target: TargetInput::Task { team: team.clone(), id: id as u64 },
            request,
        });
        let req = Request {
            scope: scope.clone(),
            agent: caller.name.clone(),
            reader: reader.clone(),
            input,
            default_config: json!({}),
        };
        let decision = decider.decide_blocking(&req, &s.view())?;
        match decision.verdict() {
            Verdict::Approve => records.extend(decision.records),
            Verdict::Escalate(reason) => {
                let summary = format!("Claim of task #{id} by {} needs your decision", caller.name);
                let message = format!(
                    "[cairn→lead] {} asked to take task #{id} ({}); the claim policy escalated it: {reason}. \
                     Assign the task (PATCH owner) to grant it.",
                    caller.name, current.subject
                );
                let message = MessageRow::from_host(s.next_message_id(), "lead", summary, message, now);
                let decided = decision.decision_id();
                let writes = vec![
                    Write::Message { message, recipients: vec![s.team.lead.clone()] },
                    Write::Decisions(decision.records),
                ];
                return Ok((writes, Updated::Escalated(reason, s.team.lead.clone(), decided)));
            }
            Verdict::Deny(reason) => {
                let decided = decision.decision_id();
                return Ok((vec![Write::Decisions(decision.records)], Updated::Denied(reason, decided)));
            }
        }
    }
    if plan.complete {
        let metadata: Value = serde_json::from_str(&plan.next.metadata).unwrap_or_else(|_| json!({}));
        let text = metadata.get("handoff").and_then(Value::as_str).map(str::to_string);
        let input = Input::Handoff(HandoffInput {
            agent: caller.name.clone(),
            task: Some(TaskRefInput { team: team.clone(), id: id as u64 }),
            subject: plan.next.subject.clone(),
            metadata,
            handoff: None,
            text,
        });
        let default_config = rules_of(&s.team).handoff_config();
        let req = Request { scope, agent: caller.name.clone(), reader, input, default_config };
        let decision = decider.decide_blocking(&req, &s.view())?;
        if !decision.violations().is_empty() {
            return Ok(reject_handoff(&current, &decision, now));
        }
        records.extend(decision.records);
    }
    let mut next = plan.next;
    if plan.complete {
        // Accepted: an earlier rejection no longer applies.
        let mut m: Map<String, Value> = serde_json::from_str(&next.metadata).unwrap_or_default();
        m.remove("handoff_rejection");
        next.metadata = Value::Object(m).to_string();
    }
    next.version = current.version + 1;
    next.updated_at = now;
    let mut blocks = s.blocks(id);
    blocks.extend(req.add_blocks.iter().filter(|t| !blocks.contains(t)).copied().collect::<Vec<_>>());
    let what = match (plan.complete, plan.claim) {
        (true, _) => TaskEvent::Completed,
        (false, true) => TaskEvent::Claimed,
        (false, false) => TaskEvent::Updated,
    };
    let told = event(what, &next, &blocked_by, &caller.name);
    let view = task_view(&next, blocked_by, blocks);
    let mut writes: Vec<Write> =
        new_edges.into_iter().map(|(task, blocked_by)| Write::Block { task, blocked_by }).collect();
    writes.push(Write::PutTask(next));
    writes.push(told);
    writes.push(Write::Decisions(records));
    Ok((writes, Updated::Done(Box::new(view))))
}

/// A refused HANDOFF: record why in `metadata.handoff_rejection` (with a
/// revision number that counts the rejections) beside the decision, and
/// answer 422 with one detail per violation.
fn reject_handoff(current: &TaskRow, decision: &Decision, now: i64) -> (Vec<Write>, Updated) {
    let violations = decision.violations();
    let reason = format!("the HANDOFF is incomplete: {} violation(s)", violations.len());
    let details: Vec<Violation> = violations
        .iter()
        .map(|v| Violation { path: format!("/metadata/handoff/{}", v.field), message: v.message.clone() })
        .collect();
    let mut m: Map<String, Value> = serde_json::from_str(&current.metadata).unwrap_or_default();
    let revision = m.get("handoff_rejection").and_then(|r| r["revision"].as_i64()).unwrap_or(0) + 1;
    m.insert(
        "handoff_rejection".into(),
        json!({"reason": reason, "corrections": violations, "revision": revision,
               "decision_id": decision.decision_id(), "at": clock::rfc3339(now)}),
    );
    let mut next = current.clone();
    next.metadata = Value::Object(m).to_string();
    next.version += 1;
    next.updated_at = now;
    let message = format!("cannot complete task #{}: {reason}", current.id);
    let refused = Updated::Rejected(message, details, decision.decision_id());
    (vec![Write::PutTask(next), Write::Decisions(decision.records.clone())], refused)
}
