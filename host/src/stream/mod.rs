//! Stream: append-only logs with labels and live subscription.
//!
//! A stream is found by its unguessable `st_` id: anyone holding the id may
//! read and append, and a discoverable stream may also be found by name.
//! Entries are numbered from 1 with no gaps (see [`store`]). Live readers
//! use server-sent events: the backlog after `after` (or `Last-Event-ID`)
//! first, then new entries as they land, from any host process sharing the
//! database (see [`events`]).

mod appender;
pub mod events;
mod store;
pub mod view;

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
use crate::{AppState, clock, name};

pub use appender::Appender;
pub use store::{APPEND_ONE, INSERT_ENTRY, count_bound, discover, sweep};
use store::{EntryQuery, EntryRow, StreamRow};

const DEFAULT_TTL_SECS: i64 = 86_400;
/// A live reader re-checks storage this often even without a wake-up.
const RECHECK: Duration = Duration::from_secs(5);
const SSE_BATCH: i64 = 100;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(append, read, extend, delete))
        .routes(routes!(latest))
        .routes(routes!(events))
        .routes(routes!(list))
}

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
    /// Any JSON.
    #[schema(value_type = Object)]
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
    #[schema(value_type = Object)]
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

/// Creates a stream.
#[utoipa::path(post, path = "/stream", tag = "stream", request_body = CreateStream,
    responses((status = 201, body = StreamInfo), (status = 200, body = StreamInfo, description = "create_if_missing found it"),
        (status = 409), (status = 422)))]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateStream>,
) -> Result<(StatusCode, Json<StreamInfo>)> {
    name::check("stream", &req.name)?;
    name::check_labels(&req.labels)?;
    let ttl = req.ttl.unwrap_or(DEFAULT_TTL_SECS);
    if ttl <= 0 {
        return Err(Error::bad_request(format!("ttl must be a positive number of seconds, got {ttl}")));
    }
    if let Some(r) = req.retention_seconds.filter(|r| *r <= 0) {
        return Err(Error::bad_request(format!("retention_seconds must be positive, got {r}")));
    }
    if let Some(existing) = store::by_owner_name(&app.db, &caller.name, &req.name).await? {
        return if req.create_if_missing {
            Ok((StatusCode::OK, Json(StreamInfo::from(&existing))))
        } else {
            Err(name_taken(&req.name))
        };
    }
    if let Some(stash) = &req.linked_stash {
        name::check("stash", stash)?;
        if !crate::stash::visible(&app.db, &caller, stash).await? {
            return Err(Error::validation(
                format!("linked_stash {stash:?} is not a stash you can see; create it first"),
                vec![],
            ));
        }
    }
    let binding = match &req.schema_id {
        Some(s) => Some(schema::bind(&app.db, &caller, s, Target::Stream).await?),
        None => None,
    };
    let now = clock::now_ms();
    let row = StreamRow {
        stream_id: new_id(),
        owner: caller.name.clone(),
        name: req.name.clone(),
        description: req.description,
        labels: encode_labels(&req.labels),
        discoverable: req.discoverable,
        linked_stash: req.linked_stash,
        ttl,
        expires_at: now.saturating_add(clock::secs_to_ms(ttl)),
        retention_seconds: req.retention_seconds,
        schema_id: binding.as_ref().map(|b| b.schema_id.clone()),
        schema_version: binding.as_ref().map(|b| b.version),
        schema_name: binding.map(|b| b.name),
        last_seq: 0,
        created_at: now,
        updated_at: now,
    };
    match store::insert(&app.db, &row).await? {
        store::Insert::Done => Ok((StatusCode::CREATED, Json(StreamInfo::from(&row)))),
        // Lost a race with ourselves: honour create_if_missing against the winner.
        store::Insert::NameTaken => match store::by_owner_name(&app.db, &caller.name, &req.name).await? {
            Some(existing) if req.create_if_missing => Ok((StatusCode::OK, Json(StreamInfo::from(&existing)))),
            _ => Err(name_taken(&req.name)),
        },
    }
}

