//! The wasmtime side: one [`Engine`] for the host, components compiled once
//! (or loaded from the precompiled cache) and pre-linked into an
//! [`InstancePre`], and a fresh [`Store`] and instance for every decision.
//!
//! A store carries the decision's budget: an epoch deadline (a ticker thread
//! advances the engine's epoch every millisecond), fuel when the engine
//! counts it, and a memory cap through [`StoreLimits`]. Whatever the guest
//! does (loops, allocates, recurses, traps) ends as an [`Outcome`] whose
//! error says what happened; the host itself never goes down with it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::output::CappedPipe;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{claim, coord, escalation, handoff};
use super::cache::ArtifactCache;
use super::limits::{self, Limits};
use super::prepared::{Pool, PoolStats, Prepare, Preparer};
use super::view::{Read, Reads, View};
use super::{Capability, Hook};

/// How often the epoch advances; deadlines are counted in these ticks.
const TICK: Duration = Duration::from_millis(1);

/// Of each linear memory (and, a sixteenth of it, each table) a freed slot
/// keeps this much resident, so the next instance of the same policy in
/// that slot does not fault those pages in again; see [`Reset`] for how
/// they are made clean. With the page-by-page reset it took copy-on-write
/// faults per fresh decision from 8 to 0 (Rust), 192 to 30 (JS) and 266 to
/// 173 (Python); Python and JS reach 0 only when reset whole. See
/// docs/benchmarks.md.
const KEEP_RESIDENT: usize = 16 << 20;

/// Components whose core modules carry at least this many bytes of data
/// segments are reset [`Reset::Whole`]: a pre-initialised interpreter heap
/// (componentize-py ships about 11 MiB, componentize-js several), where a
/// Rust policy carries kilobytes.
const SNAPSHOT_BYTES: u64 = 1 << 20;

/// How a freed memory slot is made clean for the next instance. wasmtime
/// sets this per engine, so the runtime keeps one engine for each and
/// compiles a component for the one its memory image calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reset {
    /// Only the pages the decision wrote are copied back from the image
    /// (found with `PAGEMAP_SCAN`) and the rest is given back: a small
    /// guest writes a few pages, and copying more would cost more than the
    /// decision. wasmtime's scan stops after 32 runs of written pages,
    /// though, and gives back everything past them.
    Dirty,
    /// The first [`KEEP_RESIDENT`] bytes are copied back whole, off the
    /// decision's path. A Python or JS decision writes about a hundred
    /// scattered runs of pages; with [`Reset::Dirty`] most were given back
    /// and faulted in again by every decision, each fault a copy of a page
    /// first mapped for reading, which flushes the other cores' TLBs.
    Whole,
}

/// How snapshot guests are reset unless the host is told otherwise: whole,
/// for their latency. Under CPU saturation page by page gives more
/// decisions per second (see docs/benchmarks.md).
impl Default for Reset {
    fn default() -> Self {
        Self::Whole
    }
}

impl Reset {
    /// Chosen from the component's data segments (its memory image): small
    /// guests are always reset [`Reset::Dirty`], snapshot guests `snapshots`.
    pub fn for_component(wasm: &[u8], snapshots: Reset) -> Self {
        // Told to reset snapshots page by page too: nothing to tell apart.
        if snapshots == Self::Dirty || image_bytes(wasm) < SNAPSHOT_BYTES { Self::Dirty } else { snapshots }
    }
}

/// The bytes of data segments in all of a component's core modules. A
/// component that does not parse counts 0: compiling it reports why.
fn image_bytes(wasm: &[u8]) -> u64 {
    let mut total = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::DataSection(data)) => total += data.range().len() as u64,
            Ok(_) => {}
            Err(_) => return 0,
        }
    }
    total
}

/// One engine and its precompiled artifacts.
struct Flavour {
    engine: Engine,
    cache: Option<ArtifactCache>,
}

/// Settings for the engine, fixed for the host's life.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Count fuel in every decision (costs roughly 6–35% of guest speed).
    pub fuel: bool,
    /// Where precompiled artifacts are kept; None compiles every time.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Instances made ahead of fresh decisions.
    pub prepare: Prepare,
    /// How the memory slots of guests with a pre-initialised heap are reset.
    pub snapshot_reset: Reset,
}

