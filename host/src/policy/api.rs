//! The policy registry over HTTP: upload, settings, list, show, delete, dry
//! runs and the decision log. Changes are for admins; any agent may read
//! what rules it is under.

use std::sync::Arc;

use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::registry::{Active, SETTINGS_HEADER, Scope, Settings, hook_str};
use super::store::{self, DecisionRow};
use super::{Hook, Input};
use crate::agent::Caller;
use crate::error::{Error, Json, Path, Query, RawBody, Result};
use crate::{AppState, clock};

/// Largest component accepted (Python components run to tens of MB).
pub const MAX_COMPONENT_BYTES: usize = 128 << 20;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload, show, remove))
        // Components are large; only their upload takes them, and only
        // from an admin, who is checked before the body is read
        // ([`admin_gate`], layered on by the composition root).
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
        .routes(routes!(list))
        .routes(routes!(configure))
        .routes(routes!(evaluate))
        .routes(routes!(decisions))
        .routes(routes!(dead_letters))
        .routes(routes!(retry_dead_letter))
}

#[derive(Deserialize, IntoParams)]
pub struct HookParam {
    /// The hook the component is for: claim, handoff, escalation or agent.
    hook: Hook,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    name: String,
    hook: Hook,
    version: i64,
    sha256: String,
    world: &'static str,
    imports: Vec<String>,
    settings: Settings,
    /// Decisions, failures and a latency histogram since the host started.
    #[schema(value_type = Object)]
    stats: Value,
    /// Set when the stored component no longer loads; it then denies.
    load_error: Option<String>,
    /// Instances made ahead of fresh decisions, and how often one was ready.
    prepared: Option<crate::policy::PoolStats>,
    /// An agent's progress on each stream it follows (`GET
    /// /policies/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<crate::sandboxed::AgentStatus>,
    created_at: String,
    updated_at: String,
}

