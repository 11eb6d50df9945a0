//! Policies declared in a config file (`cairn.toml`), installed at start:
//!
//! ```toml
//! [[policy]]
//! name = "gate"
//! file = "policies/gate.wasm"      # relative to this file
//! hook = "claim"
//! config = { allow = ["research-bot"] }
//! scope = { stash = "website-redesign" }   # or "global", or { team = "..." }
//! limits = { timeout_ms = 50 }
//! ```
//!
//! Each entry becomes the policy of that name with those settings. A
//! component whose bytes are already the current version is not uploaded
//! again, so restarts do not bump versions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;

use super::Hook;
use super::registry::{Registry, Settings};
use crate::db::Db;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    policy: Vec<Entry>,
}

/// Unknown keys are caught when the rest becomes [`Settings`], which
/// refuses them (serde cannot refuse them across `flatten`).
#[derive(Debug, Deserialize)]
struct Entry {
    name: String,
    file: PathBuf,
    hook: Hook,
    #[serde(flatten)]
    settings: toml::Table,
}

/// Installs every `[[policy]]` of `path`; a missing file is fine.
pub async fn install(path: &Path, registry: &Arc<Registry>, db: &Db) -> anyhow::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: File =
        toml::from_str(&text).with_context(|| format!("{} is not a valid cairn config", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for entry in &file.policy {
        let settings: Settings = serde_json::to_value(&entry.settings)
            .and_then(serde_json::from_value)
            .with_context(|| format!("{}: bad settings for policy {:?}", path.display(), entry.name))?;
        let wasm_path = base.join(&entry.file);
        let wasm = std::fs::read(&wasm_path).with_context(|| {
            format!("{}: cannot read {} for policy {:?}", path.display(), wasm_path.display(), entry.name)
        })?;
        // Bytes and settings together, or nothing: a refused entry leaves
        // no row behind (same bytes and settings change nothing).
        registry
            .install(db, &entry.name, entry.hook, wasm, Some(settings))
            .await
            .map_err(|e| anyhow::anyhow!("{}: policy {:?}: {}", path.display(), entry.name, e.message()))?;
        tracing::info!(policy = %entry.name, file = %wasm_path.display(), "policy from config file");
    }
    Ok(file.policy.len())
}
