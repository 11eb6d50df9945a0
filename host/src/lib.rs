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
pub mod app;
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
pub mod serial;
pub mod server;
pub mod signal;
pub mod stash;
pub mod stream;
pub mod task;
#[cfg(test)]
mod testing;

pub use app::{App, AppState, router};
pub use config::Config;
