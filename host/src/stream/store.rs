//! Stream queries. `streams.last_seq` is the stream's counter: appends bump
//! it and insert their entries in one transaction (see [`super::appender`]),
//! so the bump's row lock (PostgreSQL) or the single writer (SQLite) orders
//! concurrent appends, and seqs come out 1, 2, 3... with no gaps.

use serde_json::value::RawValue;

use crate::db::{Arg, Db, Filter, contains_pattern, is_unique_violation, label_pattern};
use crate::error::Result;
use crate::search::{Criteria, Found};
use crate::{bind_args, clock, with_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StreamRow {
    pub stream_id: String,
    pub owner: String,
    pub name: String,
    pub description: String,
    pub labels: String,
    pub discoverable: bool,
    pub linked_stash: Option<String>,
    pub ttl: i64,
    pub expires_at: i64,
    pub retention_seconds: Option<i64>,
    pub schema_id: Option<String>,
    pub schema_version: Option<i64>,
    pub schema_name: Option<String>,
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, sqlx::FromRow)]
pub struct EntryRow {
    pub seq: i64,
    pub label: Option<String>,
    pub data: String,
    pub agent: String,
    pub created_at: i64,
    /// Agent calls that led to it (0: written over HTTP).
    #[sqlx(default)]
    pub hops: i64,
}

impl EntryRow {
    pub fn data(&self) -> Box<RawValue> {
        // Stored by us from a parsed Value, so it is valid JSON.
        RawValue::from_string(self.data.clone()).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }
}

const COLUMNS: &str = "stream_id, owner, name, description, labels, discoverable, linked_stash, ttl, expires_at, \
    retention_seconds, schema_id, schema_version, schema_name, last_seq, created_at, updated_at";

/// For writers that append inside their own transaction (the team and
/// contract writers), through [`append_in_tx!`](crate::append_in_tx): bump
/// the counter (`$1` stream id, `$2` now; returns the new seq, none if the
/// stream is gone), then insert the entry with [`INSERT_ENTRY`].
pub const APPEND_ONE: &str = "UPDATE streams SET last_seq = last_seq + 1, updated_at = $2 WHERE stream_id = $1 AND expires_at > $2 RETURNING last_seq";
/// `$1` stream id, `$2` seq, `$3` label, `$4` data, `$5` agent, `$6` now,
/// `$7` hops (agent calls that led to it; 0 from HTTP and the host).
pub const INSERT_ENTRY: &str = "INSERT INTO stream_entries (stream_id, seq, label, data, agent, created_at, hops) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Appends one entry on `$tx` (a transaction): `Ok(Some(seq))`, or
/// `Ok(None)` when the stream is gone or expired (nothing written).
#[macro_export]
macro_rules! append_in_tx {
    ($tx:expr, $stream_id:expr, $label:expr, $data:expr, $agent:expr, $now:expr) => {
        $crate::append_in_tx!($tx, $stream_id, $label, $data, $agent, $now, 0i64)
    };
    ($tx:expr, $stream_id:expr, $label:expr, $data:expr, $agent:expr, $now:expr, $hops:expr) => {{
        let stream_id: &str = $stream_id;
        let seq: Result<Option<(i64,)>, sqlx::Error> =
            sqlx::query_as($crate::stream::APPEND_ONE).bind(stream_id).bind($now).fetch_optional(&mut *$tx).await;
        match seq {
            Ok(Some((seq,))) => sqlx::query($crate::stream::INSERT_ENTRY)
                .bind(stream_id)
                .bind(seq)
                .bind($label)
                .bind($data)
                .bind($agent)
                .bind($now)
                .bind($hops)
                .execute(&mut *$tx)
                .await
                .map(|_| Some(seq)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }};
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<StreamRow>> {
    let sql = format!("SELECT {COLUMNS} FROM streams WHERE stream_id = $1 AND expires_at > $2");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).bind(id).bind(clock::now_ms()).fetch_optional(pool).await)?)
}

/// The oldest live discoverable stream named `name`.
pub async fn discoverable_named(db: &Db, name: &str) -> Result<Option<StreamRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM streams WHERE name = $1 AND discoverable = $2 AND expires_at > $3 \
         ORDER BY created_at LIMIT 1"
    );
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql)
        .bind(name)
        .bind(true)
        .bind(clock::now_ms())
        .fetch_optional(pool)
        .await)?)
}

