//! The stream routes: each handler parses, checks the caller, calls the store
//! and maps the answer; every failure is the one error type.

use super::*;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(append, read, extend, delete))
        .routes(routes!(latest))
        .routes(routes!(events))
        .routes(routes!(list))
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
    let ttl = clock::duration_secs("ttl", req.ttl.unwrap_or(DEFAULT_TTL_SECS))?;
    if let Some(r) = req.retention_seconds {
        clock::duration_secs("retention_seconds", r)?;
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
    let hosted = HOST_LABELS.contains(&label);
    if hosted && find(&app, &id).await?.owner == crate::agent::SYSTEM {
        return Err(Error::forbidden(format!(
            "{label:?} entries on the host's streams (a team's) are written by the host alone; use another label"
        ))
        .with_code("reserved_label"));
    }
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
        let event = tail.next().await?;
        Some((Ok(event), tail))
    });
    // The API promises a keep-alive at least every 15 s.
    let keep_alive = Duration::from_secs(app_keep_alive.clamp(1, 15));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}

/// One SSE reader's position in a stream.
struct Tail {
    app: AppState,
    id: String,
    label: Option<String>,
    cursor: i64,
    buffer: VecDeque<(i64, Event)>,
    wake: tokio::sync::watch::Receiver<i64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
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
    let extra = clock::duration_secs("extra_time", req.extra_time)?;
    let stream = find(&app, &id).await?;
    creator_only(&caller, &stream)?;
    store::extend(&app.db, &id, clock::secs_to_ms(extra)).await?;
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

/// The entries after `after` as SSE events, or `None` when the stream is
/// gone.
async fn live_batch(
    db: &crate::db::Db,
    id: &str,
    label: Option<&str>,
    after: i64,
) -> Result<Option<Vec<(i64, Event)>>> {
    let Some(stream) = store::by_id(db, id).await? else { return Ok(None) };
    let q = EntryQuery { label, after, not_before: retention_cutoff(&stream), limit: SSE_BATCH, offset: 0 };
    let rows = store::entries(db, id, &q).await?;
    Ok(Some(rows.iter().map(|e| (e.seq, entry_event(e))).collect()))
}

fn entry_event(entry: &EntryRow) -> Event {
    Event::default()
        .id(entry.seq.to_string())
        .event("entry")
        .json_data(Entry::from(entry))
        .unwrap_or_else(|_| Event::default().comment("unserialisable entry"))
}

impl Tail {
    /// The next entry's event; `None` ends the response (shutdown, stream
    /// gone).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some((seq, event)) = self.buffer.pop_front() {
                self.cursor = seq;
                return Some(event);
            }
            // Marked seen before reading, so a wake during the read counts.
            let seen = *self.wake.borrow_and_update();
            let key = events::ReadKey { stream: self.id.clone(), label: self.label.clone(), after: self.cursor, seen };
            let (db, id, label, after) = (self.app.db.clone(), self.id.clone(), self.label.clone(), self.cursor);
            let read = async move {
                std::sync::Arc::new(
                    live_batch(&db, &id, label.as_deref(), after).await.map_err(|e| e.message().to_string()),
                )
            };
            match &*self.app.bus.read_once(key, read).await {
                Ok(Some(rows)) if !rows.is_empty() => {
                    self.buffer.extend(rows.iter().cloned());
                    continue;
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(stream = %self.id, "live read failed: {e}");
                    return None;
                }
            }
            tokio::select! {
                _ = self.wake.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(self.app.config.sse_recheck_secs)) => {}
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}
