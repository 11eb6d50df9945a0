//! The same claim policy (`examples/policies/*/budget-gate`) in Rust,
//! Python and JavaScript: component size, cold load (compile) against a
//! load from the precompiled cache, and one whole decision (stash read and
//! log line included) with a fresh instance and with a reused one.
//!
//! Not criterion: a decision's tail matters, so this records every sample
//! and prints p50 and p99. Run with `cargo bench --bench languages`; it
//! builds the examples first, so `.ci/toolchains` must have run.

#[path = "../../tests/support/guests.rs"]
#[allow(dead_code)]
mod guests;
#[path = "../../tests/support/sdk.rs"]
#[allow(dead_code)]
mod sdk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_host::policy::bindings::coord::types::{Claim, ClaimTarget, SubtaskRef, Verdict};
use cairn_host::policy::view::Reads;
use cairn_host::policy::{Fixture, Hook, Isolation, Limits, Loaded, Options, Prepare, Reset, Runtime, View};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// This thread's minor page faults so far (Linux; 0 elsewhere): the
/// decision's own, not the preparer thread's.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default();
    after_name.split(' ').nth(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// How decisions are spaced.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// One after another.
    BackToBack,
    /// Each once the pool is full again (the wait unmeasured): decisions
    /// arriving no faster than the preparer makes instances. The used
    /// slot's reset may still be under way on the other core, unless
    /// [`Knobs::idle`] waits for it too. Waiting for one ready instance is
    /// not enough: the used stores then pile up past what the preparer may
    /// hold, and decisions reset them inline. The wait spins, because a core that sleeps
    /// wakes with cold caches (a 5 ms sleep added 100 µs to a Python
    /// decision), which is a property of the machine, not of the path.
    WhenReady,
}

/// Settings read once from the environment, for experiments.
#[derive(Clone, Copy)]
struct Knobs {
    /// CAIRN_BENCH_RESET=dirty: Python and JS slots reset page by page, as
    /// `--policy-snapshot-reset dirty` does (whole by default).
    snapshot_reset: Reset,
    /// CAIRN_BENCH_IDLE=1: the full-pool wait also waits until the
    /// preparer has reset the used slots, so no decision overlaps a reset.
    idle: bool,
    /// CAIRN_BENCH_EVICT=MiB: write that much on the deciding thread before
    /// each reused decision (unmeasured), as a whole reset's copy does to
    /// the caches before a fresh one: what a reused decision costs cold.
    evict: Option<usize>,
}

impl Knobs {
    fn from_env() -> Self {
        let evict = std::env::var("CAIRN_BENCH_EVICT")
            .ok()
            .map(|mib| mib.parse::<usize>().expect("CAIRN_BENCH_EVICT is a number of MiB, such as 16") << 20);
        let snapshot_reset = match std::env::var("CAIRN_BENCH_RESET").as_deref() {
            Ok("dirty") => Reset::Dirty,
            Ok("whole") | Err(_) => Reset::Whole,
            Ok(other) => panic!("CAIRN_BENCH_RESET is whole or dirty, not {other}"),
        };
        Self { snapshot_reset, idle: std::env::var_os("CAIRN_BENCH_IDLE").is_some(), evict }
    }
}

fn decisions(
    runtime: &Runtime,
    loaded: &Loaded,
    isolation: Isolation,
    n: usize,
    state: &Arc<dyn View>,
    pace: Pace,
    knobs: &Knobs,
) -> Vec<Duration> {
    let claim = Claim {
        claimant: "design-bot".into(),
        target: ClaimTarget::Subtask(SubtaskRef { contract: "site".into(), subtask_id: "design".into() }),
        request: "{}".into(),
    };
    let config = r#"{"max_budget_usdc": 12, "max_open_claims": 2}"#;
    let limits = Limits::default();
    let evict = if isolation == Isolation::Reuse { knobs.evict.unwrap_or(0) } else { 0 };
    let mut scratch = vec![0u8; evict];
    (0..n)
        .map(|i| {
            if !scratch.is_empty() {
                scratch.fill(i as u8);
                std::hint::black_box(&scratch);
            }
            if pace == Pace::WhenReady {
                let deadline = Instant::now() + Duration::from_millis(200);
                while (loaded.prepared().ready < Prepare::default().per_policy
                    || (knobs.idle && runtime.retiring() > 0))
                    && Instant::now() < deadline
                {
                    std::hint::spin_loop();
                }
            }
            let start = Instant::now();
            let out = runtime.decide_claim_with(
                loaded,
                "bench",
                &limits,
                isolation,
                config,
                &claim,
                Reads::new(state.clone(), Arc::default()),
            );
            let took = start.elapsed();
            assert!(matches!(out.result, Ok(Verdict::Escalate(_))), "{:?}", out.result);
            assert_eq!(out.logs.len(), 1, "one log line per decision");
            took
        })
        .collect()
}

