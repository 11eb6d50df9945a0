//! What a decision may read, served from memory.
//!
//! A policy's imports never wait on storage while the guest runs. The
//! caller hands the decider a [`View`] over the snapshot that the
//! decision's effect will commit against (a team as `transact` holds it, a
//! contract at the version its claim is written against). A read that the
//! view does not cover is a *miss*: the guest sees absence, the run is
//! thrown away, the decider fetches every missed read through a [`Source`]
//! (outside the sandbox, off the policy's deadline) and runs the decision
//! again in a fresh instance. Decisions are pure functions of their input
//! and their reads, so the rerun sees exactly what a live read would have,
//! and the deadline measures only the policy's own work.
//!
//! The engine knows no resource: each resource implements [`View`] over its
//! own snapshot, and the composition root implements [`Source`].

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use super::bindings::coord::types::{StashDocument, StreamEntry, Task, TaskStatus};
use crate::error::Result;

/// Rounds of fetching before a decision that keeps reading new things fails.
pub const MAX_ROUNDS: usize = 5;
/// Distinct missed reads one round may ask for.
pub const MAX_MISSES: usize = 256;
/// Entries one stream read returns at most.
pub const MAX_PAGE: u32 = 1000;

/// A task's status as a read filter (the WIT enum is not hashable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    InProgress,
    Completed,
}

impl Status {
    pub fn of(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Pending => Status::Pending,
            TaskStatus::InProgress => Status::InProgress,
            TaskStatus::Completed => Status::Completed,
        }
    }
}

/// One import call, as a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Read {
    Stash {
        name: String,
        persistent: bool,
    },
    Stream {
        stream_id: String,
        label: Option<String>,
        after: u64,
        limit: u32,
    },
    Latest {
        stream_id: String,
        label: Option<String>,
    },
    Task {
        team: String,
        id: u64,
    },
    Tasks {
        team: String,
    },
    /// The team's tasks owned by `owner`, optionally of one status.
    OwnedBy {
        team: String,
        owner: String,
        status: Option<Status>,
    },
    /// One subtask of a contract.
    Subtask {
        contract: String,
        id: String,
    },
    /// A contract's subtasks assigned to `agent`.
    AssignedTo {
        contract: String,
        agent: String,
    },
    /// A contract's document without its subtasks.
    ContractHeader {
        contract: String,
    },
}

/// What a read returns.
#[derive(Debug, Clone)]
pub enum Answer {
    Stash(Option<StashDocument>),
    Entries(Vec<StreamEntry>),
    Entry(Option<StreamEntry>),
    Task(Option<Task>),
    Tasks(Vec<Task>),
    /// A JSON document, as text.
    Json(Option<String>),
    /// JSON documents, as text.
    JsonList(Vec<String>),
}

impl Read {
    /// What the guest sees for a read nobody could answer: absence.
    pub fn absent(&self) -> Answer {
        match self {
            Read::Stash { .. } => Answer::Stash(None),
            Read::Stream { .. } => Answer::Entries(Vec::new()),
            Read::Latest { .. } => Answer::Entry(None),
            Read::Task { .. } => Answer::Task(None),
            Read::Tasks { .. } | Read::OwnedBy { .. } => Answer::Tasks(Vec::new()),
            Read::Subtask { .. } | Read::ContractHeader { .. } => Answer::Json(None),
            Read::AssignedTo { .. } => Answer::JsonList(Vec::new()),
        }
    }

    /// The contract a contract read names.
    pub fn contract(&self) -> Option<&str> {
        match self {
            Read::Subtask { contract, .. } | Read::AssignedTo { contract, .. } | Read::ContractHeader { contract } => {
                Some(contract)
            }
            _ => None,
        }
    }
}

/// A contract read answered from the contract's document, for every view
/// that holds one (the contract's writer, storage, case files).
pub fn contract_answer(doc: &serde_json::Value, read: &Read) -> Answer {
    use serde_json::Value;
    let subtasks = doc.get("subtasks").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    match read {
        Read::Subtask { id, .. } => Answer::Json(
            subtasks.iter().find(|s| s.get("id").and_then(Value::as_str) == Some(id)).map(Value::to_string),
        ),
        Read::AssignedTo { agent, .. } => Answer::JsonList(
            subtasks
                .iter()
                .filter(|s| s.get("assigned_agent").and_then(Value::as_str) == Some(agent))
                .map(Value::to_string)
                .collect(),
        ),
        Read::ContractHeader { .. } => Answer::Json(doc.as_object().map(|m| {
            let header: serde_json::Map<String, Value> =
                m.iter().filter(|(k, _)| *k != "subtasks").map(|(k, v)| (k.clone(), v.clone())).collect();
            Value::Object(header).to_string()
        })),
        _ => read.absent(),
    }
}

