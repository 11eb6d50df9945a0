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
    /// The seq of a stream's last entry (0 when it has none, or is gone):
    /// what an agent's append is planned after. Not a guest import.
    LastSeq {
        stream_id: String,
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
    Seq(u64),
}

impl Read {
    /// What the guest sees for a read nobody could answer: absence.
    pub fn absent(&self) -> Answer {
        match self {
            Read::Stash { .. } => Answer::Stash(None),
            Read::Stream { .. } => Answer::Entries(Vec::new()),
            Read::Latest { .. } => Answer::Entry(None),
            Read::LastSeq { .. } => Answer::Seq(0),
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

/// What an agent's call starts from beyond storage: the last seq of each
/// stream its runner wrote to, and the appends of earlier calls in the same
/// batch, planned but not yet committed (the call reads them as written).
/// A seq gone stale (another writer appended since) only makes the commit
/// find its seq taken, and the call run again on fresh reads.
#[derive(Debug, Default, Clone)]
pub struct Before {
    pub seqs: HashMap<String, u64>,
    pub appends: Vec<Planned>,
}

impl Before {
    /// Takes a committed or batched call's appends in.
    pub fn add(&mut self, appends: impl IntoIterator<Item = Planned>) {
        for a in appends {
            if let Planned::Append { stream_id, seq, .. } = &a {
                self.seqs.insert(stream_id.clone(), *seq);
                self.appends.push(a);
            }
        }
    }
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
    /// A stash written whole, to have `version`, over the version the call
    /// read (`read_version`, 0 when there was none). Two puts of one stash
    /// in a call are one write of the last body.
    Put {
        name: String,
        persistent: bool,
        body: Vec<u8>,
        content_type: String,
        version: u64,
        read_version: u64,
        /// As the call saw it: its owner and schema (the writer, none, for
        /// a new stash), for reading it back.
        owner: String,
        schema_id: Option<String>,
    },
}

/// Bounds on what one agent call may write.
pub const MAX_WRITES: usize = 64;
/// Bytes one call may write by default, and at most; a binding sets its
/// own (`bytes_per_call`) within these.
pub const DEFAULT_WRITE_BYTES: usize = 1 << 20;
pub const MAX_WRITE_BYTES: usize = 16 << 20;

fn too_much(max: usize) -> String {
    format!("one call may write at most {max} bytes (the binding's bytes_per_call); write less, or raise it")
}

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
    /// Who writes, for reading its own writes back; and how much it may.
    writer: String,
    max_bytes: usize,
    before: Arc<Before>,
}

impl Reads {
    pub fn new(base: Arc<dyn View>, fetched: Arc<HashMap<Read, Answer>>) -> Self {
        Self {
            base,
            fetched,
            misses: Vec::new(),
            writes: None,
            written_bytes: 0,
            writer: String::new(),
            max_bytes: 0,
            before: Arc::default(),
        }
    }

    /// For an agent's call as `writer`: reads as [`Self::new`] and then
    /// what came `before` it and its own writes, which are collected, up to
    /// `max_bytes` in all.
    pub fn writable(
        base: Arc<dyn View>,
        fetched: Arc<HashMap<Read, Answer>>,
        writer: &str,
        max_bytes: usize,
        before: Arc<Before>,
    ) -> Self {
        Self { writes: Some(Vec::new()), writer: writer.to_string(), max_bytes, before, ..Self::new(base, fetched) }
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
        let last = match self.stored(Read::LastSeq { stream_id: stream_id.clone() }) {
            Answer::Seq(seq) => seq,
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

    /// Plans a stash write: the version it will have is one past what the
    /// call read of it (or of its own earlier put).
    pub(crate) fn put(
        &mut self,
        name: String,
        persistent: bool,
        body: Vec<u8>,
        content_type: String,
    ) -> std::result::Result<u64, String> {
        let earlier = self
            .planned()
            .position(|p| matches!(p, Planned::Put { name: n, persistent: q, .. } if *n == name && *q == persistent));
        if let Some(Some(Planned::Put { body: b, content_type: c, version, .. })) =
            earlier.and_then(|i| self.writes.as_mut().map(|w| w.get_mut(i)))
        {
            // The new body replaces the earlier one, in the bytes counted too.
            let total = self.written_bytes - b.len() + body.len();
            if total > self.max_bytes {
                return Err(too_much(self.max_bytes));
            }
            self.written_bytes = total;
            (*b, *c) = (body, content_type);
            *version += 1;
            return Ok(*version);
        }
        self.room(body.len())?;
        let read = match self.stored(Read::Stash { name: name.clone(), persistent }) {
            Answer::Stash(s) => s,
            _ => None,
        };
        let (read_version, owner, schema_id) = match read {
            Some(s) => (s.version, s.owner, s.schema_id),
            None => (0, self.writer.clone(), None),
        };
        let version = read_version + 1;
        if let Some(w) = &mut self.writes {
            w.push(Planned::Put { name, persistent, body, content_type, version, read_version, owner, schema_id });
        }
        Ok(version)
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
        if self.written_bytes + bytes > self.max_bytes {
            return Err(too_much(self.max_bytes));
        }
        self.written_bytes += bytes;
        Ok(())
    }

    /// Nothing at all, for an instance waiting in the warm pool.
    pub(crate) fn none() -> Self {
        Self::new(Arc::new(Empty), Arc::default())
    }

    /// What the guest reads: what is stored, and then what this call has
    /// written, as it will be once committed.
    pub(crate) fn get(&mut self, read: Read) -> Answer {
        if self.planned().next().is_none() && self.before.appends.is_empty() {
            return self.stored(read);
        }
        // What the call wrote answers without a look at what is stored.
        let own = match &read {
            Read::Latest { stream_id, label } => {
                self.own_entries(stream_id, label.as_deref()).last().map(|e| Answer::Entry(Some(e)))
            }
            // One put per stash: a second in the call replaced the first.
            Read::Stash { name: wanted, persistent: store } => self.planned().find_map(|p| match p {
                Planned::Put { name, persistent, body, content_type, version, owner, schema_id, .. }
                    if name == wanted && persistent == store =>
                {
                    Some(Answer::Stash(Some(StashDocument {
                        name: name.clone(),
                        owner: owner.clone(),
                        persistent: *persistent,
                        version: *version,
                        content_type: content_type.clone(),
                        body: body.clone(),
                        schema_id: schema_id.clone(),
                    })))
                }
                _ => None,
            }),
            _ => None,
        };
        if let Some(own) = own {
            return own;
        }
        match (&read, self.stored(read.clone())) {
            (Read::Stream { stream_id, label, after, limit }, Answer::Entries(mut entries)) => {
                let mine = self.own_entries(stream_id, label.as_deref()).filter(|e| e.seq > *after);
                entries.extend(mine);
                entries.truncate(*limit as usize);
                Answer::Entries(entries)
            }
            (_, stored) => stored,
        }
    }

    /// The batch's and this call's appends to `stream_id` (with `label`),
    /// as entries.
    fn own_entries<'a>(&'a self, stream_id: &'a str, label: Option<&'a str>) -> impl Iterator<Item = StreamEntry> + 'a {
        let now = crate::clock::rfc3339(crate::clock::now_ms());
        self.before.appends.iter().chain(self.planned()).filter_map(move |p| match p {
            Planned::Append { stream_id: s, label: l, data, seq }
                if s == stream_id && (label.is_none() || l.as_deref() == label) =>
            {
                Some(StreamEntry {
                    seq: *seq,
                    label: l.clone(),
                    data: data.clone(),
                    agent: self.writer.clone(),
                    created_at: now.clone(),
                })
            }
            _ => None,
        })
    }

    /// What is stored: the view, then what earlier rounds fetched; a miss
    /// is noted and answers as absence.
    fn stored(&mut self, read: Read) -> Answer {
        if let Read::LastSeq { stream_id } = &read
            && let Some(seq) = self.before.seqs.get(stream_id)
        {
            return Answer::Seq(*seq);
        }
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
