//! The policy sandbox, exercised with real components compiled from
//! `tests/guests/`: each guest's exact outcome, and a working host after
//! every one of them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{self, guests};
use cairn_host::policy::bindings::coord::types::{Claim, ClaimTarget, Handoff, SubtaskRef, TaskRef, Verdict};
use cairn_host::policy::view::Reads;
use cairn_host::policy::{
    Capability, Fixture, Hook, Isolation, Limits, LoadError, Loaded, Options, Reset, Runtime, View,
};

fn runtime() -> Arc<Runtime> {
    Runtime::new(Options::default()).expect("engine")
}

fn load(rt: &Runtime, guest: &str) -> Loaded {
    rt.load(Hook::Claim, &guests::wasm(guest), &Hook::Claim.default_grants()).unwrap_or_else(|e| panic!("{guest}: {e}"))
}

fn claim(claimant: &str) -> Claim {
    Claim {
        claimant: claimant.into(),
        target: ClaimTarget::Subtask(SubtaskRef { contract: "website-redesign".into(), subtask_id: "research".into() }),
        request: "{}".into(),
    }
}

fn nothing() -> Arc<dyn View> {
    Arc::new(Fixture::default())
}

fn decide(
    rt: &Runtime,
    loaded: &Loaded,
    limits: &Limits,
    config: &str,
) -> cairn_host::policy::runtime::Outcome<Verdict> {
    rt.decide_claim(loaded, "test", limits, config, &claim("research-bot"), nothing())
}

/// After any failure the same runtime still decides.
fn still_serving(rt: &Runtime) {
    let ok = decide(rt, &load(rt, "approve-all"), &Limits::default(), "{}");
    assert!(matches!(ok.result, Ok(Verdict::Approve)), "{:?}", ok.result);
}

