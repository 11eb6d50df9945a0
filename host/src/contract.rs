//! Contract hooks: the stream side of the contracts pattern. On a stream
//! linked to a contract stash (`linked_stash`, or named
//! `<contract>-discussion` / `<contract>-execution`), three labels call the
//! policy hooks, scoped to the contract:
//!
//! - `claim`: the claim policy decides. An approval marks the subtask
//!   `claimed` with `assigned_agent`, only while it is still `open`, so
//!   among racing claims the first approved one wins. A `claim-decision`
//!   entry follows either way.
//! - `deliverable`: the handoff policy checks it; a rejection appends
//!   `handoff-rejected` with the violations.
//! - `algedonic`: the escalation policy decides and the host carries the
//!   actions out; `algedonic-decision` records them. A HALT refuses new
//!   `claim` entries on the contract's streams with 423 until the creator
//!   (or an admin) acknowledges it.
//!
//! Decisions are recorded before their effect is applied, so no effect is
//! ever without its record; the entry that follows says whether it applied.

use serde_json::{Value, json};

use crate::agent::Caller;
use crate::error::{Error, Result, Violation};
use crate::policy::registry::Scope;
use crate::policy::{Hook, hook, store as decision_store};
use crate::stash::SubtaskClaim;
use crate::{AppState, clock};

/// Labels that call a hook.
pub const HOOKED: [&str; 3] = ["claim", "deliverable", "algedonic"];

/// Labels of the host's own entries, which agents may not forge.
pub const WRITTEN_BY_HOST: [&str; 3] = ["claim-decision", "handoff-rejected", "algedonic-decision"];

/// The contract a stream belongs to.
#[derive(Debug, Clone)]
pub struct Contract {
    pub name: String,
    pub creator: String,
}

impl Contract {
    /// Policies deciding for a contract read as its creator: the contract
    /// need not be shared for its own rules to see it.
    fn reader(&self) -> Caller {
        Caller { name: self.creator.clone(), admin: false }
    }
}

/// The contract behind a stream, if it is linked to one that exists.
pub async fn of_stream(app: &AppState, owner: &str, name: &str, linked: Option<&str>) -> Result<Option<Contract>> {
    let contract = match linked {
        Some(l) => l.to_string(),
        None => match name.strip_suffix("-discussion").or_else(|| name.strip_suffix("-execution")) {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => return Ok(None),
        },
    };
    Ok(crate::stash::owner_of(&app.db, owner, &contract).await?.map(|creator| Contract { name: contract, creator }))
}

fn bad(field: &str, message: String) -> Error {
    Error::validation(message.clone(), vec![Violation { path: format!("/data/{field}"), message }])
}