/// Wakes live readers of `stream_id`, in this process and in every other.
pub async fn announce(app: &AppState, stream_id: &str, seq: i64) {
    events::announce(&app.bus, &app.db, stream_id, seq).await;
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

/// A live stream given by id, or by name among `owner`'s: (id, owner, name).
pub async fn resolve(db: &crate::db::Db, owner: &str, id_or_name: &str) -> Result<Option<(String, String, String)>> {
    let row = match store::by_id(db, id_or_name).await? {
        Some(r) => Some(r),
        None if name::is_valid(id_or_name) => store::by_owner_name(db, owner, id_or_name).await?,
        None => None,
    };
    Ok(row.map(|r| (r.stream_id, r.owner, r.name)))
}

/// Appends an entry written by the host itself (agent `cairn`), such as a
/// hook's decision; None if the stream is gone.
pub async fn append_as_host(app: &AppState, stream_id: &str, label: &str, data: &Value) -> Result<Option<i64>> {
    let now = clock::now_ms();
    let append = appender::Append {
        stream_id: stream_id.to_string(),
        label: Some(label.to_string()),
        data: data.to_string(),
        agent: crate::agent::SYSTEM.into(),
        now,
    };
    let seq = app.appender.append(append).await?;
    if let Some(seq) = seq {
        announce(app, stream_id, seq).await;
    }
    Ok(seq)
}

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

/// Appends an entry.
#[utoipa::path(post, path = "/stream/{stream_id}", tag = "stream", params(("stream_id" = String, Path)),
    request_body = AppendRequest, responses((status = 201, body = Appended), (status = 404), (status = 422)))]
async fn append(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<AppendRequest>,
) -> Result<(StatusCode, Json<Appended>)> {
    if let Some(label) = &req.label {
        name::check("label", label)?;
    }
    if let Some(binding) = app.stream_schemas.get(&app, &id).await? {
        app.schemas.check(&app.db, &binding, &req.data).await?;
    }
    let label = req.label.as_deref().unwrap_or_default();
    let after = if app.append_hook.watches(label) {
        let s = find(&app, &id).await?;
        let hooked = Hooked { stream_id: s.stream_id, owner: s.owner, name: s.name, linked_stash: s.linked_stash };
        app.append_hook.admit(&caller, &hooked, label, &req.data).await?
    } else {
        None
    };
    let data = serde_json::to_string(&req.data).map_err(|e| Error::internal(e.to_string()))?;
    let now = clock::now_ms();
    let append =
        appender::Append { stream_id: id.clone(), label: req.label.clone(), data, agent: caller.name.clone(), now };
    let Some(seq) = app.appender.append(append).await? else {
        return Err(not_found(&id));
    };
    announce(&app, &id, seq).await;
    let decision = match after {
        Some(after) => after(seq).await?,
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(Appended {
            seq,
            stream_id: id,
            label: req.label,
            agent: caller.name,
            created_at: clock::rfc3339(now),
            decision,
        }),
    ))
}

/// Reads entries, oldest first.
#[utoipa::path(get, path = "/stream/{stream_id}", tag = "stream", params(("stream_id" = String, Path), ReadParams),
    responses((status = 200, body = Entries), (status = 404)))]
async fn read(
    State(app): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<ReadParams>,
) -> Result<Json<Entries>> {
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    let stream = find(&app, &id).await?;
    let after = p.after.unwrap_or(0);
    let q = EntryQuery { label: p.label.as_deref(), after, not_before: retention_cutoff(&stream), limit, offset };
    let rows = store::entries(&app.db, &id, &q).await?;
    let next_after = rows.last().map_or(after, |e| e.seq);
    Ok(Json(Entries { stream_id: id, entries: rows.iter().map(Entry::from).collect(), next_after }))
}

/// The newest entry (with that label).
#[utoipa::path(get, path = "/stream/{stream_id}/latest", tag = "stream", params(("stream_id" = String, Path), LabelParam),
    responses((status = 200, body = Entry), (status = 404)))]
async fn latest(
    State(app): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<LabelParam>,
) -> Result<Json<Entry>> {
    let stream = find(&app, &id).await?;
    match store::latest(&app.db, &id, p.label.as_deref(), retention_cutoff(&stream)).await? {
        Some(e) => Ok(Json(Entry::from(&e))),
        None => Err(Error::not_found(format!(
            "an entry in stream {id}{}",
            p.label.map(|l| format!(" with label {l:?}")).unwrap_or_default()
        ))),
    }
}

/// Server-sent events: the backlog, then live entries.
#[utoipa::path(get, path = "/stream/{stream_id}/events", tag = "stream", params(("stream_id" = String, Path), EventsParams),
    responses((status = 200, content_type = "text/event-stream", description = "one `entry` event per entry, id = seq"),
        (status = 404)))]
