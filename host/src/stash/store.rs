//! Stash queries. A stash is one row; every write replaces the row under an
//! optimistic version check (`WHERE version = $expected`), which serialises
//! concurrent writers on both backends without backend-specific locking.

use crate::db::{Arg, Db, Filter, contains_pattern, is_unique_violation, label_pattern};
use crate::error::{Error, Result};
use crate::search::{Criteria, Found};
use crate::{bind_args, clock, with_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stash {
    pub owner: String,
    pub name: String,
    pub persistent: bool,
    pub body: Vec<u8>,
    pub content_type: String,
    pub size: i64,
    pub version: i64,
    pub ttl: Option<i64>,
    pub expires_at: Option<i64>,
    pub renewed_at: i64,
    pub schema_id: Option<String>,
    pub schema_version: Option<i64>,
    pub schema_name: Option<String>,
    pub shared: bool,
    pub discoverable: bool,
    pub description: String,
    pub labels: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A stash without its body, for listings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Meta {
    pub name: String,
    pub persistent: bool,
    pub size: i64,
    pub version: i64,
    pub expires_at: Option<i64>,
    pub schema_id: Option<String>,
    pub shared: bool,
    pub discoverable: bool,
}

const COLUMNS: &str = "owner, name, persistent, body, content_type, size, version, ttl, expires_at, renewed_at, \
    schema_id, schema_version, schema_name, shared, discoverable, description, labels, created_at, updated_at";

/// The caller's own stash of this name first, then a shared or discoverable
/// one; never an expired one. Writers read through here too: their
/// versioned update catches anything that moved since.
pub async fn lookup(db: &Db, caller: &str, name: &str, persistent: bool) -> Result<Option<Stash>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM stashes WHERE persistent = $1 AND name = $2
         AND (owner = $3 OR public_name IS NOT NULL) AND (expires_at IS NULL OR expires_at > $4)
         ORDER BY CASE WHEN owner = $3 THEN 0 ELSE 1 END LIMIT 1"
    );
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql)
        .bind(persistent)
        .bind(name)
        .bind(caller)
        .bind(clock::now_ms())
        .fetch_optional(pool)
        .await)?)
}

/// Whether any agent has a live persistent stash named `name`.
pub async fn persistent_exists(db: &Db, name: &str) -> Result<bool> {
    const SQL: &str = "SELECT name FROM stashes WHERE persistent = $1 AND name = $2 \
                       AND (expires_at IS NULL OR expires_at > $3) LIMIT 1";
    let found: Option<(String,)> = with_db!(db, read, |pool| sqlx::query_as(SQL)
        .bind(true)
        .bind(name)
        .bind(clock::now_ms())
        .fetch_optional(pool)
        .await)?;
    Ok(found.is_some())
}

/// The owner of the stash [`lookup`] would find, without reading its body.
pub async fn owner(db: &Db, caller: &str, name: &str, persistent: bool) -> Result<Option<String>> {
    let found: Option<(String,)> = with_db!(db, read, |pool| sqlx::query_as(
        "SELECT owner FROM stashes WHERE persistent = $1 AND name = $2
         AND (owner = $3 OR public_name IS NOT NULL) AND (expires_at IS NULL OR expires_at > $4)
         ORDER BY CASE WHEN owner = $3 THEN 0 ELSE 1 END LIMIT 1"
    )
    .bind(persistent)
    .bind(name)
    .bind(caller)
    .bind(clock::now_ms())
    .fetch_optional(pool)
    .await)?;
    Ok(found.map(|(o,)| o))
}

