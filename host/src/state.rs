//! What every handler reaches: the app state, shared as `State<Arc<App>>`.
//! The composition root (`app.rs`) builds it; only the HTTP layer names it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::policy::{Decider, registry::Registry};
use crate::{Config, agent, contract, db, ops, schema, stash, stream, task};

/// Everything a handler can reach, shared as `State<Arc<App>>`.
pub struct App {
    pub db: db::Db,
    pub config: Config,
    pub keys: agent::KeyCache,
    pub limiter: agent::RateLimiter,
    pub schemas: Arc<schema::Validators>,
    pub stash_cache: Arc<stash::Cache>,
    pub stream_schemas: stream::SchemaBindings,
    pub bus: Arc<stream::events::Bus>,
    pub appender: stream::Appender,
    pub metrics: Arc<ops::Metrics>,
    pub policies: Arc<Registry>,
    /// Makes every decision, on the views its callers hand it.
    pub decider: Arc<Decider>,
    /// One writer per team.
    pub teams: task::Teams,
    /// The hooks on contract streams, with one writer per contract.
    pub contracts: Arc<contract::Hooks>,
    /// What stream appends call: the contract hooks.
    pub append_hook: Arc<dyn stream::AppendHook>,
    /// Runs the sandboxed agents.
    pub agents: Arc<crate::sandboxed::Agents>,
    /// Turns true when the server starts shutting down; live responses end.
    pub shutdown: watch::Receiver<bool>,
}

pub type AppState = Arc<App>;