async fn events(
    State(app): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    find(&app, &id).await?;
    let last_event_id = last_event_id(&headers, "the seq of the last entry")?;
    let app_keep_alive = app.config.sse_keep_alive_secs;
    let tail = Tail {
        wake: app.bus.subscribe(&id),
        shutdown: app.shutdown.clone(),
        cursor: last_event_id.or(p.after).unwrap_or(0),
        buffer: VecDeque::new(),
        label: p.label,
        id,
        app,
    };
    let stream = futures_util::stream::unfold(tail, |mut tail| async move {
        let entry = tail.next().await?;
        let event = Event::default()
            .id(entry.seq.to_string())
            .event("entry")
            .json_data(Entry::from(&entry))
            .unwrap_or_else(|_| Event::default().comment("unserialisable entry"));
        Some((Ok(event), tail))
    });
    // The API promises a keep-alive at least every 15 s.
    let keep_alive = Duration::from_secs(app_keep_alive.clamp(1, 15));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
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

/// One SSE reader's position in a stream.
struct Tail {
    app: AppState,
    id: String,
    label: Option<String>,
    cursor: i64,
    buffer: VecDeque<EntryRow>,
    wake: tokio::sync::watch::Receiver<i64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Tail {
    /// The next entry; `None` ends the response (shutdown, stream gone).
    async fn next(&mut self) -> Option<EntryRow> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(e) = self.buffer.pop_front() {
                self.cursor = e.seq;
                return Some(e);
            }
            let stream = match store::by_id(&self.app.db, &self.id).await {
                Ok(Some(s)) => s,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(stream = %self.id, "live read failed: {e}");
                    return None;
                }
            };
            let q = EntryQuery {
                label: self.label.as_deref(),
                after: self.cursor,
                not_before: retention_cutoff(&stream),
                limit: SSE_BATCH,
                offset: 0,
            };
            match store::entries(&self.app.db, &self.id, &q).await {
                Ok(rows) if !rows.is_empty() => {
                    self.buffer.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(stream = %self.id, "live read failed: {e}");
                    return None;
                }
            }
            tokio::select! {
                _ = self.wake.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

/// The caller's streams, or with `name`, also discoverable ones of that name.
#[utoipa::path(get, path = "/streams", tag = "stream", params(ListParams), responses((status = 200, body = StreamList)))]
async fn list(State(app): State<AppState>, caller: Caller, Query(p): Query<ListParams>) -> Result<Json<StreamList>> {
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    if let Some(n) = &p.name {
        name::check("stream", n)?;
    }
    let rows = store::list(&app.db, &caller.name, p.name.as_deref(), limit, offset).await?;
    Ok(Json(StreamList { streams: rows.iter().map(StreamInfo::from).collect() }))
}

/// Extends a stream's life (creator only).
#[utoipa::path(patch, path = "/stream/{stream_id}", tag = "stream", params(("stream_id" = String, Path)),
    request_body = Extend, responses((status = 200, body = StreamInfo), (status = 403), (status = 404)))]
async fn extend(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<Extend>,
) -> Result<Json<StreamInfo>> {
    if req.extra_time <= 0 {
        return Err(Error::bad_request(format!(
            "extra_time must be a positive number of seconds, got {}",
            req.extra_time
        )));
    }
    let stream = find(&app, &id).await?;
    creator_only(&caller, &stream)?;
    store::extend(&app.db, &id, clock::secs_to_ms(req.extra_time)).await?;
    let updated = find(&app, &id).await?;
    Ok(Json(StreamInfo::from(&updated)))
}

/// Deletes a stream and its entries (creator only).
#[utoipa::path(delete, path = "/stream/{stream_id}", tag = "stream", params(("stream_id" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)))]
async fn delete(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<StatusCode> {
    let stream = find(&app, &id).await?;
    creator_only(&caller, &stream)?;
    store::delete(&app.db, &id).await?;
    app.bus.publish(&id, i64::MAX);
    Ok(StatusCode::NO_CONTENT)
}

async fn find(app: &AppState, id: &str) -> Result<StreamRow> {
    store::by_id(&app.db, id).await?.ok_or_else(|| not_found(id))
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

impl SchemaBindings {
    async fn get(&self, app: &AppState, id: &str) -> Result<Option<Binding>> {
        if let Some(b) = self.known.read().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(b);
        }
        let stream = find(app, id).await?;
        let binding = match (stream.schema_id, stream.schema_version) {
            (Some(schema_id), Some(version)) => {
                Some(Binding { schema_id, version, name: stream.schema_name.unwrap_or_default() })
            }
            _ => None,
        };
        if let Ok(mut m) = self.known.write() {
            if m.len() >= MAX_CACHED_BINDINGS {
                m.clear();
            }
            m.insert(id.to_string(), binding.clone());
        }
        Ok(binding)
    }
}
