//! Schema queries. `schemas` holds one row per schema (its head), and
//! `schema_versions` one row per version's definition.

use rand::RngCore;

use super::{Target, Visibility};
use crate::db::{Arg, Db, Filter, contains_pattern, is_unique_violation};
use crate::error::{Error, Result};
use crate::{bind_args, clock, with_db};

#[derive(Debug, Clone)]
pub struct SchemaRow {
    pub schema_id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub visibility: Visibility,
    pub target_type: Target,
    pub latest_version: i64,
}

#[derive(sqlx::FromRow)]
struct Raw {
    schema_id: String,
    name: String,
    owner: String,
    description: String,
    visibility: String,
    target_type: String,
    latest_version: i64,
}

impl From<Raw> for SchemaRow {
    fn from(r: Raw) -> Self {
        Self {
            schema_id: r.schema_id,
            name: r.name,
            owner: r.owner,
            description: r.description,
            visibility: if r.visibility == "public" { Visibility::Public } else { Visibility::Private },
            target_type: match r.target_type.as_str() {
                "stash" => Target::Stash,
                "stream" => Target::Stream,
                _ => Target::Both,
            },
            latest_version: r.latest_version,
        }
    }
}

fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

fn target_str(t: Target) -> &'static str {
    match t {
        Target::Stash => "stash",
        Target::Stream => "stream",
        Target::Both => "both",
    }
}

const COLUMNS: &str = "schema_id, name, owner, description, visibility, target_type, latest_version";

pub async fn by_id(db: &Db, id: &str) -> Result<Option<SchemaRow>> {
    let sql = format!("SELECT {COLUMNS} FROM schemas WHERE schema_id = $1");
    let row: Option<Raw> = with_db!(db, read, |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
    Ok(row.map(Into::into))
}

/// The caller's own schema of this name first, then a public one.
pub async fn by_name(db: &Db, caller: &str, name: &str) -> Result<Option<SchemaRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schemas WHERE name = $1 AND (owner = $2 OR visibility = 'public')
         ORDER BY CASE WHEN owner = $2 THEN 0 ELSE 1 END LIMIT 1"
    );
    let row: Option<Raw> =
        with_db!(db, read, |pool| sqlx::query_as(&sql).bind(name).bind(caller).fetch_optional(pool).await)?;
    Ok(row.map(Into::into))
}

pub async fn public_ids(db: &Db, id_or_name: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = with_db!(db, read, |pool| sqlx::query_as(
        "SELECT schema_id FROM schemas WHERE visibility = 'public' AND (schema_id = $1 OR name = $1)"
    )
    .bind(id_or_name)
    .fetch_all(pool)
    .await)?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub async fn list(db: &Db, caller: &str, q: Option<&str>, limit: i64, offset: i64) -> Result<Vec<SchemaRow>> {
    let mut f = Filter::default();
    f.and("(visibility = 'public' OR owner = ?)", [Arg::Text(caller.into())]);
    for word in q.unwrap_or_default().split_whitespace() {
        f.and("LOWER(name || ' ' || description) LIKE ? ESCAPE '\\'", [Arg::Text(contains_pattern(word))]);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM schemas{} ORDER BY created_at, schema_id LIMIT {} OFFSET {}",
        f.where_sql(),
        f.placeholder(Arg::Int(limit)),
        f.placeholder(Arg::Int(offset)),
    );
    let rows: Vec<Raw> = with_db!(db, read, |pool| bind_args!(sqlx::query_as(&sql), f.args()).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn definition(db: &Db, id: &str, version: i64) -> Result<Option<String>> {
    let row: Option<(String,)> = with_db!(db, read, |pool| sqlx::query_as(
        "SELECT definition FROM schema_versions WHERE schema_id = $1 AND version = $2"
    )
    .bind(id)
    .bind(version)
    .fetch_optional(pool)
    .await)?;
    Ok(row.map(|(d,)| d))
}

/// Adds a schema, or a version of the owner's schema of that name.
/// Returns the id and the new version.
pub async fn upsert(
    db: &Db,
    owner: &str,
    name: &str,
    description: &str,
    visibility: Visibility,
    target: Target,
    definition: &str,
) -> Result<(String, i64)> {
    let now = clock::now_ms();
    with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        if visibility == Visibility::Public {
            let taken: Option<(String,)> =
                sqlx::query_as("SELECT owner FROM schemas WHERE name = $1 AND visibility = 'public' AND owner <> $2")
                    .bind(name)
                    .bind(owner)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((other,)) = taken {
                return Err(Error::conflict(
                    "name_taken",
                    format!("a public schema named {name:?} belongs to {other}; pick another name"),
                ));
            }
        }
        let existing: Option<(String, i64)> =
            sqlx::query_as("SELECT schema_id, latest_version FROM schemas WHERE owner = $1 AND name = $2")
                .bind(owner)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let (id, version) = match existing {
            Some((id, latest)) => {
                sqlx::query(
                    "UPDATE schemas SET description = $1, visibility = $2, target_type = $3,
                     latest_version = $4, updated_at = $5 WHERE schema_id = $6",
                )
                .bind(description)
                .bind(visibility_str(visibility))
                .bind(target_str(target))
                .bind(latest + 1)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                (id, latest + 1)
            }
            None => {
                let id = new_id();
                let inserted = sqlx::query(
                    "INSERT INTO schemas (schema_id, name, owner, description, visibility, target_type,
                     latest_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
                )
                .bind(&id)
                .bind(name)
                .bind(owner)
                .bind(description)
                .bind(visibility_str(visibility))
                .bind(target_str(target))
                .bind(now)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Err(e) if is_unique_violation(&e) => {
                        return Err(Error::conflict(
                            "conflict",
                            format!("schema {name:?} was created concurrently; retry to add a version"),
                        ));
                    }
                    other => other?,
                };
                (id, 1)
            }
        };
        sqlx::query("INSERT INTO schema_versions (schema_id, version, definition, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(version)
            .bind(definition)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((id, version))
    }
    .await)
}

/// Installs (or re-versions) a schema under a fixed id; for built-ins.
pub async fn install(
    db: &Db,
    id: &str,
    owner: &str,
    name: &str,
    description: &str,
    definition: &str,
    now: i64,
) -> Result<()> {
    with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        let latest: Option<(i64,)> = sqlx::query_as("SELECT latest_version FROM schemas WHERE schema_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let version = latest.map_or(1, |(v,)| v + 1);
        let inserted = sqlx::query(
            "INSERT INTO schemas (schema_id, name, owner, description, visibility, target_type,
             latest_version, created_at, updated_at) VALUES ($1, $2, $3, $4, 'public', 'both', $5, $6, $6)
             ON CONFLICT (schema_id) DO UPDATE SET latest_version = excluded.latest_version,
             description = excluded.description, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(name)
        .bind(owner)
        .bind(description)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            // Another host process installed it first: theirs stands.
            Err(e) if is_unique_violation(&e) => return Ok(()),
            other => other?,
        };
        sqlx::query("INSERT INTO schema_versions (schema_id, version, definition, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(version)
            .bind(definition)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await)?;
    Ok(())
}

pub async fn delete(db: &Db, id: &str) -> Result<()> {
    with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM schema_versions WHERE schema_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM schemas WHERE schema_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await
    }
    .await)?;
    Ok(())
}

fn new_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("sch_{}", hex::encode(bytes))
}
