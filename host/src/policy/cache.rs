//! Precompiled components on disk, so a restart (or a large Python
//! component) loads in milliseconds instead of compiling for seconds.
//!
//! An artifact is native code for one engine configuration: fuel, epoch
//! interruption and the feature set all change it. Files are therefore keyed
//! by the component's sha256 and the engine's compatibility hash, and an
//! artifact that fails to load for any reason is recompiled and replaced.
//!
//! Loaded artifacts are memory-mapped, so files are only ever replaced by
//! renaming a finished file over them, never rewritten in place: a running
//! host keeps its mapping of the old file. Do the same if you clean the
//! cache by hand (delete files; do not truncate them).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

/// A component's identity: the hex SHA-256 of its bytes.
pub fn sha256(wasm: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(wasm))
}

pub struct ArtifactCache {
    dir: PathBuf,
    engine: Engine,
    fingerprint: String,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Self { dir, engine: engine.clone(), fingerprint: format!("{:016x}", h.finish()) }
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    /// The component, and whether it came from the cache (`true`) or was
    /// compiled (`false`).
    pub fn load_or_compile(&self, sha256: &str, wasm: &[u8]) -> wasmtime::Result<(Component, bool)> {
        let path = self.path(sha256);
        if path.exists() {
            // SAFETY: only this cache writes files here, and only from
            // `Component::serialize` on an engine with the same fingerprint;
            // an unreadable or incompatible file is an error, not UB, and is
            // replaced below.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => tracing::warn!(path = %path.display(), "recompiling: cached artifact unusable: {e:#}"),
            }
        }
        let component = Component::new(&self.engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot cache the compiled policy: {e:#}");
        }
        Ok((component, false))
    }

    fn store(&self, path: &std::path::Path, component: &Component) -> wasmtime::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Unique per writer: two tasks may compile the same component at
        // once, and a shared name lets one rename the other's file away.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, component.serialize()?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
