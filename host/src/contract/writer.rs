//! The contract's writer: one per contract ([`crate::serial`]). It takes
//! every hooked entry queued for the contract as one batch: locks the
//! contract's row, decides each entry in order against the contract as it
//! stands (a claim approved before sees its subtask claimed), and commits
//! the contract's new version, the entries that follow, any signal and
//! every decision record in one transaction. Racing claims of different
//! subtasks all land; of one subtask, the first approved wins. Nobody is
//! told to retry.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{Contract, Kind};
use crate::clock;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::policy::input::{ClaimInput, HandoffInput, LevelInput, ScopeInput, SignalInput, TargetInput};
use crate::policy::registry::Scope;
use crate::policy::store::DecisionRow;
use crate::policy::view::{Answer, Read, StashDocument, View, contract_answer};
use crate::policy::{Decider, Handle, Hook, Input, Reader, Request, Verdict};
use crate::schema::Validators;
use crate::serial::Batch;
use crate::signal::{self, Effects, SignalRow};
use crate::stash::{self, Stash};
use crate::stream::events::{self, Bus};
use crate::{append_in_tx, bind_signal, insert_decisions, with_db};

/// One job for a contract's writer.
pub struct Job {
    pub contract: Contract,
    pub work: Work,
    /// What the hook decided, for the append's response (None: nothing).
    pub reply: Reply,
}

pub enum Work {
    /// An entry stored at `seq` on one of the contract's streams.
    Hooked { kind: Kind, agent: String, stream_id: String, seq: i64, data: Value },
    /// A signal acknowledged by `by` (the creator or an admin).
    Acknowledge { signal: Box<SignalRow>, by: String, note: String },
}

type Reply = oneshot::Sender<Result<Option<Value>>>;

/// The contract as its writer holds it between batches.
pub struct Held {
    stash: Stash,
    /// The parsed document; shared with the view of the decision running.
    doc: Arc<Value>,
    /// Whether `stash.body` is `doc` serialised (false after a claim
    /// changed the document, until the commit needs the bytes).
    fresh: bool,
}

impl Held {
    /// The contract's bytes as of now, serialised again only if changed.
    fn body(&mut self) -> &[u8] {
        if !self.fresh {
            self.stash.body = serde_json::to_vec(self.doc.as_ref()).unwrap_or_default();
            self.fresh = true;
        }
        &self.stash.body
    }

    /// What decisions read: the contract as the batch has it so far.
    fn view(&self) -> Arc<dyn View> {
        let s = &self.stash;
        Arc::new(ContractView {
            name: s.name.clone(),
            doc: self.doc.clone(),
            document: OnceLock::new(),
            meta: (s.owner.clone(), s.version as u64, s.content_type.clone(), s.schema_id.clone()),
        })
    }
}

pub struct Writer {
    db: Db,
    decider: Arc<Decider>,
    schemas: Arc<Validators>,
    stash_cache: Arc<stash::Cache>,
    bus: Arc<Bus>,
    max_bytes: usize,
}

impl Writer {
    pub fn new(
        db: Db,
        decider: Arc<Decider>,
        schemas: Arc<Validators>,
        stash_cache: Arc<stash::Cache>,
        bus: Arc<Bus>,
        max_bytes: usize,
    ) -> Self {
        Self { db, decider, schemas, stash_cache, bus, max_bytes }
    }
}

impl Batch for Writer {
    type Job = Job;
    type State = Held;

    fn run<'a>(&'a self, _key: &'a str, held: &'a mut Option<Held>, jobs: Vec<Job>) -> BoxFuture<'a, ()> {
        Box::pin(self.commit(held, jobs))
    }
}

/// What a batch plans, to be written in its transaction.
#[derive(Default)]
struct Planned {
    /// (stream_id, label, data) in order.
    entries: Vec<(String, String, Value)>,
    signals: Vec<SignalRow>,
    decisions: Vec<DecisionRow>,
    /// Whether the contract's document changed.
    changed: bool,
}

/// The contract as decisions read it: its own document, current to the
/// batch so far. Contract reads answer from the parsed document; a whole
/// `stash-read` of it is serialised only if a policy asks.
struct ContractView {
    name: String,
    doc: Arc<Value>,
    document: OnceLock<StashDocument>,
    /// owner, version, content type, schema id
    meta: (String, u64, String, Option<String>),
}