impl From<&Active> for PolicyView {
    fn from(a: &Active) -> Self {
        Self {
            name: a.name.clone(),
            hook: a.hook,
            version: a.version,
            sha256: a.sha256.clone(),
            world: a.hook.world(),
            imports: a.imports.clone(),
            settings: a.settings.clone(),
            stats: a.stats.to_json(),
            load_error: a.loaded.as_ref().err().cloned(),
            prepared: a.loaded.as_ref().ok().map(|l| l.prepared()),
            agent: None,
            created_at: clock::rfc3339(a.created_at),
            updated_at: clock::rfc3339(a.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PolicyList {
    policies: Vec<PolicyView>,
    /// Which policies decide, per hook and scope, in the order they run:
    /// the bundled baseline first unless a bound policy replaces it. Every
    /// hook has a `global` entry; a team or contract has one where a
    /// policy is bound to it.
    deciding: Vec<Deciding>,
}

#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Deciding {
    hook: Hook,
    /// `global`, `team:NAME` or `stash:NAME`.
    scope: String,
    /// The hook's bundled policy, when it decides here.
    bundled: Option<&'static str>,
    /// The bound policies that decide here, in order.
    policies: Vec<String>,
}

/// Who decides where, among `policies` (those the caller may see).
fn deciding(policies: &[Arc<Active>]) -> Vec<Deciding> {
    let mut scopes: Vec<(Hook, Scope)> =
        [Hook::Claim, Hook::Handoff, Hook::Escalation, Hook::Agent].into_iter().map(|h| (h, Scope::Global)).collect();
    for a in policies {
        if let Some(scope) = &a.settings.scope
            && a.settings.enabled
            && !scopes.contains(&(a.hook, scope.clone()))
        {
            scopes.push((a.hook, scope.clone()));
        }
    }
    let mut out: Vec<Deciding> = scopes
        .into_iter()
        .map(|(hook, scope)| {
            let mut here: Vec<&Arc<Active>> =
                policies.iter().filter(|a| a.hook == hook && a.settings.applies_in(&scope)).collect();
            here.sort_by(|a, b| (a.settings.order, &a.name).cmp(&(b.settings.order, &b.name)));
            let replaced = here.iter().any(|a| a.settings.replaces_bundled);
            Deciding {
                hook,
                scope: super::decide::scope_label(&scope).unwrap_or_else(|| "global".into()),
                bundled: super::bundled::for_hook(hook).filter(|_| !replaced).map(|b| b.name),
                policies: here.iter().map(|a| a.name.clone()).collect(),
            }
        })
        // The agent hook has no baseline: list it only where agents run.
        .filter(|d| d.bundled.is_some() || !d.policies.is_empty())
        .collect();
    out.sort_by(|a, b| {
        (hook_str(a.hook), a.scope != "global", &a.scope).cmp(&(hook_str(b.hook), b.scope != "global", &b.scope))
    });
    out
}

/// The caller, if an admin; 403 otherwise.
struct Admin(Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self> {
        let caller = Caller::from_request_parts(parts, app).await?;
        if caller.admin { Ok(Self(caller)) } else { Err(not_admin()) }
    }
}

fn not_admin() -> Error {
    Error::forbidden("only an admin may change policies or see their decisions")
}

/// How much of a refused body is read (and dropped) so that the connection
/// stays usable, and for how long; past either, it is closed instead.
const DRAIN_BYTES: usize = 2 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Every request with a body to the policy routes is an admin's: anyone
/// else is refused from the headers, before the body is buffered (up to
/// 128 MiB for an upload). The refused body is drained, not kept, up to
/// [`DRAIN_BYTES`], so the client's connection stays usable; a larger one
/// ends it (`Connection: close`).
pub async fn admin_gate(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::PUT | Method::POST) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let refused = match crate::agent::api::authenticate(&parts, &app).await {
        Ok(caller) if caller.admin => return next.run(Request::from_parts(parts, body)).await,
        Ok(_) => not_admin(),
        Err(e) => e,
    };
    let mut response = refused.into_response();
    let drained = tokio::time::timeout(DRAIN_TIME, drain(body, DRAIN_BYTES)).await.unwrap_or(false);
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads `body` to its end, dropping it; false past `limit` bytes.
async fn drain(body: axum::body::Body, limit: usize) -> bool {
    let mut body = body.into_data_stream();
    let mut seen = 0usize;
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        match chunk {
            Ok(bytes) => {
                seen += bytes.len();
                if seen > limit {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

fn find(app: &AppState, name: &str) -> Result<Arc<Active>> {
    app.policies.get(name).ok_or_else(|| Error::not_found(format!("policy {name:?}")))
}

/// Whether `caller` may see a policy: an admin sees all; an agent sees the
/// global ones and those scoped to a team it is in or a contract it can
/// see, since a scope names a team that would otherwise answer 404.
async fn visible(app: &AppState, caller: &Caller, policy: &Active) -> Result<bool> {
    if caller.admin {
        return Ok(true);
    }
    match &policy.settings.scope {
        // Bound nowhere yet: an admin's unfinished work.
        None => Ok(false),
        Some(Scope::Global) => Ok(true),
        Some(Scope::Team(team)) => crate::task::knows_team(&app.db, caller, team).await,
        Some(Scope::Stash(contract)) => crate::stash::visible(&app.db, caller, contract).await,
    }
}

/// Uploads a component (`application/wasm`): a new policy, or the next
/// version of one, which serves the next decision.
#[utoipa::path(put, path = "/policies/{name}", tag = "policies",
    params(("name" = String, Path), HookParam,
        ("Cairn-Settings" = Option<String>, Header, description = "the policy's settings as JSON (the body of PUT /policies/{name}/settings), stored with the bytes or not at all; without it a new policy gets the defaults and a new version keeps its settings")),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, body = PolicyView), (status = 200, body = PolicyView, description = "a new version"),
        (status = 403), (status = 422, description = "does not fit the hook's world, or imports what is not offered")))]
async fn upload(
    State(app): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    Query(p): Query<HookParam>,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<PolicyView>)> {
    if body.is_empty() {
        return Err(Error::bad_request(
            "the body is empty: send the component's bytes (Content-Type: application/wasm)",
        ));
    }
    let settings = match headers.get(SETTINGS_HEADER) {
        None => None,
        Some(v) => Some(serde_json::from_slice::<Settings>(v.as_bytes()).map_err(|e| {
            Error::new(
                StatusCode::BAD_REQUEST,
                "invalid_settings",
                format!("the {SETTINGS_HEADER} header is not a settings object ({e}); it takes the body of PUT /policies/{{name}}/settings"),
            )
        })?),
    };
    let (active, created) = app.policies.install(&app.db, &name, p.hook, body.to_vec(), settings).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(PolicyView::from(active.as_ref()))))
}

/// Every policy the caller may see (an admin: all), with its settings and
/// statistics.
#[utoipa::path(get, path = "/policies", tag = "policies", responses((status = 200, body = PolicyList)))]
async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<PolicyList>> {
    let mut seen = Vec::new();
    for active in app.policies.list() {
        if visible(&app, &caller, &active).await? {
            seen.push(active);
        }
    }
    let deciding = deciding(&seen);
    let policies = seen.iter().map(|a| PolicyView::from(a.as_ref())).collect();
    Ok(Json(PolicyList { policies, deciding }))
}

/// One policy.
#[utoipa::path(get, path = "/policies/{name}", tag = "policies", params(("name" = String, Path)),
    responses((status = 200, body = PolicyView), (status = 404)))]
