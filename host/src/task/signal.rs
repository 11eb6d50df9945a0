//! Algedonic signals. A member raises a HALT or ALERT; the escalation hook
//! turns it into actions, and the host carries them out in one transaction
//! with the signal's record, its decision-log rows and an `algedonic` entry
//! on the team's stream. An action that cannot be carried out (an unknown
//! task, a cycle, a stranger as recipient) is skipped and reported, so a
//! faulty policy cannot lose the signal itself.

mod api;

pub use api::routes;

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::message::recipients;
use super::store::{MessageRow, Snapshot, TaskRow, Write};
use super::{graph, invalid, lead_only, team_for};
use crate::agent::{Caller, SYSTEM};
use crate::clock;
use crate::error::{Error, Json, OptionalJson, Path, Query, Result};
use crate::policy::input::{LevelInput, ScopeInput, SignalInput};
use crate::policy::registry::Scope;
use crate::policy::{Handle, Input, Request};
use crate::signal as store;
use crate::signal::{self, Level, ScopeKind, SignalRow, new_signal_id};

const MAX_TEXT: usize = 64 * 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSignal {
    level: Level,
    /// SECURITY, DATA, ETHICS (HALT); QUALITY, SCOPE, META-BLOCK (ALERT); or
    /// any other the team's policy knows.
    category: String,
    issue: String,
    #[serde(default)]
    evidence: String,
    #[serde(default)]
    impact: String,
    #[serde(default)]
    recommended_action: String,
    /// The reporter's task, which is blocked on the signal task.
    task_id: Option<i64>,
    #[schema(value_type = Option<Object>)]
    partial_handoff: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Raised {
    signal_id: String,
    signal_task_id: Option<i64>,
    /// Each action with `done` and, when skipped, why.
    #[schema(value_type = Vec<Object>)]
    actions: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct SignalView {
    signal_id: String,
    level: Level,
    category: String,
    reporter: String,
    task_id: Option<i64>,
    signal_task_id: Option<i64>,
    #[schema(value_type = Object)]
    body: Value,
    #[schema(value_type = Vec<Object>)]
    actions: Value,
    /// Whether it halts its scope until acknowledged.
    halts: bool,
    acknowledged: bool,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    note: Option<String>,
    created_at: String,
}

impl From<&SignalRow> for SignalView {
    fn from(s: &SignalRow) -> Self {
        Self {
            signal_id: s.signal_id.clone(),
            level: s.level,
            category: s.category.clone(),
            reporter: s.reporter.clone(),
            task_id: s.task_id,
            signal_task_id: s.signal_task_id,
            body: serde_json::from_str(&s.body).unwrap_or(Value::Null),
            actions: serde_json::from_str(&s.actions).unwrap_or(Value::Null),
            halts: s.halts,
            acknowledged: s.acknowledged_at.is_some(),
            acknowledged_by: s.acknowledged_by.clone(),
            acknowledged_at: clock::rfc3339_opt(s.acknowledged_at),
            note: s.note.clone(),
            created_at: clock::rfc3339(s.created_at),
        }
    }
}

/// Escalation actions in a team: planned against a working copy of the
/// snapshot, so that later actions see the tasks earlier ones made.
struct TeamEffects<'a> {
    work: Snapshot,
    reporter: &'a str,
    now: i64,
    created: HashMap<String, i64>,
    writes: Vec<Write>,
}

impl TeamEffects<'_> {
    fn push(&mut self, w: Write) {
        self.work.apply(std::slice::from_ref(&w));
        self.writes.push(w);
    }

    fn resolve(&self, h: &Handle) -> std::result::Result<i64, String> {
        match h {
            Handle::Existing(id) => {
                i64::try_from(*id).ok().filter(|id| self.work.tasks.contains_key(id)).ok_or(format!("no task #{id}"))
            }
            Handle::Created(k) => self.created.get(k).copied().ok_or_else(|| format!("no task was created as {k:?}")),
        }
    }
}

impl signal::Effects for TeamEffects<'_> {
    fn create_task(
        &mut self,
        key: &str,
        subject: &str,
        description: &str,
        metadata: &Value,
    ) -> std::result::Result<i64, String> {
        if self.created.contains_key(key) {
            return Err(format!("a task with key {key:?} was already created"));
        }
        let metadata = if metadata.is_object() { metadata.clone() } else { json!({}) };
        let id = self.work.next_task_id();
        let row = TaskRow {
            team: self.work.team.name.clone(),
            id,
            subject: subject.into(),
            description: description.into(),
            active_form: String::new(),
            status: super::store::Status::Pending,
            owner: None,
            metadata: metadata.to_string(),
            created_by: self.reporter.into(),
            version: 1,
            created_at: self.now,
            updated_at: self.now,
        };
        let told = super::tasks::event(super::tasks::TaskEvent::Created, &row, &[], self.reporter);
        self.push(Write::PutTask(row));
        self.push(told);
        self.created.insert(key.into(), id);
        Ok(id)
    }

    fn block_task(&mut self, task: &Handle, blocked_by: &Handle) -> std::result::Result<(), String> {
        let (t, b) = (self.resolve(task)?, self.resolve(blocked_by)?);
        if let Some(cycle) = graph::cycle(self.work.deps.edges(), &[(t, b)]) {
            return Err(format!("would make a dependency cycle {cycle:?}"));
        }
        self.push(Write::Block { task: t, blocked_by: b });
        Ok(())
    }

    fn notify(&mut self, to: &str, summary: &str, message: &str) -> std::result::Result<(), String> {
        let to_whom = recipients(&self.work, SYSTEM, to).map_err(|e| e.message().to_string())?;
        let message = MessageRow::from_host(self.work.next_message_id(), to, summary.into(), message.into(), self.now);
        self.push(Write::Message { message, recipients: to_whom });
        Ok(())
    }

    fn append(&mut self, stream: &str, label: Option<&str>, data: &Value) -> std::result::Result<(), String> {
        let team = &self.work.team;
        let own = stream == team.stream_id || stream == "team" || stream == format!("team.{}", team.name);
        if !own {
            return Err("a team signal may append only to the team's stream".into());
        }
        let label = label.unwrap_or("algedonic").to_string();
        // The host writes it, for the policy: the reporter is in the signal.
        self.push(Write::Append { label, data: data.to_string(), agent: SYSTEM.into() });
        Ok(())
    }
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SignalList {
    signals: Vec<SignalView>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    #[serde(default)]
    note: String,
}
