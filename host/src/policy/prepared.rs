//! Instances made ahead of need, so a fresh decision does not wait for one.
//!
//! A fresh decision (the default isolation) must run in an instance no
//! earlier decision touched. Making one costs little for Rust guests and a
//! millisecond for Python and JS ones, so each loaded policy keeps a few
//! instantiated on the preparer thread: a decision takes one, and the next
//! is made behind it. A taken instance is used once and retired, never put
//! back. When none is ready (a burst larger than the pool, a policy's first
//! decision, changed limits), the decision instantiates on the spot, as
//! before: never a wait, never a failure the pool caused.
//!
//! The same thread drops used stores, so resetting their memory slots (a
//! copy of the pages the decision dirtied, or an `madvise`) happens off the
//! decision's path too. Pools of policies that decide nothing for a while
//! give their instances back.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::limits::Limits;
use super::runtime::{HookInstance, HookPre, Pipes, Reset, Runtime, Sandbox};
use super::view::Reads;

/// How many instances are made ahead, and for how long they are kept.
#[derive(Debug, Clone, Copy)]
pub struct Prepare {
    /// Ready instances per loaded policy; 0 turns preparing off.
    pub per_policy: usize,
    /// Ready instances across all policies.
    pub total: usize,
    /// A policy that has decided nothing for this long gives its ready
    /// instances back.
    pub idle: Duration,
}

impl Default for Prepare {
    fn default() -> Self {
        Self { per_policy: 2, total: 16, idle: Duration::from_secs(60) }
    }
}

/// Used stores waiting to be dropped beyond this are dropped by the
/// decision itself: a backlog holds pooling-allocator slots (a Python
/// component takes several core instances), and decisions that find the
/// pool exhausted fail.
const MAX_RETIRING: usize = 4;

/// Memory slots a policy reset whole uses once before its first prepared
/// instance: what the ready, the deciding and the retiring instances hold
/// at a time. A slot's first reset writes its 16 MiB over pages first mapped
/// from the image, a copy-on-write fault each with a TLB shootdown (about
/// 25 ms a slot); a slot that never ran a decision has no such pages, and
/// is primed in a few. See docs/benchmarks.md.
const PRIMED_SLOTS: usize = MAX_RETIRING + 2;

/// An instance no decision has used, made for one policy's limits.
pub(super) struct Ready {
    pub store: Store<Sandbox>,
    pub instance: HookInstance,
    pub pipes: Pipes,
    policy: String,
    limits: Limits,
}

