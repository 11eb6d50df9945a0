//! Team queries. Reads are plain queries. Every write goes through
//! [`transact`]: it takes the team's row first (a row lock on PostgreSQL,
//! the single writer on SQLite), so a team's writes happen one after
//! another, then reads the team as it now stands into a [`Snapshot`], lets a
//! pure planning function turn that into [`Write`]s, and commits them
//! together. Rules are checked against the snapshot, so two racing claims
//! cannot both see an unowned task.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{Arg, Db, Filter, is_unique_violation};
use crate::error::Result;
use crate::policy::Decider;
use crate::policy::store::DecisionRow;
use crate::signal::{self, SignalRow};
use crate::{append_in_tx, bind_args, clock, insert_decisions, with_db};

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
    /// Grows by one with every committed write to the team.
    pub version: i64,
}

const TEAM_COLUMNS: &str =
    "name, lead, stream_id, rules, next_task_id, next_message_id, created_at, updated_at, version";

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InProgress,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Status::Pending, Status::InProgress, Status::Completed].into_iter().find(|v| v.as_str() == s)
    }
}

crate::text_column!(Status);

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskRow {
    pub team: String,
    pub id: i64,
    pub subject: String,
    pub description: String,
    pub active_form: String,
    pub status: Status,
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
    pub kind: super::message::Kind,
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
            kind: super::message::Kind::Message,
            summary,
            message,
            request_id: None,
            approve: None,
            created_at: now,
        }
    }
}

pub async fn team(db: &Db, name: &str) -> Result<Option<TeamRow>> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE name = $1");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).bind(name).fetch_optional(pool).await)?)
}

