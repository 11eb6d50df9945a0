//! One policy decision, end to end, against the raw wasmtime floor.
//!
//! - `decision/fresh`: what Cairn does per decision by default: a fresh
//!   store (limits, epoch deadline, sandboxed WASI with captured output),
//!   a fresh instance from the cached `InstancePre`, the call, the result
//!   lifted back.
//! - `decision/reuse`: the same with `isolation = "reuse"` (warm instance).
//! - `floor/instantiate+call`: a bare `Store`, `InstancePre::instantiate`
//!   and the call, on the same engine: the least any fresh-instance design
//!   can cost.
//! - `throughput/2-threads`: fresh decisions from two threads at once.
//!
//! The guest is `tests/guests/approve-all`, built with `--release`.

#[path = "../../tests/support/guests.rs"]
#[allow(dead_code)]
mod guests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_host::policy::bindings::{claim, coord};
use cairn_host::policy::view::Reads;
use cairn_host::policy::{Fixture, Hook, Isolation, Limits, Options, Runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

fn input() -> coord::types::Claim {
    coord::types::Claim {
        claimant: "research-bot".into(),
        target: coord::types::ClaimTarget::Subtask(coord::types::SubtaskRef {
            contract: "website-redesign".into(),
            subtask_id: "research".into(),
        }),
        request: "{}".into(),
    }
}

struct Floor {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Floor {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl coord::types::Host for Floor {}

fn bench(c: &mut Criterion) {
    let wasm = guests::release_wasm("approve-all");
    let runtime = Runtime::new(Options::default()).expect("engine");
    let loaded = runtime.load(Hook::Claim, &wasm, &Hook::Claim.default_grants()).expect("load");
    let limits = Limits::default();
    let state: Arc<dyn cairn_host::policy::View> = Arc::new(Fixture::default());
    let claim = input();

    let mut group = c.benchmark_group("decision");
    group.bench_function("fresh", |b| {
        b.iter(|| {
            let out = runtime.decide_claim(&loaded, "bench", &limits, "{}", &claim, state.clone());
            assert!(out.result.is_ok());
        })
    });
    group.bench_function("reuse", |b| {
        b.iter(|| {
            let out = runtime.decide_claim_with(
                &loaded,
                "bench",
                &limits,
                Isolation::Reuse,
                "{}",
                &claim,
                Reads::new(state.clone(), Arc::default()),
            );
            assert!(out.result.is_ok());
        })
    });
    group.finish();

    // The floor: same engine, same component, nothing of Cairn's.
    let engine = runtime.engine().clone();
    let component = Component::new(&engine, &wasm).expect("compile");
    let mut linker = Linker::<Floor>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    coord::types::add_to_linker::<Floor, HasSelf<Floor>>(&mut linker, |f| f).expect("types");
    let pre = claim::ClaimPolicyPre::new(linker.instantiate_pre(&component).expect("pre")).expect("typed pre");
    c.bench_function("floor/instantiate+call", |b| {
        b.iter(|| {
            let mut store =
                Store::new(&engine, Floor { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = pre.instantiate(&mut store).expect("instantiate");
            let verdict = instance.call_decide(&mut store, "{}", &claim).expect("call");
            assert!(matches!(verdict, coord::types::Verdict::Approve));
        })
    });

    c.bench_function("throughput/2-threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters.div_ceil(2) {
                            let out = runtime.decide_claim(&loaded, "bench", &limits, "{}", &claim, state.clone());
                            assert!(out.result.is_ok());
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
