//! The policy examples in Python and JavaScript, built from source with the
//! pinned toolchains that `.ci/toolchains` installs: componentize-py in
//! `target/toolchains/python`, componentize-js in `examples/policies/js`.
//!
//! Without them a test prints why and passes; under `CI=true` it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::guests;

/// The examples, one per hook: the hook, the Rust package and JS file
/// name, and the Python module.
pub const EXAMPLES: [(&str, &str, &str); 4] = [
    ("claim", "budget-gate", "budget_gate"),
    ("handoff", "handoff-gate", "handoff_gate"),
    ("escalation", "signal-router", "signal_router"),
    ("agent", "triage", "triage"),
];

pub fn examples_dir() -> PathBuf {
    guests::workspace().join("examples").join("policies")
}

/// The two guest toolchains, or None (after saying why) outside CI.
pub struct Toolchains {
    pub componentize_py: PathBuf,
}

pub fn toolchains() -> Option<&'static Toolchains> {
    static TOOLS: OnceLock<Result<Toolchains, String>> = OnceLock::new();
    match TOOLS.get_or_init(find) {
        Ok(t) => Some(t),
        Err(why) => {
            super::skip(why);
            None
        }
    }
}

fn find() -> Result<Toolchains, String> {
    let componentize_py = std::env::var_os("CAIRN_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = guests::toolchains_dir().join("python/bin/componentize-py");
            venv.is_file().then_some(venv)
        })
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("componentize-py"))
                .find(|p| p.is_file())
        })
        .ok_or("componentize-py is not installed (run .ci/toolchains)")?;
    let cli = examples_dir().join("js/node_modules/@bytecodealliance/componentize-js/src/cli.js");
    if !cli.is_file() {
        return Err("componentize-js is not installed in examples/policies/js (run .ci/toolchains)".into());
    }
    if Command::new("node").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        return Err("node is not on PATH".into());
    }
    Ok(Toolchains { componentize_py })
}

/// Runs a build step and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Python policy module in `dir`, built for `hook`'s world.
pub fn build_python(tools: &Toolchains, dir: &Path, module: &str, hook: &str, out: &Path) {
    let world = if hook == "agent" { "cairn:policy/agent".to_string() } else { format!("cairn:policy/{hook}-policy") };
    run(Command::new(&tools.componentize_py)
        .current_dir(dir)
        .args(["-d", "wit", "-w", &world, "componentize", module, "-o"])
        .arg(out));
}

/// The built examples, per hook: (rust, python, js) component paths.
pub fn examples() -> Option<&'static Vec<(String, [PathBuf; 3])>> {
    let tools = toolchains()?;
    static BUILT: OnceLock<Vec<(String, [PathBuf; 3])>> = OnceLock::new();
    Some(BUILT.get_or_init(|| {
        let out = guests::target_dir().join("examples");
        std::fs::create_dir_all(&out).expect("create target/examples");
        let js = examples_dir().join("js");
        run(Command::new("npm").current_dir(&js).args(["run", "--silent", "build"]));
        EXAMPLES
            .iter()
            .map(|(hook, name, module)| {
                let python = out.join(format!("{module}.wasm"));
                build_python(tools, &examples_dir().join("python"), module, hook, &python);
                (hook.to_string(), [guests::example_path(name), python, js.join(format!("{name}.wasm"))])
            })
            .collect()
    }))
}

/// `tests/guests-lang/misbehaving.{py,js}`, a claim policy that prints or
/// raises as its config says, built once: [python, js].
pub fn misbehaving() -> Option<&'static [PathBuf; 2]> {
    let tools = toolchains()?;
    static BUILT: OnceLock<[PathBuf; 2]> = OnceLock::new();
    Some(BUILT.get_or_init(|| {
        let src = guests::workspace().join("tests").join("guests-lang");
        let out = guests::target_dir().join("guests-lang");
        std::fs::create_dir_all(&out).expect("create target/guests-lang");
        let wit = guests::workspace().join("wit");
        let python = out.join("misbehaving-py.wasm");
        run(Command::new(&tools.componentize_py)
            .current_dir(&src)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "cairn:policy/claim-policy", "componentize", "misbehaving", "-o"])
            .arg(&python));
        let js = out.join("misbehaving-js.wasm");
        let js_dir = examples_dir().join("js");
        run(Command::new("node")
            .current_dir(&js_dir)
            .args(["--max-old-space-size=4096", "node_modules/@bytecodealliance/componentize-js/src/cli.js"])
            .arg(src.join("misbehaving.js"))
            .arg("--wit")
            .arg(&wit)
            .args(["-n", "cairn:policy/claim-policy", "-d", "http", "fetch-event", "-o"])
            .arg(&js));
        [python, js]
    }))
}