pub async fn by_owner_name(db: &Db, owner: &str, name: &str) -> Result<Option<StreamRow>> {
    let sql = format!("SELECT {COLUMNS} FROM streams WHERE owner = $1 AND name = $2 AND expires_at > $3");
    Ok(with_db!(db, write, |pool| sqlx::query_as(&sql)
        .bind(owner)
        .bind(name)
        .bind(clock::now_ms())
        .fetch_optional(pool)
        .await)?)
}

pub enum Insert {
    Done,
    NameTaken,
}

pub async fn insert(db: &Db, s: &StreamRow) -> Result<Insert> {
    let sql = format!(
        "INSERT INTO streams ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    let result = with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        // An expired stream of this name no longer holds it.
        sqlx::query(
            "DELETE FROM stream_entries WHERE stream_id IN
                     (SELECT stream_id FROM streams WHERE owner = $1 AND name = $2 AND expires_at <= $3)",
        )
        .bind(&s.owner)
        .bind(&s.name)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM streams WHERE owner = $1 AND name = $2 AND expires_at <= $3")
            .bind(&s.owner)
            .bind(&s.name)
            .bind(s.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&sql)
            .bind(&s.stream_id)
            .bind(&s.owner)
            .bind(&s.name)
            .bind(&s.description)
            .bind(&s.labels)
            .bind(s.discoverable)
            .bind(&s.linked_stash)
            .bind(s.ttl)
            .bind(s.expires_at)
            .bind(s.retention_seconds)
            .bind(&s.schema_id)
            .bind(s.schema_version)
            .bind(&s.schema_name)
            .bind(s.last_seq)
            .bind(s.created_at)
            .bind(s.updated_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await);
    match result {
        Ok(()) => Ok(Insert::Done),
        Err(e) if is_unique_violation(&e) => Ok(Insert::NameTaken),
        Err(e) => Err(e.into()),
    }
}

pub struct EntryQuery<'a> {
    pub label: Option<&'a str>,
    pub after: i64,
    /// Entries created before this are past the stream's retention.
    pub not_before: i64,
    pub limit: i64,
    pub offset: i64,
}

pub async fn entries(db: &Db, id: &str, q: &EntryQuery<'_>) -> Result<Vec<EntryRow>> {
    let mut f = Filter::default();
    f.and("stream_id = ?", [Arg::Text(id.into())]);
    f.and("seq > ?", [Arg::Int(q.after)]);
    if q.not_before > 0 {
        f.and("created_at >= ?", [Arg::Int(q.not_before)]);
    }
    if let Some(label) = q.label {
        f.and("label = ?", [Arg::Text(label.into())]);
    }
    let sql = format!(
        "SELECT seq, label, data, agent, created_at, hops FROM stream_entries{} ORDER BY seq LIMIT {} OFFSET {}",
        f.where_sql(),
        f.placeholder(Arg::Int(q.limit)),
        f.placeholder(Arg::Int(q.offset))
    );
    Ok(with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?)
}

pub async fn latest(db: &Db, id: &str, label: Option<&str>, not_before: i64) -> Result<Option<EntryRow>> {
    Ok(with_db!(db, read, |pool| sqlx::query_as(
        "SELECT seq, label, data, agent, created_at, hops FROM stream_entries
         WHERE stream_id = $1 AND ($2 IS NULL OR label = $2) AND created_at >= $3 ORDER BY seq DESC LIMIT 1"
    )
    .bind(id)
    .bind(label)
    .bind(not_before)
    .fetch_optional(pool)
    .await)?)
}

/// The caller's streams, plus discoverable ones when a name is given.
pub async fn list(db: &Db, caller: &str, name: Option<&str>, limit: i64, offset: i64) -> Result<Vec<StreamRow>> {
    let mut f = Filter::default();
    f.and("expires_at > ?", [Arg::Int(clock::now_ms())]);
    match name {
        Some(n) => f.and(
            "name = ? AND (owner = ? OR discoverable = ?)",
            [Arg::Text(n.into()), Arg::Text(caller.into()), Arg::Bool(true)],
        ),
        None => f.and("owner = ?", [Arg::Text(caller.into())]),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM streams{} ORDER BY created_at, stream_id LIMIT {} OFFSET {}",
        f.where_sql(),
        f.placeholder(Arg::Int(limit)),
        f.placeholder(Arg::Int(offset))
    );
    Ok(with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?)
}

