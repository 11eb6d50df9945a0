//! Contract hooks: the stream side of the contracts pattern. On a stream
//! linked to a contract stash (`linked_stash`, or named
//! `<contract>-discussion` / `<contract>-execution`), three labels call the
//! policy hooks, scoped to the contract:
//!
//! - `claim`: the claim policy decides. An approval marks the subtask
//!   `claimed` with `assigned_agent`, only while it is still `open`, so
//!   among racing claims the first approved one wins. A `claim-decision`
//!   entry follows either way.
//! - `deliverable`: where the contract asks for HANDOFFs (its document has
//!   `"handoff": "required"`, or a handoff policy is bound to it), the
//!   handoff policy checks it, and a rejection appends `handoff-rejected`.
//!   Otherwise the host adds nothing after a deliverable.
//! - `algedonic`: the escalation policy decides and the host carries the
//!   actions out; `algedonic-decision` records them. A HALT refuses new
//!   `claim` entries on the contract's streams with 423 until the creator
//!   (or an admin) acknowledges it.
//!
//! Every decision is made by the contract's writer ([`writer`]), one per
//! contract, against the contract as it stands, and commits in one
//! transaction with its effect: the contract's new version, the entries
//! that follow, the signal, and the decision records.

mod writer;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::agent::Caller;
use crate::db::Db;
use crate::error::{Error, Result, Violation};
use crate::serial::Serial;
use crate::signal::{self, ScopeKind, SignalRow};
use crate::stream::{AfterAppend, AppendHook, Hooked};

pub use writer::Writer;

/// Labels that call a hook.
pub const HOOKED: [&str; 3] = ["claim", "deliverable", "algedonic"];

/// Labels of the host's own entries, which agents may not forge.
pub const WRITTEN_BY_HOST: [&str; 4] = ["claim-decision", "handoff-rejected", "algedonic-decision", "escalation"];

/// The contract a stream belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub name: String,
    pub creator: String,
}

impl Contract {
    /// What tells a contract from its namesakes: its creator and name.
    /// It keys the contract's writer and its signals, so two agents'
    /// private contracts of one name never meet.
    pub fn key(&self) -> String {
        format!("{}/{}", self.creator, self.name)
    }
}

/// The contract behind a stream, if it is linked to one that exists.
pub async fn of_stream(db: &Db, owner: &str, name: &str, linked: Option<&str>) -> Result<Option<Contract>> {
    let contract = match linked {
        Some(l) => l.to_string(),
        None => match name.strip_suffix("-discussion").or_else(|| name.strip_suffix("-execution")) {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => return Ok(None),
        },
    };
    Ok(crate::stash::owner_of(db, owner, &contract).await?.map(|creator| Contract { name: contract, creator }))
}

fn bad(field: &str, message: String) -> Error {
    Error::validation(message.clone(), vec![Violation { path: format!("/data/{field}"), message }])
}

/// What a hooked entry asks of the contract's writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Claim,
    Deliverable,
    Signal,
}

impl Kind {
    fn of(label: &str) -> Option<Self> {
        match label {
            "claim" => Some(Kind::Claim),
            "deliverable" => Some(Kind::Deliverable),
            "algedonic" => Some(Kind::Signal),
            _ => None,
        }
    }
}

/// The hooks on contract streams, plugged into stream appends.
pub struct Hooks {
    db: Db,
    writer: Arc<Serial<Writer>>,
}

impl Hooks {
    pub fn new(db: Db, writer: Writer) -> Self {
        Self { db, writer: Arc::new(Serial::new(writer)) }
    }

    /// Checks a hooked entry before it is stored: its data has what the
    /// hook needs, and no claim lands while the contract is halted.
    async fn check(&self, caller: &Caller, contract: &Contract, kind: Kind, data: &Value) -> Result<()> {
        match kind {
            Kind::Claim => {
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
                let halts = signal::open_halts(&self.db, ScopeKind::Contract, &contract.key()).await?;
                if !halts.is_empty() {
                    return Err(Error::locked(format!(
                        "contract {} is halted by an algedonic HALT ({}); claims wait until {} acknowledges it",
                        contract.name,
                        halts.join(", "),
                        contract.creator
                    )));
                }
            }
            Kind::Signal => {
                if !matches!(data.get("level").and_then(Value::as_str), Some("HALT" | "ALERT")) {
                    return Err(bad("level", "an algedonic entry has data.level HALT or ALERT".into()));
                }
                if data.get("category").and_then(Value::as_str).is_none_or(|c| c.trim().is_empty()) {
                    return Err(bad(
                        "category",
                        "an algedonic entry has data.category, e.g. SECURITY or QUALITY".into(),
                    ));
                }
            }
            Kind::Deliverable => {}
        }
        Ok(())
    }

    /// Acknowledges a contract's signal: by its creator or an admin. Ends a
    /// HALT once no other stands, and says so on the signal's stream.
    pub async fn acknowledge(&self, caller: &Caller, signal: SignalRow, note: String) -> Result<()> {
        let body: Value = serde_json::from_str(&signal.body).unwrap_or(Value::Null);
        let creator = body["creator"].as_str().unwrap_or_default().to_string();
        let name = signal.scope.split_once('/').map_or(signal.scope.as_str(), |(_, name)| name).to_string();
        if !(caller.admin || caller.name == creator) {
            return Err(Error::forbidden(format!(
                "only contract {name}'s creator ({creator}) or an admin may acknowledge its signals"
            )));
        }
        let contract = Contract { name, creator };
        let (reply, rx) = oneshot::channel();
        let job = writer::Job {
            contract: contract.clone(),
            work: writer::Work::Acknowledge { signal: Box::new(signal), by: caller.name.clone(), note },
            reply,
        };
        self.writer.submit(&contract.key(), job).await?;
        rx.await.map_err(|_| Error::internal("the contract's writer dropped the acknowledgement; retry"))??;
        Ok(())
    }
}

impl AppendHook for Hooks {
    fn watches(&self, label: &str) -> bool {
        HOOKED.contains(&label) || WRITTEN_BY_HOST.contains(&label)
    }

    fn admit<'a>(
        &'a self,
        caller: &'a Caller,
        stream: &'a Hooked,
        label: &'a str,
        data: &'a Value,
    ) -> BoxFuture<'a, Result<Option<AfterAppend>>> {
        Box::pin(async move {
            let Some(contract) =
                of_stream(&self.db, &stream.owner, &stream.name, stream.linked_stash.as_deref()).await?
            else {
                return Ok(None);
            };
            if WRITTEN_BY_HOST.contains(&label) {
                return Err(Error::forbidden(format!(
                    "{label:?} entries on contract {}'s streams are written by the host alone",
                    contract.name
                )));
            }
            let Some(kind) = Kind::of(label) else { return Ok(None) };
            self.check(caller, &contract, kind, data).await?;
            let writer = self.writer.clone();
            let (agent, stream_id, data) = (caller.name.clone(), stream.stream_id.clone(), data.clone());
            let after: AfterAppend = Box::new(move |seq| {
                Box::pin(async move {
                    let (reply, rx) = oneshot::channel();
                    let work = writer::Work::Hooked { kind, agent, stream_id, seq, data };
                    writer.submit(&contract.key(), writer::Job { contract, work, reply }).await?;
                    rx.await.map_err(|_| Error::internal("the contract's writer dropped the entry"))?
                })
            });
            Ok(Some(after))
        })
    }
}