/// Checks a hooked entry before it is stored: its data has what the hook
/// needs, and no claim lands while the contract is halted.
pub async fn admit(app: &AppState, caller: &Caller, contract: &Contract, label: &str, data: &Value) -> Result<()> {
    match label {
        "claim" => {
            if data.get("subtask_id").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(bad("subtask_id", "a claim names the subtask: data.subtask_id".into()));
            }
            if let Some(a) = data.get("agent_name").and_then(Value::as_str)
                && a != caller.name
            {
                return Err(bad(
                    "agent_name",
                    format!("agents claim for themselves: agent_name is {a}, the key is {}'s", caller.name),
                ));
            }
            let halts = crate::task::open_halts(&app.db, "contract", &contract.name).await?;
            if !halts.is_empty() {
                return Err(Error::locked(format!(
                    "contract {} is halted by an algedonic HALT ({}); claims wait until {} acknowledges it",
                    contract.name,
                    halts.join(", "),
                    contract.creator
                )));
            }
        }
        "algedonic" => {
            if !matches!(data.get("level").and_then(Value::as_str), Some("HALT" | "ALERT")) {
                return Err(bad("level", "an algedonic entry has data.level HALT or ALERT".into()));
            }
            if data.get("category").and_then(Value::as_str).is_none_or(|c| c.trim().is_empty()) {
                return Err(bad("category", "an algedonic entry has data.category, e.g. SECURITY or QUALITY".into()));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Runs the hook for an entry just stored at `seq`; returns what was
/// decided, for the append's response.
pub async fn react(
    app: &AppState,
    caller: &Caller,
    stream_id: &str,
    contract: &Contract,
    seq: i64,
    label: &str,
    data: &Value,
) -> Result<Option<Value>> {
    let e = Entry { caller, stream_id, contract, scope: Scope::Stash(contract.name.clone()), seq, data };
    match label {
        "claim" => claim(app, &e).await.map(Some),
        "deliverable" => deliverable(app, &e).await.map(Some),
        "algedonic" => algedonic(app, &e).await.map(Some),
        _ => Ok(None),
    }
}

/// A hooked entry, just stored.
struct Entry<'a> {
    caller: &'a Caller,
    stream_id: &'a str,
    contract: &'a Contract,
    scope: Scope,
    seq: i64,
    data: &'a Value,
}

async fn claim(app: &AppState, e: &Entry<'_>) -> Result<Value> {
    let (caller, stream_id, contract, scope, seq, data) = (e.caller, e.stream_id, e.contract, &e.scope, e.seq, e.data);
    let subtask = data["subtask_id"].as_str().unwrap_or_default().to_string();
    let mut request = data.clone();
    if let Some(m) = request.as_object_mut() {
        m.insert("stream_id".into(), json!(stream_id));
    }
    let input = json!({"claimant": caller.name, "target": {"subtask": {"contract": contract.name, "subtask_id": subtask}},
                       "request": request});
    let decision = hook::decide(app, Hook::Claim, scope, caller, &contract.reader(), input, json!({})).await?;
    decision_store::record_all(&app.db, &decision.records).await?;
    let decision_id = decision.records.last().map(|r| r.decision_id.clone());
    let verdict = decision.verdict().to_string();
    let mut reason = decision.reason().to_string();
    let applied = if verdict == "approve" {
        match crate::stash::claim_subtask(app, &contract.creator, &contract.name, &subtask, &caller.name).await? {
            SubtaskClaim::Assigned => true,
            SubtaskClaim::Taken { status, holder } => {
                reason = match holder {
                    Some(h) => format!("approved, but subtask {subtask} was {status} by {h} first"),
                    None => format!("approved, but subtask {subtask} is already {status}"),
                };
                false
            }
            SubtaskClaim::Missing => {
                reason = format!("approved, but the contract has no subtask {subtask}");
                false
            }
        }
    } else {
        false
    };
    let entry = json!({"subtask_id": subtask, "agent_name": caller.name, "verdict": verdict, "reason": reason,
        "escalated": verdict == "escalate", "applied": applied, "claim_seq": seq, "decision_id": decision_id});
    append(app, stream_id, "claim-decision", &entry).await?;
    Ok(entry)
}

async fn deliverable(app: &AppState, e: &Entry<'_>) -> Result<Value> {
    let (caller, stream_id, contract, scope, seq, data) = (e.caller, e.stream_id, e.contract, &e.scope, e.seq, e.data);
    let subject = match data["subtask_id"].as_str() {
        Some(s) => format!("subtask {s} of {}", contract.name),
        None => format!("deliverable for {}", contract.name),
    };
    let mut input = json!({"agent": caller.name, "subject": subject, "metadata": data});
    match data.get("handoff") {
        Some(Value::String(text)) => input["text"] = json!(text),
        Some(h @ Value::Object(_)) => input["handoff"] = h.clone(),
        // The protocol's text form may sit at the end of the message.
        _ => {
            if let Some(text) = ["deliverable", "message", "summary"]
                .iter()
                .filter_map(|k| data.get(*k).and_then(Value::as_str))
                .find(|t| t.contains("HANDOFF:"))
            {
                input["text"] = json!(text);
            }
        }
    }
    let decision = hook::decide(app, Hook::Handoff, scope, caller, &contract.reader(), input, json!({})).await?;
    decision_store::record_all(&app.db, &decision.records).await?;
    let violations = decision.result["violations"].as_array().cloned().unwrap_or_default();
    let decision_id = decision.records.last().map(|r| r.decision_id.clone());
    let entry = json!({"subtask_id": data.get("subtask_id"), "agent_name": caller.name, "deliverable_seq": seq,
        "accepted": violations.is_empty(), "violations": violations, "decision_id": decision_id});
    if !violations.is_empty() {
        append(app, stream_id, "handoff-rejected", &entry).await?;
    }
    Ok(entry)
}

async fn algedonic(app: &AppState, e: &Entry<'_>) -> Result<Value> {
    let (caller, stream_id, contract, scope, seq, data) = (e.caller, e.stream_id, e.contract, &e.scope, e.seq, e.data);
    let signal_id = crate::task::signal::new_signal_id();
    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let level = text("level");
    let category = text("category").trim().to_uppercase();
    let input = json!({"id": signal_id, "level": level, "category": category, "reporter": caller.name,
        "scope": {"contract": contract.name}, "issue": text("issue"), "evidence": text("evidence"),
        "impact": text("impact"), "recommended_action": text("recommended_action"),
        "partial_handoff": data.get("partial_handoff")});
    let decision =
        hook::decide(app, Hook::Escalation, scope, caller, &contract.reader(), input.clone(), json!({})).await?;
    decision_store::record_all(&app.db, &decision.records).await?;
    let mut halts = false;
    let mut reports = Vec::new();
    for action in decision.result["actions"].as_array().cloned().unwrap_or_default() {
        let done: std::result::Result<(), String> = match action["type"].as_str() {
            Some("halt-scope") => {
                halts = true;
                Ok(())
            }
            // A contract has no inboxes: a notification becomes an
            // `escalation` entry beside the signal, for the creator.
            Some("notify") => {
                let entry = json!({"signal_id": signal_id, "to": action["to"], "summary": action["summary"],
                    "message": action["message"]});
                append(app, stream_id, "escalation", &entry).await.map_err(|e| e.message().to_string())
            }
            Some("append-to-stream") => {
                let target = action["stream"].as_str().unwrap_or_default();
                match contract_stream(app, contract, stream_id, target).await? {
                    Some(id) => {
                        let label = action["label"].as_str().unwrap_or("escalation");
                        append(app, &id, label, &action["data"]).await.map_err(|e| e.message().to_string())
                    }
                    None => Err(format!("{target:?} is not one of contract {}'s streams", contract.name)),
                }
            }
            Some("create-task" | "block-task") => Err("a contract has no task list".into()),
            _ => Err("not an action the host knows".into()),
        };
        let mut report = action.clone();
        report["done"] = json!(done.is_ok());
        if let Err(why) = done {
            report["skipped"] = json!(why);
        }
        reports.push(report);
    }
    let mut body = input;
    body["stream_id"] = json!(stream_id);
    body["entry_seq"] = json!(seq);
    body["creator"] = json!(contract.creator);
    crate::task::insert_signal(
        &app.db,
        &crate::task::SignalRow {
            signal_id: signal_id.clone(),
            scope_kind: "contract".into(),
            scope: contract.name.clone(),
            level: level.clone(),
            category: category.clone(),
            reporter: caller.name.clone(),
            task_id: None,
            body: body.to_string(),
            signal_task_id: None,
            actions: Value::Array(reports.clone()).to_string(),
            halts,
            acknowledged_by: None,
            acknowledged_at: None,
            note: None,
            created_at: clock::now_ms(),
        },
    )
    .await?;
    let entry = json!({"signal_id": signal_id, "level": level, "category": category, "reporter": caller.name,
        "halted": halts, "actions": reports, "signal_seq": seq,
        "decision_id": decision.records.last().map(|r| r.decision_id.clone())});
    append(app, stream_id, "algedonic-decision", &entry).await?;
    tracing::warn!(contract = %contract.name, signal = %signal_id, level = %level, category = %category,
        reporter = %caller.name, "algedonic signal raised on a contract");
    Ok(entry)
}

/// A stream of the contract, by id or name: the one the signal came on, or
/// the creator's `<contract>-discussion` / `<contract>-execution`.
async fn contract_stream(app: &AppState, contract: &Contract, current: &str, target: &str) -> Result<Option<String>> {
    if target == current {
        return Ok(Some(current.to_string()));
    }
    let Some((id, owner, name)) = crate::stream::resolve(&app.db, &contract.creator, target).await? else {
        return Ok(None);
    };
    let ours = owner == contract.creator
        && (name == format!("{}-discussion", contract.name) || name == format!("{}-execution", contract.name));
    Ok(ours.then_some(id))
}

async fn append(app: &AppState, stream_id: &str, label: &str, data: &Value) -> Result<()> {
    crate::stream::append_as_host(app, stream_id, label, data).await?;
    Ok(())
}

/// Acknowledges a contract's signal: by its creator or an admin. Ends a
/// HALT once no other stands, and says so on the signal's stream.
pub async fn acknowledge(app: &AppState, caller: &Caller, signal: &crate::task::SignalRow, note: &str) -> Result<()> {
    let body: Value = serde_json::from_str(&signal.body).unwrap_or(Value::Null);
    let creator = body["creator"].as_str().unwrap_or_default();
    if !(caller.admin || caller.name == creator) {
        return Err(Error::forbidden(format!(
            "only contract {}'s creator ({creator}) or an admin may acknowledge its signals",
            signal.scope
        )));
    }
    if !crate::task::acknowledge_signal(&app.db, &signal.signal_id, &caller.name, note, clock::now_ms()).await? {
        return Err(Error::conflict(
            "already_acknowledged",
            format!("signal {} was already acknowledged", signal.signal_id),
        ));
    }
    let lifted = signal.halts && crate::task::open_halts(&app.db, "contract", &signal.scope).await?.is_empty();
    if let Some(stream_id) = body["stream_id"].as_str() {
        let entry = json!({"event": "acknowledged", "signal_id": signal.signal_id, "by": caller.name, "note": note,
            "halt_lifted": lifted});
        append(app, stream_id, "algedonic-decision", &entry).await?;
    }
    tracing::info!(contract = %signal.scope, signal = %signal.signal_id, by = %caller.name, "contract signal acknowledged");
    Ok(())
}
