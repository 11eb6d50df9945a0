//! Policies: user code, compiled to WebAssembly components, that makes
//! Cairn's decisions: whether a claim is granted, whether a HANDOFF is
//! complete, and what an algedonic signal sets off.
//!
//! # The sandbox
//!
//! A policy is a component built against one world of `wit/worlds.wit`.
//! It gets an input and its config, and returns a decision; the host
//! carries out any effects. What it can reach:
//!
//! - **Reads from memory.** Every import answers from the decision's
//!   [`View`] (the snapshot the effect commits against) or from what an
//!   earlier run of the same decision fetched; a read of anything else is
//!   fetched between runs, never during one (see [`view`]). The deadline
//!   therefore counts the guest's own work: a timeout means the policy is
//!   slow, never that the host is busy.
//! - **The `cairn:coord` interfaces it is granted**, and no others:
//!   `stash-read`, `stream-read`, `task-read` and `log` for the decision
//!   worlds (all granted by default); `stash-write` and `stream-write` only
//!   for the `agent` world. A component importing an interface its world
//!   does not offer, or one it is not granted, is refused when loaded, with
//!   the import named.
//! - **WASI, emptied.** Toolchains make every guest import WASI, so it is
//!   linked, but the context has no preopened directories (file access
//!   fails), no environment variables, no arguments, empty stdin, and every
//!   socket address denied. Wall clocks, monotonic clocks and randomness
//!   are the host's. Stdout and stderr are captured, 16 KiB each per
//!   decision, into the decision log. `wasi:http` and any other interface
//!   are refused at load time.
//!
//! What happens at each limit (see [`limits::Limits`]):
//!
//! - **Time** (`timeout_ms`, default 100): an epoch ticker advances every
//!   millisecond; past the deadline the guest traps at its next loop
//!   back-edge or function entry. The decision fails with "timed out".
//! - **Memory** (`memory_bytes`, default 64 MiB per linear memory): growth
//!   past it fails inside the guest, which usually traps (Rust aborts on
//!   allocation failure). The decision fails with "exceeded its memory
//!   limit". Host-side lifting of results is bounded by the same cap,
//!   since a guest cannot return more than it could allocate.
//! - **Fuel** (`fuel`): counted only when the host runs with fuel on.
//!   Exhausted, the decision fails with "ran out of fuel".
//! - **Stack**: unbounded recursion traps with a stack overflow.
//! - **Traps and panics** fail the decision with the trap's message.
//!
//! A failed decision fails closed: the hook treats it as a deny and the
//! error is recorded. Every decision runs in a fresh store and instance, so
//! nothing a guest does outlives its decision.

pub mod api;
pub mod bindings;
pub mod bundled;
pub mod cache;
pub mod cases;
pub mod cli;
pub mod config_schema;
pub mod decide;
pub mod decision;
pub mod file;
pub mod fixture;
mod host;
pub mod input;
pub mod limits;
mod output;
pub mod prepared;
pub mod registry;
pub mod runtime;
pub mod scaffold;
pub(crate) mod store;
pub mod view;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use decide::{Decider, Decision, Request};
pub use decision::{Action, Handle, Outcome, Verdict, Violation};
pub use fixture::Fixture;
pub use input::Input;
pub use limits::Limits;
pub use prepared::{PoolStats, Prepare};
pub use runtime::{Isolation, LoadError, Loaded, LogLine, Options, Reset, Runtime};
pub use view::{Answer, Read, Reader, Source, View};

/// One run of a decision, with what was seen on the way.
#[derive(Debug)]
pub struct Evaluation {
    /// The decision, or why it failed (a failure denies).
    pub result: Result<Outcome, String>,
    pub duration: Duration,
    pub fuel_used: Option<u64>,
    pub logs: Vec<LogLine>,
    pub logs_dropped: usize,
    pub stdout: String,
    pub stderr: String,
    /// Reads the view did not cover: the run must be repeated with them.
    pub misses: Vec<Read>,
}

impl Evaluation {
    /// A decision that failed before any guest ran.
    pub fn failed(error: String) -> Self {
        Self {
            result: Err(error),
            duration: Duration::ZERO,
            fuel_used: None,
            logs: Vec::new(),
            logs_dropped: 0,
            stdout: String::new(),
            stderr: String::new(),
            misses: Vec::new(),
        }
    }
}

impl<T> runtime::Outcome<T> {
    fn render(self, f: impl FnOnce(T) -> Outcome) -> Evaluation {
        // A decision is a verdict and a reason, or a short list; anything
        // this large is a policy bug, and would bloat the decision log.
        let result = self.result.map(f).and_then(|o| {
            let size = o.to_json().to_string().len();
            if size > limits::MAX_RESULT_BYTES {
                Err(format!("returned a {size}-byte decision, over the {}-byte limit", limits::MAX_RESULT_BYTES))
            } else {
                Ok(o)
            }
        });
        Evaluation {
            result,
            duration: self.duration,
            fuel_used: self.fuel_used,
            logs: self.logs,
            logs_dropped: self.logs_dropped,
            stdout: self.stdout,
            stderr: self.stderr,
            misses: self.misses,
        }
    }
}