async fn show(State(app): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<PolicyView>> {
    let active = find(&app, &name)?;
    if !visible(&app, &caller, &active).await? {
        return Err(Error::not_found(format!("policy {name:?}")));
    }
    let mut view = PolicyView::from(active.as_ref());
    if active.hook == Hook::Agent {
        view.agent = Some(crate::sandboxed::status(&app.db, &name).await?);
    }
    Ok(Json(view))
}

/// Tries a dead letter's entry once more, now: handled, its writes commit
/// and the letter goes; failed again, the letter stays with the new error.
#[utoipa::path(post, path = "/policies/{name}/dead-letters/{id}/retry", tag = "policies",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = crate::sandboxed::Retried), (status = 403), (status = 404)))]
async fn retry_dead_letter(
    State(app): State<AppState>,
    _admin: Admin,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<crate::sandboxed::Retried>> {
    let active = find(&app, &name)?;
    match app.agents.retry(&active, &id).await? {
        Some(r) => Ok(Json(r)),
        None => Err(Error::not_found(format!("dead letter {id:?} of {name}"))),
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    dead_letters: Vec<DeadLetterView>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterView {
    id: String,
    stream_id: String,
    /// The entry that failed every attempt.
    seq: i64,
    attempts: i64,
    /// Why the last attempt failed.
    error: String,
    at: String,
}

/// An agent's dead letters: entries that failed every attempt, oldest first.
#[utoipa::path(get, path = "/policies/{name}/dead-letters", tag = "policies",
    params(("name" = String, Path), DecisionParams),
    responses((status = 200, body = DeadLetterList), (status = 403), (status = 404)))]
async fn dead_letters(
    State(app): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    Query(p): Query<DecisionParams>,
) -> Result<Json<DeadLetterList>> {
    find(&app, &name)?;
    let (limit, _) = crate::pagination::page(p.limit, None)?;
    let letters = crate::sandboxed::dead_letters(&app.db, &name, limit).await?;
    let dead_letters = letters
        .into_iter()
        .map(|d| DeadLetterView {
            id: d.id,
            stream_id: d.stream_id,
            seq: d.seq,
            attempts: d.attempts,
            error: d.error,
            at: clock::rfc3339(d.at),
        })
        .collect();
    Ok(Json(DeadLetterList { dead_letters }))
}

/// Removes a policy; its decision log stays.
#[utoipa::path(delete, path = "/policies/{name}", tag = "policies", params(("name" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)))]
async fn remove(State(app): State<AppState>, _admin: Admin, Path(name): Path<String>) -> Result<StatusCode> {
    if app.policies.remove(&app.db, &name).await? {
        app.metrics.forget_policy(&name);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found(format!("policy {name:?}")))
    }
}

/// Replaces a policy's settings: enabled, scope, config, grants, limits, order.
#[utoipa::path(put, path = "/policies/{name}/settings", tag = "policies", params(("name" = String, Path)),
    request_body = Settings, responses((status = 200, body = PolicyView), (status = 404), (status = 422)))]
