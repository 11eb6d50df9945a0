//! State from a case file, for `cairn policy test`: stashes, stream entries
//! and tasks given inline. It answers every read, so policies are tested
//! offline against the same imports they meet in production.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::bindings::coord::types::{StashDocument, StreamEntry, Task, TaskStatus};
use super::view::{Answer, Read, Status, View};

/// Stashes, stream entries and tasks given inline in a case.
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

impl Fixture {
    fn stash_doc(&self, name: &str, persistent: bool) -> Option<StashDocument> {
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

    fn stream_page(&self, stream_id: &str, label: Option<&str>, after: u64, limit: u32) -> Vec<StreamEntry> {
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

    fn latest(&self, stream_id: &str, label: Option<&str>) -> Option<StreamEntry> {
        let entries = self.streams.get(stream_id)?;
        entries
            .iter()
            .enumerate()
            .rev()
            .find(|(_, e)| label.is_none_or(|l| e.label.as_deref() == Some(l)))
            .map(|(i, e)| Self::entry(i + 1, e))
    }

    fn one_task(&self, team: &str, id: u64) -> Option<Task> {
        self.tasks.get(team)?.iter().find(|t| t.id == id).map(Self::to_task)
    }

    fn all_tasks(&self, team: &str) -> Vec<Task> {
        self.tasks.get(team).map(|ts| ts.iter().map(Self::to_task).collect()).unwrap_or_default()
    }
}

impl View for Fixture {
    fn answer(&self, read: &Read) -> Option<Answer> {
        Some(match read {
            Read::Stash { name, persistent } => Answer::Stash(self.stash_doc(name, *persistent)),
            Read::Stream { stream_id, label, after, limit } => {
                Answer::Entries(self.stream_page(stream_id, label.as_deref(), *after, *limit))
            }
            Read::Latest { stream_id, label } => Answer::Entry(self.latest(stream_id, label.as_deref())),
            Read::LastSeq { stream_id } => Answer::Seq(self.latest(stream_id, None).map_or(0, |e| e.seq)),
            Read::Task { team, id } => Answer::Task(self.one_task(team, *id)),
            Read::Tasks { team } => Answer::Tasks(self.all_tasks(team)),
            Read::OwnedBy { team, owner, status } => Answer::Tasks(
                self.all_tasks(team)
                    .into_iter()
                    .filter(|t| t.owner.as_deref() == Some(owner.as_str()))
                    .filter(|t| status.is_none_or(|s| Status::of(t.status) == s))
                    .collect(),
            ),
            Read::Subtask { contract, .. } | Read::AssignedTo { contract, .. } | Read::ContractHeader { contract } => {
                let doc = self.stashes.iter().find(|s| s.persistent && s.name == *contract).map(|s| &s.body);
                match doc {
                    Some(doc) => super::view::contract_answer(doc, read),
                    None => read.absent(),
                }
            }
        })
    }
}
