//! The end-to-end suite: each module starts the real `cairn` binary and talks
//! to it over HTTP, on SQLite and on PostgreSQL.
//!
//! One test binary, not one per file: each links all of wasmtime and sqlx, so
//! ten of them cost ten links and gigabytes of disk for nothing.

#[macro_use]
mod support;

mod agents;
mod connections;
mod contract_hooks;
mod contracts;
mod errors;
mod hostile;
mod lifecycle;
mod mcp;
mod openapi;
mod policies;
mod policy_cli;
mod policy_hooks;
mod policy_runtime;
mod readme;
mod sdk;
mod stash;
mod stream;
mod teams;
mod ui;
