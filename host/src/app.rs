//! The composition root: the one place that assembles the database, the
//! caches, the policy engine and its views, the writers and the hooks, and
//! the router over every resource's routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::Result;
use crate::policy::Decider;
use crate::policy::registry::{Registry, Scope, Scopes};
use crate::policy::view::{Answer, Read, Reader, Source};
use crate::state::{App, AppState};
use crate::{Config, agent, contract, db, discover, error, mcp, ops, policy, schema, stash, stream, task};

impl App {
    /// Must run inside the tokio runtime that will serve it.
    pub fn new(db: db::Db, config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Self> {
        let runtime = policy::Runtime::new(policy::Options {
            fuel: config.policy_fuel,
            cache_dir: Some(config.policy_cache_dir()),
            prepare: policy::Prepare {
                per_policy: usize::try_from(config.policy_prepared).unwrap_or(0),
                total: usize::try_from(config.policy_prepared_total).unwrap_or(0),
                idle: std::time::Duration::from_secs(config.policy_prepared_idle_secs),
            },
            snapshot_reset: match config.policy_snapshot_reset {
                crate::config::SnapshotReset::Whole => policy::Reset::Whole,
                crate::config::SnapshotReset::Dirty => policy::Reset::Dirty,
            },
        })?;
        let storage = Arc::new(Storage { db: db.clone() });
        let policies = Arc::new(Registry::new(runtime, storage.clone()));
        let metrics = Arc::new(ops::Metrics::default());
        let runtime = Arc::downgrade(policies.runtime());
        metrics.counters_read_at_scrape(
            "policy_components",
            "Policy components made ready, by how: compiled from their bytes, or loaded from the precompiled cache",
            "from",
            move || {
                let Some(runtime) = runtime.upgrade() else { return Vec::new() };
                let made = runtime.components();
                let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                vec![("compiled", read(&made.compiled)), ("cache", read(&made.cached))]
            },
        );
        let registry = Arc::downgrade(&policies);
        metrics.gauges_read_at_scrape(
            "policy_prepared_memory_bytes",
            "Linear memory and tables of each policy's instances made ahead, in bytes: the most they hold resident",
            "policy",
            move || registry.upgrade().map(|r| r.prepared_memory()).unwrap_or_default(),
        );
        let runtime = Arc::downgrade(policies.runtime());
        metrics.gauges_read_at_scrape(
            "policy_slots_resident_bytes",
            "Memory that freed instance slots keep resident for their next instance, in bytes, by slot reset (dirty, whole)",
            "reset",
            move || runtime.upgrade().map(|r| r.slots_resident()).unwrap_or_default(),
        );
        let observe = {
            let metrics = metrics.clone();
            Arc::new(move |o: &policy::decide::Observed<'_>| {
                metrics.observe_policy(o.policy, o.hook, o.verdict, o.failed, o.duration)
            })
        };
        let decider = Arc::new(Decider::new(policies.clone(), storage, observe));
        let schemas: Arc<schema::Validators> = Arc::default();
        let stash_cache = Arc::new(stash::Cache::new(db.postgres().is_none()));
        let bus: Arc<stream::events::Bus> = Arc::default();
        let writer = contract::Writer::new(
            db.clone(),
            decider.clone(),
            schemas.clone(),
            stash_cache.clone(),
            bus.clone(),
            config.max_stash_bytes(true),
        );
        let contracts = Arc::new(contract::Hooks::new(db.clone(), writer));
        let agents = crate::sandboxed::Agents::new(crate::sandboxed::Parts {
            db: db.clone(),
            decider: decider.clone(),
            bus: bus.clone(),
            hooks: contracts.clone(),
            schemas: schemas.clone(),
            stash_cache: stash_cache.clone(),
            max_stash_bytes: [config.max_stash_bytes(false), config.max_stash_bytes(true)],
        });
        Ok(Self {
            agents,
            policies,
            teams: task::Teams::new(db.clone(), decider.clone()),
            append_hook: contracts.clone(),
            contracts,
            decider,
            limiter: agent::RateLimiter::new(config.rate_limit),
            appender: stream::Appender::start(&db),
            stash_cache,
            db,
            config,
            keys: agent::KeyCache::default(),
            schemas,
            stream_schemas: stream::SchemaBindings::default(),
            bus,
            metrics,
            shutdown,
        })
    }
}

