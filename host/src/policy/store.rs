//! Policy rows and the decision log.

use crate::db::{Arg, Db, Filter};
use crate::error::Result;
use crate::{bind_args, with_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PolicyRow {
    pub name: String,
    pub hook: String,
    pub version: i64,
    pub sha256: String,
    pub wasm: Vec<u8>,
    pub imports: String,
    pub enabled: bool,
    pub scope: String,
    pub config: String,
    pub grants: String,
    pub limits: String,
    pub ord: i64,
    pub isolation: String,
    pub replaces_bundled: bool,
    pub mask: String,
    pub config_schema: Option<String>,
    /// An agent's binding ([`super::registry::AgentBinding`]) as JSON.
    pub agent: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "name, hook, version, sha256, wasm, imports, enabled, scope, config, grants, limits, ord, isolation, \
    replaces_bundled, mask, config_schema, agent, created_at, updated_at";

pub async fn all(db: &Db) -> Result<Vec<PolicyRow>> {
    let sql = format!("SELECT {COLUMNS} FROM policies ORDER BY name");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?)
}

pub async fn get(db: &Db, name: &str) -> Result<Option<PolicyRow>> {
    let sql = format!("SELECT {COLUMNS} FROM policies WHERE name = $1");
    Ok(with_db!(db, read, |pool| sqlx::query_as(&sql).bind(name).fetch_optional(pool).await)?)
}

/// Inserts or replaces the whole row.
pub async fn save(db: &Db, p: &PolicyRow) -> Result<()> {
    let sql = format!(
        "INSERT INTO policies ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT (name) DO UPDATE SET hook = excluded.hook, version = excluded.version, sha256 = excluded.sha256,
         wasm = excluded.wasm, imports = excluded.imports, enabled = excluded.enabled, scope = excluded.scope,
         config = excluded.config, grants = excluded.grants, limits = excluded.limits, ord = excluded.ord,
         isolation = excluded.isolation, replaces_bundled = excluded.replaces_bundled, mask = excluded.mask,
         config_schema = excluded.config_schema, agent = excluded.agent, updated_at = excluded.updated_at"
    );
    with_db!(db, write, |pool| sqlx::query(&sql)
        .bind(&p.name)
        .bind(&p.hook)
        .bind(p.version)
        .bind(&p.sha256)
        .bind(&p.wasm)
        .bind(&p.imports)
        .bind(p.enabled)
        .bind(&p.scope)
        .bind(&p.config)
        .bind(&p.grants)
        .bind(&p.limits)
        .bind(p.ord)
        .bind(&p.isolation)
        .bind(p.replaces_bundled)
        .bind(&p.mask)
        .bind(&p.config_schema)
        .bind(&p.agent)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn delete(db: &Db, name: &str) -> Result<bool> {
    let n = with_db!(db, write, |pool| sqlx::query("DELETE FROM policies WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Deletes decision records older than `before` (ms), and each policy's
/// oldest records beyond its newest `keep`; how many went.
pub async fn sweep_decisions(db: &Db, before: i64, keep: i64) -> Result<u64> {
    Ok(with_db!(db, write, |pool| async {
        let mut gone =
            sqlx::query("DELETE FROM policy_decisions WHERE at < $1").bind(before).execute(pool).await?.rows_affected();
        let over: Vec<(String,)> =
            sqlx::query_as("SELECT policy FROM policy_decisions GROUP BY policy HAVING COUNT(*) > $1")
                .bind(keep)
                .fetch_all(pool)
                .await?;
        for (policy,) in over {
            // The oldest record kept; everything before it goes.
            let cut: Option<(i64, String)> = sqlx::query_as(
                "SELECT at, decision_id FROM policy_decisions WHERE policy = $1 \
                 ORDER BY at DESC, decision_id DESC LIMIT 1 OFFSET $2",
            )
            .bind(&policy)
            .bind(keep - 1)
            .fetch_optional(pool)
            .await?;
            if let Some((at, id)) = cut {
                gone += sqlx::query(
                    "DELETE FROM policy_decisions WHERE policy = $1 AND (at < $2 OR (at = $2 AND decision_id < $3))",
                )
                .bind(&policy)
                .bind(at)
                .bind(&id)
                .execute(pool)
                .await?
                .rows_affected();
            }
        }
        Ok::<_, sqlx::Error>(gone)
    }
    .await)?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub decision_id: String,
    pub policy: String,
    pub version: i64,
    pub hook: String,
    pub dry_run: bool,
    pub agent: String,
    pub input: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub duration_us: i64,
    pub fuel_used: Option<i64>,
    pub logs: String,
    /// Log lines past the cap, counted and not kept.
    pub logs_dropped: i64,
    pub stdout: String,
    pub stderr: String,
    pub at: i64,
    /// `team:NAME` or `stash:NAME`; None for dry runs.
    pub scope: Option<String>,
}

const DECISION_COLUMNS: &str = "decision_id, policy, version, hook, dry_run, agent, input, result, error, duration_us, fuel_used, logs, logs_dropped, stdout, stderr, at, scope";

/// Rows per multi-row insert: 17 binds each, well under SQLite's limit.
pub const DECISIONS_PER_INSERT: usize = 500;

/// Inserts decision rows on `$conn` (a pool or a transaction), so that a
/// decision's effect and its record can commit together: one statement per
/// [`DECISIONS_PER_INSERT`] rows, since every statement is a round trip.
#[macro_export]
macro_rules! insert_decisions {
    ($conn:expr, $rows:expr) => {{
        let rows: Vec<&$crate::policy::store::DecisionRow> = $rows.into_iter().collect();
        let mut done: Result<(), sqlx::Error> = Ok(());
        for chunk in rows.chunks($crate::policy::store::DECISIONS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO policy_decisions (decision_id, policy, version, hook, dry_run, agent, \
                 input, result, error, duration_us, fuel_used, logs, logs_dropped, stdout, stderr, at, scope) ",
            );
            insert.push_values(chunk, |mut row, d| {
                row.push_bind(&d.decision_id)
                    .push_bind(&d.policy)
                    .push_bind(d.version)
                    .push_bind(&d.hook)
                    .push_bind(d.dry_run)
                    .push_bind(&d.agent)
                    .push_bind(&d.input)
                    .push_bind(&d.result)
                    .push_bind(&d.error)
                    .push_bind(d.duration_us)
                    .push_bind(d.fuel_used)
                    .push_bind(&d.logs)
                    .push_bind(d.logs_dropped)
                    .push_bind(&d.stdout)
                    .push_bind(&d.stderr)
                    .push_bind(d.at)
                    .push_bind(&d.scope);
            });
            if let Err(e) = insert.build().execute(&mut *$conn).await {
                done = Err(e);
                break;
            }
        }
        done
    }};
}

/// Records decisions that have no effect to commit with (denials, dry runs).
pub async fn record_all(db: &Db, rows: &[DecisionRow]) -> Result<()> {
    with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        crate::insert_decisions!(tx, rows)?;
        tx.commit().await
    }
    .await)?;
    Ok(())
}

pub async fn record(db: &Db, d: &DecisionRow) -> Result<()> {
    record_all(db, std::slice::from_ref(d)).await
}

/// A scope's decisions (`team:NAME`) in `window`, oldest first.
pub async fn decisions_in(db: &Db, scope: &str, window: Window<'_>, limit: i64) -> Result<Vec<DecisionRow>> {
    page(db, "scope", scope, window, limit).await
}

/// A policy's decisions in `window`, oldest first.
pub async fn decisions(db: &Db, policy: &str, window: Window<'_>, limit: i64) -> Result<Vec<DecisionRow>> {
    page(db, "policy", policy, window, limit).await
}

/// Which page of a decision log to read.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub from: From<'a>,
    /// Only decisions that failed (trapped, timed out, broke a limit).
    pub failed: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum From<'a> {
    /// From the start, or after the decision with this id.
    After(Option<&'a str>),
    /// The newest ones.
    Latest,
}

async fn page(db: &Db, column: &str, value: &str, window: Window<'_>, limit: i64) -> Result<Vec<DecisionRow>> {
    let mut f = Filter::default();
    f.and(&format!("{column} = ?"), [Arg::Text(value.into())]);
    if window.failed {
        f.and("error IS NOT NULL", []);
    }
    if let From::After(Some(after)) = window.from {
        f.and(
            "(at > (SELECT at FROM policy_decisions WHERE decision_id = ?) OR (at = (SELECT at FROM policy_decisions WHERE decision_id = ?) AND decision_id > ?))",
            [Arg::Text(after.into()), Arg::Text(after.into()), Arg::Text(after.into())],
        );
    }
    let latest = matches!(window.from, From::Latest);
    let order = if latest { "at DESC, decision_id DESC" } else { "at, decision_id" };
    let sql = format!(
        "SELECT {DECISION_COLUMNS} FROM policy_decisions{} ORDER BY {order} LIMIT {}",
        f.where_sql(),
        f.placeholder(Arg::Int(limit))
    );
    let mut rows: Vec<DecisionRow> =
        with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?;
    if latest {
        rows.reverse();
    }
    Ok(rows)
}