async fn configure(
    State(app): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    Json(settings): Json<Settings>,
) -> Result<Json<PolicyView>> {
    let active = app.policies.configure(&app.db, &name, settings).await?;
    Ok(Json(PolicyView::from(active.as_ref())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// The hook's input: a claim, a HANDOFF or a signal, as JSON.
    #[schema(value_type = Object)]
    input: Value,
    /// Use this config instead of the policy's own.
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Evaluated {
    decision_id: String,
    /// The version of the policy that decided: the one current when the
    /// decision started, even if a new one was uploaded while it ran.
    version: i64,
    /// The decision; when the policy failed, the fail-closed one.
    #[schema(value_type = Object)]
    result: Value,
    /// Why the policy failed, if it did.
    error: Option<String>,
    duration_us: u64,
    fuel_used: Option<u64>,
    #[schema(value_type = Vec<Object>)]
    logs: Vec<super::LogLine>,
    /// Log lines past the cap of 100, counted and not kept.
    logs_dropped: usize,
    stdout: String,
    stderr: String,
}

/// A dry run: the decision, without any effect. It is recorded in the
/// decision log, marked `dry_run`.
#[utoipa::path(post, path = "/policies/{name}/evaluate", tag = "policies", params(("name" = String, Path)),
    request_body = EvaluateRequest, responses((status = 200, body = Evaluated), (status = 404), (status = 422)))]
async fn evaluate(
    State(app): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    Json(req): Json<EvaluateRequest>,
) -> Result<Json<Evaluated>> {
    let active = find(&app, &name)?;
    if let Err(e) = &active.loaded {
        return Err(Error::validation(format!("policy {name:?} does not load: {e}"), vec![]));
    }
    let config = req.config.clone().unwrap_or_else(|| active.settings.config.clone());
    let input = Input::parse(active.hook, req.input).map_err(|bad| {
        Error::validation(format!("the input is not a {} input: {bad}", hook_str(active.hook)), vec![])
    })?;
    let reader = caller.reader();
    let decider = app.decider.clone();
    let run = tokio::task::spawn_blocking(move || decider.dry_run_blocking(&active, &config, input, reader))
        .await
        .map_err(|e| Error::internal(format!("evaluating {name}: {e}")))??;
    store::record(&app.db, &run.record).await?;
    let evaluation = run.evaluation;
    let error = evaluation.result.as_ref().err().cloned();
    let (decision_id, version, result) = (run.record.decision_id, run.record.version, run.outcome.to_json());
    Ok(Json(Evaluated {
        decision_id,
        version,
        result,
        error,
        duration_us: evaluation.duration.as_micros() as u64,
        fuel_used: evaluation.fuel_used,
        logs: evaluation.logs,
        logs_dropped: evaluation.logs_dropped,
        stdout: evaluation.stdout,
        stderr: evaluation.stderr,
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct DecisionParams {
    pub limit: Option<i64>,
    /// A decision_id: only decisions after it.
    pub after: Option<String>,
    /// True: the newest `limit` decisions (still oldest first), instead of
    /// the first ones; not with `after`.
    pub latest: Option<bool>,
    /// True: only the decisions that failed (an `error` is set).
    pub failed: Option<bool>,
}

impl DecisionParams {
    pub fn window(&self) -> Result<store::Window<'_>> {
        let from = match (self.latest.unwrap_or(false), &self.after) {
            (true, Some(_)) => {
                return Err(Error::bad_request(
                    "give either `after` (read on from a decision) or `latest=true` (the newest), not both",
                ));
            }
            (true, None) => store::From::Latest,
            (false, after) => store::From::After(after.as_deref()),
        };
        Ok(store::Window { from, failed: self.failed.unwrap_or(false) })
    }
}

#[derive(Serialize, ToSchema)]
pub struct DecisionList {
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<Value>,
    /// The `decision_id` of the last decision listed, or `after` when none
    /// was: pass it back as `after` to read on.
    pub next_after: Option<String>,
}

impl DecisionList {
    /// A page of records, read after `after`.
    pub fn page(rows: Vec<DecisionRow>, after: Option<String>) -> Self {
        let next_after = rows.last().map(|d| d.decision_id.clone()).or(after);
        Self { decisions: rows.into_iter().map(decision_json).collect(), next_after }
    }
}

/// The decision log of one policy, oldest first.
#[utoipa::path(get, path = "/policies/{name}/decisions", tag = "policies", params(("name" = String, Path), DecisionParams),
    responses((status = 200, body = DecisionList), (status = 403)))]
async fn decisions(
    State(app): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    Query(p): Query<DecisionParams>,
) -> Result<Json<DecisionList>> {
    let (limit, _) = crate::pagination::page(p.limit, None)?;
    let rows = store::decisions(&app.db, &name, p.window()?, limit).await?;
    Ok(Json(DecisionList::page(rows, p.after)))
}

/// One decision-log record as the API shows it.
pub fn decision_json(d: DecisionRow) -> Value {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.to_string()));
    json!({
        "decision_id": d.decision_id,
        "policy": d.policy,
        "version": d.version,
        "hook": d.hook,
        "dry_run": d.dry_run,
        "agent": d.agent,
        "scope": d.scope,
        "input": parse(&d.input),
        "result": d.result.as_deref().map(parse),
        "error": d.error,
        "duration_us": d.duration_us,
        "fuel_used": d.fuel_used,
        "logs": parse(&d.logs),
        "logs_dropped": d.logs_dropped,
        "stdout": d.stdout,
        "stderr": d.stderr,
        "at": clock::rfc3339(d.at),
    })
}