/// Drops expired rows of this name, so an expired stash never holds a name.
pub async fn purge_expired(db: &Db, name: &str, persistent: bool) -> Result<()> {
    with_db!(db, write, |pool| sqlx::query(
        "DELETE FROM stashes WHERE persistent = $1 AND name = $2 AND expires_at IS NOT NULL AND expires_at <= $3"
    )
    .bind(persistent)
    .bind(name)
    .bind(clock::now_ms())
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub enum Insert {
    Done,
    /// The name is held: by a concurrent writer, or by an expired row.
    Raced,
}

/// Binds a [`Stash`]'s columns, `$1`..`$20`, in the order [`insert_stash!`]
/// and [`update_stash!`] number them.
#[macro_export]
macro_rules! bind_stash_row {
    ($query:expr, $s:expr) => {{
        let s: &$crate::stash::Stash = $s;
        $query
            .bind(&s.owner)
            .bind(&s.name)
            .bind(s.persistent)
            .bind(&s.body)
            .bind(&s.content_type)
            .bind(s.size)
            .bind(s.version)
            .bind(s.ttl)
            .bind(s.expires_at)
            .bind(s.renewed_at)
            .bind(&s.schema_id)
            .bind(s.schema_version)
            .bind(&s.schema_name)
            .bind(s.shared)
            .bind(s.discoverable)
            .bind(&s.description)
            .bind(&s.labels)
            .bind(s.created_at)
            .bind(s.updated_at)
            .bind((s.shared || s.discoverable).then_some(&s.name))
    }};
}

/// A new row, `$s` a [`Stash`], on `$exec` (a pool, or `&mut *tx`): the
/// rows written. One text for HTTP and agents' transactions.
#[macro_export]
macro_rules! insert_stash {
    ($exec:expr, $s:expr) => {{
        let q = sqlx::query(
            "INSERT INTO stashes (owner, name, persistent, body, content_type, size, version, ttl, expires_at, \
             renewed_at, schema_id, schema_version, schema_name, shared, discoverable, description, labels, \
             created_at, updated_at, public_name) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        );
        $crate::bind_stash_row!(q, $s).execute($exec).await.map(|r| r.rows_affected())
    }};
}

/// `$s` (a [`Stash`]) over its row at version `$expected`, on `$exec`: the
/// rows written (0 when the row moved on).
#[macro_export]
macro_rules! update_stash {
    ($exec:expr, $s:expr, $expected:expr) => {{
        let q = sqlx::query(
            "UPDATE stashes SET body = $4, content_type = $5, size = $6, version = $7, ttl = $8, expires_at = $9, \
             renewed_at = $10, schema_id = $11, schema_version = $12, schema_name = $13, shared = $14, \
             discoverable = $15, description = $16, labels = $17, created_at = $18, updated_at = $19, \
             public_name = $20 WHERE owner = $1 AND name = $2 AND persistent = $3 AND version = $21",
        );
        $crate::bind_stash_row!(q, $s).bind($expected).execute($exec).await.map(|r| r.rows_affected())
    }};
}

pub async fn insert(db: &Db, s: &Stash) -> Result<Insert> {
    match with_db!(db, write, |pool| crate::insert_stash!(pool, s)) {
        Ok(_) => Ok(Insert::Done),
        Err(e) if is_unique_violation(&e) => Ok(Insert::Raced),
        Err(e) => Err(e.into()),
    }
}

/// `$1` owner, `$2` persistent (true), `$3` name: takes the row for the
/// transaction (a row lock on PostgreSQL; SQLite has one writer) and
/// returns its version.
pub const LOCK_PERSISTENT: &str =
    "UPDATE stashes SET version = version WHERE owner = $1 AND persistent = $2 AND name = $3 RETURNING version";

/// `$1` owner, `$2` persistent (true), `$3` name: the whole row.
pub fn select_persistent_sql() -> String {
    format!("SELECT {COLUMNS} FROM stashes WHERE owner = $1 AND persistent = $2 AND name = $3")
}

/// `$1` body, `$2` size, `$3` new version, `$4` now, `$5` owner, `$6`
/// persistent (true), `$7` name: a new body, inside a transaction that holds
/// the row.
pub const SET_BODY: &str = "UPDATE stashes SET body = $1, size = $2, version = $3, renewed_at = $4, updated_at = $4
     WHERE owner = $5 AND persistent = $6 AND name = $7";

/// Writes `s` over the row at `expected` version; false if it moved on.
pub async fn update(db: &Db, s: &Stash, expected: i64) -> Result<bool> {
    match with_db!(db, write, |pool| crate::update_stash!(pool, s, expected)) {
        Ok(done) => Ok(done == 1),
        Err(e) if is_unique_violation(&e) => Err(Error::conflict(
            "name_taken",
            format!("another agent's shared stash already holds the name {:?}; it cannot be shared twice", s.name),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Pushes an ephemeral stash's expiry out after a read.
pub async fn renew(db: &Db, s: &Stash, expires_at: i64, now: i64) -> Result<()> {
    with_db!(db, write, |pool| sqlx::query(
        "UPDATE stashes SET expires_at = $1, renewed_at = $2
         WHERE owner = $3 AND persistent = $4 AND name = $5 AND expires_at < $1"
    )
    .bind(expires_at)
    .bind(now)
    .bind(&s.owner)
    .bind(s.persistent)
    .bind(&s.name)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes one stash, at `version` when given; false if nothing matched.
pub async fn delete(db: &Db, owner: &str, name: &str, persistent: bool, version: Option<i64>) -> Result<bool> {
    let done = with_db!(db, write, |pool| sqlx::query(
        "DELETE FROM stashes WHERE owner = $1 AND persistent = $2 AND name = $3 AND ($4 IS NULL OR version = $4)"
    )
    .bind(owner)
    .bind(persistent)
    .bind(name)
    .bind(version)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn list_own(db: &Db, owner: &str, persistent: Option<bool>, limit: i64, offset: i64) -> Result<Vec<Meta>> {
    let mut f = Filter::default();
    f.and("owner = ?", [Arg::Text(owner.into())]);
    f.and("(expires_at IS NULL OR expires_at > ?)", [Arg::Int(clock::now_ms())]);
    if let Some(p) = persistent {
        f.and("persistent = ?", [Arg::Bool(p)]);
    }
    let sql = format!(
        "SELECT name, persistent, size, version, expires_at, schema_id, shared, discoverable FROM stashes{}
         ORDER BY created_at, name LIMIT {} OFFSET {}",
        f.where_sql(),
        f.placeholder(Arg::Int(limit)),
        f.placeholder(Arg::Int(offset))
    );
    Ok(with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?)
}

#[derive(sqlx::FromRow)]
struct Discovered {
    name: String,
    persistent: bool,
    description: String,
    labels: String,
    owner: String,
    schema_id: Option<String>,
    schema_name: Option<String>,
    created_at: i64,
    updated_at: i64,
}

/// Discoverable, unexpired stashes that meet the criteria, oldest first,
/// at most `c.fetch` of them.
pub async fn discover(db: &Db, c: &Criteria) -> Result<Vec<Found>> {
    if c.linked_to.is_some() {
        return Ok(Vec::new()); // only streams link to stashes
    }
    let mut f = Filter::default();
    f.and("discoverable = ?", [Arg::Bool(true)]);
    f.and("(expires_at IS NULL OR expires_at > ?)", [Arg::Int(clock::now_ms())]);
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
    let sql = format!(
        "SELECT name, persistent, description, labels, owner, schema_id, schema_name, created_at, updated_at
         FROM stashes{} ORDER BY created_at, name LIMIT {}",
        f.where_sql(),
        f.placeholder(Arg::Int(c.fetch))
    );
    let rows: Vec<Discovered> =
        with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            Found::stash(
                r.name,
                r.persistent,
                r.description,
                &r.labels,
                r.owner,
                r.schema_id.zip(r.schema_name),
                r.created_at,
                r.updated_at,
            )
        })
        .collect())
}

pub async fn count_bound(db: &Db, schema_id: &str) -> Result<i64> {
    let (n,): (i64,) = with_db!(db, read, |pool| sqlx::query_as("SELECT COUNT(*) FROM stashes WHERE schema_id = $1")
        .bind(schema_id)
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

/// Deletes every expired stash; returns how many.
pub async fn sweep(db: &Db) -> Result<u64> {
    let done = with_db!(db, write, |pool| sqlx::query(
        "DELETE FROM stashes WHERE expires_at IS NOT NULL AND expires_at <= $1"
    )
    .bind(clock::now_ms())
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done)
}
