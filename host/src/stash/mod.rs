//! Stash: named documents.
//!
//! Two stores, picked by `?persistent=`: ephemeral stashes expire `ttl`
//! seconds after their last write or read; persistent ones never expire.
//! A private name belongs to its owner; a shared or discoverable stash holds
//! its name across all agents. Reads look for the caller's own stash first,
//! then a shared or discoverable one.
//!
//! Every write goes through [`write`]: read the current row, compute the new
//! one, check size and schema, and store it only if the version has not
//! moved. Nothing is stored unless every check passed.
//!
//! Reading renews an ephemeral stash's TTL. Renewal is coalesced: a read
//! writes only when a tenth of the TTL (at most one second) has passed since
//! the last renewal, so hot reads stay reads.

mod api;
mod cache;
mod patch;
mod store;
pub mod view;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::agent::Caller;
use crate::error::{Error, Json, Path, Query, RawBody, Result, Violation};
use crate::precondition::{IfMatch, etag};
use crate::schema::{self, Binding, Target};
use crate::{clock, name};

pub use api::{routes, sweep};
pub use cache::Cache;
pub use store::{LOCK_PERSISTENT, SET_BODY, Stash, count_bound, discover, select_persistent_sql};

const DEFAULT_TTL_SECS: i64 = 86_400;
/// Optimistic writes retried this often before reporting contention.
const MAX_ATTEMPTS: usize = 16;

#[derive(Deserialize, IntoParams)]
pub struct StoreParam {
    /// Which store: persistent (never expires) or ephemeral (the default).
    #[serde(default)]
    persistent: bool,
}

#[derive(Deserialize, IntoParams)]
pub struct PutParams {
    #[serde(default)]
    persistent: bool,
    /// Seconds an ephemeral stash lives after its last write or read (default 86400).
    ttl: Option<i64>,
    /// Hold the name across all agents and let them read it.
    shared: Option<bool>,
    /// Like shared, and listed by `GET /discover`.
    discoverable: Option<bool>,
    /// A schema name or `sch_` id; the binding is permanent.
    schema: Option<String>,
    description: Option<String>,
    /// Comma-separated labels.
    labels: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Only this store; both when absent.
    persistent: Option<bool>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
pub struct ReplaceParams {
    #[serde(default)]
    persistent: bool,
    /// Replace every occurrence instead of the first.
    #[serde(default)]
    all: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Written {
    name: String,
    persistent: bool,
    version: i64,
    size: i64,
    expires_at: Option<String>,
    schema_id: Option<String>,
    owner: String,
    shared: bool,
    discoverable: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Listed {
    name: String,
    persistent: bool,
    size: i64,
    version: i64,
    expires_at: Option<String>,
    schema_id: Option<String>,
    shared: bool,
    discoverable: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StashList {
    stashes: Vec<Listed>,
}

#[derive(Deserialize, ToSchema)]
pub struct ReplaceRequest {
    old: String,
    new: String,
}

#[derive(Serialize, ToSchema)]
pub struct Replaced {
    replacements: usize,
    version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Patched {
    items_matched: usize,
    version: i64,
}

impl From<&Stash> for Written {
    fn from(s: &Stash) -> Self {
        Self {
            name: s.name.clone(),
            persistent: s.persistent,
            version: s.version,
            size: s.size,
            expires_at: clock::rfc3339_opt(s.expires_at),
            schema_id: s.schema_id.clone(),
            owner: s.owner.clone(),
            shared: s.shared,
            discoverable: s.discoverable,
        }
    }
}

/// The owner of the persistent stash `name` that `viewer` sees, if any.
pub async fn owner_of(db: &crate::db::Db, viewer: &str, name: &str) -> Result<Option<String>> {
    store::owner(db, viewer, name, true).await
}

/// The schema a stash is bound to, pinned at its version.
pub fn bound(s: &Stash) -> Option<Binding> {
    Some(Binding {
        schema_id: s.schema_id.clone()?,
        version: s.schema_version?,
        name: s.schema_name.clone().unwrap_or_default(),
    })
}

fn parse_json(body: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| {
        Error::validation(
            format!("{what} is not JSON ({e}); a schema-bound or JSON-patched stash must hold a JSON document"),
            vec![Violation { path: String::new(), message: e.to_string() }],
        )
    })
}

fn owner_only(caller: &Caller, s: &Stash) -> Result<()> {
    if s.owner == caller.name || caller.admin {
        Ok(())
    } else {
        Err(Error::forbidden(format!("stash {:?} belongs to {}; only its owner may change it", s.name, s.owner)))
    }
}

fn not_found(name: &str, persistent: bool) -> Error {
    let store = if persistent { "persistent" } else { "ephemeral" };
    Error::not_found(format!("{store} stash {name:?} (is ?persistent= right?)"))
}

fn contention(name: &str) -> Error {
    Error::conflict("contention", format!("stash {name:?} is being written by others right now; retry"))
}

/// Whether any agent has a live persistent stash of this name (a contract
/// a policy may be scoped to).
pub async fn persistent_exists(db: &crate::db::Db, name: &str) -> Result<bool> {
    store::persistent_exists(db, name).await
}

/// Whether the caller can see a stash of this name in either store (for
/// streams that link to one).
pub async fn visible(db: &crate::db::Db, caller: &Caller, name: &str) -> Result<bool> {
    for persistent in [true, false] {
        if store::lookup(db, &caller.name, name, persistent).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
