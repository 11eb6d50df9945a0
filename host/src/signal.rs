//! Algedonic signals, as stored: the record of each HALT or ALERT raised in
//! a team or on a contract, its actions and its acknowledgement. Teams and
//! contracts raise and acknowledge them through their own writers; this
//! module owns the table, the ids and the levels.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::db::Db;
use crate::error::Result;
use crate::policy::{Action, Handle};
use crate::with_db;

/// How grave a signal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Level {
    #[serde(rename = "HALT")]
    Halt,
    #[serde(rename = "ALERT")]
    Alert,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Halt => "HALT",
            Level::Alert => "ALERT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Level::Halt, Level::Alert].into_iter().find(|l| l.as_str() == s)
    }
}

crate::text_column!(Level);

/// Where a signal was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Team,
    Contract,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Team => "team",
            ScopeKind::Contract => "contract",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [ScopeKind::Team, ScopeKind::Contract].into_iter().find(|k| k.as_str() == s)
    }
}

crate::text_column!(ScopeKind);

/// `$1` scope kind, `$2` scope: its unacknowledged signals, oldest first,
/// each with whether it halts. The writers read it into their snapshots.
pub const OPEN_SIGNALS: &str = "SELECT signal_id, halts FROM signals WHERE scope_kind = $1 AND scope = $2
     AND acknowledged_at IS NULL ORDER BY created_at, signal_id";

/// `sig_` and 96 random bits, for team and contract signals alike.
pub fn new_signal_id() -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    format!("sig_{}", hex::encode(b))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignalRow {
    pub signal_id: String,
    pub scope_kind: ScopeKind,
    pub scope: String,
    pub level: Level,
    pub category: String,
    pub reporter: String,
    pub task_id: Option<i64>,
    pub body: String,
    pub signal_task_id: Option<i64>,
    pub actions: String,
    pub halts: bool,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<i64>,
    pub note: Option<String>,
    pub created_at: i64,
}

const SIGNAL_COLUMNS: &str = "signal_id, scope_kind, scope, level, category, reporter, task_id, body, signal_task_id, \
    actions, halts, acknowledged_by, acknowledged_at, note, created_at";

pub async fn signal(db: &Db, signal_id: &str) -> Result<Option<SignalRow>> {
    let sql = format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE signal_id = $1");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).bind(signal_id).fetch_optional(pool).await)?)
}

pub async fn signals(db: &Db, kind: ScopeKind, scope: &str, limit: i64, offset: i64) -> Result<Vec<SignalRow>> {
    let sql = format!(
        "SELECT {SIGNAL_COLUMNS} FROM signals WHERE scope_kind = $1 AND scope = $2 ORDER BY created_at, signal_id LIMIT $3 OFFSET $4"
    );
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql)
        .bind(kind)
        .bind(scope)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)?)
}

/// Inserts or updates a signal: every column, in [`SIGNAL_COLUMNS`] order.
pub fn put_signal_sql() -> String {
    format!(
        "INSERT INTO signals ({SIGNAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (signal_id) DO UPDATE SET signal_task_id = excluded.signal_task_id, actions = excluded.actions,
         halts = excluded.halts, acknowledged_by = excluded.acknowledged_by,
         acknowledged_at = excluded.acknowledged_at, note = excluded.note"
    )
}

/// Binds a [`SignalRow`] to [`put_signal_sql`]'s placeholders.
#[macro_export]
macro_rules! bind_signal {
    ($query:expr, $s:expr) => {
        $query
            .bind(&$s.signal_id)
            .bind($s.scope_kind)
            .bind(&$s.scope)
            .bind($s.level)
            .bind(&$s.category)
            .bind(&$s.reporter)
            .bind($s.task_id)
            .bind(&$s.body)
            .bind($s.signal_task_id)
            .bind(&$s.actions)
            .bind($s.halts)
            .bind(&$s.acknowledged_by)
            .bind($s.acknowledged_at)
            .bind(&$s.note)
            .bind($s.created_at)
    };
}

