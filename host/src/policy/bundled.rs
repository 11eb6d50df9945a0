//! The policies Cairn ships: Rust components from `plugins/`, compiled by
//! `build.rs` and embedded in the binary. Each is the default on its hook
//! wherever no user policy is bound, and runs through the same sandbox as
//! any other component. Each ships a JSON Schema for its config, checked
//! when a copy of it (exported, then uploaded) is given settings.

use std::sync::OnceLock;

use serde_json::Value;

use super::Hook;
use crate::error::{Error, Result};

pub struct Bundled {
    pub name: &'static str,
    pub hook: Hook,
    pub wasm: &'static [u8],
    /// The config's JSON Schema (`plugins/NAME/config.schema.json`).
    pub schema: &'static str,
}

pub static ALL: [Bundled; 3] = [
    Bundled {
        name: "claim-approval",
        hook: Hook::Claim,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/claim-approval.wasm")),
        schema: include_str!("../../../plugins/claim-approval/config.schema.json"),
    },
    Bundled {
        name: "handoff-validation",
        hook: Hook::Handoff,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/handoff-validation.wasm")),
        schema: include_str!("../../../plugins/handoff-validation/config.schema.json"),
    },
    Bundled {
        name: "algedonic-escalation",
        hook: Hook::Escalation,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/algedonic-escalation.wasm")),
        schema: include_str!("../../../plugins/algedonic-escalation/config.schema.json"),
    },
];

pub fn by_name(name: &str) -> Option<&'static Bundled> {
    ALL.iter().find(|b| b.name == name)
}

/// The bundled default on `hook`, if there is one.
pub fn for_hook(hook: Hook) -> Option<&'static Bundled> {
    ALL.iter().find(|b| b.hook == hook)
}

/// The bundled policy whose component has this SHA-256, for uploads of an
/// exported copy.
pub fn by_sha256(sha: &str) -> Option<&'static Bundled> {
    static SHAS: OnceLock<Vec<String>> = OnceLock::new();
    let shas = SHAS.get_or_init(|| ALL.iter().map(|b| super::cache::sha256(b.wasm)).collect());
    shas.iter().position(|s| s == sha).map(|i| &ALL[i])
}

impl Bundled {
    /// 422 naming each problem if `config` does not fit this policy's schema.
    pub fn check_config(&self, config: &Value) -> Result<()> {
        let schema: Value = serde_json::from_str(self.schema)
            .map_err(|e| Error::internal(format!("the bundled schema of {} is broken: {e}", self.name)))?;
        super::config_schema::check(
            &schema,
            config,
            &format!("{}'s config schema (cairn policy export {} --schema)", self.name, self.name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_bundled_policy_is_embedded_with_a_valid_schema() {
        for b in &ALL {
            assert!(b.wasm.starts_with(b"\0asm"), "{} is not wasm", b.name);
            b.check_config(&json!({})).unwrap();
            assert_eq!(by_sha256(&super::super::cache::sha256(b.wasm)).map(|f| f.name), Some(b.name));
        }
    }

    #[test]
    fn bad_configs_are_refused_with_the_path() {
        let e = by_name("claim-approval")
            .unwrap()
            .check_config(&json!({"max_open_claims": "two", "extra": 1}))
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 422);
        assert_eq!(e.code(), "invalid_config");
        assert!(by_name("handoff-validation").unwrap().check_config(&json!({"reasoning_chain": "maybe"})).is_err());
        assert!(by_name("algedonic-escalation").unwrap().check_config(&json!({"categories": {"X": "halt"}})).is_ok());
    }
}