fn main() {
    let Some(built) = sdk::examples() else {
        eprintln!("run .ci/toolchains first: the Python and JS examples need componentize-py and componentize-js");
        return;
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sdk::run(std::process::Command::new(cargo).current_dir(guests::workspace()).args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        "budget-gate",
    ]));
    let rust = guests::target_dir().join("wasm32-wasip2/release/budget_gate.wasm");
    let [_, python, js] = &built[0].1;
    // CAIRN_BENCH_JS=path.wasm measures another build of the JS policy
    // (other componentize-js options) in the JS row.
    let js = &std::env::var_os("CAIRN_BENCH_JS").map(std::path::PathBuf::from).unwrap_or_else(|| js.clone());
    // CAIRN_BENCH_PY=path.wasm does the same for the Python row.
    let python = &std::env::var_os("CAIRN_BENCH_PY").map(std::path::PathBuf::from).unwrap_or_else(|| python.clone());

    let fixture: Fixture = serde_json::from_value(serde_json::json!({"stashes": [{"name": "site", "persistent": true,
        "body": {"objective": "o", "subtasks": [{"id": "design", "description": "d", "status": "open", "budget_usdc": 15}]}}]}))
    .expect("fixture");
    let state: Arc<dyn View> = Arc::new(fixture);
    let grants = Hook::Claim.default_grants();

    // CAIRN_BENCH_PROFILE_PREPARED=N runs only N prepared decisions per
    // guest, so a profiler sees that path alone (the wait for a full pool is
    // the `decisions` loop's, outside the guest).
    let profile_prepared: Option<usize> = std::env::var("CAIRN_BENCH_PROFILE_PREPARED")
        .ok()
        .map(|n| n.parse().expect("CAIRN_BENCH_PROFILE_PREPARED is a number of decisions, such as 20000"));
    if profile_prepared.is_none() {
        println!(
            "| guest | size | compile | load from cache | fresh p50 | fresh p99 | faults | prepared p50 | prepared p99 | \
             faults | hits | fresh/s, 2 threads | reused p50 | reused p99 |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let knobs = Knobs::from_env();
    let defaults = || Options { snapshot_reset: knobs.snapshot_reset, ..Options::default() };
    // CAIRN_BENCH_GUESTS=python,js runs only those (to profile one).
    let only = std::env::var("CAIRN_BENCH_GUESTS").unwrap_or_default().to_lowercase();
    for (lang, path) in
        [("Rust (wit-bindgen)", &rust), ("Python (componentize-py)", python), ("JS (componentize-js)", js)]
    {
        if !only.is_empty() && !only.split(',').any(|g| lang.to_lowercase().starts_with(g.trim())) {
            continue;
        }
        let wasm = std::fs::read(path).expect("read the component");
        if let Some(n) = profile_prepared {
            let runtime = Runtime::new(defaults()).expect("engine");
            let loaded = Arc::new(runtime.load(Hook::Claim, &wasm, &grants).expect("load"));
            let mut prepared = decisions(&runtime, &loaded, Isolation::Fresh, n, &state, Pace::WhenReady, &knobs);
            println!(
                "{lang}: {n} prepared decisions, p50 {}, p99 {}",
                us(percentile(&mut prepared, 0.5)),
                us(percentile(&mut prepared, 0.99))
            );
            // With CAIRN_BENCH_EVICT, reused ones too (cold, unless 0), to compare.
            if knobs.evict.is_some() {
                decisions(&runtime, &loaded, Isolation::Reuse, 200, &state, Pace::BackToBack, &knobs);
                let mut reused = decisions(&runtime, &loaded, Isolation::Reuse, n, &state, Pace::BackToBack, &knobs);
                println!(
                    "{lang}: {n} reused decisions after each eviction, p50 {}, p99 {}",
                    us(percentile(&mut reused, 0.5)),
                    us(percentile(&mut reused, 0.99))
                );
            }
            continue;
        }

        // Compile: a fresh engine with no cache, best of three.
        let compile = (0..3)
            .map(|_| {
                let runtime = Runtime::new(defaults()).expect("engine");
                let start = Instant::now();
                runtime.load(Hook::Claim, &wasm, &grants).expect("load");
                start.elapsed()
            })
            .min()
            .unwrap_or_default();

        // From the cache: the artifact is written once, then each new engine
        // maps it instead of compiling. The whole load is timed: the mmap,
        // the import check, the linker and the InstancePre.
        let cache = tempfile::tempdir().expect("cache dir");
        let options = || Options { cache_dir: Some(cache.path().to_path_buf()), ..defaults() };
        Runtime::new(options()).expect("engine").load(Hook::Claim, &wasm, &grants).expect("warm the cache");
        let mut cached: Vec<Duration> = (0..20)
            .map(|_| {
                let runtime = Runtime::new(options()).expect("engine");
                let start = Instant::now();
                let loaded = runtime.load(Hook::Claim, &wasm, &grants).expect("load from cache");
                let took = start.elapsed();
                drop(loaded);
                took
            })
            .collect();

        // Fresh, instantiated on the spot: preparing off.
        let on_spot = Runtime::new(Options { prepare: Prepare { per_policy: 0, ..Prepare::default() }, ..options() })
            .expect("engine");
        let loaded = on_spot.load(Hook::Claim, &wasm, &grants).expect("load");
        decisions(&on_spot, &loaded, Isolation::Fresh, 200, &state, Pace::BackToBack, &knobs);
        let faults = minor_faults();
        let mut fresh = decisions(&on_spot, &loaded, Isolation::Fresh, 3000, &state, Pace::BackToBack, &knobs);
        let faults = (minor_faults() - faults) as f64 / 3000.0;
        decisions(&on_spot, &loaded, Isolation::Reuse, 200, &state, Pace::BackToBack, &knobs);
        let mut reused = decisions(&on_spot, &loaded, Isolation::Reuse, 20_000, &state, Pace::BackToBack, &knobs);
        drop((loaded, on_spot));

        // Fresh from instances made ahead (the default settings).
        let runtime = Runtime::new(options()).expect("engine");
        let loaded = Arc::new(runtime.load(Hook::Claim, &wasm, &grants).expect("load"));
        decisions(&runtime, &loaded, Isolation::Fresh, 200, &state, Pace::WhenReady, &knobs);
        let before = (minor_faults(), loaded.prepared());
        let mut prepared = decisions(&runtime, &loaded, Isolation::Fresh, 3000, &state, Pace::WhenReady, &knobs);
        let after = loaded.prepared();
        let prepared_faults = (minor_faults() - before.0) as f64 / 3000.0;
        let hits = (after.hits - before.1.hits) as f64 / 3000.0 * 100.0;

        // Throughput: two threads deciding back to back, fresh, preparing on.
        let started = Instant::now();
        let per_thread = 2000;
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    decisions(&runtime, &loaded, Isolation::Fresh, per_thread, &state, Pace::BackToBack, &knobs)
                });
            }
        });
        let rate = (2 * per_thread) as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {lang} | {:.2} MB | {} | {} | {} | {} | {faults:.0} | {} | {} | {prepared_faults:.0} | {hits:.0}% | {rate:.0} | {} | {} |",
            wasm.len() as f64 / 1e6,
            ms(compile),
            ms(percentile(&mut cached, 0.5)),
            us(percentile(&mut fresh, 0.5)),
            us(percentile(&mut fresh, 0.99)),
            us(percentile(&mut prepared, 0.5)),
            us(percentile(&mut prepared, 0.99)),
            us(percentile(&mut reused, 0.5)),
            us(percentile(&mut reused, 0.99)),
        );
    }
}

/// What the shared test support calls when a toolchain is missing: the
/// benchmark then measures without that guest, so it only says why.
fn skip(why: &str) {
    eprintln!("skipped: {why}");
}
