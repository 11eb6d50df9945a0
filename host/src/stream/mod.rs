//! Stream: append-only logs with labels and live subscription.
//!
//! A stream is found by its unguessable `st_` id: anyone holding the id may
//! read and append, and a discoverable stream may also be found by name.
//! Entries are numbered from 1 with no gaps (see [`store`]). Live readers
//! use server-sent events: the backlog after `after` (or `Last-Event-ID`)
//! first, then new entries as they land, from any host process sharing the
//! database (see [`events`]).

mod api;
mod appender;
pub mod events;
mod store;
pub mod view;

pub use api::{announce, routes};

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::RwLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::future::BoxFuture;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::agent::Caller;
use crate::db::{decode_labels, encode_labels};
use crate::error::{Error, Json, Path, Query, Result};
use crate::schema::{self, Binding, Target};
use crate::{clock, name};

pub use appender::Appender;
pub use store::EntryRow;
pub use store::{APPEND_ONE, INSERT_ENTRY, count_bound, discover, sweep};
use store::{EntryQuery, StreamRow};

const DEFAULT_TTL_SECS: i64 = 86_400;
const SSE_BATCH: i64 = 100;

#[derive(Deserialize, ToSchema)]
pub struct CreateStream {
    name: String,
    /// Seconds until the stream expires (default 86400).
    ttl: Option<i64>,
    #[serde(default)]
    discoverable: bool,
    /// The stash this stream belongs to (e.g. a contract).
    linked_stash: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    description: String,
    /// Return the caller's existing stream of this name instead of 409.
    #[serde(default)]
    create_if_missing: bool,
    /// Entries older than this many seconds are dropped.
    retention_seconds: Option<i64>,
    /// A schema (name or `sch_` id) that every entry's `data` must match.
    schema_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StreamInfo {
    stream_id: String,
    name: String,
    owner: String,
    ttl: i64,
    expires_at: String,
    discoverable: bool,
    linked_stash: Option<String>,
    labels: Vec<String>,
    description: String,
    retention_seconds: Option<i64>,
    schema_id: Option<String>,
    last_seq: i64,
    created_at: String,
}

impl From<&StreamRow> for StreamInfo {
    fn from(s: &StreamRow) -> Self {
        Self {
            stream_id: s.stream_id.clone(),
            name: s.name.clone(),
            owner: s.owner.clone(),
            ttl: s.ttl,
            expires_at: clock::rfc3339(s.expires_at),
            discoverable: s.discoverable,
            linked_stash: s.linked_stash.clone(),
            labels: decode_labels(&s.labels),
            description: s.description.clone(),
            retention_seconds: s.retention_seconds,
            schema_id: s.schema_id.clone(),
            last_seq: s.last_seq,
            created_at: clock::rfc3339(s.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct AppendRequest {
    /// Any JSON value: object, array, string, number, boolean or null.
    #[schema(value_type = Value)]
    data: Value,
    label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Appended {
    seq: i64,
    stream_id: String,
    label: Option<String>,
    agent: String,
    created_at: String,
    /// On a contract's stream, what the hook decided for a `claim`,
    /// `deliverable` or `algedonic` entry (also appended as an entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    decision: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Entry {
    seq: i64,
    label: Option<String>,
    /// The JSON value as appended.
    #[schema(value_type = Value)]
    data: Box<RawValue>,
    agent: String,
    created_at: String,
}

impl From<&EntryRow> for Entry {
    fn from(e: &EntryRow) -> Self {
        Self {
            seq: e.seq,
            label: e.label.clone(),
            data: e.data(),
            agent: e.agent.clone(),
            created_at: clock::rfc3339(e.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Entries {
    stream_id: String,
    entries: Vec<Entry>,
    /// Pass as `after` to read on from here.
    next_after: i64,
}

#[derive(Deserialize, IntoParams)]
pub struct ReadParams {
    label: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    /// Only entries with seq greater than this.
    after: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
pub struct LabelParam {
    label: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct EventsParams {
    label: Option<String>,
    /// Start after this seq; `Last-Event-ID` wins when both are given.
    after: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    name: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct StreamList {
    streams: Vec<StreamInfo>,
}

#[derive(Deserialize, ToSchema)]
pub struct Extend {
    /// Seconds added to the stream's expiry.
    extra_time: i64,
}

/// What runs after a hooked entry is stored at its seq: the hook's answer,
/// for the append's response.
pub type AfterAppend = Box<dyn FnOnce(i64) -> BoxFuture<'static, Result<Option<Value>>> + Send>;

/// Something that acts on entries of some streams (a contract's hooks).
/// Stream knows no contract: the composition root plugs the hook in.
pub trait AppendHook: Send + Sync {
    /// Whether entries with `label` may concern the hook at all; only those
    /// cost a lookup.
    fn watches(&self, label: &str) -> bool;

    /// Checks an entry before it is stored: refuses it, lets it through
    /// untouched (`None`), or says what to do once it is stored.
    fn admit<'a>(
        &'a self,
        caller: &'a Caller,
        stream: &'a Hooked,
        label: &'a str,
        data: &'a Value,
    ) -> BoxFuture<'a, Result<Option<AfterAppend>>>;
}

/// The stream an entry goes to, as a hook sees it.
#[derive(Debug, Clone)]
pub struct Hooked {
    pub stream_id: String,
    pub owner: String,
    pub name: String,
    pub linked_stash: Option<String>,
}

/// Labels that the host's own streams (a team's) carry for the host's
/// entries alone, so that no agent can write one that looks like them.
pub const HOST_LABELS: &[&str] = &["algedonic", "task"];

/// How long a stream the host keeps for a team lives: as long as the team,
/// which is not deleted (a century).
const HOSTED_TTL_SECS: i64 = 100 * 365 * 86_400;

/// Creates a stream owned by the host (`cairn`), such as a team's; returns
/// its id, or None if the host already has a stream of that name.
pub async fn create_hosted(
    db: &crate::db::Db,
    name: &str,
    description: &str,
    labels: &[&str],
) -> Result<Option<String>> {
    let now = clock::now_ms();
    let row = StreamRow {
        stream_id: new_id(),
        owner: crate::agent::SYSTEM.into(),
        name: name.into(),
        description: description.into(),
        labels: encode_labels(&labels.iter().map(|l| l.to_string()).collect::<Vec<_>>()),
        discoverable: false,
        linked_stash: None,
        ttl: HOSTED_TTL_SECS,
        expires_at: now.saturating_add(clock::secs_to_ms(HOSTED_TTL_SECS)),
        retention_seconds: None,
        schema_id: None,
        schema_version: None,
        schema_name: None,
        last_seq: 0,
        created_at: now,
        updated_at: now,
    };
    Ok(match store::insert(db, &row).await? {
        store::Insert::Done => Some(row.stream_id),
        store::Insert::NameTaken => None,
    })
}

/// A stream an agent follows, as its runner needs it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub stream_id: String,
    pub owner: String,
    pub name: String,
    pub linked_stash: Option<String>,
    /// Set when entries must fit a schema.
    pub binding: Option<Binding>,
    pub last_seq: i64,
    /// Entries created before this (ms) are past the stream's retention.
    pub not_before: i64,
}

/// The stream `stream` names: an id (`st_...`), or a discoverable stream's
/// name; None when there is none (or it expired).
pub async fn followed(db: &crate::db::Db, stream: &str) -> Result<Option<Followed>> {
    let row = if stream.starts_with("st_") {
        store::by_id(db, stream).await?
    } else {
        store::discoverable_named(db, stream).await?
    };
    Ok(row.map(|s| Followed {
        not_before: retention_cutoff(&s),
        stream_id: s.stream_id,
        owner: s.owner,
        name: s.name,
        linked_stash: s.linked_stash,
        binding: match (s.schema_id, s.schema_version) {
            (Some(schema_id), Some(version)) => {
                Some(Binding { schema_id, version, name: s.schema_name.unwrap_or_default() })
            }
            _ => None,
        },
        last_seq: s.last_seq,
    }))
}

impl Followed {
    /// The stream as an [`AppendHook`] sees it.
    pub fn hooked(&self) -> Hooked {
        Hooked {
            stream_id: self.stream_id.clone(),
            owner: self.owner.clone(),
            name: self.name.clone(),
            linked_stash: self.linked_stash.clone(),
        }
    }
}

/// Up to `limit` entries of `stream` after `after`, oldest first, within
/// the stream's retention.
pub async fn entries_after(db: &crate::db::Db, stream: &Followed, after: i64, limit: i64) -> Result<Vec<EntryRow>> {
    let q = EntryQuery { label: None, after, not_before: stream.not_before, limit, offset: 0 };
    store::entries(db, &stream.stream_id, &q).await
}

/// `Last-Event-ID`, the position a reconnecting SSE client resumes after;
/// `what` names it for the error.
pub fn last_event_id(headers: &HeaderMap, what: &str) -> Result<Option<i64>> {
    match headers.get("last-event-id") {
        Some(v) => Ok(Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| Error::bad_request(format!("Last-Event-ID must be {what} you received")))?,
        )),
        None => Ok(None),
    }
}

fn creator_only(caller: &Caller, s: &StreamRow) -> Result<()> {
    if s.owner == caller.name || caller.admin {
        Ok(())
    } else {
        Err(Error::forbidden(format!("only the stream's creator ({}) may do this", s.owner)))
    }
}

fn retention_cutoff(s: &StreamRow) -> i64 {
    s.retention_seconds.map_or(0, |r| clock::now_ms() - clock::secs_to_ms(r))
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("stream {id:?} (streams are addressed by their st_ id; it may have expired)"))
}

fn name_taken(name: &str) -> Error {
    Error::conflict(
        "name_taken",
        format!("you already have a stream named {name:?}; pass create_if_missing=true to reuse it"),
    )
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("st_{}", hex::encode(bytes))
}

/// Schema bindings by stream id. A stream's binding is fixed at creation and
/// ids are never reused, so entries stay valid for the life of the process;
/// appends then skip a read of the stream row.
#[derive(Default)]
pub struct SchemaBindings {
    known: RwLock<HashMap<String, Option<Binding>>>,
}

/// Cached bindings kept before the map is cleared and refilled.
const MAX_CACHED_BINDINGS: usize = 100_000;
