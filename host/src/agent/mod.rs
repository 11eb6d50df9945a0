//! Agents and their keys.
//!
//! An API key is `sk_` and 192 random bits in hex. Only its SHA-256 is
//! stored: keys carry enough entropy that a slow hash would add cost without
//! adding safety. Every authenticated request resolves its key through
//! [`Caller`], which keeps resolved keys in memory: agents are never renamed
//! or re-keyed while the host runs, so the cache cannot go stale (the admin
//! key from `CAIRN_ADMIN_KEY` is set before serving starts).

pub mod api;

pub use api::routes;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Registration;
use crate::db::Db;
use crate::error::{Error, Json, Result};
use crate::{clock, name, with_db};

/// The agent that made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

impl Caller {
    /// Policies deciding for this caller read as it could over HTTP.
    pub fn reader(&self) -> crate::policy::Reader {
        crate::policy::Reader { name: self.name.clone(), admin: self.admin }
    }
}

/// Names the host keeps for itself: the bootstrap admin, and `cairn`, which
/// owns built-in resources and signs the messages the host sends.
const RESERVED: [&str; 2] = ["admin", "cairn"];

/// Whether `name` is, or reads as, a reserved name: compared without case
/// and without the punctuation names may carry (`Admin`, `cairn.`,
/// `a-d-m-i-n`), so no agent can pass for the host.
pub fn is_reserved(name: &str) -> bool {
    let folded: String =
        name.chars().filter(|c| !matches!(c, '.' | '_' | '-')).map(|c| c.to_ascii_lowercase()).collect();
    RESERVED.contains(&folded.as_str())
}
pub const SYSTEM: &str = "cairn";

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    agent_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct RegisterResponse {
    agent_name: String,
    /// Shown once. Only its hash is stored.
    api_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    agent_name: String,
    admin: bool,
}

/// Who the key belongs to.
#[utoipa::path(get, path = "/me", tag = "agents", responses((status = 200, body = MeResponse)))]
async fn me(caller: Caller) -> Json<MeResponse> {
    Json(MeResponse { agent_name: caller.name, admin: caller.admin })
}

/// Whether an agent of this name is registered.
pub async fn exists(db: &Db, name: &str) -> Result<bool> {
    let found: Option<(String,)> =
        with_db!(db, read, |pool| sqlx::query_as("SELECT name FROM agents WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await)?;
    Ok(found.is_some())
}

pub fn new_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("sk_{}", hex::encode(bytes))
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Reads the key from `X-API-KEY` or `Authorization: Bearer`.
fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get("x-api-key") {
        return v.to_str().ok().map(str::trim);
    }
    let auth = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Resolved keys, by hash.
#[derive(Default)]
pub struct KeyCache {
    known: RwLock<HashMap<String, Caller>>,
}

impl KeyCache {
    async fn resolve(&self, db: &Db, key: &str) -> Result<Caller> {
        let hash = hash_key(key);
        if let Some(caller) = self.known.read().ok().and_then(|m| m.get(&hash).cloned()) {
            return Ok(caller);
        }
        let Some(caller) = find_by_hash(db, &hash).await? else {
            return Err(Error::unauthorized("unknown API key: register with POST /register/agent"));
        };
        if let Ok(mut m) = self.known.write() {
            m.insert(hash, caller.clone());
        }
        Ok(caller)
    }
}

/// A token bucket per agent: `rate` requests a second, bursts of `2 * rate`.
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self { rate: f64::from(per_second), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn check(&self, agent: &str) -> Result<()> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let capacity = self.rate * 2.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().map_err(|_| Error::internal("rate limiter lock poisoned"))?;
        let (tokens, last) = buckets.entry(agent.to_string()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64;
            Err(Error::rate_limited(wait))
        }
    }
}

/// Makes sure an admin exists. With `configured`, that key becomes the admin
/// key. Without it, a key is made on first start and returned, to be printed
/// once; later starts return `None`.
pub async fn bootstrap_admin(db: &Db, configured: Option<&str>) -> anyhow::Result<Option<String>> {
    if let Some(key) = configured {
        anyhow::ensure!(key.len() >= 16, "CAIRN_ADMIN_KEY is too short: use at least 16 characters");
        let hash = hash_key(key);
        with_db!(db, write, |pool| sqlx::query(
            "INSERT INTO agents (name, key_hash, admin, created_at) VALUES ('admin', $1, TRUE, $2)
             ON CONFLICT (name) DO UPDATE SET key_hash = excluded.key_hash, admin = TRUE"
        )
        .bind(&hash)
        .bind(clock::now_ms())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        return Ok(None);
    }
    let key = new_key();
    Ok(insert(db, "admin", &hash_key(&key), true).await?.then_some(key))
}

/// Inserts an agent; false if the name is taken.
async fn insert(db: &Db, name: &str, key_hash: &str, admin: bool) -> Result<bool> {
    let done = with_db!(db, write, |pool| {
        sqlx::query(
        "INSERT INTO agents (name, key_hash, admin, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING"
    )
    .bind(name)
    .bind(key_hash)
    .bind(admin)
    .bind(clock::now_ms())
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

async fn find_by_hash(db: &Db, hash: &str) -> Result<Option<Caller>> {
    let row: Option<(String, bool)> =
        with_db!(db, read, |pool| sqlx::query_as("SELECT name, admin FROM agents WHERE key_hash = $1")
            .bind(hash)
            .fetch_optional(pool)
            .await)?;
    Ok(row.map(|(name, admin)| Caller { name, admin }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_long() {
        let k = new_key();
        assert!(k.starts_with("sk_"));
        assert_eq!(k.len(), 3 + 48);
        assert_ne!(k, new_key());
        assert_eq!(hash_key(&k).len(), 64);
    }

    #[test]
    fn reserved_names_match_without_case_or_punctuation() {
        for taken in ["admin", "Admin", "ADMIN", "Cairn", "cairn.", "admin_", "a-d-m-i-n", "_CAIRN-"] {
            assert!(is_reserved(taken), "{taken}");
        }
        for free in ["admins", "cairn2", "my-admin", "caim"] {
            assert!(!is_reserved(free), "{free}");
        }
    }

    #[test]
    fn rate_limiter_refuses_past_the_burst() {
        let l = RateLimiter::new(1);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let err = l.check("a").unwrap_err();
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(l.check("b").is_ok(), "buckets are per agent");
        assert!(RateLimiter::new(0).check("a").is_ok());
    }

    #[tokio::test]
    async fn admin_bootstrap_prints_once() {
        for db in crate::testing::databases().await {
            let first = bootstrap_admin(&db, None).await.unwrap();
            assert!(first.is_some());
            assert_eq!(bootstrap_admin(&db, None).await.unwrap(), None);
            let cache = KeyCache::default();
            let caller = cache.resolve(&db, &first.unwrap()).await.unwrap();
            assert_eq!(caller, Caller { name: "admin".into(), admin: true });
            bootstrap_admin(&db, Some("configured-admin-key")).await.unwrap();
            assert!(cache.resolve(&db, "configured-admin-key").await.unwrap().admin);
        }
    }
}