/// Unacknowledged HALTs of a scope (`team` or `contract`), oldest first.
pub async fn open_halts(db: &Db, kind: ScopeKind, scope: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = with_db!(db, read, |pool| sqlx::query_as(
        "SELECT signal_id FROM signals WHERE scope_kind = $1 AND scope = $2 AND halts AND acknowledged_at IS NULL
         ORDER BY created_at, signal_id"
    )
    .bind(kind)
    .bind(scope)
    .fetch_all(pool)
    .await)?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Contract signals stored before they were keyed by creator and name
/// (`creator/name`) carry the name alone, which namesakes share; their body
/// names the creator. Re-keys them; returns how many. Runs at every start,
/// and finds nothing once done.
pub async fn rekey_contract_signals(db: &Db) -> Result<u64> {
    let legacy: Vec<(String, String, String)> = with_db!(db, read, |pool| sqlx::query_as(
        "SELECT signal_id, scope, body FROM signals WHERE scope_kind = $1 AND scope NOT LIKE '%/%'"
    )
    .bind(ScopeKind::Contract)
    .fetch_all(pool)
    .await)?;
    let mut done = 0;
    for (signal_id, name, body) in legacy {
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let Some(creator) = body["creator"].as_str().filter(|c| !c.is_empty()) else {
            tracing::warn!(signal = %signal_id, contract = %name, "a contract signal without its creator stays as stored");
            continue;
        };
        let key = format!("{creator}/{name}");
        done += with_db!(db, write, |pool| sqlx::query("UPDATE signals SET scope = $1 WHERE signal_id = $2")
            .bind(&key)
            .bind(&signal_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(done)
}

/// How one scope carries out escalation actions, inside its own commit.
/// Each method plans its writes or says why it cannot (the action is then
/// skipped and reported, and the signal stands regardless).
pub trait Effects {
    /// Returns the id of the task made, which later actions may name.
    fn create_task(&mut self, key: &str, subject: &str, description: &str, metadata: &Value) -> Result<i64, String>;
    fn block_task(&mut self, task: &Handle, blocked_by: &Handle) -> Result<(), String>;
    fn notify(&mut self, to: &str, summary: &str, message: &str) -> Result<(), String>;
    fn append(&mut self, stream: &str, label: Option<&str>, data: &Value) -> Result<(), String>;
}

/// What carrying out a list of actions came to.
#[derive(Debug, Default)]
pub struct Carried {
    /// Each action as decided, with `done` and, when skipped, why.
    pub reports: Vec<Value>,
    /// Whether a `halt-scope` was among them.
    pub halts: bool,
    /// The first task an action created: the signal's own task.
    pub signal_task: Option<i64>,
}

/// The one executor of escalation actions, for teams and contracts alike:
/// in order, each through the scope's [`Effects`], each reported.
pub fn carry_out(actions: &[Action], effects: &mut dyn Effects) -> Carried {
    let mut carried = Carried::default();
    for action in actions {
        let done = match action {
            Action::HaltScope => {
                carried.halts = true;
                Ok(())
            }
            Action::Notify { to, summary, message } => effects.notify(to, summary, message),
            Action::CreateTask { key, subject, description, metadata } => {
                effects.create_task(key, subject, description, metadata).map(|id| {
                    carried.signal_task.get_or_insert(id);
                })
            }
            Action::BlockTask { task, blocked_by } => effects.block_task(task, blocked_by),
            Action::AppendToStream { stream, label, data } => effects.append(stream, label.as_deref(), data),
        };
        let mut report = serde_json::to_value(action).unwrap_or(Value::Null);
        report["done"] = json!(done.is_ok());
        if let Err(why) = done {
            report["skipped"] = json!(why);
        }
        carried.reports.push(report);
    }
    carried
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(id: &str, scope: &str, body: Value) -> SignalRow {
        SignalRow {
            signal_id: id.into(),
            scope_kind: ScopeKind::Contract,
            scope: scope.into(),
            level: Level::Halt,
            category: "SECURITY".into(),
            reporter: "alice".into(),
            task_id: None,
            body: body.to_string(),
            signal_task_id: None,
            actions: "[]".into(),
            halts: true,
            acknowledged_by: None,
            acknowledged_at: None,
            note: None,
            created_at: 1,
        }
    }

    #[tokio::test]
    async fn contract_signals_stored_by_name_are_rekeyed_by_creator_once() {
        for db in crate::testing::databases().await {
            let sql = put_signal_sql();
            for row in [
                legacy("sig_a", "plan", json!({"creator": "alice"})),
                legacy("sig_b", "mallory/plan", json!({"creator": "mallory"})),
                legacy("sig_c", "orphan", json!({})),
            ] {
                with_db!(db, write, |pool| bind_signal!(sqlx::query(&sql), row).execute(pool).await.map(drop)).unwrap();
            }
            assert_eq!(rekey_contract_signals(&db).await.unwrap(), 1);
            assert_eq!(open_halts(&db, ScopeKind::Contract, "alice/plan").await.unwrap(), ["sig_a"]);
            assert_eq!(open_halts(&db, ScopeKind::Contract, "mallory/plan").await.unwrap(), ["sig_b"]);
            assert!(open_halts(&db, ScopeKind::Contract, "plan").await.unwrap().is_empty());
            assert_eq!(rekey_contract_signals(&db).await.unwrap(), 0, "nothing is left to re-key");
        }
    }
}
