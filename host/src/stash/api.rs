//! The stash routes: each handler parses, checks the caller, and calls the
//! store; every answer maps through the one error type.

use super::*;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put, get, delete))
        .routes(routes!(list))
        .routes(routes!(append))
        .routes(routes!(replace))
        .routes(routes!(json_patch))
}

fn with_etag<T: IntoResponse>(status: StatusCode, version: i64, body: T) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(ETAG, v);
    }
    response
}

/// Creates or replaces a stash.
#[utoipa::path(put, path = "/stash/{name}", tag = "stash", params(("name" = String, Path), PutParams),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 201, body = Written), (status = 200, body = Written), (status = 409), (status = 412),
        (status = 413), (status = 422, description = "schema violation")))]
async fn put(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<PutParams>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response> {
    name::check("stash", &name)?;
    check_size(&app, p.persistent, body.len())?;
    let ttl = match (p.persistent, p.ttl) {
        (true, Some(_)) => {
            return Err(Error::bad_request("ttl applies only to ephemeral stashes; drop it or use persistent=false"));
        }
        (true, None) => None,
        (false, Some(t)) => Some(clock::duration_secs("ttl", t)?),
        (false, None) => Some(DEFAULT_TTL_SECS),
    };
    let labels = p.labels.as_deref().map(name::split_labels);
    if let Some(labels) = &labels {
        name::check_labels(labels)?;
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("text/plain").to_string();
    let if_match = IfMatch::from_headers(&headers)?;
    let requested = match &p.schema {
        Some(s) => Some(schema::bind(&app.db, &caller, s, Target::Stash).await?),
        None => None,
    };

    for _ in 0..MAX_ATTEMPTS {
        let now = clock::now_ms();
        let current = store::lookup(&app.db, &caller.name, &name, p.persistent).await?;
        if let Some(cur) = &current
            && cur.owner != caller.name
            && !caller.admin
        {
            return Err(Error::conflict(
                "name_taken",
                format!("the name {name:?} is held by another agent's shared stash; pick another name"),
            ));
        }
        if_match.check(current.as_ref().map(|c| c.version))?;
        let binding = match (current.as_ref().and_then(bound), &requested) {
            (Some(b), Some(r)) if b.schema_id != r.schema_id => {
                return Err(Error::conflict(
                    "schema_bound",
                    format!(
                        "stash {name:?} is bound to schema {:?} for good; it cannot be rebound to {:?}",
                        b.name, r.name
                    ),
                ));
            }
            (Some(b), _) => Some(b),
            (None, r) => r.clone(),
        };
        if let Some(b) = &binding {
            validate(&app, b, &body).await?;
        }
        let over = Overrides {
            ttl,
            shared: p.shared,
            discoverable: p.discoverable,
            description: p.description.clone(),
            labels: labels.as_deref().map(crate::db::encode_labels),
        };
        let next = next_row(
            current.as_ref(),
            &caller.name,
            &name,
            p.persistent,
            body.to_vec(),
            content_type.clone(),
            over,
            binding.as_ref(),
            now,
        );
        match current {
            Some(cur) => {
                if store::update(&app.db, &next, cur.version).await? {
                    app.stash_cache.invalidate(p.persistent, &name);
                    return Ok(with_etag(StatusCode::OK, next.version, Json(Written::from(&next))));
                }
            }
            None => match store::insert(&app.db, &next).await? {
                store::Insert::Done => {
                    app.stash_cache.invalidate(p.persistent, &name);
                    return Ok(with_etag(StatusCode::CREATED, next.version, Json(Written::from(&next))));
                }
                // An expired stash may still hold the name until the sweeper
                // runs; it no longer counts, so clear it and look again.
                store::Insert::Raced => {
                    store::purge_expired(&app.db, &name, p.persistent).await?;
                    app.stash_cache.invalidate(p.persistent, &name);
                }
            },
        }
        // The row moved under us: with If-Match that is the caller's 412.
        if if_match.is_present() {
            return Err(Error::precondition_failed(format!("stash {name:?} changed while writing; read it again")));
        }
    }
    Err(contention(&name))
}

/// The stored bytes, with version and expiry in headers.
#[utoipa::path(get, path = "/stash/{name}", tag = "stash", params(("name" = String, Path), StoreParam),
    responses((status = 200, description = "the stored bytes, with the Content-Type sent"), (status = 404)))]
