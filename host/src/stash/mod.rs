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

/// What a whole-stash write sets beyond the body; None keeps what the
/// stash has (or the default, for a new one).
#[derive(Default)]
pub struct Overrides {
    /// Seconds an ephemeral stash lives after its last write or read.
    pub ttl: Option<i64>,
    pub shared: Option<bool>,
    pub discoverable: Option<bool>,
    pub description: Option<String>,
    /// Encoded as the `labels` column stores them.
    pub labels: Option<String>,
}

/// The row a whole-stash write leaves: `current` (if any) replaced by
/// `body`, as `writer` writes it, bound to `binding`.
#[allow(clippy::too_many_arguments)]
fn next_row(
    current: Option<&Stash>,
    writer: &str,
    name: &str,
    persistent: bool,
    body: Vec<u8>,
    content_type: String,
    over: Overrides,
    binding: Option<&Binding>,
    now: i64,
) -> Stash {
    let ttl = if persistent { None } else { over.ttl.or(current.and_then(|c| c.ttl)).or(Some(DEFAULT_TTL_SECS)) };
    Stash {
        owner: current.map_or_else(|| writer.to_string(), |c| c.owner.clone()),
        name: name.to_string(),
        persistent,
        size: body.len() as i64,
        body,
        content_type,
        version: current.map_or(1, |c| c.version + 1),
        ttl,
        expires_at: ttl.map(|t| now.saturating_add(clock::secs_to_ms(t))),
        renewed_at: now,
        schema_id: binding.map(|b| b.schema_id.clone()),
        schema_version: binding.map(|b| b.version),
        schema_name: binding.map(|b| b.name.clone()),
        shared: over.shared.or(current.map(|c| c.shared)).unwrap_or(false),
        discoverable: over.discoverable.or(current.map(|c| c.discoverable)).unwrap_or(false),
        description: over.description.or(current.map(|c| c.description.clone())).unwrap_or_default(),
        labels: over.labels.or(current.map(|c| c.labels.clone())).unwrap_or_default(),
        created_at: current.map_or(now, |c| c.created_at),
        updated_at: now,
    }
}

/// A stash write a sandboxed agent planned, as checked for commit.
pub enum AgentPut {
    /// The row to write in the agent's transaction, over the version
    /// `expected` (None: a new stash), with [`crate::insert_stash!`] or
    /// [`crate::update_stash!`].
    Ready { next: Box<Stash>, expected: Option<i64> },
    /// Refused, as `PUT /stash/{name}` from the writer would be.
    Refused(String),
    /// The stash moved since the call read it: run the call again.
    Stale,
}

/// Checks a stash write that `writer`'s sandboxed agent planned over the
/// version it read (0: none) as `PUT /stash/{name}` would: size, owner and
/// the stash's schema. The agent's own transaction commits it.
#[allow(clippy::too_many_arguments)]
pub async fn plan_agent_put(
    db: &crate::db::Db,
    schemas: &schema::Validators,
    max_bytes: usize,
    writer: &str,
    name: &str,
    persistent: bool,
    body: &[u8],
    content_type: &str,
    read_version: i64,
) -> Result<AgentPut> {
    if let Err(e) = too_large_unless(body.len(), max_bytes, persistent) {
        return Ok(AgentPut::Refused(e.refusal().unwrap_or_default()));
    }
    let current = store::lookup(db, writer, name, persistent).await?;
    match &current {
        Some(cur) if cur.owner != writer => {
            return Ok(AgentPut::Refused(format!(
                "stash {name:?} belongs to {}; only its owner may write it (pick another name)",
                cur.owner
            )));
        }
        Some(cur) if cur.version != read_version => return Ok(AgentPut::Stale),
        None if read_version != 0 => return Ok(AgentPut::Stale),
        // An expired row may still hold the name until the sweeper runs.
        None => store::purge_expired(db, name, persistent).await?,
        Some(_) => {}
    }
    let binding = current.as_ref().and_then(bound);
    if let Some(b) = &binding {
        let checked = match parse_json(body, "the body") {
            Ok(doc) => schemas.check(db, b, &doc).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            return match e.refusal() {
                Some(why) => Ok(AgentPut::Refused(why)),
                None => Err(e),
            };
        }
    }
    let next = next_row(
        current.as_ref(),
        writer,
        name,
        persistent,
        body.to_vec(),
        content_type.to_string(),
        Overrides::default(),
        binding.as_ref(),
        clock::now_ms(),
    );
    Ok(AgentPut::Ready { next: Box::new(next), expected: current.map(|c| c.version) })
}

fn too_large_unless(size: usize, max: usize, persistent: bool) -> Result<()> {
    if size > max {
        let store = if persistent { "persistent" } else { "ephemeral" };
        return Err(Error::too_large(format!("{size} bytes is over the {max}-byte limit for {store} stashes")));
    }
    Ok(())
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