/// Adds `extra_ms` to the stream's life, which never reaches past
/// [`clock::MAX_DURATION_SECS`] from now (the sum is never formed past it,
/// so it cannot overflow into SQLite's REAL).
pub async fn extend(db: &Db, id: &str, extra_ms: i64) -> Result<()> {
    let now = clock::now_ms();
    let cap = now.saturating_add(clock::secs_to_ms(clock::MAX_DURATION_SECS));
    with_db!(db, write, |pool| sqlx::query(
        "UPDATE streams SET expires_at = CASE WHEN expires_at > $4 - $1 THEN $4 ELSE expires_at + $1 END,
                updated_at = $2 WHERE stream_id = $3"
    )
    .bind(extra_ms)
    .bind(now)
    .bind(id)
    .bind(cap)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn delete(db: &Db, id: &str) -> Result<()> {
    with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM stream_entries WHERE stream_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM streams WHERE stream_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await
    }
    .await)?;
    Ok(())
}

/// Discoverable, unexpired streams that meet the criteria. A stream is
/// linked to stash X if it names X in `linked_stash`, or is called
/// `X-execution` or `X-discussion` (the contracts convention).
pub async fn discover(db: &Db, c: &Criteria) -> Result<Vec<Found>> {
    let mut f = Filter::default();
    f.and("discoverable = ?", [Arg::Bool(true)]);
    f.and("expires_at > ?", [Arg::Int(clock::now_ms())]);
    if let Some(ids) = &c.schema_ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        f.and(&format!("schema_id IN ({marks})"), ids.iter().map(|i| Arg::Text(i.clone())));
    }
    for word in &c.words {
        f.and(
            "LOWER(name || ' ' || description || ' ' || labels) LIKE ? ESCAPE '\\'",
            [Arg::Text(contains_pattern(word))],
        );
    }
    if let Some(label) = &c.label {
        f.and("labels LIKE ? ESCAPE '\\'", [Arg::Text(label_pattern(label))]);
    }
    if let Some(stash) = &c.linked_to {
        f.and(
            "(linked_stash = ? OR name = ? OR name = ?)",
            [
                Arg::Text(stash.clone()),
                Arg::Text(format!("{stash}-execution")),
                Arg::Text(format!("{stash}-discussion")),
            ],
        );
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM streams{} ORDER BY created_at, name LIMIT {}",
        f.where_sql(),
        f.placeholder(Arg::Int(c.fetch))
    );
    let rows: Vec<StreamRow> =
        with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            Found::stream(
                r.stream_id,
                r.name,
                r.description,
                &r.labels,
                r.owner,
                r.linked_stash,
                r.created_at,
                r.updated_at,
            )
        })
        .collect())
}

pub async fn count_bound(db: &Db, schema_id: &str) -> Result<i64> {
    let (n,): (i64,) = with_db!(db, read, |pool| sqlx::query_as("SELECT COUNT(*) FROM streams WHERE schema_id = $1")
        .bind(schema_id)
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

/// Deletes expired streams with their entries, and entries past their
/// stream's retention. Returns (streams, entries) deleted.
pub async fn sweep(db: &Db) -> Result<(u64, u64)> {
    let now = clock::now_ms();
    Ok(with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        let expired_entries = sqlx::query(
            "DELETE FROM stream_entries WHERE stream_id IN (SELECT stream_id FROM streams WHERE expires_at <= $1)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let streams = sqlx::query("DELETE FROM streams WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let retained = sqlx::query(
            "DELETE FROM stream_entries WHERE EXISTS (SELECT 1 FROM streams s
             WHERE s.stream_id = stream_entries.stream_id AND s.retention_seconds IS NOT NULL
             AND stream_entries.created_at < $1 - s.retention_seconds * 1000)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok::<_, sqlx::Error>((streams, expired_entries + retained))
    }
    .await)?)
}