#[test]
fn approve_all_and_deny_all() {
    let rt = runtime();
    assert!(matches!(decide(&rt, &load(&rt, "approve-all"), &Limits::default(), "{}").result, Ok(Verdict::Approve)));
    match decide(&rt, &load(&rt, "deny-all"), &Limits::default(), "{}").result {
        Ok(Verdict::Deny(reason)) => assert_eq!(reason, "deny-all refuses research-bot"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_reaches_the_guest() {
    let rt = runtime();
    let g = load(&rt, "config-driven");
    let verdict = |who: &str| {
        rt.decide_claim(
            &g,
            "t",
            &Limits::default(),
            r#"{"allow": ["a", "b"], "escalate": ["c"]}"#,
            &claim(who),
            nothing(),
        )
        .result
    };
    assert!(matches!(verdict("a"), Ok(Verdict::Approve)));
    assert!(matches!(verdict("c"), Ok(Verdict::Escalate(r)) if r == "c needs a human"));
    assert!(matches!(verdict("z"), Ok(Verdict::Deny(r)) if r.contains(r#""allow": ["a", "b"]"#)));
}

#[test]
fn stash_import_reads_fixture_state_and_logs() {
    let rt = runtime();
    let g = load(&rt, "stash-reader");
    let state = |status: &str| -> Arc<dyn View> {
        let fixture: Fixture = serde_json::from_value(serde_json::json!({"stashes": [{
            "name": "website-redesign", "persistent": true, "owner": "orchestrator",
            "body": {"objective": "o", "subtasks": [{"id": "research", "description": "d", "status": status}]}
        }]}))
        .unwrap();
        Arc::new(fixture)
    };
    let open = rt.decide_claim(&g, "reader", &Limits::default(), "{}", &claim("bot"), state("open"));
    assert!(matches!(open.result, Ok(Verdict::Approve)), "{:?}", open.result);
    assert_eq!(open.logs.len(), 1);
    assert_eq!(open.logs[0].level, "info");
    assert!(open.logs[0].message.starts_with("read website-redesign version 1"), "{:?}", open.logs);
    let taken = rt.decide_claim(&g, "reader", &Limits::default(), "{}", &claim("bot"), state("claimed"));
    assert!(matches!(taken.result, Ok(Verdict::Deny(r)) if r == "subtask research is not open"));
    let none = rt.decide_claim(&g, "reader", &Limits::default(), "{}", &claim("bot"), nothing());
    assert!(matches!(none.result, Ok(Verdict::Deny(r)) if r == "no contract website-redesign"));
}

#[test]
fn infinite_loop_times_out() {
    let rt = runtime();
    let limits = Limits { timeout_ms: 50, ..Limits::default() };
    // On a thread, so a loop that is never stopped fails the test instead
    // of hanging the run.
    let (tx, rx) = std::sync::mpsc::channel();
    let looping = (rt.clone(), load(&rt, "infinite-loop"));
    std::thread::spawn(move || {
        let _ = tx.send(decide(&looping.0, &looping.1, &limits, "{}"));
    });
    let out = rx.recv_timeout(Duration::from_secs(60)).expect("the loop was stopped");
    assert_eq!(out.result.unwrap_err(), "timed out after 50 ms");
    still_serving(&rt);
}

#[test]
fn memory_bomb_hits_the_cap() {
    let rt = runtime();
    let limits = Limits { memory_bytes: 16 << 20, timeout_ms: 10_000, ..Limits::default() };
    let err = decide(&rt, &load(&rt, "memory-bomb"), &limits, "{}").result.unwrap_err();
    assert!(err.starts_with("exceeded its memory limit of 16777216 bytes"), "{err}");
    still_serving(&rt);
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    let rt = runtime();
    let err = decide(&rt, &load(&rt, "recursion"), &Limits { timeout_ms: 5000, ..Limits::default() }, "{}")
        .result
        .unwrap_err();
    assert_eq!(err, "overflowed its stack (unbounded recursion?)");
    still_serving(&rt);
}

#[test]
fn a_panic_traps_and_its_message_is_captured() {
    let rt = runtime();
    let out = decide(&rt, &load(&rt, "panic"), &Limits::default(), "{}");
    let err = out.result.unwrap_err();
    assert!(err.starts_with("trapped:") && err.contains("a panic or uncaught exception in the guest"), "{err}");
    assert!(out.stderr.contains("policy bug while deciding for research-bot"), "stderr: {:?}", out.stderr);
    still_serving(&rt);
}

#[test]
fn a_100_mb_result_cannot_be_built() {
    let rt = runtime();
    let limits = Limits { timeout_ms: 10_000, ..Limits::default() };
    let err = decide(&rt, &load(&rt, "huge-result"), &limits, "{}").result.unwrap_err();
    assert!(err.starts_with("exceeded its memory limit of 67108864 bytes"), "{err}");
    still_serving(&rt);
}

#[test]
fn files_environment_and_sockets_are_out_of_reach() {
    let rt = runtime();
    // Something listens, so a refusal can only be the sandbox's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("a bound address").port();
    let out = decide(&rt, &load(&rt, "escape"), &Limits::default(), &format!(r#"{{"port":{port}}}"#));
    let Ok(Verdict::Deny(report)) = out.result else { panic!("{:?}", out.result) };
    assert!(report.contains("file:refused"), "{report}");
    assert!(report.contains("env:empty(0)"), "{report}");
    assert!(report.contains("net:refused(PermissionDenied"), "{report}");
    assert_eq!(out.stdout, "escape attempt finished\n");
    assert_eq!(out.stderr, "to stderr\n");
}

#[test]
fn every_decision_gets_a_fresh_instance() {
    let rt = runtime();
    let g = load(&rt, "counter");
    for _ in 0..3 {
        assert!(matches!(decide(&rt, &g, &Limits::default(), "{}").result, Ok(Verdict::Deny(r)) if r == "call 1"));
    }
}

/// Polls `what` until it holds, for at most 30 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what} did not happen within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Instances made ahead are as fresh as ones made on the spot: each is used
/// by one decision, then retired. Changed limits make the ready ones stale,
/// and an idle policy gives its instances back.
#[test]
fn instances_made_ahead_serve_one_decision_each() {
    use cairn_host::policy::Prepare;
    let prepare = Prepare { per_policy: 2, total: 4, idle: Duration::from_secs(2) };
    let rt = Runtime::new(Options { prepare, ..Options::default() }).expect("engine");
    let g = load(&rt, "counter");
    let limits = Limits::default();
    // The first decision finds nothing ready and has the pool filled.
    assert!(matches!(decide(&rt, &g, &limits, "{}").result, Ok(Verdict::Deny(r)) if r == "call 1"));
    assert_eq!(g.prepared().misses, 1);
    for round in 0..5 {
        eventually("the pool refilling", || g.prepared().ready == 2);
        let hits = g.prepared().hits;
        let out = decide(&rt, &g, &limits, "{}");
        assert!(matches!(&out.result, Ok(Verdict::Deny(r)) if r == "call 1"), "round {round}: {:?}", out.result);
        assert_eq!(g.prepared().hits, hits + 1, "round {round} took a ready instance");
    }

    // Made for other limits: not used, and the pool refills for the new ones.
    eventually("the pool refilling", || g.prepared().ready == 2);
    let other = Limits { timeout_ms: 50, ..limits };
    let misses = g.prepared().misses;
    assert!(matches!(decide(&rt, &g, &other, "{}").result, Ok(Verdict::Deny(r)) if r == "call 1"));
    assert_eq!(g.prepared().misses, misses + 1, "instances made for other limits are not used");
    eventually("the pool refilling for the new limits", || g.prepared().ready == 2);
    assert!(matches!(decide(&rt, &g, &other, "{}").result, Ok(Verdict::Deny(r)) if r == "call 1"));

    // What the ready instances hold is reported, and bounded by the limits.
    let held = g.prepared().memory_bytes;
    assert!(held > 0 && held <= 2 * other.memory_bytes + 2 * (200_000 * 8), "{held}");

    // Idle past the setting: given back.
    eventually("an idle pool giving its instances back", || g.prepared().ready == 0);
    assert_eq!(g.prepared().memory_bytes, 0);
}

/// Python and JS guests ship a pre-initialised heap, so their freed memory
/// slots are reset whole (copied back from the image) where a Rust guest's
/// are reset page by page. Either way a fresh decision never sees an
/// earlier one's memory: in an instance made ahead, or on the spot when
/// none is ready, in slots reused many times over. Slots reset whole are
/// primed at the first decision, and priming runs no guest code: the
/// decisions that follow still start from the snapshot.
#[test]
fn snapshot_guests_are_reset_whole_and_every_decision_is_fresh() {
    use cairn_host::policy::Prepare;
    let Some(built) = support::sdk::misbehaving() else { return };
    let prepare = Prepare { per_policy: 2, total: 4, idle: Duration::from_secs(60) };
    let rt = Runtime::new(Options { prepare, ..Options::default() }).expect("engine");
    assert_eq!(load(&rt, "counter").reset, Reset::Dirty);
    let limits = Limits::default();
    let count = r#"{"do": "count"}"#;
    for path in built {
        let wasm = std::fs::read(path).expect("read the guest");
        let g = rt.load(Hook::Claim, &wasm, &Hook::Claim.default_grants()).expect("load");
        assert_eq!(g.reset, Reset::Whole, "{}", path.display());
        let decide = |isolation| {
            let reads = Reads::new(nothing(), Arc::default());
            rt.decide_claim_with(&g, "test", &limits, isolation, count, &claim("research-bot"), reads).result
        };
        for i in 0..16 {
            // The first has none ready (a pool fills behind its first
            // take); then half wait for an instance made ahead, and the
            // rest come at once after, some instantiating on the spot.
            if i % 2 == 1 {
                eventually("an instance made ahead", || g.prepared().ready > 0);
            }
            let out = decide(Isolation::Fresh);
            assert!(matches!(&out, Ok(Verdict::Deny(r)) if r == "call 1"), "{} decision {i}: {out:?}", path.display());
        }
        assert!(g.prepared().hits >= 8, "{:?}", g.prepared());
        // Primed behind the first decision, before the pool filled.
        assert_eq!(g.prepared().primed, 2 + 6, "{}: {:?}", path.display(), g.prepared());
        // The counter does count: a reused instance remembers.
        let (first, second) = (decide(Isolation::Reuse), decide(Isolation::Reuse));
        assert!(matches!(&first, Ok(Verdict::Deny(r)) if r == "call 1"), "{first:?}");
        assert!(matches!(&second, Ok(Verdict::Deny(r)) if r == "call 2"), "{second:?}");
        eventually("the pool refilling", || g.prepared().ready == 2);
        assert!(g.prepared().memory_bytes > 2 << 20, "{:?}", g.prepared());
    }
    // A host told to reset them page by page (`--policy-snapshot-reset
    // dirty`) does, and its decisions are as fresh.
    let dirty = Runtime::new(Options { prepare, snapshot_reset: Reset::Dirty, ..Options::default() }).expect("engine");
    // With no engine for whole resets, only the page-by-page slots report.
    let resets = |rt: &Runtime| rt.slots_resident().into_iter().map(|(reset, _)| reset).collect::<Vec<_>>();
    assert_eq!(resets(&rt), ["dirty", "whole"]);
    assert_eq!(resets(&dirty), ["dirty"]);
    for path in built {
        let wasm = std::fs::read(path).expect("read the guest");
        let g = dirty.load(Hook::Claim, &wasm, &Hook::Claim.default_grants()).expect("load");
        assert_eq!(g.reset, Reset::Dirty, "{}", path.display());
        for i in 0..4 {
            let reads = Reads::new(nothing(), Arc::default());
            let out = dirty.decide_claim_with(&g, "t", &limits, Isolation::Fresh, count, &claim("r"), reads).result;
            assert!(matches!(&out, Ok(Verdict::Deny(r)) if r == "call 1"), "{} decision {i}: {out:?}", path.display());
        }
        // Page by page, a slot's first reset costs no more than the next.
        assert_eq!(g.prepared().primed, 0, "{:?}", g.prepared());
    }
}

#[test]
fn a_component_for_another_world_is_refused() {
    let rt = runtime();
    let err = rt.load(Hook::Handoff, &guests::wasm("approve-all"), &Hook::Handoff.default_grants()).err().unwrap();
    assert!(matches!(err, LoadError::WorldMismatch { world: "handoff-policy", .. }), "{err}");
    assert!(err.to_string().contains("check"), "names the missing export: {err}");
    let handoff = rt.load(Hook::Handoff, &guests::wasm("handoff-basic"), &Hook::Handoff.default_grants()).unwrap();
    let input = Handoff {
        agent: "a".into(),
        task: Some(TaskRef { team: "t".into(), id: 1 }),
        subject: "s".into(),
        metadata: "{}".into(),
        structured: Some(r#"{"produced": ["x"]}"#.into()),
        text: None,
    };
    let out = rt.check_handoff(
        &handoff,
        "h",
        &Limits::default(),
        Isolation::Fresh,
        "{}",
        &input,
        Reads::new(nothing(), Arc::default()),
    );
    assert!(out.result.unwrap().is_empty(), "a HANDOFF with produced passes");
    let bare = Handoff { structured: None, ..input };
    let v = rt
        .check_handoff(
            &handoff,
            "h",
            &Limits::default(),
            Isolation::Fresh,
            "{}",
            &bare,
            Reads::new(nothing(), Arc::default()),
        )
        .result
        .unwrap();
    assert_eq!((v.len(), v[0].field.as_str()), (1, "produced"));
}

#[test]
fn ungranted_imports_and_non_components_are_refused() {
    let rt = runtime();
    let only_log: BTreeSet<_> = [Capability::Log].into();
    let err = rt.load(Hook::Claim, &guests::wasm("stash-reader"), &only_log).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("cairn:coord/stash-read@0.2.0") && text.contains("not granted"), "{text}");
    let err = rt.load(Hook::Claim, b"\0asm not really", &Hook::Claim.default_grants()).err().unwrap();
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err}");
}

#[test]
fn fuel_bounds_guests_when_on() {
    let rt = Runtime::new(Options { fuel: true, ..Options::default() }).unwrap();
    let limits = Limits { fuel: 5_000_000, timeout_ms: 10_000, ..Limits::default() };
    let out = decide(&rt, &load(&rt, "infinite-loop"), &limits, "{}");
    assert_eq!(out.result.unwrap_err(), "ran out of fuel (5000000 units)");
    let ok = decide(&rt, &load(&rt, "approve-all"), &limits, "{}");
    assert!(ok.fuel_used.is_some_and(|f| f > 0 && f < 5_000_000), "{:?}", ok.fuel_used);
}

#[test]
fn precompiled_artifacts_are_reused() {
    let scratch = support::scratch();
    let dir = scratch.path().to_path_buf();
    let made = |rt: &Runtime| {
        let c = rt.components();
        (c.compiled.load(Ordering::Relaxed), c.cached.load(Ordering::Relaxed))
    };
    let rt = Runtime::new(Options { cache_dir: Some(dir.clone()), ..Options::default() }).unwrap();
    let first = load(&rt, "approve-all");
    assert_eq!(made(&rt), (1, 0), "(compiled, cached)");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().contains(&first.sha256));
    // A new engine with the same settings loads the artifact instead of compiling.
    let again = Runtime::new(Options { cache_dir: Some(dir.clone()), ..Options::default() }).unwrap();
    let second = load(&again, "approve-all");
    assert_eq!(made(&again), (0, 1), "(compiled, cached)");
    assert!(matches!(decide(&again, &second, &Limits::default(), "{}").result, Ok(Verdict::Approve)));
    // Another engine configuration (fuel on) cannot use it, and compiles.
    let fueled = Runtime::new(Options { cache_dir: Some(dir.clone()), fuel: true, ..Options::default() }).unwrap();
    load(&fueled, "approve-all");
    assert_eq!(made(&fueled), (1, 0), "(compiled, cached)");
    // A corrupt artifact is replaced, not trusted. (Written aside and renamed
    // in, as the cache itself does: loaded artifacts are memory-mapped, so a
    // file must never be changed in place under a running host.)
    drop((second, first));
    let tmp = files[0].with_extension("corrupt");
    std::fs::write(&tmp, b"garbage").unwrap();
    std::fs::rename(&tmp, &files[0]).unwrap();
    let third = load(&again, "approve-all");
    assert_eq!(made(&again), (1, 1), "(compiled, cached): the corrupt file was recompiled");
    assert!(matches!(decide(&again, &third, &Limits::default(), "{}").result, Ok(Verdict::Approve)));
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 1000);
}

#[test]
fn reuse_keeps_instances_warm_and_replaces_failed_ones() {
    let rt = runtime();
    let g = load(&rt, "counter");
    let reuse = |rt: &Runtime, g: &Loaded| {
        rt.decide_claim_with(
            g,
            "t",
            &Limits::default(),
            Isolation::Reuse,
            "{}",
            &claim("a"),
            Reads::new(nothing(), Arc::default()),
        )
        .result
    };
    // The trade-off of reuse, made visible: the guest's globals carry over.
    assert!(matches!(reuse(&rt, &g), Ok(Verdict::Deny(r)) if r == "call 1"));
    assert!(matches!(reuse(&rt, &g), Ok(Verdict::Deny(r)) if r == "call 2"));
    assert!(matches!(reuse(&rt, &g), Ok(Verdict::Deny(r)) if r == "call 3"));
    // Fresh isolation on the same component still starts from scratch.
    assert!(matches!(decide(&rt, &g, &Limits::default(), "{}").result, Ok(Verdict::Deny(r)) if r == "call 1"));
    // A warm instance that fails is dropped; the next call gets a new one.
    let p = load(&rt, "panic");
    for _ in 0..3 {
        let out = rt.decide_claim_with(
            &p,
            "t",
            &Limits::default(),
            Isolation::Reuse,
            "{}",
            &claim("a"),
            Reads::new(nothing(), Arc::default()),
        );
        assert!(out.result.unwrap_err().starts_with("trapped:"));
        assert!(out.stderr.contains("policy bug"), "each failure's own output: {:?}", out.stderr);
    }
    still_serving(&rt);
}