impl View for ContractView {
    fn answer(&self, read: &Read) -> Option<Answer> {
        match read {
            Read::Stash { name, persistent: true } if *name == self.name => {
                let document = self.document.get_or_init(|| StashDocument {
                    name: self.name.clone(),
                    owner: self.meta.0.clone(),
                    persistent: true,
                    version: self.meta.1,
                    content_type: self.meta.2.clone(),
                    body: serde_json::to_vec(self.doc.as_ref()).unwrap_or_default(),
                    schema_id: self.meta.3.clone(),
                });
                Some(Answer::Stash(Some(document.clone())))
            }
            _ if read.contract() == Some(self.name.as_str()) => Some(contract_answer(&self.doc, read)),
            _ => None,
        }
    }
}

/// The open signals of the contract, as the batch goes.
#[derive(Default)]
struct Open {
    signals: BTreeSet<String>,
    halts: BTreeSet<String>,
}

impl Writer {
    async fn commit(&self, held: &mut Option<Held>, jobs: Vec<Job>) {
        let Some(contract) = jobs.first().map(|j| j.contract.clone()) else { return };
        let now = clock::now_ms();
        let select = stash::select_persistent_sql();
        let put_signal = signal::put_signal_sql();
        let cached = held.take();
        let mut pending = Some(jobs);
        let mut replies: Vec<(Reply, Result<Option<Value>>)> = Vec::new();
        let mut entries_written: Vec<(String, i64)> = Vec::new();
        let outcome: std::result::Result<std::result::Result<Option<Held>, Error>, sqlx::Error> =
            with_db!(self.db, write, |pool| async {
                let mut tx = pool.begin().await?;
                let version: Option<(i64,)> = sqlx::query_as(stash::LOCK_PERSISTENT)
                    .bind(&contract.creator)
                    .bind(true)
                    .bind(&contract.name)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some((version,)) = version else { return Ok(Ok(None)) };
                let held = match cached {
                    Some(h) if h.stash.version == version => h,
                    _ => {
                        let stash: Stash = sqlx::query_as(&select)
                            .bind(&contract.creator)
                            .bind(true)
                            .bind(&contract.name)
                            .fetch_one(&mut *tx)
                            .await?;
                        let doc = Arc::new(serde_json::from_slice(&stash.body).unwrap_or(Value::Null));
                        Held { stash, doc, fresh: true }
                    }
                };
                let streams: Vec<(String, String)> = sqlx::query_as(
                    "SELECT stream_id, name FROM streams WHERE owner = $1 AND expires_at > $2
                     AND (linked_stash = $3 OR name = $4 OR name = $5)",
                )
                .bind(&contract.creator)
                .bind(now)
                .bind(&contract.name)
                .bind(format!("{}-discussion", contract.name))
                .bind(format!("{}-execution", contract.name))
                .fetch_all(&mut *tx)
                .await?;
                let open_rows: Vec<(String, bool)> = sqlx::query_as(signal::OPEN_SIGNALS)
                    .bind(signal::ScopeKind::Contract)
                    .bind(contract.key())
                    .fetch_all(&mut *tx)
                    .await?;
                let mut open = Open::default();
                for (id, halts) in open_rows {
                    if halts {
                        open.halts.insert(id.clone());
                    }
                    open.signals.insert(id);
                }
                let jobs = pending.take().unwrap_or_default();
                let decider = self.decider.clone();
                let planning = tokio::task::spawn_blocking(move || {
                    let mut held = held;
                    let mut planned = Planned::default();
                    let answers: Vec<_> = jobs
                        .into_iter()
                        .map(|job| {
                            let answer = plan(&decider, &mut held, &streams, &mut open, &job, now, &mut planned);
                            (job.reply, answer)
                        })
                        .collect();
                    (held, planned, answers)
                });
                let (mut held, planned, answers) = planning
                    .await
                    .map_err(|e| sqlx::Error::Protocol(format!("planning contract writes failed: {e}")))?;
                replies = answers;
                if planned.changed {
                    let body = held.body().to_vec();
                    if body.len() > self.max_bytes {
                        return Ok(Err(Error::too_large(format!(
                            "these claims would make contract {} {} bytes, over the {}-byte limit",
                            contract.name,
                            body.len(),
                            self.max_bytes
                        ))));
                    }
                    if let Some(binding) = stash::bound(&held.stash)
                        && let Err(e) = self.schemas.check(&self.db, &binding, held.doc.as_ref()).await
                    {
                        return Ok(Err(e));
                    }
                    held.stash.version += 1;
                    held.stash.size = body.len() as i64;
                    held.stash.renewed_at = now;
                    held.stash.updated_at = now;
                    sqlx::query(stash::SET_BODY)
                        .bind(&body)
                        .bind(held.stash.size)
                        .bind(held.stash.version)
                        .bind(now)
                        .bind(&contract.creator)
                        .bind(true)
                        .bind(&contract.name)
                        .execute(&mut *tx)
                        .await?;
                }
                for s in &planned.signals {
                    bind_signal!(sqlx::query(&put_signal), s).execute(&mut *tx).await?;
                }
                for (stream_id, label, data) in &planned.entries {
                    let data = data.to_string();
                    if let Some(seq) = append_in_tx!(tx, stream_id, label, data, crate::agent::SYSTEM, now)? {
                        entries_written.push((stream_id.clone(), seq));
                    }
                }
                insert_decisions!(tx, &planned.decisions)?;
                tx.commit().await?;
                if planned.changed {
                    self.stash_cache.invalidate(true, &contract.name);
                }
                Ok(Ok(Some(held)))
            }
            .await);
        match outcome {
            Ok(Ok(kept)) => {
                if kept.is_none() {
                    // The contract is gone: nothing was planned.
                    for job in pending.into_iter().flatten() {
                        let _ = job.reply.send(Err(Error::not_found(format!("contract {}", contract.name))));
                    }
                }
                *held = kept;
                for (stream_id, seq) in &entries_written {
                    events::announce(&self.bus, &self.db, stream_id, *seq).await;
                }
                for (reply, answer) in replies {
                    let _ = reply.send(answer);
                }
            }
            Ok(Err(refused)) => {
                tracing::warn!(contract = %contract.name, "contract batch refused: {}", refused.message());
                for (reply, _) in replies {
                    let _ = reply.send(Err(refused.clone()));
                }
            }
            Err(e) => {
                tracing::error!(contract = %contract.name, "contract write failed: {e}");
                for (reply, _) in replies {
                    let _ = reply.send(Err(Error::internal(format!("storage error: {e}"))));
                }
            }
        }
    }
}

