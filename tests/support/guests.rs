//! Test guests: Rust components in `tests/guests/`, compiled from source for
//! `wasm32-wasip2` once per test process (cargo makes repeat builds no-ops
//! across processes).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Every guest crate, by directory name.
pub const ALL: [&str; 19] = [
    "approve-all",
    "deny-all",
    "config-driven",
    "stash-reader",
    "task-reader",
    "v0-1-task-reader",
    "infinite-loop",
    "memory-bomb",
    "recursion",
    "panic",
    "huge-result",
    "escape",
    "handoff-basic",
    "counter",
    "failing-handoff",
    "failing-escalation",
    "slow",
    "chatty",
    "answer-agent",
];

/// The Rust policy examples, built with the guests (one cargo run).
pub const EXAMPLES: [&str; 4] = ["budget-gate", "handoff-gate", "signal-router", "triage"];

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `.ci/toolchains` installs the Python tools: `target/toolchains` in
/// the workspace, whatever `CARGO_TARGET_DIR` says, so the script and the
/// tests agree on one path.
pub fn toolchains_dir() -> PathBuf {
    workspace().join("target").join("toolchains")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

fn build_all() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace()).args(["build", "--quiet", "--target", "wasm32-wasip2"]);
    for g in ALL {
        cmd.args(["-p", &format!("guest-{g}")]);
    }
    for e in EXAMPLES {
        cmd.args(["-p", e]);
    }
    let status = cmd.status().expect("run cargo to build the test guests");
    assert!(status.success(), "building the test guests failed (is the wasm32-wasip2 target installed?)");
    target_dir().join("wasm32-wasip2").join("debug")
}

/// Where the debug builds are, after building every guest and example once.
fn built_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_all)
}

/// The compiled component of guest `name`.
pub fn wasm(name: &str) -> Vec<u8> {
    let path = path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Where the Rust policy example `name` (e.g. `budget-gate`) is, built.
pub fn example_path(name: &str) -> PathBuf {
    built_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// Where guest `name`'s component is, after building it if needed.
pub fn path(name: &str) -> PathBuf {
    built_dir().join(format!("guest_{}.wasm", name.replace('-', "_")))
}

/// Guest `name` built with optimisations, for benchmarks.
pub fn release_wasm(name: &str) -> Vec<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "-p", &format!("guest-{name}")])
        .status()
        .expect("run cargo to build a guest");
    assert!(status.success(), "building guest {name} failed");
    let path =
        target_dir().join("wasm32-wasip2").join("release").join(format!("guest_{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