async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<StoreParam>,
) -> Result<Response> {
    name::check("stash", &name)?;
    let Some(s) = read_through(&app, &caller, &name, p.persistent).await? else {
        return Err(not_found(&name, p.persistent));
    };
    let mut expires_at = s.expires_at;
    if let Some(ttl) = s.ttl.filter(|_| !s.persistent) {
        let now = clock::now_ms();
        let ttl_ms = clock::secs_to_ms(ttl);
        if now - s.renewed_at >= (ttl_ms / 10).min(1000) {
            store::renew(&app.db, &s, now + ttl_ms, now).await?;
            app.stash_cache.invalidate(s.persistent, &s.name);
            expires_at = Some(now + ttl_ms);
        }
    }
    let mut headers = HeaderMap::new();
    let mut set = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(CONTENT_TYPE, s.content_type.clone());
    set(ETAG, etag(s.version));
    set(HeaderName::from_static("x-stash-persistent"), s.persistent.to_string());
    set(HeaderName::from_static("x-stash-size"), s.size.to_string());
    set(HeaderName::from_static("x-stash-version"), s.version.to_string());
    if let Some(at) = expires_at {
        set(HeaderName::from_static("x-stash-expires-at"), clock::rfc3339(at));
    }
    Ok((StatusCode::OK, headers, s.body.clone()).into_response())
}

/// [`store::lookup`] through the cache (a no-op on PostgreSQL).
async fn read_through(app: &AppState, caller: &Caller, name: &str, persistent: bool) -> Result<Option<Arc<Stash>>> {
    if let Some(hit) = app.stash_cache.get(&caller.name, persistent, name, clock::now_ms()) {
        return Ok(hit);
    }
    let ticket = app.stash_cache.ticket();
    let found = store::lookup(&app.db, &caller.name, name, persistent).await?;
    app.stash_cache.fill(ticket, &caller.name, persistent, name, found.as_ref());
    Ok(found.map(Arc::new))
}

/// Deletes what has expired; returns how many stashes.
pub async fn sweep(app: &AppState) -> Result<u64> {
    let n = store::sweep(&app.db).await?;
    if n > 0 {
        app.stash_cache.clear();
    }
    Ok(n)
}

/// Deletes a stash (owner or admin).
#[utoipa::path(delete, path = "/stash/{name}", tag = "stash", params(("name" = String, Path), StoreParam),
    responses((status = 204), (status = 403), (status = 404), (status = 412)))]
async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<StoreParam>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    name::check("stash", &name)?;
    let if_match = IfMatch::from_headers(&headers)?;
    let Some(cur) = store::lookup(&app.db, &caller.name, &name, p.persistent).await? else {
        return Err(not_found(&name, p.persistent));
    };
    owner_only(&caller, &cur)?;
    if_match.check(Some(cur.version))?;
    let deleted = store::delete(&app.db, &cur.owner, &name, p.persistent, if_match.single()).await?;
    app.stash_cache.invalidate(p.persistent, &name);
    if !deleted {
        return Err(Error::precondition_failed(format!("stash {name:?} changed while deleting; read it again")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own stashes.
#[utoipa::path(get, path = "/stashes", tag = "stash", params(ListParams), responses((status = 200, body = StashList)))]
async fn list(State(app): State<AppState>, caller: Caller, Query(p): Query<ListParams>) -> Result<Json<StashList>> {
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    let rows = store::list_own(&app.db, &caller.name, p.persistent, limit, offset).await?;
    let stashes = rows
        .into_iter()
        .map(|m| Listed {
            name: m.name,
            persistent: m.persistent,
            size: m.size,
            version: m.version,
            expires_at: clock::rfc3339_opt(m.expires_at),
            schema_id: m.schema_id,
            shared: m.shared,
            discoverable: m.discoverable,
        })
        .collect();
    Ok(Json(StashList { stashes }))
}

/// Appends the body to the stash.
#[utoipa::path(patch, path = "/stash/{name}/append", tag = "stash", params(("name" = String, Path), StoreParam),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = Written), (status = 404), (status = 413), (status = 422)))]
async fn append(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<StoreParam>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response> {
    let max = app.config.max_stash_bytes(p.persistent);
    let (s, ()) = write(&app, &caller, &name, p.persistent, &headers, |cur| {
        too_large_unless(cur.body.len().saturating_add(body.len()), max, p.persistent)?;
        let mut next = cur.body.clone();
        next.extend_from_slice(&body);
        Ok((Some(next), ()))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, s.version, Json(Written::from(&s))))
}

/// Replaces text in the stash: the first occurrence, or all with `all=true`.
#[utoipa::path(patch, path = "/stash/{name}/replace", tag = "stash", params(("name" = String, Path), ReplaceParams),
    request_body = ReplaceRequest, responses((status = 200, body = Replaced), (status = 404), (status = 422)))]
async fn replace(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<ReplaceParams>,
    headers: HeaderMap,
    Json(req): Json<ReplaceRequest>,
) -> Result<Response> {
    if req.old.is_empty() {
        return Err(Error::bad_request("\"old\" is empty: give the text to replace"));
    }
    let max = app.config.max_stash_bytes(p.persistent);
    let (s, replacements) = write(&app, &caller, &name, p.persistent, &headers, |cur| {
        let text = std::str::from_utf8(&cur.body)
            .map_err(|_| Error::validation("this stash is not UTF-8 text, so text cannot be replaced in it", vec![]))?;
        let found = text.matches(&req.old).count();
        let n = if p.all { found } else { found.min(1) };
        // The result's size, known before it is built: n copies of `new`
        // could otherwise take memory far past the limit.
        let size = (text.len() - n * req.old.len()).saturating_add(n.saturating_mul(req.new.len()));
        too_large_unless(size, max, p.persistent)?;
        let next = match n {
            0 => None,
            _ if p.all => Some(text.replace(&req.old, &req.new).into_bytes()),
            _ => Some(text.replacen(&req.old, &req.new, 1).into_bytes()),
        };
        Ok((next, n))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, s.version, Json(Replaced { replacements, version: s.version })))
}

/// Sets fields on matching array elements of a JSON stash, atomically.
#[utoipa::path(patch, path = "/stash/{name}/json", tag = "stash", params(("name" = String, Path), StoreParam),
    request_body = patch::JsonPatch, responses((status = 200, body = Patched), (status = 404), (status = 422)))]