/// One loaded policy's ready instances.
pub struct Pool {
    pre: HookPre,
    reset: Reset,
    /// The preparer's count of ready instances across all pools.
    total: Arc<AtomicUsize>,
    ready: Mutex<Vec<Ready>>,
    /// A fill is queued; one at a time per pool.
    filling: AtomicBool,
    /// The pool's slots were primed (or are queued to be).
    priming: AtomicBool,
    primed: AtomicU64,
    /// Milliseconds since the preparer's epoch at the last take.
    last_used: AtomicU64,
    /// Fresh decisions that found an instance ready, and those that did not.
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Pool {
    pub(super) fn new(pre: HookPre, reset: Reset, preparer: &Preparer) -> Arc<Self> {
        Arc::new(Self {
            pre,
            reset,
            total: preparer.total.clone(),
            ready: Mutex::new(Vec::new()),
            filling: AtomicBool::new(false),
            priming: AtomicBool::new(false),
            primed: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Ready>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the pool holds and how well it served, for operators.
    pub fn stats(&self) -> PoolStats {
        let ready = self.lock();
        PoolStats {
            ready: ready.len(),
            memory_bytes: ready.iter().map(|r| r.store.data().footprint()).sum(),
            reset: self.reset,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            primed: self.primed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct PoolStats {
    /// Instances instantiated ahead and not yet used.
    pub ready: usize,
    /// The linear memories and tables of the ready instances, in bytes, as
    /// their guests sized them: the most they can hold resident. At most
    /// the per-policy count times the policy's memory limit.
    pub memory_bytes: u64,
    /// How the policy's freed memory slots are made clean.
    pub reset: Reset,
    /// Fresh decisions that took a ready instance.
    pub hits: u64,
    /// Fresh decisions that instantiated on the spot.
    pub misses: u64,
    /// Memory slots used once, at the policy's first decision, before any
    /// decision ran in them (only for `whole` resets): their first reset is
    /// then cheap, and off the decisions' path.
    pub primed: u64,
}

enum Job {
    Fill { pool: Arc<Pool>, policy: String, limits: Limits },
    Prime { pool: Arc<Pool>, policy: String, limits: Limits },
    Retire(Box<dyn Send>),
}

/// The preparer thread's handle, held by the runtime.
pub(super) struct Preparer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    settings: Prepare,
    /// Ready instances across all pools.
    total: Arc<AtomicUsize>,
    retiring: Arc<AtomicUsize>,
    epoch: Instant,
}

impl Preparer {
    pub fn start(runtime: Weak<Runtime>, settings: Prepare) -> Self {
        let (tx, rx) = mpsc::channel();
        let total = Arc::new(AtomicUsize::new(0));
        let retiring = Arc::new(AtomicUsize::new(0));
        let epoch = Instant::now();
        let worker =
            Worker { runtime, settings, total: total.clone(), retiring: retiring.clone(), epoch, pools: Vec::new() };
        let jobs = match std::thread::Builder::new().name("cairn-prepare".into()).spawn(move || worker.run(rx)) {
            Ok(_) => Some(tx),
            Err(e) => {
                // Decisions then instantiate on the spot, as without a pool.
                tracing::error!("cannot start the policy preparer: {e}");
                None
            }
        };
        Self { jobs: Mutex::new(jobs), settings, total, retiring, epoch }
    }

    fn send(&self, job: Job) -> Result<(), Job> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// A ready instance of `pool` for `policy` under `limits`, if one is
    /// there; either way the pool is topped up behind the caller.
    pub fn take(&self, pool: &Arc<Pool>, policy: &str, limits: &Limits) -> Option<Ready> {
        if self.settings.per_policy == 0 {
            return None;
        }
        pool.last_used.store(millis(self.epoch), Ordering::Relaxed);
        let (taken, stale) = {
            let mut ready = pool.lock();
            // Made under other settings (the policy's limits changed): of no use.
            let stale: Vec<Ready> = extract(&mut ready, |r| r.policy != policy || r.limits != *limits);
            (ready.pop(), stale)
        };
        let gone = stale.len() + usize::from(taken.is_some());
        self.total.fetch_sub(gone, Ordering::AcqRel);
        for r in stale {
            self.retire(r);
        }
        match &taken {
            Some(_) => pool.hits.fetch_add(1, Ordering::Relaxed),
            None => pool.misses.fetch_add(1, Ordering::Relaxed),
        };
        // Primed at the first decision, not at load: a policy that never
        // decides keeps no slots resident.
        if pool.reset == Reset::Whole && !pool.priming.swap(true, Ordering::AcqRel) {
            let _ = self.send(Job::Prime { pool: pool.clone(), policy: policy.to_string(), limits: *limits });
        }
        if !pool.filling.swap(true, Ordering::AcqRel) {
            let fill = Job::Fill { pool: pool.clone(), policy: policy.to_string(), limits: *limits };
            if self.send(fill).is_err() {
                pool.filling.store(false, Ordering::Release);
            }
        }
        taken
    }

    /// Used stores queued for the preparer thread to drop (their slots not
    /// yet reset).
    pub fn retiring(&self) -> usize {
        self.retiring.load(Ordering::Acquire)
    }

    /// Drops `used` on the preparer thread, or here if that is behind.
    pub fn retire<T: Send + 'static>(&self, used: T) {
        if self.retiring.fetch_add(1, Ordering::AcqRel) >= MAX_RETIRING {
            self.retiring.fetch_sub(1, Ordering::AcqRel);
            return drop(used);
        }
        if let Err(job) = self.send(Job::Retire(Box::new(used))) {
            self.retiring.fetch_sub(1, Ordering::AcqRel);
            drop(job);
        }
    }
}

/// Removes and returns the elements matching `pred`, keeping the order of
/// the rest.
fn extract<T>(items: &mut Vec<T>, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        if pred(&items[i]) {
            out.push(items.remove(i));
        } else {
            i += 1;
        }
    }
    out
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

struct Worker {
    runtime: Weak<Runtime>,
    settings: Prepare,
    total: Arc<AtomicUsize>,
    retiring: Arc<AtomicUsize>,
    epoch: Instant,
    /// Every pool ever filled, to give idle ones' instances back.
    pools: Vec<Weak<Pool>>,
}

impl Worker {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let sweep_every = (self.settings.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut swept = Instant::now();
        loop {
            match jobs.recv_timeout(sweep_every) {
                Ok(Job::Retire(used)) => {
                    drop(used);
                    self.retiring.fetch_sub(1, Ordering::AcqRel);
                }
                Ok(Job::Fill { pool, policy, limits }) => {
                    pool.filling.store(false, Ordering::Release);
                    if !self.pools.iter().any(|p| p.as_ptr() == Arc::as_ptr(&pool)) {
                        self.pools.push(Arc::downgrade(&pool));
                    }
                    self.fill(&pool, &policy, &limits);
                }
                Ok(Job::Prime { pool, policy, limits }) => self.prime(&pool, &policy, &limits),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if swept.elapsed() >= sweep_every {
                self.sweep();
                swept = Instant::now();
            }
        }
    }

    fn fill(&self, pool: &Pool, policy: &str, limits: &Limits) {
        let Some(runtime) = self.runtime.upgrade() else { return };
        while pool.lock().len() < self.settings.per_policy {
            // Claim a place under the total before making the instance.
            if self.total.fetch_add(1, Ordering::AcqRel) >= self.settings.total {
                self.total.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let (mut store, pipes) = runtime.store(pool.reset, limits, Reads::none(), policy);
            runtime.arm(&mut store, limits);
            match pool.pre.instantiate(&mut store) {
                Ok(instance) => {
                    let ready = Ready { store, instance, pipes, policy: policy.to_string(), limits: *limits };
                    pool.lock().push(ready);
                }
                Err(e) => {
                    // The decision that needs one will instantiate and report.
                    self.total.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!(policy, "preparing an instance failed: {e:#}");
                    return;
                }
            }
        }
    }

    /// Instantiates as many instances as a busy pool holds at once, and
    /// drops them: each one's slot is reset for the first time before any
    /// decision has run in it.
    fn prime(&self, pool: &Pool, policy: &str, limits: &Limits) {
        let Some(runtime) = self.runtime.upgrade() else { return };
        let n = self.settings.per_policy + PRIMED_SLOTS;
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut store, pipes) = runtime.store(pool.reset, limits, Reads::none(), policy);
            runtime.arm(&mut store, limits);
            match pool.pre.instantiate(&mut store) {
                Ok(instance) => {
                    held.push((store, instance, pipes));
                    pool.primed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Only cheaper first resets are lost; the decisions report.
                    tracing::debug!(policy, "priming a slot failed: {e:#}");
                    break;
                }
            }
        }
    }

    /// Gives back the instances of pools idle past the setting, and forgets
    /// pools whose policy is gone.
    fn sweep(&mut self) {
        let now = millis(self.epoch);
        let idle = u64::try_from(self.settings.idle.as_millis()).unwrap_or(u64::MAX);
        self.pools.retain(|weak| {
            let Some(pool) = weak.upgrade() else { return false };
            if now.saturating_sub(pool.last_used.load(Ordering::Relaxed)) >= idle {
                let given_back = std::mem::take(&mut *pool.lock());
                self.total.fetch_sub(given_back.len(), Ordering::AcqRel);
            }
            true
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A replaced or deleted policy's ready instances go with it.
        let ready = std::mem::take(self.ready.get_mut().unwrap_or_else(|p| p.into_inner()));
        self.total.fetch_sub(ready.len(), Ordering::AcqRel);
    }
}