/// Plans one job against the contract as the batch has it so far.
fn plan(
    decider: &Decider,
    held: &mut Held,
    streams: &[(String, String)],
    open: &mut Open,
    job: &Job,
    now: i64,
    planned: &mut Planned,
) -> Result<Option<Value>> {
    let contract = &job.contract;
    let scope = Scope::Stash(contract.name.clone());
    let reader = Reader { name: contract.creator.clone(), admin: false };
    match &job.work {
        Work::Hooked { kind: Kind::Claim, agent, stream_id, seq, data } => {
            let subtask = data["subtask_id"].as_str().unwrap_or_default().to_string();
            let mut request = data.clone();
            if let Some(m) = request.as_object_mut() {
                m.insert("stream_id".into(), json!(stream_id));
            }
            let input = Input::Claim(ClaimInput {
                claimant: agent.clone(),
                target: TargetInput::Subtask { contract: contract.name.clone(), subtask_id: subtask.clone() },
                request,
            });
            let req = Request { scope, agent: agent.clone(), reader, input, default_config: json!({}) };
            let decision = decider.decide_blocking(&req, &held.view())?;
            let verdict = decision.verdict();
            let mut reason = verdict.reason().to_string();
            let applied = verdict == Verdict::Approve && {
                match assign(Arc::make_mut(&mut held.doc), &subtask, agent) {
                    Ok(()) => {
                        held.fresh = false;
                        true
                    }
                    Err(why) => {
                        reason = why;
                        false
                    }
                }
            };
            planned.changed |= applied;
            let entry = json!({"subtask_id": subtask, "agent_name": agent, "verdict": verdict.name(), "reason": reason,
                "escalated": matches!(verdict, Verdict::Escalate(_)), "applied": applied, "claim_seq": seq,
                "decision_id": decision.decision_id()});
            planned.entries.push((stream_id.clone(), "claim-decision".into(), entry.clone()));
            planned.decisions.extend(decision.records);
            Ok(Some(entry))
        }
        Work::Hooked { kind: Kind::Deliverable, agent, stream_id, seq, data } => {
            let asks = held.doc.get("handoff").and_then(Value::as_str) == Some("required")
                || !decider.registry().for_hook(Hook::Handoff, &scope).is_empty();
            if !asks {
                return Ok(None);
            }
            let subject = match data["subtask_id"].as_str() {
                Some(s) => format!("subtask {s} of {}", contract.name),
                None => format!("deliverable for {}", contract.name),
            };
            let (handoff, text) = match data.get("handoff") {
                Some(Value::String(text)) => (None, Some(text.clone())),
                Some(h @ Value::Object(_)) => (Some(h.clone()), None),
                // The protocol's text form may sit at the end of the message.
                _ => (
                    None,
                    ["deliverable", "message", "summary"]
                        .iter()
                        .filter_map(|k| data.get(*k).and_then(Value::as_str))
                        .find(|t| t.contains("HANDOFF:"))
                        .map(str::to_string),
                ),
            };
            let input = Input::Handoff(HandoffInput {
                agent: agent.clone(),
                task: None,
                subject,
                metadata: data.clone(),
                handoff,
                text,
            });
            let req = Request { scope, agent: agent.clone(), reader, input, default_config: json!({}) };
            let decision = decider.decide_blocking(&req, &held.view())?;
            let violations = decision.violations();
            let entry = json!({"subtask_id": data.get("subtask_id"), "agent_name": agent, "deliverable_seq": seq,
                "accepted": violations.is_empty(), "violations": violations, "decision_id": decision.decision_id()});
            if !violations.is_empty() {
                planned.entries.push((stream_id.clone(), "handoff-rejected".into(), entry.clone()));
            }
            planned.decisions.extend(decision.records);
            Ok(Some(entry))
        }
        Work::Hooked { kind: Kind::Signal, agent, stream_id, seq, data } => {
            let signal_id = signal::new_signal_id();
            let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let halt = text("level") == "HALT";
            let category = text("category").trim().to_uppercase();
            let input = SignalInput {
                id: signal_id.clone(),
                level: if halt { LevelInput::Halt } else { LevelInput::Alert },
                category: category.clone(),
                reporter: agent.clone(),
                scope: ScopeInput::Contract(contract.name.clone()),
                task_id: None,
                issue: text("issue"),
                evidence: text("evidence"),
                impact: text("impact"),
                recommended_action: text("recommended_action"),
                partial_handoff: data.get("partial_handoff").cloned(),
            };
            let mut body = serde_json::to_value(&input).unwrap_or_default();
            let req =
                Request { scope, agent: agent.clone(), reader, input: Input::Signal(input), default_config: json!({}) };
            let decision = decider.decide_blocking(&req, &held.view())?;
            let mut effects = ContractEffects { contract, signal_id: &signal_id, current: stream_id, streams, planned };
            let carried = signal::carry_out(decision.actions(), &mut effects);
            body["stream_id"] = json!(stream_id);
            body["entry_seq"] = json!(seq);
            body["creator"] = json!(contract.creator);
            let level = if halt { "HALT" } else { "ALERT" };
            let row = SignalRow {
                signal_id: signal_id.clone(),
                scope_kind: signal::ScopeKind::Contract,
                scope: contract.key(),
                level: if halt { signal::Level::Halt } else { signal::Level::Alert },
                category: category.clone(),
                reporter: agent.clone(),
                task_id: None,
                body: body.to_string(),
                signal_task_id: None,
                actions: Value::Array(carried.reports.clone()).to_string(),
                halts: carried.halts,
                acknowledged_by: None,
                acknowledged_at: None,
                note: None,
                created_at: now,
            };
            open.signals.insert(signal_id.clone());
            if carried.halts {
                open.halts.insert(signal_id.clone());
            }
            let entry = json!({"signal_id": signal_id, "level": level, "category": category, "reporter": agent,
                "halted": carried.halts, "actions": carried.reports, "signal_seq": seq,
                "decision_id": decision.decision_id()});
            planned.entries.push((stream_id.clone(), "algedonic-decision".into(), entry.clone()));
            planned.signals.push(row);
            planned.decisions.extend(decision.records);
            tracing::warn!(contract = %contract.name, signal = %signal_id, level, category = %category,
                reporter = %agent, "algedonic signal raised on a contract");
            Ok(Some(entry))
        }
        Work::Acknowledge { signal, by, note } => {
            if !open.signals.contains(&signal.signal_id) {
                return Err(Error::conflict(
                    "already_acknowledged",
                    format!("signal {} was already acknowledged", signal.signal_id),
                ));
            }
            let mut row = (**signal).clone();
            row.acknowledged_by = Some(by.clone());
            row.acknowledged_at = Some(now);
            row.note = Some(note.clone());
            open.signals.remove(&row.signal_id);
            open.halts.remove(&row.signal_id);
            let lifted = row.halts && open.halts.is_empty();
            let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
            if let Some(stream_id) = body["stream_id"].as_str() {
                let entry = json!({"event": "acknowledged", "signal_id": row.signal_id, "by": by, "note": note,
                    "halt_lifted": lifted});
                planned.entries.push((stream_id.to_string(), "algedonic-decision".into(), entry));
            }
            tracing::info!(contract = %row.scope, signal = %row.signal_id, by = %by, "contract signal acknowledged");
            planned.signals.push(row);
            Ok(None)
        }
    }
}