/// Runs `loaded` once on `input`, reading through `reads`. A policy of
/// another hook than the input's fails, as a decision.
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate(
    runtime: &Runtime,
    loaded: &Loaded,
    policy: &str,
    limits: &Limits,
    isolation: Isolation,
    config: &str,
    input: &Input,
    reads: view::Reads,
) -> Evaluation {
    match input.clone() {
        Input::Claim(c) => runtime
            .decide_claim_with(loaded, policy, limits, isolation, config, &c.into(), reads)
            .render(|v| Outcome::Verdict(v.into())),
        Input::Handoff(h) => runtime
            .check_handoff(loaded, policy, limits, isolation, config, &h.into(), reads)
            .render(|v| Outcome::Violations(v.into_iter().map(Into::into).collect())),
        Input::Signal(s) => runtime
            .escalate(loaded, policy, limits, isolation, config, &s.into(), reads)
            .render(|a| Outcome::Actions(a.into_iter().map(Into::into).collect())),
    }
}

/// Where a policy plugs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// Claims of tasks and contract subtasks (`claim-policy` world).
    Claim,
    /// HANDOFFs on completion (`handoff-policy` world).
    Handoff,
    /// Algedonic signals (`escalation-policy` world).
    Escalation,
    /// Sandboxed agent logic reacting to stream entries (`agent` world).
    Agent,
}

impl Hook {
    /// The hook's name, as the API and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Claim => "claim",
            Hook::Handoff => "handoff",
            Hook::Escalation => "escalation",
            Hook::Agent => "agent",
        }
    }

    pub fn world(self) -> &'static str {
        match self {
            Hook::Claim => "claim-policy",
            Hook::Handoff => "handoff-policy",
            Hook::Escalation => "escalation-policy",
            Hook::Agent => "agent",
        }
    }

    /// Whether the hook's world imports this capability at all.
    pub fn offers(self, cap: Capability) -> bool {
        match cap {
            Capability::StashWrite | Capability::StreamWrite => self == Hook::Agent,
            _ => true,
        }
    }

    /// What a policy on this hook is granted unless its settings say less.
    pub fn default_grants(self) -> BTreeSet<Capability> {
        Capability::ALL.into_iter().filter(|c| self.offers(*c) && !c.writes()).collect()
    }
}

/// A `cairn:coord` interface that can be granted to a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    StashRead,
    StashWrite,
    StreamRead,
    StreamWrite,
    TaskRead,
    /// New in `cairn:coord@0.2.0`.
    ContractRead,
    Log,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::StashRead,
        Capability::StashWrite,
        Capability::StreamRead,
        Capability::StreamWrite,
        Capability::TaskRead,
        Capability::ContractRead,
        Capability::Log,
    ];

    /// The interface's name in `cairn:coord`, as in grants.
    pub fn name(self) -> &'static str {
        match self {
            Capability::StashRead => "stash-read",
            Capability::StashWrite => "stash-write",
            Capability::StreamRead => "stream-read",
            Capability::StreamWrite => "stream-write",
            Capability::TaskRead => "task-read",
            Capability::ContractRead => "contract-read",
            Capability::Log => "log",
        }
    }

    pub fn writes(self) -> bool {
        matches!(self, Capability::StashWrite | Capability::StreamWrite)
    }

    /// `cairn:coord/stash-read@0.2.0` (or `@0.1.0`) → `StashRead`. `types` carries no
    /// functions and is always linked, so it is no capability.
    pub fn from_import(import: &str) -> Option<Self> {
        let rest = import.strip_prefix("cairn:coord/")?;
        let iface = rest.split('@').next()?;
        Self::ALL.into_iter().find(|c| c.name() == iface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_map_to_capabilities() {
        assert_eq!(Capability::from_import("cairn:coord/stash-read@0.1.0"), Some(Capability::StashRead));
        assert_eq!(Capability::from_import("cairn:coord/log@0.1.0"), Some(Capability::Log));
        assert_eq!(Capability::from_import("cairn:coord/types@0.1.0"), None);
        assert_eq!(Capability::from_import("wasi:http/types@0.2.0"), None);
    }

    #[test]
    fn decision_worlds_are_granted_reads_only() {
        let g = Hook::Claim.default_grants();
        assert!(g.contains(&Capability::StashRead) && g.contains(&Capability::Log));
        assert!(!g.contains(&Capability::StashWrite));
        assert!(!Hook::Handoff.offers(Capability::StreamWrite));
        assert!(Hook::Agent.offers(Capability::StreamWrite));
    }
}