/// Creates a team with its lead as first member; false if the name is taken.
pub async fn insert_team(db: &Db, t: &TeamRow) -> Result<bool> {
    let sql = format!("INSERT INTO teams ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
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
            .bind(t.version)
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
    with_db!(db, write, |pool| sqlx::query(
        "UPDATE teams SET rules = $2, updated_at = $3, version = version + 1 WHERE name = $1"
    )
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
    let now = clock::now_ms();
    let result = with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO team_members (team, agent, added_by, added_at) VALUES ($1, $2, $3, $4)")
            .bind(team)
            .bind(agent)
            .bind(by)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Snapshots held in memory know the members: this makes them stale.
        sqlx::query("UPDATE teams SET version = version + 1, updated_at = $2 WHERE name = $1")
            .bind(team)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await);
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
    status: Option<Status>,
    owner: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<TaskRow>> {
    let mut f = Filter::default();
    f.and("team = ?", [Arg::Text(team.into())]);
    if let Some(s) = status {
        f.and("status = ?", [Arg::Text(s.as_str().into())]);
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

/// Dependency edges `(task, blocked_by)`, indexed both ways.
#[derive(Debug, Clone, Default)]
pub struct Deps {
    fwd: BTreeSet<(i64, i64)>,
    /// `(blocked_by, task)`
    rev: BTreeSet<(i64, i64)>,
}

impl Deps {
    pub fn insert(&mut self, task: i64, blocked_by: i64) {
        self.fwd.insert((task, blocked_by));
        self.rev.insert((blocked_by, task));
    }

    /// What `id` waits for.
    pub fn blocked_by(&self, id: i64) -> Vec<i64> {
        self.fwd.range((id, i64::MIN)..=(id, i64::MAX)).map(|e| e.1).collect()
    }

    /// What waits for `id`.
    pub fn blocks(&self, id: i64) -> Vec<i64> {
        self.rev.range((id, i64::MIN)..=(id, i64::MAX)).map(|e| e.1).collect()
    }

    fn remove_task(&mut self, id: i64) {
        for b in self.blocked_by(id) {
            self.fwd.remove(&(id, b));
            self.rev.remove(&(b, id));
        }
        for t in self.blocks(id) {
            self.fwd.remove(&(t, id));
            self.rev.remove(&(id, t));
        }
    }

    /// Every edge `(task, blocked_by)`.
    pub fn edges(&self) -> &BTreeSet<(i64, i64)> {
        &self.fwd
    }
}

impl FromIterator<(i64, i64)> for Deps {
    fn from_iter<I: IntoIterator<Item = (i64, i64)>>(iter: I) -> Self {
        let mut d = Deps::default();
        for (t, b) in iter {
            d.insert(t, b);
        }
        d
    }
}

/// The team as its writer holds it: read once, then kept in memory between
/// writes for as long as the team's version says no one else wrote.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub team: TeamRow,
    pub members: BTreeSet<String>,
    /// Shared with the views of decisions made on this snapshot.
    pub tasks: Arc<BTreeMap<i64, TaskRow>>,
    pub deps: Arc<Deps>,
    /// Task ids by owner, so "the claimant's tasks" does not scan the team.
    pub by_owner: Arc<BTreeMap<String, BTreeSet<i64>>>,
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
        self.deps.blocked_by(id)
    }

    pub fn blocks(&self, id: i64) -> Vec<i64> {
        self.deps.blocks(id)
    }

    /// Blockers of `id` that are not completed.
    pub fn open_blockers(&self, id: i64) -> Vec<i64> {
        self.blocked_by(id)
            .into_iter()
            .filter(|b| self.tasks.get(b).is_some_and(|t| t.status != Status::Completed))
            .collect()
    }

    /// What decisions made for this team read: its tasks, from memory.
    pub fn view(&self) -> Arc<dyn crate::policy::View> {
        Arc::new(super::view::TeamView::new(
            &self.team.name,
            self.tasks.clone(),
            self.deps.clone(),
            self.by_owner.clone(),
        ))
    }

    fn index_owner(&mut self, id: i64, was: Option<&str>, now: Option<&str>) {
        if was == now {
            return;
        }
        let index = Arc::make_mut(&mut self.by_owner);
        if let Some(w) = was
            && let Some(ids) = index.get_mut(w)
        {
            ids.remove(&id);
            if ids.is_empty() {
                index.remove(w);
            }
        }
        if let Some(n) = now {
            index.entry(n.to_string()).or_default().insert(id);
        }
    }

    /// Makes the snapshot what the store holds once `writes` commit. Plans
    /// only read the snapshot (and take ids); this is the one place it
    /// changes.
    pub fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::PutTask(t) => {
                    let old = Arc::make_mut(&mut self.tasks).insert(t.id, t.clone());
                    self.index_owner(t.id, old.and_then(|o| o.owner).as_deref(), t.owner.as_deref());
                }
                Write::DeleteTask(id) => {
                    let old = Arc::make_mut(&mut self.tasks).remove(id);
                    Arc::make_mut(&mut self.deps).remove_task(*id);
                    self.index_owner(*id, old.and_then(|o| o.owner).as_deref(), None);
                }
                Write::Block { task, blocked_by } => Arc::make_mut(&mut self.deps).insert(*task, *blocked_by),
                Write::PutSignal(sig) if sig.acknowledged_at.is_none() => {
                    self.open_signals.insert(sig.signal_id.clone());
                    if sig.halts && !self.halts.contains(&sig.signal_id) {
                        self.halts.push(sig.signal_id.clone());
                    }
                }
                Write::PutSignal(sig) => {
                    self.open_signals.remove(&sig.signal_id);
                    self.halts.retain(|h| *h != sig.signal_id);
                }
                Write::Message { .. } | Write::Append { .. } | Write::Decisions(_) => {}
            }
        }
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

/// How a job's commit went: `Ok(None)` when there is no such team.
pub type Reply = Box<dyn FnOnce(Result<Option<Committed>>) + Send>;

/// One write to a team, as its writer runs it: plan against the snapshot
/// (deciding on it where the write needs a decision), then hear how the
/// commit went. `None` instead of a snapshot: there is no such team.
pub type Job = Box<dyn FnOnce(Option<&mut Snapshot>, &Decider) -> Planned + Send>;

/// A planned job: its writes (none when the plan refused) and its reply.
pub struct Planned {
    pub writes: Vec<Write>,
    pub reply: Reply,
}

/// Commits a batch of one team's jobs in one transaction. It takes the
/// team's row first (a row lock on PostgreSQL, the single writer on
/// SQLite) and bumps its version; the cached snapshot serves if the version
/// is the one it was taken at, or the team is read afresh. Each job is
/// planned in order on a blocking thread (policies decide there, against
/// the snapshot), its writes applied to the snapshot for the next job, and
/// all writes commit together. On success `cached` holds the team as
/// committed; on failure it is emptied, and every job hears the error.
pub async fn commit_batch(db: &Db, decider: &Arc<Decider>, team: &str, cached: &mut Option<Snapshot>, jobs: Vec<Job>) {
    let lock =
        format!("UPDATE teams SET updated_at = $2, version = version + 1 WHERE name = $1 RETURNING {TEAM_COLUMNS}");
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
    let put_signal = signal::put_signal_sql();
    let now = clock::now_ms();
    let held = cached.take();
    // Outside the transaction's future, so that a failed commit can still
    // tell every job, and a missing team can still release them.
    let mut pending = Some(jobs);
    let mut replies: Vec<(Reply, Committed)> = Vec::new();
    let outcome: std::result::Result<Option<Snapshot>, sqlx::Error> = with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        let Some(team_row): Option<TeamRow> =
            sqlx::query_as(&lock).bind(team).bind(now).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let jobs = pending.take().unwrap_or_default();
        let snapshot = match held {
            Some(mut s) if s.team.version + 1 == team_row.version => {
                s.team = team_row;
                s
            }
            _ => {
                let members: Vec<(String,)> = sqlx::query_as("SELECT agent FROM team_members WHERE team = $1")
                    .bind(team)
                    .fetch_all(&mut *tx)
                    .await?;
                let tasks: Vec<TaskRow> = sqlx::query_as(&task_sql).bind(team).fetch_all(&mut *tx).await?;
                let deps: Vec<(i64, i64)> = sqlx::query_as("SELECT task, blocked_by FROM task_deps WHERE team = $1")
                    .bind(team)
                    .fetch_all(&mut *tx)
                    .await?;
                let open: Vec<(String, bool)> = sqlx::query_as(signal::OPEN_SIGNALS)
                    .bind(signal::ScopeKind::Team)
                    .bind(team)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut by_owner: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
                for t in &tasks {
                    if let Some(o) = &t.owner {
                        by_owner.entry(o.clone()).or_default().insert(t.id);
                    }
                }
                Snapshot {
                    team: team_row,
                    members: members.into_iter().map(|(m,)| m).collect(),
                    by_owner: Arc::new(by_owner),
                    tasks: Arc::new(tasks.into_iter().map(|t| (t.id, t)).collect()),
                    deps: Arc::new(deps.into_iter().collect()),
                    halts: open.iter().filter(|(_, h)| *h).map(|(id, _)| id.clone()).collect(),
                    open_signals: open.into_iter().map(|(id, _)| id).collect(),
                }
            }
        };
        let decider = decider.clone();
        let (snapshot, planned) = tokio::task::spawn_blocking(move || {
            let mut snapshot = snapshot;
            let planned: Vec<Planned> = jobs
                .into_iter()
                .map(|job| {
                    let p = job(Some(&mut snapshot), &decider);
                    snapshot.apply(&p.writes);
                    p
                })
                .collect();
            (snapshot, planned)
        })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("planning team {team}'s writes failed: {e}")))?;
        let mut all_writes = Vec::with_capacity(planned.len());
        for Planned { writes, reply } in planned {
            replies.push((reply, Committed::default()));
            all_writes.push(writes);
        }
        // One statement for the batch's decision records: every statement is a
        // round trip to the database's connection thread.
        let mut decisions: Vec<&DecisionRow> = Vec::new();
        for (writes, (_, committed)) in all_writes.iter().zip(replies.iter_mut()) {
            for write in writes {
                match write {
                    Write::PutTask(t) => {
                        sqlx::query(&put_task)
                            .bind(&t.team)
                            .bind(t.id)
                            .bind(&t.subject)
                            .bind(&t.description)
                            .bind(&t.active_form)
                            .bind(t.status)
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
                                .bind(m.kind)
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
                        if let Some(seq) = append_in_tx!(tx, stream_id, label, data, agent, now)? {
                            committed.entries.push((stream_id.clone(), seq));
                        }
                    }
                    Write::PutSignal(s) => {
                        crate::bind_signal!(sqlx::query(&put_signal), s).execute(&mut *tx).await?;
                    }
                    Write::Decisions(rows) => decisions.extend(rows),
                }
            }
        }
        insert_decisions!(tx, decisions)?;
        sqlx::query("UPDATE teams SET next_task_id = $2, next_message_id = $3 WHERE name = $1")
            .bind(team)
            .bind(snapshot.team.next_task_id)
            .bind(snapshot.team.next_message_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(snapshot))
    }
    .await);
    match outcome {
        Ok(Some(snapshot)) => {
            *cached = Some(snapshot);
            for (reply, committed) in replies {
                reply(Ok(Some(committed)));
            }
        }
        Ok(None) => {
            for job in pending.into_iter().flatten() {
                (job(None, decider).reply)(Ok(None));
            }
        }
        Err(e) => {
            tracing::error!(team, "team write failed: {e}");
            for (reply, _) in replies {
                reply(Err(crate::error::Error::internal(format!("storage error: {e}"))));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64, owner: Option<&str>, status: Status) -> TaskRow {
        TaskRow {
            team: "t".into(),
            id,
            subject: format!("task {id}"),
            description: String::new(),
            active_form: String::new(),
            status,
            owner: owner.map(str::to_string),
            metadata: "{}".into(),
            created_by: "lead".into(),
            version: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            team: TeamRow {
                name: "t".into(),
                lead: "lead".into(),
                stream_id: "st_t".into(),
                rules: "{}".into(),
                next_task_id: 1,
                next_message_id: 1,
                created_at: 0,
                updated_at: 0,
                version: 0,
            },
            members: ["lead".to_string(), "a".to_string()].into(),
            tasks: Arc::default(),
            deps: Arc::default(),
            by_owner: Arc::default(),
            halts: Vec::new(),
            open_signals: BTreeSet::new(),
        }
    }

    #[test]
    fn applied_writes_keep_tasks_edges_and_owners_in_step() {
        let mut s = snapshot();
        s.apply(&[
            Write::PutTask(task(1, None, Status::Pending)),
            Write::PutTask(task(2, Some("a"), Status::InProgress)),
            Write::Block { task: 2, blocked_by: 1 },
        ]);
        assert_eq!((s.blocked_by(2), s.blocks(1)), (vec![1], vec![2]));
        assert_eq!(s.open_blockers(2), vec![1]);
        assert_eq!(s.by_owner.get("a").map(|ids| ids.iter().copied().collect::<Vec<_>>()), Some(vec![2]));
        // A claim moves the task between owners; a delete takes it and its edges.
        s.apply(&[Write::PutTask(task(2, Some("lead"), Status::InProgress))]);
        assert!(!s.by_owner.contains_key("a"));
        s.apply(&[Write::PutTask(task(1, None, Status::Completed))]);
        assert!(s.open_blockers(2).is_empty());
        s.apply(&[Write::DeleteTask(1)]);
        assert!(s.blocked_by(2).is_empty() && !s.tasks.contains_key(&1));
    }

    #[test]
    fn a_view_taken_before_a_write_keeps_its_snapshot() {
        let mut s = snapshot();
        s.apply(&[Write::PutTask(task(1, None, Status::Pending))]);
        let before = s.tasks.clone();
        s.apply(&[Write::PutTask(task(1, Some("a"), Status::InProgress))]);
        assert_eq!(before[&1].owner, None, "a decision's view never sees a later write");
        assert_eq!(s.tasks[&1].owner.as_deref(), Some("a"));
    }
}
