//! # Cairn
//!
//! A coordination host that several agents share: from different vendors,
//! written in different languages, talking HTTP. It keeps three kinds of
//! resource, and policies decide what happens between them.
//!
//! ## The request path
//!
//! ```text
//!  HTTP ─▶ auth ─▶ resource ─▶ policy hook ─▶ storage ─▶ events
//! ```
//!
//! - **auth** ([`agent`]): the [`agent::Caller`] extractor turns `X-API-KEY`
//!   or `Authorization: Bearer` into an agent, or a 401. Keys are stored as
//!   hashes; resolved keys are cached in memory.
//! - **resource**: one module per resource, each owning its routes, its
//!   queries and its tests:
//!   - [`stash`]: named documents, ephemeral or persistent, optionally bound
//!     to a schema;
//!   - [`stream`]: append-only logs with labels, read by page or live (SSE);
//!   - [`schema`]: JSON Schemas that stashes and streams bind to;
//!   - [`task`]: teams, their task lists, messages and algedonic signals;
//!   - [`contract`]: the hooks on a contract's streams (`claim`,
//!     `deliverable`, `algedonic` entries);
//!   - [`discover`]: the public index over discoverable stashes and streams.
//! - **policy hook** ([`policy`]): sandboxed WebAssembly components decide
//!   claims, handoffs and escalations; the registry serves them by name, and
//!   every decision is logged with its input and result. Tasks call them
//!   through [`policy::hook`]: a claim, a completion or a signal is decided
//!   first, then its effect commits together with its decision records.
//! - **storage** ([`db`]): sqlx over SQLite or PostgreSQL, one query text for
//!   both, behind [`db::Db`].
//! - **events** ([`stream::events`]): appends wake live readers, in this
//!   process and, through PostgreSQL `NOTIFY`, in every other.
//!
//! Every failure is an [`error::Error`], which renders the API's JSON error
//! body; [`ops`] adds health, metrics and the OpenAPI document; [`server`]
//! starts it all and shuts it down gracefully.

pub mod agent;
pub mod clock;
pub mod config;
pub mod contract;
pub mod db;
pub mod discover;
pub mod error;
pub mod name;
pub mod ops;
pub mod pagination;
pub mod policy;
pub mod precondition;
pub mod schema;
pub mod server;
pub mod stash;
pub mod stream;
pub mod task;
#[cfg(test)]
mod testing;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use config::Config;

/// Everything a handler can reach, shared as `State<Arc<App>>`.
pub struct App {
    pub db: db::Db,
    pub config: Config,
    pub keys: agent::KeyCache,
    pub limiter: agent::RateLimiter,
    pub schemas: schema::Validators,
    pub stash_cache: stash::Cache,
    pub stream_schemas: stream::SchemaBindings,
    pub bus: Arc<stream::events::Bus>,
    pub appender: stream::Appender,
    pub metrics: ops::Metrics,
    pub policies: Arc<policy::registry::Registry>,
    /// Turns true when the server starts shutting down; live responses end.
    pub shutdown: watch::Receiver<bool>,
}

pub type AppState = Arc<App>;

impl App {
    pub fn new(db: db::Db, config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Self> {
        let runtime = policy::Runtime::new(policy::Options {
            fuel: config.policy_fuel,
            cache_dir: Some(config.policy_cache_dir()),
        })?;
        Ok(Self {
            policies: Arc::new(policy::registry::Registry::new(runtime)),
            limiter: agent::RateLimiter::new(config.rate_limit),
            appender: stream::Appender::start(&db),
            stash_cache: stash::Cache::new(db.postgres().is_none()),
            db,
            config,
            keys: agent::KeyCache::default(),
            schemas: schema::Validators::default(),
            stream_schemas: stream::SchemaBindings::default(),
            bus: Arc::default(),
            metrics: ops::Metrics::default(),
            shutdown,
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Cairn", description = "Coordination host for AI agents: stash, stream, schema, discovery, teams and policies."),
    modifiers(&ApiKeyAuth),
    security(("api_key" = []))
)]
struct ApiDoc;

struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-KEY"))));
    }
}

/// The whole HTTP API, with its OpenAPI document built from the same routes.
pub fn router(app: AppState) -> Router {
    let (routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(agent::routes())
        .merge(stash::routes())
        .merge(stream::routes())
        .merge(schema::routes())
        .merge(discover::routes())
        .merge(ops::routes())
        .merge(policy::api::routes())
        .merge(task::routes())
        .split_for_parts();
    let openapi = Arc::new(openapi);
    // Stash bodies are the largest thing the API takes; each handler then
    // applies its own, smaller limit with a precise 413.
    let body_limit = app.config.max_persistent_bytes.max(app.config.max_json_bytes) + 64 * 1024;
    routes
        .route("/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), ops::track))
        .with_state(app)
}
