//! # Cairn
//!
//! A coordination host that several agents share: from different vendors,
//! written in different languages, talking HTTP. It keeps three kinds of
//! resource, and policies decide what happens between them.
//!
//! ## The request path
//!
//! ```text
//!  HTTP ─▶ auth ─▶ handler ─▶ resource ─▶ writer ─▶ decision ─▶ commit ─▶ events
//! ```
//!
//! - **auth** ([`agent`]): the [`agent::Caller`] extractor turns `X-API-KEY`
//!   or `Authorization: Bearer` into an agent, or a 401. Keys are stored as
//!   hashes; resolved keys are cached in memory.
//! - **handlers** (each resource's `api.rs`, [`discover`], [`ops`]): parse
//!   the request, call the resource, map the answer. Only they (and the
//!   composition root, [`app`]) name the app state ([`state::App`]).
//! - **resources**: one module per resource, each owning its queries, its
//!   views and its tests:
//!   - [`stash`]: named documents, ephemeral or persistent, optionally bound
//!     to a schema;
//!   - [`stream`]: append-only logs with labels, read by page or live (SSE);
//!   - [`schema`]: JSON Schemas that stashes and streams bind to;
//!   - [`task`]: teams, their task lists and messages, the agent-teams
//!     protocol;
//!   - [`contract`]: the hooks on a contract's streams (`claim`,
//!     `deliverable`, `algedonic` entries), plugged into stream appends;
//!   - [`signal`]: algedonic signals as stored, and the one executor of
//!     escalation actions.
//! - **writers** ([`serial`]): a write that a policy decides (a claim, a
//!   completion, a signal) is queued for the one writer of its team or
//!   contract, which takes what is queued as a batch.
//! - **decision** ([`policy`]): the writer asks the [`policy::Decider`],
//!   handing it a view of the snapshot the batch commits against. Bound
//!   policies (or the bundled default) run sandboxed and read from that
//!   view in memory; they never wait on storage.
//! - **commit** ([`db`]): the batch's effects and their decision records
//!   commit in one transaction; sqlx over SQLite or PostgreSQL, one query
//!   text for both.
//! - **events** ([`stream::events`]): appends wake live readers, in this
//!   process and, through PostgreSQL `NOTIFY`, in every other.
//!
//! Imports only point down these layers; `docs/architecture.md` draws the
//! module graph, and a test keeps it true. Every failure is an
//! [`error::Error`], which renders the API's JSON error body; [`server`]
//! starts it all and shuts it down gracefully.

pub mod agent;
pub mod app;
#[cfg(test)]
mod architecture;
pub mod clock;
pub mod config;
pub mod contract;
pub mod db;
pub mod discover;
pub mod error;
pub mod mcp;
pub mod name;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod policy;
pub mod precondition;
pub mod sandboxed;
pub mod schema;
pub mod search;
pub mod serial;
pub mod server;
pub mod signal;
pub mod stash;
pub mod state;
pub mod stream;
pub mod task;
#[cfg(test)]
mod testing;
pub mod ui;

pub use app::router;
pub use config::Config;
pub use state::{App, AppState};