/// Where decisions fetch what their views lack: each resource's storage,
/// as the reader could read it over HTTP.
struct Storage {
    db: db::Db,
}

impl Source for Storage {
    fn fetch<'a>(&'a self, reader: &'a Reader, reads: &'a [Read]) -> BoxFuture<'a, Result<Vec<Answer>>> {
        Box::pin(async move {
            let mut answers = Vec::with_capacity(reads.len());
            for read in reads {
                answers.push(match read {
                    Read::Stash { .. }
                    | Read::Subtask { .. }
                    | Read::AssignedTo { .. }
                    | Read::ContractHeader { .. } => stash::view::fetch(&self.db, reader, read).await?,
                    Read::Stream { .. } | Read::Latest { .. } | Read::LastSeq { .. } => {
                        stream::view::fetch(&self.db, read).await?
                    }
                    Read::Task { .. } | Read::Tasks { .. } | Read::OwnedBy { .. } => {
                        task::view::fetch(&self.db, reader, read).await?
                    }
                });
            }
            Ok(answers)
        })
    }
}

impl Scopes for Storage {
    fn exists<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match scope {
                Scope::Global => Ok(true),
                Scope::Team(team) => task::exists(&self.db, team).await,
                Scope::Stash(contract) => stash::persistent_exists(&self.db, contract).await,
            }
        })
    }

    fn agent_exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(agent::exists(&self.db, name))
    }
}

/// The document's head; [`crate::openapi::finish`] adds what every route
/// shares (the keys, the error body).
#[derive(OpenApi)]
#[openapi(info(
    title = "Cairn",
    description = "Coordination host for AI agents: stash, stream, schema, discovery, teams and policies."
))]
struct ApiDoc;

/// The whole HTTP API, with its OpenAPI document built from the same
/// routes, and the MCP endpoint whose tools call those routes.
pub fn router(app: AppState) -> anyhow::Result<Router> {
    let (routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(agent::routes())
        .merge(stash::routes())
        .merge(stream::routes())
        .merge(schema::routes())
        .merge(discover::routes())
        .merge(ops::routes())
        .merge(policy::api::routes().layer(axum::middleware::from_fn_with_state(app.clone(), policy::api::admin_gate)))
        .merge(task::routes())
        .split_for_parts();
    let openapi = Arc::new(crate::openapi::finish(serde_json::to_value(&openapi)?));
    let mcp_openapi = openapi.clone();
    // Stash bodies are the largest thing the API takes; each handler then
    // applies its own, smaller limit with a precise 413.
    let body_limit = app.config.max_persistent_bytes.max(app.config.max_json_bytes) + 64 * 1024;
    let api: Router = routes
        .route("/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(error::JsonLimit(app.config.max_json_bytes)))
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next| {
            // Policy uploads take components (a Python one is tens of MiB).
            let limit = if req.uri().path().starts_with("/policies/") {
                body_limit.max(policy::api::MAX_COMPONENT_BYTES)
            } else {
                body_limit
            };
            refuse_declared_oversize(limit, req, next)
        }))
        .with_state(app.clone());
    // The tools call `api` itself, so their inner calls are not counted
    // twice in the request metrics.
    let mcp = mcp::routes(app.clone(), api.clone(), &mcp_openapi)?;
    Ok(mcp.merge(crate::ui::routes()).merge(api).layer(axum::middleware::from_fn_with_state(app, ops::track)))
}

/// A body whose `Content-Length` is over the limit is refused before any of
/// it is read: the client learns at once, and does not lose the answer to a
/// reset while it is still sending bytes nobody will read.
async fn refuse_declared_oversize(
    limit: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match error::declared_length(req.headers()) {
        Some(n) if n > limit as u64 => {
            let refusal = error::Error::too_large(format!(
                "the request body is {n} bytes; this server accepts at most {limit} bytes in one request"
            ));
            let mut response = refusal.into_response();
            // The body was never read, so the connection cannot carry another request.
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            response
        }
        _ => next.run(req).await,
    }
}