pub struct Runtime {
    dirty: Flavour,
    /// Only when snapshot guests are reset whole: an engine reserves its
    /// pool's address space and is ticked, so a host that resets every
    /// slot page by page does without it.
    whole: Option<Flavour>,
    fuel: bool,
    preparer: Preparer,
    components: Components,
}

/// How the components this runtime loaded were made ready.
#[derive(Debug, Default)]
pub struct Components {
    /// Compiled from their bytes.
    pub compiled: AtomicU64,
    /// Loaded from the precompiled cache on disk.
    pub cached: AtomicU64,
}

impl Runtime {
    pub fn new(options: Options) -> anyhow::Result<Arc<Self>> {
        let flavour = |reset: Reset| -> anyhow::Result<Flavour> {
            let engine = Engine::new(&config(options.fuel, reset))
                .map_err(|e| anyhow::anyhow!("configuring the wasm engine: {e:#}"))?;
            let cache = options.cache_dir.clone().map(|dir| ArtifactCache::new(dir, &engine));
            Ok(Flavour { engine, cache })
        };
        let dirty = flavour(Reset::Dirty)?;
        let whole = match options.snapshot_reset {
            Reset::Whole => Some(flavour(Reset::Whole)?),
            Reset::Dirty => None,
        };
        let runtime = Arc::new_cyclic(|weak| Self {
            dirty,
            whole,
            fuel: options.fuel,
            preparer: Preparer::start(weak.clone(), options.prepare),
            components: Components::default(),
        });
        start_ticker(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    fn flavour(&self, reset: Reset) -> &Flavour {
        match reset {
            Reset::Dirty => &self.dirty,
            // Without a whole engine no component is sorted to it
            // (`Reset::for_component`), so this only keeps the match total.
            Reset::Whole => self.whole.as_ref().unwrap_or(&self.dirty),
        }
    }

    /// The engine for components reset [`Reset::Dirty`] (Rust guests).
    pub fn engine(&self) -> &Engine {
        &self.dirty.engine
    }

    /// What freed instance slots keep resident (memories and tables), in
    /// bytes, per reset this host uses.
    pub fn slots_resident(&self) -> Vec<(String, u64)> {
        std::iter::once((&self.dirty, "dirty"))
            .chain(self.whole.as_ref().map(|whole| (whole, "whole")))
            .map(|(flavour, name)| {
                let bytes = flavour
                    .engine
                    .pooling_allocator_metrics()
                    .map_or(0, |m| m.unused_memory_bytes_resident() as u64 + m.unused_table_bytes_resident() as u64);
                (name.to_string(), bytes)
            })
            .collect()
    }

    /// Used instances waiting for the preparer thread to drop them and
    /// reset their slots.
    pub fn retiring(&self) -> usize {
        self.preparer.retiring()
    }

    pub fn components(&self) -> &Components {
        &self.components
    }

    /// Compiles (or loads from the cache) a component for `hook` and checks
    /// that it fits the hook's world with only `grants` linked.
    pub fn load(&self, hook: Hook, wasm: &[u8], grants: &BTreeSet<Capability>) -> Result<Loaded, LoadError> {
        let sha256 = super::cache::sha256(wasm);
        if let Some(what) = not_a_component(wasm) {
            return Err(LoadError::NotAComponent(what));
        }
        // Snapshot guests are reset whole exactly when there is an engine for it.
        let snapshots = if self.whole.is_some() { Reset::Whole } else { Reset::Dirty };
        let reset = Reset::for_component(wasm, snapshots);
        let Flavour { engine, cache } = self.flavour(reset);
        let (component, cached) = match cache {
            Some(cache) => cache.load_or_compile(&sha256, wasm),
            None => Component::new(engine, wasm).map(|c| (c, false)),
        }
        .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let made = if cached { &self.components.cached } else { &self.components.compiled };
        made.fetch_add(1, Ordering::Relaxed);
        let imports = check_imports(&component, engine, hook, grants)?;
        let linker = linker(engine, grants).map_err(|e| LoadError::Internal(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| LoadError::Unlinkable(format!("{e:#}")))?;
        let pre = HookPre::new(hook, pre)
            .map_err(|e| LoadError::WorldMismatch { world: hook.world(), detail: format!("{e:#}") })?;
        let prepared = Pool::new(pre.clone(), reset, &self.preparer);
        Ok(Loaded { sha256, hook, imports, pre, reset, warm: Mutex::new(Vec::new()), prepared })
    }

    pub(super) fn store(&self, reset: Reset, limits: &Limits, reads: Reads, policy: &str) -> (Store<Sandbox>, Pipes) {
        let pipes = Pipes {
            stdout: CappedPipe::new(limits::MAX_OUTPUT_BYTES),
            stderr: CappedPipe::new(limits::MAX_OUTPUT_BYTES),
        };
        // Nothing is preopened, inherited or allowed: no files, no
        // environment, no arguments, no sockets. These are wasmtime's
        // defaults too (every address is denied as well); saying so keeps a
        // change of defaults from opening the network. Clocks and
        // randomness are the host's.
        let wasi = WasiCtxBuilder::new()
            .stdout(pipes.stdout.clone())
            .stderr(pipes.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let meter = Meter {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes as usize)
                .instances(64)
                .tables(64)
                .memories(16)
                .build(),
            memory_refused: false,
            memory_bytes: 0,
            table_elements: 0,
        };
        let sandbox = Sandbox {
            wasi,
            table: ResourceTable::new(),
            meter,
            reads,
            policy: policy.to_string(),
            logs: Vec::new(),
            logs_dropped: 0,
        };
        let mut store = Store::new(&self.flavour(reset).engine, sandbox);
        store.limiter(|s| &mut s.meter);
        store.epoch_deadline_trap();
        (store, pipes)
    }

    /// The decision's budget. A new store has an epoch deadline of 0 and no
    /// fuel, and a reused one has spent some: set both before every call.
    pub(super) fn arm(&self, store: &mut Store<Sandbox>, limits: &Limits) {
        store.set_epoch_deadline(limits.timeout_ms.div_ceil(TICK.as_millis() as u64) + 1);
        if self.fuel {
            let _ = store.set_fuel(limits.fuel);
        }
        store.data_mut().meter.memory_refused = false;
    }

    /// Runs one decision: a fresh store and instance (or, with
    /// [`Isolation::Reuse`], a warm one), the call, the result.
    pub fn run<T>(
        &self,
        loaded: &Loaded,
        policy: &str,
        limits: &Limits,
        isolation: Isolation,
        reads: Reads,
        call: impl FnOnce(&mut Store<Sandbox>, &HookInstance) -> wasmtime::Result<T>,
    ) -> Outcome<T> {
        let started = Instant::now();
        let warm = match isolation {
            Isolation::Reuse => loaded.warm.lock().ok().and_then(|mut w| w.pop()),
            Isolation::Fresh => None,
        };
        // A fresh decision takes an instance made ahead, when one is ready.
        let ready = match isolation {
            Isolation::Fresh => self.preparer.take(&loaded.prepared, policy, limits),
            Isolation::Reuse => None,
        };
        let (mut store, pipes, instance, out_before) = match (warm, ready) {
            (Some(mut w), _) => {
                w.store.data_mut().reads = reads;
                let before = (w.pipes.stdout.len(), w.pipes.stderr.len());
                (w.store, w.pipes, Ok(w.instance), before)
            }
            (None, Some(mut r)) => {
                r.store.data_mut().reads = reads;
                (r.store, r.pipes, Ok(r.instance), (0, 0))
            }
            (None, None) => {
                let (mut store, pipes) = self.store(loaded.reset, limits, reads, policy);
                self.arm(&mut store, limits);
                let instance = loaded.pre.instantiate(&mut store);
                (store, pipes, instance, (0, 0))
            }
        };
        self.arm(&mut store, limits);
        let result = instance.and_then(|i| call(&mut store, &i).map(|r| (r, i)));
        let duration = started.elapsed();
        let fuel_used = self.fuel.then(|| limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)));
        let memory_refused = store.data().meter.memory_refused;
        let logs = std::mem::take(&mut store.data_mut().logs);
        let logs_dropped = std::mem::take(&mut store.data_mut().logs_dropped);
        // A warm instance must not keep the decision's snapshot alive.
        let spent = std::mem::replace(&mut store.data_mut().reads, Reads::none());
        let (misses, writes) = (spent.misses, spent.writes.unwrap_or_default());
        let stdout = pipes.stdout.text_from(out_before.0);
        let stderr = pipes.stderr.text_from(out_before.1);
        let result = match result {
            Ok((value, instance)) => {
                // Keep it warm unless its captured output is filling up.
                let roomy = pipes.stdout.len() < limits::MAX_OUTPUT_BYTES / 2
                    && pipes.stderr.len() < limits::MAX_OUTPUT_BYTES / 2;
                match isolation {
                    Isolation::Reuse if roomy => {
                        if let Ok(mut w) = loaded.warm.lock() {
                            w.push(Warm { store, instance, pipes });
                        }
                    }
                    // Used once: dropped (its slot reset) off this path.
                    _ => self.preparer.retire((store, instance, pipes)),
                }
                Ok(value)
            }
            // A failed instance is never reused.
            Err(e) => {
                self.preparer.retire((store, pipes));
                Err(explain(e, limits, memory_refused))
            }
        };
        Outcome { result, duration, fuel_used, logs, logs_dropped, stdout, stderr, misses, writes }
    }

    /// One claim decision in a fresh instance, reading only from `view`
    /// (what it lacks reads as absent): for tests and benchmarks.
    pub fn decide_claim(
        &self,
        loaded: &Loaded,
        policy: &str,
        limits: &Limits,
        config: &str,
        input: &coord::types::Claim,
        view: Arc<dyn View>,
    ) -> Outcome<coord::types::Verdict> {
        self.decide_claim_with(
            loaded,
            policy,
            limits,
            Isolation::Fresh,
            config,
            input,
            Reads::new(view, Arc::default()),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn decide_claim_with(
        &self,
        loaded: &Loaded,
        policy: &str,
        limits: &Limits,
        isolation: Isolation,
        config: &str,
        input: &coord::types::Claim,
        reads: Reads,
    ) -> Outcome<coord::types::Verdict> {
        self.run(loaded, policy, limits, isolation, reads, |store, instance| match instance {
            HookInstance::Claim(i) => i.call_decide(store, config, input),
            _ => Err(wasmtime::Error::msg(format!("policy {policy} is not a claim policy"))),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn check_handoff(
        &self,
        loaded: &Loaded,
        policy: &str,
        limits: &Limits,
        isolation: Isolation,
        config: &str,
        input: &coord::types::Handoff,
        reads: Reads,
    ) -> Outcome<Vec<coord::types::Violation>> {
        self.run(loaded, policy, limits, isolation, reads, |store, instance| match instance {
            HookInstance::Handoff(i) => i.call_check(store, config, input),
            _ => Err(wasmtime::Error::msg(format!("policy {policy} is not a handoff policy"))),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn escalate(
        &self,
        loaded: &Loaded,
        policy: &str,
        limits: &Limits,
        isolation: Isolation,
        config: &str,
        input: &coord::types::Signal,
        reads: Reads,
    ) -> Outcome<Vec<coord::types::Action>> {
        self.run(loaded, policy, limits, isolation, reads, |store, instance| match instance {
            HookInstance::Escalation(i) => i.call_escalate(store, config, input),
            _ => Err(wasmtime::Error::msg(format!("policy {policy} is not an escalation policy"))),
        })
    }
}

impl Runtime {
    /// One call of an agent's `on-entry`; its writes are in the outcome.
    #[allow(clippy::too_many_arguments)]
    pub fn on_entry(
        &self,
        loaded: &Loaded,
        policy: &str,
        limits: &Limits,
        isolation: Isolation,
        config: &str,
        stream_id: &str,
        entry: &coord::types::StreamEntry,
        reads: Reads,
    ) -> Outcome<Result<(), String>> {
        self.run(loaded, policy, limits, isolation, reads, |store, instance| match instance {
            HookInstance::Agent(i) => i.call_on_entry(store, config, stream_id, entry),
            _ => Err(wasmtime::Error::msg(format!("policy {policy} is not an agent"))),
        })
    }
}

/// The engine's settings; only the slot reset differs between the two.
fn config(fuel: bool, reset: Reset) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.parallel_compilation(true);
    // Instances come from a pool of pre-reserved slots, and linear
    // memories start from copy-on-write images of their data segments,
    // so a fresh instance per decision costs microseconds.
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(256)
        .total_core_instances(512)
        .total_memories(512)
        .total_tables(512)
        .max_memory_size(limits::MAX_MEMORY_BYTES as usize)
        .max_core_instance_size(8 << 20)
        .max_component_instance_size(8 << 20)
        .table_elements(200_000)
        // Return freed slots' memory to the kernel 32 at a time: each
        // madvise takes the process's mmap lock, and one per decision
        // made two threads slower than one (see docs/benchmarks.md). A slot
        // waits in the batch until it is returned, though, so a policy
        // cycles through 32 slots and more. Reset whole, each of those
        // keeps 16 MiB resident and its first reset costs about 25 ms,
        // against a decision of a few hundred microseconds: those slots
        // are returned at once.
        .decommit_batch_size(match reset {
            Reset::Dirty => 32,
            Reset::Whole => 1,
        })
        // Prefer reusing a slot this module used before over warming
        // another: each warm slot keeps up to KEEP_RESIDENT resident.
        .max_unused_warm_slots(32)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 16)
        .pagemap_scan(match reset {
            Reset::Dirty => wasmtime::Enabled::Auto,
            Reset::Whole => wasmtime::Enabled::No,
        });
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances the epoch until the runtime is gone.
fn start_ticker(runtime: Weak<Runtime>) {
    let spawned = std::thread::Builder::new().name("cairn-epoch".into()).spawn(move || {
        while let Some(rt) = runtime.upgrade() {
            rt.dirty.engine.increment_epoch();
            if let Some(whole) = &rt.whole {
                whole.engine.increment_epoch();
            }
            drop(rt);
            std::thread::sleep(TICK);
        }
    });
    if let Err(e) = spawned {
        // Without a ticker no deadline fires; fuel (if on) still bounds guests.
        tracing::error!("cannot start the epoch ticker: {e}");
    }
}

/// A component checked against its hook's world, ready to instantiate.
pub struct Loaded {
    pub sha256: String,
    pub hook: Hook,
    /// The component's imports, by name, for display.
    pub imports: Vec<String>,
    pub pre: HookPre,
    /// How its freed memory slots are reset, and so which engine it is for.
    pub reset: Reset,
    /// Warm instances for [`Isolation::Reuse`], at most one per concurrent caller.
    warm: Mutex<Vec<Warm>>,
    /// Instances made ahead for [`Isolation::Fresh`].
    prepared: Arc<Pool>,
}

impl Loaded {
    pub fn prepared(&self) -> PoolStats {
        self.prepared.stats()
    }
}

/// How decisions get their instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A fresh store and instance per decision: nothing a decision does can
    /// be seen by the next. The default.
    #[default]
    Fresh,
    /// Warm instances reused across decisions (one per concurrent caller),
    /// replaced after any failure. Faster, but a policy's own globals and
    /// memory carry over from one decision to the next.
    Reuse,
}

/// A live instance kept between decisions.
struct Warm {
    store: Store<Sandbox>,
    instance: HookInstance,
    pipes: Pipes,
}

/// An instantiated world.
pub enum HookInstance {
    Claim(claim::ClaimPolicy),
    Handoff(handoff::HandoffPolicy),
    Escalation(escalation::EscalationPolicy),
    Agent(super::bindings::agent::Agent),
}

/// The typed, pre-linked form of each world.
#[derive(Clone)]
pub enum HookPre {
    Claim(claim::ClaimPolicyPre<Sandbox>),
    Handoff(handoff::HandoffPolicyPre<Sandbox>),
    Escalation(escalation::EscalationPolicyPre<Sandbox>),
    Agent(super::bindings::agent::AgentPre<Sandbox>),
}

impl HookPre {
    pub(super) fn instantiate(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<HookInstance> {
        Ok(match self {
            Self::Claim(pre) => HookInstance::Claim(pre.instantiate(store)?),
            Self::Handoff(pre) => HookInstance::Handoff(pre.instantiate(store)?),
            Self::Escalation(pre) => HookInstance::Escalation(pre.instantiate(store)?),
            Self::Agent(pre) => HookInstance::Agent(pre.instantiate(store)?),
        })
    }

    fn new(hook: Hook, pre: InstancePre<Sandbox>) -> wasmtime::Result<Self> {
        Ok(match hook {
            Hook::Claim => Self::Claim(claim::ClaimPolicyPre::new(pre)?),
            Hook::Handoff => Self::Handoff(handoff::HandoffPolicyPre::new(pre)?),
            Hook::Escalation => Self::Escalation(escalation::EscalationPolicyPre::new(pre)?),
            Hook::Agent => Self::Agent(super::bindings::agent::AgentPre::new(pre)?),
        })
    }
}

/// Why a component was refused at load time.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a loadable wasm component: {0}")]
    NotAComponent(String),
    #[error("the component imports `{import}`, which {why}")]
    Import { import: String, why: String },
    #[error("the component does not fit world `{world}`: {detail}")]
    WorldMismatch { world: &'static str, detail: String },
    #[error("the component cannot be linked: {0}")]
    Unlinkable(String),
    #[error("internal error while loading: {0}")]
    Internal(String),
}

/// The WASI interfaces a guest may import (all answered by the empty
/// sandbox context). Anything else, `wasi:http` included, is refused.
const WASI_OFFERED: [&str; 6] =
    ["wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/"];

fn check_imports(
    component: &Component,
    engine: &Engine,
    hook: Hook,
    grants: &BTreeSet<Capability>,
) -> Result<Vec<String>, LoadError> {
    let ty = component.component_type();
    let mut names = Vec::new();
    for (name, item) in ty.imports(engine) {
        names.push(name.to_string());
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            return Err(LoadError::Import {
                import: name.to_string(),
                why: "is not an interface: Cairn links interfaces only".into(),
            });
        }
        // `types` has no functions: it is always linked, never granted.
        if WASI_OFFERED.iter().any(|p| name.starts_with(p)) || name.starts_with("cairn:coord/types@") {
            continue;
        }
        match Capability::from_import(name) {
            Some(cap) if !hook.offers(cap) => {
                return Err(LoadError::Import {
                    import: name.into(),
                    why: format!("the `{}` world does not offer", hook.world()),
                });
            }
            Some(cap) if !grants.contains(&cap) => {
                return Err(LoadError::Import {
                    import: name.into(),
                    why: format!("this policy is not granted (add \"{}\" to its grants)", cap.name()),
                });
            }
            Some(_) => {}
            None => {
                return Err(LoadError::Import { import: name.into(), why: "Cairn does not offer to policies".into() });
            }
        }
    }
    Ok(names)
}

/// WASI (sandboxed) plus the granted `cairn:coord` interfaces.
fn linker(engine: &Engine, grants: &BTreeSet<Capability>) -> wasmtime::Result<Linker<Sandbox>> {
    use wasmtime::component::HasSelf;
    let mut linker = Linker::<Sandbox>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    coord::types::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?;
    // 0.1.0's `types` carries only types; an empty instance satisfies it.
    linker.instance("cairn:coord/types@0.1.0")?;
    for cap in grants {
        link_v0_1(&mut linker, *cap)?;
        match cap {
            Capability::StashRead => coord::stash_read::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?,
            Capability::StashWrite => {
                coord::stash_write::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?
            }
            Capability::StreamRead => {
                coord::stream_read::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?
            }
            Capability::StreamWrite => {
                coord::stream_write::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?
            }
            Capability::TaskRead => coord::task_read::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?,
            Capability::ContractRead => {
                coord::contract_read::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?
            }
            Capability::Log => coord::log::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?,
        }
    }
    Ok(linker)
}

/// Links the 0.1.0 twin of a granted interface.
fn link_v0_1(linker: &mut Linker<Sandbox>, cap: Capability) -> wasmtime::Result<()> {
    use super::bindings::v0_1::cairn::coord0_1_0 as old;
    use wasmtime::component::HasSelf;
    match cap {
        Capability::StashRead => old::stash_read::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s),
        Capability::StashWrite => old::stash_write::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s),
        Capability::StreamRead => old::stream_read::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s),
        Capability::StreamWrite => old::stream_write::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s),
        Capability::TaskRead => old::task_read::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s),
        // New in 0.2.0: nothing to bind for 0.1.0.
        Capability::ContractRead => Ok(()),
        Capability::Log => old::log::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s),
    }
}

/// The store's data: the sandboxed WASI context, the meter, and what the
/// host imports need.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    meter: Meter,
    pub(super) reads: Reads,
    pub(super) policy: String,
    pub(super) logs: Vec<LogLine>,
    pub(super) logs_dropped: usize,
}

