//! What one decision may use. Every limit lives here, with its default and
//! its bounds, so the whole budget of a policy reads in one screen.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Per-policy limits, set through the policy's settings (`limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock time one decision may take, in milliseconds. Past it the
    /// guest is interrupted at its next loop back-edge or call.
    pub timeout_ms: u64,
    /// Bytes each linear memory of the guest may grow to (guests built by
    /// the usual toolchains have one). A growth past it fails inside the
    /// guest, which then traps or reports out-of-memory.
    pub memory_bytes: u64,
    /// Fuel (roughly, wasm instructions) one decision may burn. Counted only
    /// when the host runs with fuel on (`--policy-fuel`); otherwise ignored.
    pub fuel: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout_ms: 100, memory_bytes: 64 << 20, fuel: 1_000_000_000 }
    }
}

/// Ceilings no settings can raise, so a typo cannot hold a worker for an hour.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;
/// Guest stdout and stderr, each, kept per decision.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;
/// Guest log lines kept per decision; later ones are counted, not kept.
pub const MAX_LOG_LINES: usize = 100;
/// Longest log line kept; longer ones are cut.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Largest decision, as JSON, that the host accepts from a guest.
pub const MAX_RESULT_BYTES: usize = 256 * 1024;
/// Longest content type an agent may give a stash it writes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;

impl Limits {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(Error::validation(format!("limits.timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"), vec![]));
        }
        if !(1 << 20..=MAX_MEMORY_BYTES).contains(&self.memory_bytes) {
            return Err(Error::validation(
                format!("limits.memory_bytes must be between 1 MiB and {MAX_MEMORY_BYTES} bytes"),
                vec![],
            ));
        }
        if self.fuel == 0 {
            return Err(Error::validation("limits.fuel must be positive", vec![]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_hold() {
        Limits::default().validate().unwrap();
        let l = Limits { timeout_ms: 0, ..Limits::default() };
        assert!(l.validate().is_err());
        let l = Limits { timeout_ms: MAX_TIMEOUT_MS + 1, ..Limits::default() };
        assert!(l.validate().is_err());
        let l = Limits { memory_bytes: 1024, ..Limits::default() };
        assert!(l.validate().is_err());
        let l = Limits { memory_bytes: MAX_MEMORY_BYTES + 1, ..Limits::default() };
        assert!(l.validate().is_err());
        assert!(Limits { fuel: 0, ..Limits::default() }.validate().is_err());
    }

    #[test]
    fn partial_settings_fill_from_defaults() {
        let l: Limits = serde_json::from_str(r#"{"timeout_ms": 5}"#).unwrap();
        assert_eq!(l, Limits { timeout_ms: 5, ..Limits::default() });
        assert!(serde_json::from_str::<Limits>(r#"{"timeout": 5}"#).is_err(), "typos are refused");
    }
}
