//! Team queries. Reads are plain queries. Every write goes through
//! [`transact`]: it takes the team's row first (a row lock on PostgreSQL,
//! the single writer on SQLite), so a team's writes happen one after
//! another, then reads the team as it now stands into a [`Snapshot`], lets a
//! pure planning function turn that into [`Write`]s, and commits them
//! together. Rules are checked against the snapshot, so two racing claims
//! cannot both see an unowned task.

use std::collections::{BTreeMap, BTreeSet};

use crate::db::{Arg, Db, Filter, is_unique_violation};
use crate::error::Result;
use crate::policy::store::DecisionRow;
use crate::stream::{APPEND_ONE, INSERT_ENTRY};
use crate::{bind_args, clock, insert_decisions, with_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamRow {
    pub name: String,
    pub lead: String,
    pub stream_id: String,
    pub rules: String,
    pub next_task_id: i64,
    pub next_message_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const TEAM_COLUMNS: &str = "name, lead, stream_id, rules, next_task_id, next_message_id, created_at, updated_at";

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskRow {
    pub team: String,
    pub id: i64,
    pub subject: String,
    pub description: String,
    pub active_form: String,
    pub status: String,
    pub owner: Option<String>,
    pub metadata: String,
    pub created_by: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const TASK_COLUMNS: &str =
    "team, id, subject, description, active_form, status, owner, metadata, created_by, version, created_at, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: i64,
    pub sender: String,
    pub addressed: String,
    pub kind: String,
    pub summary: String,
    pub message: String,
    pub request_id: Option<String>,
    pub approve: Option<bool>,
    pub created_at: i64,
}

const MESSAGE_COLUMNS: &str = "id, sender, addressed, kind, summary, message, request_id, approve, created_at";

impl MessageRow {
    /// A plain message the host sends itself, from `cairn`.
    pub fn from_host(id: i64, to: &str, summary: String, message: String, now: i64) -> Self {
        Self {
            id,
            sender: crate::agent::SYSTEM.into(),
            addressed: to.into(),
            kind: "message".into(),
            summary,
            message,
            request_id: None,
            approve: None,
            created_at: now,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignalRow {
    pub signal_id: String,
    pub scope_kind: String,
    pub scope: String,
    pub level: String,
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

pub async fn team(db: &Db, name: &str) -> Result<Option<TeamRow>> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE name = $1");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).bind(name).fetch_optional(pool).await)?)
}

/// Creates a team with its lead as first member; false if the name is taken.
pub async fn insert_team(db: &Db, t: &TeamRow) -> Result<bool> {
    let sql = format!("INSERT INTO teams ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
    let result = with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        sqlx::query(&sql)
            .bind(&t.name)
            .bind(&t.lead)
            .bind(&t.stream_id)
            .bind(&t.rules)
            .bind(t.next_task_id)
            .bind(t.next_message_id)
            .bind(t.created_at)
            .bind(t.updated_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO team_members (team, agent, added_by, added_at) VALUES ($1, $2, $2, $3)")
            .bind(&t.name)
            .bind(&t.lead)
            .bind(t.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await);
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub async fn set_rules(db: &Db, team: &str, rules: &str) -> Result<()> {
    with_db!(db, write, |pool| sqlx::query("UPDATE teams SET rules = $2, updated_at = $3 WHERE name = $1")
        .bind(team)
        .bind(rules)
        .bind(clock::now_ms())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Adds a member; false if it already is one.
pub async fn add_member(db: &Db, team: &str, agent: &str, by: &str) -> Result<bool> {
    let result = with_db!(db, write, |pool| sqlx::query(
        "INSERT INTO team_members (team, agent, added_by, added_at) VALUES ($1, $2, $3, $4)"
    )
    .bind(team)
    .bind(agent)
    .bind(by)
    .bind(clock::now_ms())
    .execute(pool)
    .await
    .map(|r| r.rows_affected()));
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub async fn is_member(db: &Db, team: &str, agent: &str) -> Result<bool> {
    let found: Option<(String,)> =
        with_db!(db, read, |pool| sqlx::query_as("SELECT agent FROM team_members WHERE team = $1 AND agent = $2")
            .bind(team)
            .bind(agent)
            .fetch_optional(pool)
            .await)?;
    Ok(found.is_some())
}

pub async fn members(db: &Db, team: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = with_db!(db, read, |pool| sqlx::query_as(
        "SELECT agent FROM team_members WHERE team = $1 ORDER BY added_at, agent"
    )
    .bind(team)
    .fetch_all(pool)
    .await)?;
    Ok(rows.into_iter().map(|(a,)| a).collect())
}

/// The teams `agent` belongs to (every team, for `None`: admins).
pub async fn teams_of(db: &Db, agent: Option<&str>, limit: i64, offset: i64) -> Result<Vec<TeamRow>> {
    let mut f = Filter::default();
    if let Some(agent) = agent {
        f.and("name IN (SELECT team FROM team_members WHERE agent = ?)", [Arg::Text(agent.into())]);
    }
    let sql = format!(
        "SELECT {TEAM_COLUMNS} FROM teams{} ORDER BY created_at, name LIMIT {} OFFSET {}",
        f.where_sql(),
        f.placeholder(Arg::Int(limit)),
        f.placeholder(Arg::Int(offset))
    );
    Ok(with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?)
}

pub async fn task(db: &Db, team: &str, id: i64) -> Result<Option<TaskRow>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE team = $1 AND id = $2");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).bind(team).bind(id).fetch_optional(pool).await)?)
}

pub async fn tasks(
    db: &Db,
    team: &str,
    status: Option<&str>,
    owner: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<TaskRow>> {
    let mut f = Filter::default();
    f.and("team = ?", [Arg::Text(team.into())]);
    if let Some(s) = status {
        f.and("status = ?", [Arg::Text(s.into())]);
    }
    if let Some(o) = owner {
        f.and("owner = ?", [Arg::Text(o.into())]);
    }
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks{} ORDER BY id LIMIT {} OFFSET {}",
        f.where_sql(),
        f.placeholder(Arg::Int(limit)),
        f.placeholder(Arg::Int(offset))
    );
    Ok(with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?)
}

/// Every dependency edge of the team: (task, blocked_by).
pub async fn deps(db: &Db, team: &str) -> Result<Vec<(i64, i64)>> {
    Ok(with_db!(db, read, |pool| sqlx::query_as(
        "SELECT task, blocked_by FROM task_deps WHERE team = $1 ORDER BY task, blocked_by"
    )
    .bind(team)
    .fetch_all(pool)
    .await)?)
}

/// Edges whose blocker is not completed yet: (task, blocked_by).
pub async fn open_blockers(db: &Db, team: &str) -> Result<Vec<(i64, i64)>> {
    Ok(with_db!(db, read, |pool| sqlx::query_as(
        "SELECT d.task, d.blocked_by FROM task_deps d JOIN tasks t ON t.team = d.team AND t.id = d.blocked_by
         WHERE d.team = $1 AND t.status <> 'completed' ORDER BY d.task, d.blocked_by"
    )
    .bind(team)
    .fetch_all(pool)
    .await)?)
}

/// The caller's inbox after message `after`, oldest first.
pub async fn inbox(db: &Db, team: &str, agent: &str, after: i64, limit: i64) -> Result<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM team_messages WHERE team = $1 AND recipient = $2 AND id > $3 ORDER BY id LIMIT $4"
    );
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql)
        .bind(team)
        .bind(agent)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
}

pub async fn signal(db: &Db, signal_id: &str) -> Result<Option<SignalRow>> {
    let sql = format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE signal_id = $1");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).bind(signal_id).fetch_optional(pool).await)?)
}

pub async fn signals(db: &Db, kind: &str, scope: &str, limit: i64, offset: i64) -> Result<Vec<SignalRow>> {
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
fn put_signal_sql() -> String {
    format!(
        "INSERT INTO signals ({SIGNAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (signal_id) DO UPDATE SET signal_task_id = excluded.signal_task_id, actions = excluded.actions,
         halts = excluded.halts, acknowledged_by = excluded.acknowledged_by,
         acknowledged_at = excluded.acknowledged_at, note = excluded.note"
    )
}

/// Binds a [`SignalRow`] to [`put_signal_sql`]'s placeholders.
macro_rules! bind_signal {
    ($query:expr, $s:expr) => {
        $query
            .bind(&$s.signal_id)
            .bind(&$s.scope_kind)
            .bind(&$s.scope)
            .bind(&$s.level)
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

/// Records a signal outside any team (a contract's).
pub async fn insert_signal(db: &Db, s: &SignalRow) -> Result<()> {
    let sql = put_signal_sql();
    with_db!(db, write, |pool| bind_signal!(sqlx::query(&sql), s).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Marks a signal acknowledged; false if it already was.
pub async fn acknowledge_signal(db: &Db, signal_id: &str, by: &str, note: &str, at: i64) -> Result<bool> {
    let n = with_db!(db, write, |pool| sqlx::query(
        "UPDATE signals SET acknowledged_by = $2, acknowledged_at = $3, note = $4
         WHERE signal_id = $1 AND acknowledged_at IS NULL"
    )
    .bind(signal_id)
    .bind(by)
    .bind(at)
    .bind(note)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Unacknowledged HALTs of a scope (`team` or `contract`), oldest first.
pub async fn open_halts(db: &Db, kind: &str, scope: &str) -> Result<Vec<String>> {
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

/// The team as one write sees it, inside that write's transaction.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub team: TeamRow,
    pub members: BTreeSet<String>,
    pub tasks: BTreeMap<i64, TaskRow>,
    /// (task, blocked_by)
    pub deps: BTreeSet<(i64, i64)>,
    /// Unacknowledged HALTs on the team, oldest first.
    pub halts: Vec<String>,
    /// Every unacknowledged signal of the team.
    pub open_signals: BTreeSet<String>,
}

impl Snapshot {
    /// Hands out the next task id.
    pub fn next_task_id(&mut self) -> i64 {
        let id = self.team.next_task_id;
        self.team.next_task_id += 1;
        id
    }

    pub fn next_message_id(&mut self) -> i64 {
        let id = self.team.next_message_id;
        self.team.next_message_id += 1;
        id
    }

    pub fn blocked_by(&self, id: i64) -> Vec<i64> {
        edges(&self.deps, id).0
    }

    pub fn blocks(&self, id: i64) -> Vec<i64> {
        edges(&self.deps, id).1
    }

    /// Blockers of `id` that are not completed.
    pub fn open_blockers(&self, id: i64) -> Vec<i64> {
        self.blocked_by(id).into_iter().filter(|b| self.tasks.get(b).is_some_and(|t| t.status != "completed")).collect()
    }
}

/// Task `id`'s side of the dependency edges `(task, blocked_by)`: what it
/// waits for, and what waits for it.
pub fn edges<'a>(deps: impl IntoIterator<Item = &'a (i64, i64)>, id: i64) -> (Vec<i64>, Vec<i64>) {
    let (mut blocked_by, mut blocks) = (Vec::new(), Vec::new());
    for &(t, b) in deps {
        if t == id {
            blocked_by.push(b);
        }
        if b == id {
            blocks.push(t);
        }
    }
    (blocked_by, blocks)
}

/// One change a planned write makes.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace the whole task row.
    PutTask(TaskRow),
    /// Remove a task and every edge touching it.
    DeleteTask(i64),
    Block {
        task: i64,
        blocked_by: i64,
    },
    Message {
        message: MessageRow,
        recipients: Vec<String>,
    },
    /// Append to the team's stream.
    Append {
        label: String,
        data: String,
        agent: String,
    },
    PutSignal(SignalRow),
    Decisions(Vec<DecisionRow>),
}

/// What a committed write leaves for live readers to hear about.
#[derive(Debug, Default)]
pub struct Committed {
    /// (stream_id, seq) of each entry appended.
    pub entries: Vec<(String, i64)>,
    /// Recipients of each message sent, with the message id.
    pub inboxes: Vec<(String, i64)>,
}

/// Runs one team write: lock the team, snapshot it, plan, apply, commit.
/// `Ok(Err(e))` is the plan's refusal (nothing written); `Ok(None)` means
/// there is no such team.
pub async fn transact<T>(
    db: &Db,
    team: &str,
    plan: impl FnOnce(&mut Snapshot) -> Result<(Vec<Write>, T)>,
) -> Result<Option<(T, Committed)>> {
    let lock = format!("UPDATE teams SET updated_at = $2 WHERE name = $1 RETURNING {TEAM_COLUMNS}");
    let task_sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE team = $1 ORDER BY id");
    let put_task = format!(
        "INSERT INTO tasks ({TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (team, id) DO UPDATE SET subject = excluded.subject, description = excluded.description,
         active_form = excluded.active_form, status = excluded.status, owner = excluded.owner,
         metadata = excluded.metadata, version = excluded.version, updated_at = excluded.updated_at"
    );
    let put_message = format!(
        "INSERT INTO team_messages (team, recipient, {MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    let put_signal = put_signal_sql();
    let now = clock::now_ms();
    let outcome: std::result::Result<Result<Option<(T, Committed)>>, sqlx::Error> = with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        let Some(team_row): Option<TeamRow> =
            sqlx::query_as(&lock).bind(team).bind(now).fetch_optional(&mut *tx).await?
        else {
            return Ok(Ok(None));
        };
        let members: Vec<(String,)> =
            sqlx::query_as("SELECT agent FROM team_members WHERE team = $1").bind(team).fetch_all(&mut *tx).await?;
        let tasks: Vec<TaskRow> = sqlx::query_as(&task_sql).bind(team).fetch_all(&mut *tx).await?;
        let deps: Vec<(i64, i64)> = sqlx::query_as("SELECT task, blocked_by FROM task_deps WHERE team = $1")
            .bind(team)
            .fetch_all(&mut *tx)
            .await?;
        let open: Vec<(String, bool)> = sqlx::query_as(
            "SELECT signal_id, halts FROM signals WHERE scope_kind = 'team' AND scope = $1 AND acknowledged_at IS NULL
             ORDER BY created_at, signal_id",
        )
        .bind(team)
        .fetch_all(&mut *tx)
        .await?;
        let mut snapshot = Snapshot {
            team: team_row,
            members: members.into_iter().map(|(m,)| m).collect(),
            tasks: tasks.into_iter().map(|t| (t.id, t)).collect(),
            deps: deps.into_iter().collect(),
            halts: open.iter().filter(|(_, h)| *h).map(|(id, _)| id.clone()).collect(),
            open_signals: open.into_iter().map(|(id, _)| id).collect(),
        };
        let (writes, value) = match plan(&mut snapshot) {
            Ok(planned) => planned,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut committed = Committed::default();
        for write in &writes {
            match write {
                Write::PutTask(t) => {
                    sqlx::query(&put_task)
                        .bind(&t.team)
                        .bind(t.id)
                        .bind(&t.subject)
                        .bind(&t.description)
                        .bind(&t.active_form)
                        .bind(&t.status)
                        .bind(&t.owner)
                        .bind(&t.metadata)
                        .bind(&t.created_by)
                        .bind(t.version)
                        .bind(t.created_at)
                        .bind(t.updated_at)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::DeleteTask(id) => {
                    sqlx::query("DELETE FROM task_deps WHERE team = $1 AND (task = $2 OR blocked_by = $2)")
                        .bind(team)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM tasks WHERE team = $1 AND id = $2")
                        .bind(team)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::Block { task, blocked_by } => {
                    sqlx::query(
                        "INSERT INTO task_deps (team, task, blocked_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(team)
                    .bind(task)
                    .bind(blocked_by)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::Message { message: m, recipients } => {
                    for r in recipients {
                        sqlx::query(&put_message)
                            .bind(team)
                            .bind(r)
                            .bind(m.id)
                            .bind(&m.sender)
                            .bind(&m.addressed)
                            .bind(&m.kind)
                            .bind(&m.summary)
                            .bind(&m.message)
                            .bind(&m.request_id)
                            .bind(m.approve)
                            .bind(m.created_at)
                            .execute(&mut *tx)
                            .await?;
                        committed.inboxes.push((r.clone(), m.id));
                    }
                }
                Write::Append { label, data, agent } => {
                    let stream_id = &snapshot.team.stream_id;
                    let seq: Option<(i64,)> =
                        sqlx::query_as(APPEND_ONE).bind(stream_id).bind(now).fetch_optional(&mut *tx).await?;
                    if let Some((seq,)) = seq {
                        sqlx::query(INSERT_ENTRY)
                            .bind(stream_id)
                            .bind(seq)
                            .bind(label)
                            .bind(data)
                            .bind(agent)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        committed.entries.push((stream_id.clone(), seq));
                    }
                }
                Write::PutSignal(s) => {
                    bind_signal!(sqlx::query(&put_signal), s).execute(&mut *tx).await?;
                }
                Write::Decisions(rows) => insert_decisions!(tx, rows)?,
            }
        }
        sqlx::query("UPDATE teams SET next_task_id = $2, next_message_id = $3 WHERE name = $1")
            .bind(team)
            .bind(snapshot.team.next_task_id)
            .bind(snapshot.team.next_message_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(Some((value, committed))))
    }
    .await);
    outcome?
}

/// The latest shutdown request with this id sent to `recipient`, if any.
pub async fn shutdown_request(db: &Db, team: &str, request_id: &str, recipient: &str) -> Result<Option<MessageRow>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM team_messages
         WHERE team = $1 AND request_id = $2 AND recipient = $3 AND kind = 'shutdown_request'"
    );
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql)
        .bind(team)
        .bind(request_id)
        .bind(recipient)
        .fetch_optional(pool)
        .await)?)
}