/// Marks `subtask` claimed by `agent` if it is still open; otherwise why not.
fn assign(doc: &mut Value, subtask: &str, agent: &str) -> std::result::Result<(), String> {
    let Some(sub) = doc
        .get_mut("subtasks")
        .and_then(Value::as_array_mut)
        .and_then(|subs| subs.iter_mut().find(|s| s["id"] == subtask))
        .and_then(Value::as_object_mut)
    else {
        return Err(format!("approved, but the contract has no subtask {subtask}"));
    };
    let status = sub.get("status").and_then(Value::as_str).unwrap_or("open").to_string();
    if status != "open" {
        return Err(match sub.get("assigned_agent").and_then(Value::as_str) {
            Some(h) => format!("approved, but subtask {subtask} was {status} by {h} first"),
            None => format!("approved, but subtask {subtask} is already {status}"),
        });
    }
    sub.insert("status".into(), Value::from("claimed"));
    sub.insert("assigned_agent".into(), Value::from(agent));
    Ok(())
}

/// Escalation actions on a contract: it has streams and a creator, no task
/// list and no inboxes.
struct ContractEffects<'a> {
    contract: &'a Contract,
    signal_id: &'a str,
    /// The stream the signal came on.
    current: &'a str,
    /// The contract's streams: (id, name).
    streams: &'a [(String, String)],
    planned: &'a mut Planned,
}