/// A snapshot a decision reads from.
pub trait View: Send + Sync {
    /// The answer, or `None` when this view does not cover the read (the
    /// decider then fetches it). A view must answer from memory.
    fn answer(&self, read: &Read) -> Option<Answer>;
}

/// Covers nothing: every read is fetched (dry runs).
pub struct Empty;

impl View for Empty {
    fn answer(&self, _: &Read) -> Option<Answer> {
        None
    }
}

/// Who the reads are made as: the acting agent, or a contract's creator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub name: String,
    pub admin: bool,
}

/// Fetches missed reads from storage, as `reader` could read them over HTTP.
pub trait Source: Send + Sync {
    /// One answer per read, in order. A read `reader` may not make answers
    /// as absence, as over HTTP.
    fn fetch<'a>(&'a self, reader: &'a Reader, reads: &'a [Read]) -> BoxFuture<'a, Result<Vec<Answer>>>;
}

/// A write an agent's call asks for. Nothing is written while the guest
/// runs: the host commits a call's writes together, with the advance of
/// the agent's cursor, once the call returns `ok`.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// An entry, which will have this `seq`.
    Append { stream_id: String, label: Option<String>, data: String, seq: u64 },
}

/// Bounds on what one agent call may write.
pub const MAX_WRITES: usize = 64;
pub const MAX_WRITE_BYTES: usize = 1 << 20;

/// What one run of a decision reads through: the caller's view, then what
/// earlier rounds fetched; anything else is noted as a miss. An agent's run
/// also collects its writes here.
pub struct Reads {
    base: Arc<dyn View>,
    fetched: Arc<HashMap<Read, Answer>>,
    pub misses: Vec<Read>,
    /// None where writing is not possible (a decision).
    pub writes: Option<Vec<Planned>>,
    written_bytes: usize,
}

impl Reads {
    pub fn new(base: Arc<dyn View>, fetched: Arc<HashMap<Read, Answer>>) -> Self {
        Self { base, fetched, misses: Vec::new(), writes: None, written_bytes: 0 }
    }

    /// For an agent's call: reads as [`Self::new`], and writes collected.
    pub fn writable(base: Arc<dyn View>, fetched: Arc<HashMap<Read, Answer>>) -> Self {
        Self { writes: Some(Vec::new()), ..Self::new(base, fetched) }
    }

    /// Plans an append: the seq it will have is the stream's last one now,
    /// plus this call's earlier appends to it, plus one.
    pub(crate) fn append(
        &mut self,
        stream_id: String,
        label: Option<String>,
        data: String,
    ) -> std::result::Result<u64, String> {
        self.room(data.len())?;
        let last = match self.get(Read::Latest { stream_id: stream_id.clone(), label: None }) {
            Answer::Entry(e) => e.map_or(0, |e| e.seq),
            _ => 0,
        };
        let earlier =
            self.planned().filter(|p| matches!(p, Planned::Append { stream_id: s, .. } if *s == stream_id)).count();
        let seq = last + earlier as u64 + 1;
        if let Some(w) = &mut self.writes {
            w.push(Planned::Append { stream_id, label, data, seq });
        }
        Ok(seq)
    }

    fn planned(&self) -> impl Iterator<Item = &Planned> {
        self.writes.iter().flatten()
    }

    /// Refuses a write past this call's bounds, or where writing is not possible.
    fn room(&mut self, bytes: usize) -> std::result::Result<(), String> {
        let Some(w) = &self.writes else { return Err("writing is not possible in a decision".into()) };
        if w.len() >= MAX_WRITES {
            return Err(format!("one call may make at most {MAX_WRITES} writes"));
        }
        if self.written_bytes + bytes > MAX_WRITE_BYTES {
            return Err(format!("one call may write at most {MAX_WRITE_BYTES} bytes"));
        }
        self.written_bytes += bytes;
        Ok(())
    }

    /// Nothing at all, for an instance waiting in the warm pool.
    pub(crate) fn none() -> Self {
        Self::new(Arc::new(Empty), Arc::default())
    }

    pub(crate) fn get(&mut self, read: Read) -> Answer {
        if let Some(a) = self.base.answer(&read).or_else(|| self.fetched.get(&read).cloned()) {
            return a;
        }
        let absent = read.absent();
        if self.misses.len() < MAX_MISSES && !self.misses.contains(&read) {
            self.misses.push(read);
        }
        absent
    }
}