impl Sandbox {
    /// Bytes of linear memory and table the store's instances were given.
    pub(super) fn footprint(&self) -> u64 {
        // A table element is a pointer-sized reference.
        self.meter.memory_bytes + self.meter.table_elements * std::mem::size_of::<usize>() as u64
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

pub(super) struct Pipes {
    stdout: CappedPipe,
    stderr: CappedPipe,
}

/// [`StoreLimits`], remembering whether it refused memory, so the error can
/// name the memory cap instead of the guest's own reaction to it.
/// It also adds up what it allowed (wasmtime asks it for a memory's or a
/// table's initial size too), for the prepared pool's footprint.
struct Meter {
    limits: StoreLimits,
    memory_refused: bool,
    memory_bytes: u64,
    table_elements: u64,
}

impl ResourceLimiter for Meter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.memory_refused |= !allowed;
        if allowed {
            self.memory_bytes += desired.saturating_sub(current) as u64;
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum)?;
        if allowed {
            self.table_elements += desired.saturating_sub(current) as u64;
        }
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// One decision's result and what was seen on the way.
#[derive(Debug)]
pub struct Outcome<T> {
    pub result: Result<T, String>,
    pub duration: Duration,
    pub fuel_used: Option<u64>,
    pub logs: Vec<LogLine>,
    pub logs_dropped: usize,
    pub stdout: String,
    pub stderr: String,
    /// Reads the view did not cover; if any, the decision must run again.
    pub misses: Vec<Read>,
    /// An agent call's writes, to commit if it returned `ok`.
    pub writes: Vec<super::view::Planned>,
}

/// A guest's log line, as the decision log keeps it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// How to make a component, for refusals of what is not one.
const BUILD_A_COMPONENT: &str = "build a component: `cargo build --target wasm32-wasip2` (Rust), \
     `componentize-py ... componentize` (Python) or `jco componentize` (JS); `cairn policy new` \
     writes a project whose README has the command";

/// What the bytes are, when they are plainly not a component; `None` lets
/// the compiler judge the rest.
fn not_a_component(wasm: &[u8]) -> Option<String> {
    let Some(rest) = wasm.strip_prefix(b"\0asm") else {
        let start: String = wasm.iter().take(4).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        return Some(format!(
            "this is not WebAssembly (a wasm file starts 00 61 73 6d, \"\\0asm\"; this one starts {start}); \
             {BUILD_A_COMPONENT}"
        ));
    };
    match rest.get(..4) {
        Some([1, 0, 0, 0]) => Some(format!(
            "this is a core WebAssembly module, not a component (a module is what `wasm32-unknown-unknown` \
             or `wasm32-wasip1` builds); {BUILD_A_COMPONENT}"
        )),
        _ => None,
    }
}

/// Why a run failed: one line a person can read, then (for traps) the
/// wasm backtrace, which the decision record keeps.
fn explain(err: wasmtime::Error, limits: &Limits, memory_refused: bool) -> String {
    if memory_refused {
        return format!("exceeded its memory limit of {} bytes\n{err:#}", limits.memory_bytes);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("timed out after {} ms", limits.timeout_ms),
        Some(Trap::OutOfFuel) => format!("ran out of fuel ({} units)", limits.fuel),
        Some(Trap::StackOverflow) => "overflowed its stack (unbounded recursion?)".to_string(),
        Some(Trap::UnreachableCodeReached) => {
            format!("trapped: wasm `unreachable` executed (a panic or uncaught exception in the guest?)\n{err:#}")
        }
        Some(trap) => format!("trapped: {trap}\n{err:#}"),
        None => format!("failed: {err:#}"),
    }
}
