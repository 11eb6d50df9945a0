//! Builds the bundled policies in `plugins/` for `wasm32-wasip2`, so that the
//! `cairn` binary can embed them (see `src/policy/bundled.rs`). Like
//! wasmtime's test-programs, it runs a nested cargo with its own target
//! directory, which the outer build does not lock.

use std::path::PathBuf;
use std::process::Command;

const PLUGINS: [&str; 3] = ["claim-approval", "handoff-validation", "algedonic-escalation"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("host/ sits in the workspace").to_path_buf();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from).join("plugins");

    println!("cargo:rerun-if-changed={}", root.join("plugins").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        // Shipped inside the binary: small beats debuggable.
        .args(["--config", "profile.release.debug=false", "--config", "profile.release.strip=true"])
        .args(["--config", "profile.release.lto=true", "--config", "profile.release.codegen-units=1"])
        .args(["--config", "profile.release.opt-level=\"s\""])
        // The outer build's flags and wrappers (clippy's, under `cargo
        // clippy`) are for the host crates, not for these wasm builds.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    for p in PLUGINS {
        cmd.args(["-p", &format!("plugin-{p}")]);
    }
    let status = cmd.status().expect("could not run cargo to build the bundled policies");
    assert!(
        status.success(),
        "building the bundled policies for wasm32-wasip2 failed; is the target installed (rustup target add wasm32-wasip2)?"
    );
    for p in PLUGINS {
        let built = target_dir.join("wasm32-wasip2/release").join(format!("plugin_{}.wasm", p.replace('-', "_")));
        let to = out.join(format!("{p}.wasm"));
        std::fs::copy(&built, &to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), to.display()));
    }
}
