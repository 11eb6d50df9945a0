//! What a policy can read, and how its log lines are kept.
//!
//! Host imports read through [`State`]. The server implements it over its
//! database, as the acting agent; `cairn policy test` implements it over
//! fixtures from a case file ([`Fixture`]), so policies are tested offline
//! against the same imports they meet in production.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bindings::coord::{
    self,
    types::{StashDocument, StreamEntry, Task, TaskStatus},
};
use super::limits;
use super::runtime::Sandbox;

pub trait State: Send + Sync {
    fn stash(&self, name: &str, persistent: bool) -> Option<StashDocument>;
    fn stream_read(&self, stream_id: &str, label: Option<&str>, after: u64, limit: u32) -> Vec<StreamEntry>;
    fn stream_latest(&self, stream_id: &str, label: Option<&str>) -> Option<StreamEntry>;
    fn task(&self, team: &str, id: u64) -> Option<Task>;
    fn tasks(&self, team: &str) -> Vec<Task>;
    /// Writes are offered only to the `agent` world; the default refuses.
    fn stash_put(&self, name: &str, _persistent: bool, _body: Vec<u8>, _content_type: &str) -> Result<u64, String> {
        Err(format!("writing stash {name:?} is not possible here"))
    }
    fn stream_append(&self, stream_id: &str, _label: Option<&str>, _data: &str) -> Result<u64, String> {
        Err(format!("appending to stream {stream_id:?} is not possible here"))
    }
}

/// A guest's log line, as the decision log keeps it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

impl coord::types::Host for Sandbox {}

impl coord::stash_read::Host for Sandbox {
    fn get(&mut self, name: String, persistent: bool) -> Option<StashDocument> {
        self.state.stash(&name, persistent)
    }
}

impl coord::stash_write::Host for Sandbox {
    fn put(&mut self, name: String, persistent: bool, body: Vec<u8>, content_type: String) -> Result<u64, String> {
        self.state.stash_put(&name, persistent, body, &content_type)
    }
}

impl coord::stream_read::Host for Sandbox {
    fn read(&mut self, stream_id: String, label: Option<String>, after: u64, limit: u32) -> Vec<StreamEntry> {
        self.state.stream_read(&stream_id, label.as_deref(), after, limit.min(1000))
    }

    fn latest(&mut self, stream_id: String, label: Option<String>) -> Option<StreamEntry> {
        self.state.stream_latest(&stream_id, label.as_deref())
    }
}

impl coord::stream_write::Host for Sandbox {
    fn append(&mut self, stream_id: String, label: Option<String>, data: String) -> Result<u64, String> {
        self.state.stream_append(&stream_id, label.as_deref(), &data)
    }
}

impl coord::task_read::Host for Sandbox {
    fn get(&mut self, team: String, id: u64) -> Option<Task> {
        self.state.task(&team, id)
    }

    fn team_tasks(&mut self, team: String) -> Vec<Task> {
        self.state.tasks(&team)
    }
}

impl coord::log::Host for Sandbox {
    fn log(&mut self, level: coord::log::Level, mut message: String) {
        use coord::log::Level;
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        if message.len() > limits::MAX_LOG_LINE_BYTES {
            let mut cut = limits::MAX_LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        tracing::info!(target: "cairn::policy::guest", policy = %self.policy, level, "{message}");
        if self.logs.len() < limits::MAX_LOG_LINES {
            self.logs.push(LogLine { level, message });
        } else {
            self.logs_dropped += 1;
        }
    }
}

/// State from a case file: stashes, stream entries and tasks given inline.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fixture {
    pub stashes: Vec<FixtureStash>,
    /// Entries by stream id, oldest first; seqs are assigned 1, 2, 3...
    pub streams: HashMap<String, Vec<FixtureEntry>>,
    /// Tasks by team name.
    pub tasks: HashMap<String, Vec<FixtureTask>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureStash {
    pub name: String,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default = "fixture_owner")]
    pub owner: String,
    /// A string is stored as text; anything else as its JSON.
    pub body: Value,
    #[serde(default)]
    pub schema_id: Option<String>,
}

fn fixture_owner() -> String {
    "fixture".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEntry {
    #[serde(default)]
    pub label: Option<String>,
    pub data: Value,
    #[serde(default = "fixture_owner")]
    pub agent: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureTask {
    pub id: u64,
    pub subject: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub status: FixtureStatus,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub blocked_by: Vec<u64>,
    #[serde(default)]
    pub blocks: Vec<u64>,
    #[serde(default)]
    pub metadata: Value,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixtureStatus {
    #[default]
    Pending,
    InProgress,
    Completed,
}

impl Fixture {
    fn entry(seq: usize, e: &FixtureEntry) -> StreamEntry {
        StreamEntry {
            seq: seq as u64,
            label: e.label.clone(),
            data: e.data.to_string(),
            agent: e.agent.clone(),
            created_at: crate::clock::rfc3339(0),
        }
    }

    fn to_task(t: &FixtureTask) -> Task {
        Task {
            id: t.id,
            subject: t.subject.clone(),
            description: t.description.clone(),
            active_form: String::new(),
            status: match t.status {
                FixtureStatus::Pending => TaskStatus::Pending,
                FixtureStatus::InProgress => TaskStatus::InProgress,
                FixtureStatus::Completed => TaskStatus::Completed,
            },
            owner: t.owner.clone(),
            blocked_by: t.blocked_by.clone(),
            blocks: t.blocks.clone(),
            metadata: if t.metadata.is_null() { "{}".into() } else { t.metadata.to_string() },
        }
    }
}

impl State for Fixture {
    fn stash(&self, name: &str, persistent: bool) -> Option<StashDocument> {
        let s = self.stashes.iter().find(|s| s.name == name && s.persistent == persistent)?;
        let (body, content_type) = match &s.body {
            Value::String(text) => (text.as_bytes().to_vec(), "text/plain"),
            other => (other.to_string().into_bytes(), "application/json"),
        };
        Some(StashDocument {
            name: s.name.clone(),
            owner: s.owner.clone(),
            persistent: s.persistent,
            version: 1,
            content_type: content_type.into(),
            body,
            schema_id: s.schema_id.clone(),
        })
    }

    fn stream_read(&self, stream_id: &str, label: Option<&str>, after: u64, limit: u32) -> Vec<StreamEntry> {
        let Some(entries) = self.streams.get(stream_id) else { return Vec::new() };
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i + 1, e))
            .filter(|(seq, e)| *seq as u64 > after && label.is_none_or(|l| e.label.as_deref() == Some(l)))
            .take(limit as usize)
            .map(|(seq, e)| Self::entry(seq, e))
            .collect()
    }

    fn stream_latest(&self, stream_id: &str, label: Option<&str>) -> Option<StreamEntry> {
        let entries = self.streams.get(stream_id)?;
        entries
            .iter()
            .enumerate()
            .rev()
            .find(|(_, e)| label.is_none_or(|l| e.label.as_deref() == Some(l)))
            .map(|(i, e)| Self::entry(i + 1, e))
    }

    fn task(&self, team: &str, id: u64) -> Option<Task> {
        self.tasks.get(team)?.iter().find(|t| t.id == id).map(Self::to_task)
    }

    fn tasks(&self, team: &str) -> Vec<Task> {
        self.tasks.get(team).map(|ts| ts.iter().map(Self::to_task).collect()).unwrap_or_default()
    }
}