async fn json_patch(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<StoreParam>,
    headers: HeaderMap,
    Json(req): Json<patch::JsonPatch>,
) -> Result<Response> {
    let max = app.config.max_stash_bytes(p.persistent);
    let (s, items_matched) = write(&app, &caller, &name, p.persistent, &headers, |cur| {
        let mut doc = parse_json(&cur.body, "this stash")?;
        let matched = patch::apply(&mut doc, &req.update_items, max)?;
        let next = serde_json::to_vec(&doc).map_err(|e| Error::internal(e.to_string()))?;
        Ok((Some(next), matched))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, s.version, Json(Patched { items_matched, version: s.version })))
}

/// Read-modify-write of an existing stash by its owner. `change` returns the
/// new body (None: nothing to write) and a result for the response. Size
/// and schema are checked before anything is stored.
async fn write<T>(
    app: &AppState,
    caller: &Caller,
    name: &str,
    persistent: bool,
    headers: &HeaderMap,
    change: impl Fn(&Stash) -> Result<(Option<Vec<u8>>, T)>,
) -> Result<(Stash, T)> {
    name::check("stash", name)?;
    let if_match = IfMatch::from_headers(headers)?;
    for _ in 0..MAX_ATTEMPTS {
        let Some(cur) = store::lookup(&app.db, &caller.name, name, persistent).await? else {
            return Err(not_found(name, persistent));
        };
        owner_only(caller, &cur)?;
        if_match.check(Some(cur.version))?;
        let (body, result) = change(&cur)?;
        let Some(body) = body else { return Ok((cur, result)) };
        check_size(app, persistent, body.len())?;
        if let Some(b) = bound(&cur) {
            validate(app, &b, &body).await?;
        }
        let now = clock::now_ms();
        let next = Stash {
            size: body.len() as i64,
            body,
            version: cur.version + 1,
            expires_at: cur.ttl.filter(|_| !persistent).map(|t| now.saturating_add(clock::secs_to_ms(t))),
            renewed_at: now,
            updated_at: now,
            ..cur.clone()
        };
        if store::update(&app.db, &next, cur.version).await? {
            app.stash_cache.invalidate(persistent, name);
            return Ok((next, result));
        }
        if if_match.is_present() {
            return Err(Error::precondition_failed(format!("stash {name:?} changed while writing; read it again")));
        }
    }
    Err(contention(name))
}

async fn validate(app: &AppState, binding: &Binding, body: &[u8]) -> Result<()> {
    let doc = parse_json(body, "the body")?;
    app.schemas.check(&app.db, binding, &doc).await
}

fn check_size(app: &AppState, persistent: bool, size: usize) -> Result<()> {
    too_large_unless(size, app.config.max_stash_bytes(persistent), persistent)
}