impl Effects for ContractEffects<'_> {
    fn create_task(&mut self, _: &str, _: &str, _: &str, _: &Value) -> std::result::Result<i64, String> {
        Err("a contract has no task list".into())
    }

    fn block_task(&mut self, _: &Handle, _: &Handle) -> std::result::Result<(), String> {
        Err("a contract has no task list".into())
    }

    /// A contract has no inboxes: a notification becomes an `escalation`
    /// entry beside the signal, for the creator.
    fn notify(&mut self, to: &str, summary: &str, message: &str) -> std::result::Result<(), String> {
        let entry = json!({"signal_id": self.signal_id, "to": to, "summary": summary, "message": message});
        self.planned.entries.push((self.current.to_string(), "escalation".into(), entry));
        Ok(())
    }

    fn append(&mut self, stream: &str, label: Option<&str>, data: &Value) -> std::result::Result<(), String> {
        let target = if stream == self.current {
            Some(self.current.to_string())
        } else {
            self.streams.iter().find(|(id, name)| id == stream || name == stream).map(|(id, _)| id.clone())
        };
        let Some(id) = target else {
            return Err(format!("{stream:?} is not one of contract {}'s streams", self.contract.name));
        };
        self.planned.entries.push((id, label.unwrap_or("escalation").to_string(), data.clone()));
        Ok(())
    }
}
