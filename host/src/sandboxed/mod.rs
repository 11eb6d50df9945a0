//! Sandboxed agents: components of the `agent` world, run by the host on
//! every entry of the streams they follow, as the agent their binding names
//! (`run_as`).
//!
//! Each agent policy has its own task, so one agent's failures, retries or
//! floods never delay another's. Per subscription it reads entries after
//! its cursor, in `seq` order, and calls `on-entry` once per matching
//! entry. What the call appends is only planned while it runs; if it
//! returns `ok`, the appends, the call's record and the cursor's advance
//! commit in one transaction, so an entry's effects land exactly once,
//! across restarts, crashes and several hosts (a host whose cursor moved
//! under it commits nothing). A trap, timeout or `err` writes nothing; the
//! entry is tried again with backoff, and after `max_attempts` becomes a
//! dead letter.

mod store;

use store::Effect;
pub use store::{Cursor, DeadLetter};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::agent::Caller;
use crate::db::Db;
use crate::error::Result;
use crate::policy::decide::AgentCall;
use crate::policy::registry::{Active, From, OnDeadLetter, Registry, Subscription};
use crate::policy::view::{Before, Planned, Reader, StreamEntry};
use crate::policy::{Decider, Hook};
use crate::stream::{self, AfterAppend, AppendHook};
use crate::{schema, stash};
use store::{Committed, Step};

/// Entries read from a stream at a time.
const PAGE: i64 = 100;
/// How long an idle agent waits for news before it looks again.
const IDLE: Duration = Duration::from_secs(2);
/// Backoff between attempts at one entry: doubling from this, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Entries that this many agent calls led to are not delivered: agents
/// answering each other stop there.
pub const MAX_HOPS: i64 = 8;

/// An agent's appends per minute: a bucket of a minute's worth, refilled
/// continuously. Past it the agent waits before it commits, so a flood
/// slows that agent alone.
struct Quota {
    per_minute: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Quota {
    fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self { per_minute, tokens: per_minute, at: std::time::Instant::now() }
    }

    /// Whether `n` writes fit now, without waiting.
    fn fits(&mut self, n: usize) -> bool {
        let n = (n as f64).min(self.per_minute);
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(self.per_minute);
        self.at = now;
        self.tokens >= n
    }

    /// Gives back what a commit that lost had taken: nothing was written.
    fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.per_minute);
    }

    /// Waits until `n` writes fit, then takes them.
    async fn take(&mut self, n: usize) {
        let n = (n as f64).min(self.per_minute);
        loop {
            let now = std::time::Instant::now();
            let refill = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
            self.tokens = (self.tokens + refill).min(self.per_minute);
            self.at = now;
            if self.tokens >= n {
                self.tokens -= n;
                return;
            }
            let wait = (n - self.tokens) * 60.0 / self.per_minute;
            tokio::time::sleep(Duration::from_secs_f64(wait.min(60.0))).await;
        }
    }
}

/// What one agent's runner keeps between entries.
struct Running {
    run_as: String,
    quota: Quota,
    /// When this host last renewed the agent's lease.
    renewed: Option<std::time::Instant>,
    /// The last seq of each stream it appended to, and the batch's appends.
    known: Before,
}

impl Running {
    fn new(agent: &Active, run_as: &str) -> Self {
        Self {
            run_as: run_as.to_string(),
            quota: Quota::new(agent.settings.writes_per_minute),
            renewed: None,
            known: Before::default(),
        }
    }
}

/// Calls whose writes are appends alone commit together, this many at
/// most, and none held longer than [`BATCH_FOR`] (so a slow agent's work
/// still shows, and lands, as it goes).
const BATCH: usize = 64;
const BATCH_FOR: Duration = Duration::from_millis(50);

/// Entries handled (or passed over) since the cursor, not yet committed.
#[derive(Default)]
struct Batch {
    handled: Vec<store::Handled>,
    skipped: i64,
    looped: i64,
    /// Where the cursor moves when it commits.
    to: i64,
    /// When its first handled entry came.
    since: Option<std::time::Instant>,
    /// Writes taken from the quota for it.
    writes: usize,
}

/// How long a host holds an agent's lease without renewing it; another
/// host takes over within this (plus its [`IDLE`] look) of the holder's end.
const LEASE: Duration = Duration::from_secs(8);
/// A lease is renewed once older than this.
const RENEW: Duration = Duration::from_secs(2);

/// What the runner needs from the host.
pub struct Parts {
    pub db: Db,
    pub decider: Arc<Decider>,
    pub bus: Arc<stream::events::Bus>,
    /// What acts on hooked labels (a contract's `claim`s): agents' entries
    /// go through it as HTTP appends do.
    pub hooks: Arc<dyn AppendHook>,
    pub schemas: Arc<schema::Validators>,
    pub stash_cache: Arc<stash::Cache>,
    /// Largest stash bodies: ephemeral, persistent.
    pub max_stash_bytes: [usize; 2],
}

pub struct Agents {
    parts: Parts,
    db: Db,
    /// This host, as lease holders are named: `pid<pid>-<random>`.
    host: String,
}

/// A call's writes, checked: what to commit, and what hooks run on which
/// of its entries once committed.
struct Checked {
    effects: Vec<Effect>,
    afters: Vec<(i64, AfterAppend)>,
}

/// Whether a call's writes may commit.
enum Verdict {
    Ready(Checked),
    /// Refused as the HTTP API would refuse them from `run_as`.
    Refused(String),
    /// A stash it read has moved since: call it again.
    Stale,
}

/// Calls in a row that find what they read moved, before the entry counts
/// as failed once.
const MAX_STALE: usize = 8;

impl Agents {
    pub fn new(parts: Parts) -> Arc<Self> {
        let host = format!("pid{}-{:08x}", std::process::id(), rand::random::<u32>());
        Arc::new(Self { db: parts.db.clone(), parts, host })
    }

    /// Holds the lease on `agent` for this host, renewing it when it is
    /// older than [`RENEW`]; false while another host holds it.
    async fn leased(&self, agent: &str, renewed: &mut Option<std::time::Instant>) -> Result<bool> {
        // A SQLite database has one host: there is nobody to share with.
        if self.db.postgres().is_none() {
            *renewed = Some(std::time::Instant::now());
            return Ok(true);
        }
        if renewed.is_some_and(|at| at.elapsed() < RENEW) {
            return Ok(true);
        }
        let until = crate::clock::now_ms() + LEASE.as_millis() as i64;
        let held = store::lease(&self.db, agent, &self.host, until).await?;
        *renewed = held.then(std::time::Instant::now);
        Ok(held)
    }

    /// Runs every enabled agent policy until `shutdown`: starts one task per
    /// agent, and restarts it when its policy changes (a new version takes
    /// over at an entry boundary: an entry the old one had not committed is
    /// handled by the new one).
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
        let mut running: HashMap<String, ((i64, i64), tokio::task::JoinHandle<()>)> = HashMap::new();
        loop {
            let agents: Vec<Arc<Active>> = registry
                .list()
                .into_iter()
                .filter(|a| a.hook == Hook::Agent && a.settings.enabled && a.settings.run_as.is_some())
                .collect();
            running.retain(|name, (_, task)| {
                let keep = agents.iter().any(|a| a.name == *name) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for agent in agents {
                let version = (agent.version, agent.updated_at);
                if running.get(&agent.name).is_some_and(|(v, _)| *v == version) {
                    continue;
                }
                if let Some((_, old)) = running.remove(&agent.name) {
                    old.abort();
                }
                let task = tokio::spawn(self.clone().follow(agent.clone(), shutdown.clone()));
                running.insert(agent.name.clone(), (version, task));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        for (_, (_, task)) in running {
            task.abort();
        }
    }

    /// One agent, until it is aborted or the host stops.
    async fn follow(self: Arc<Self>, agent: Arc<Active>, mut shutdown: watch::Receiver<bool>) {
        let Some(run_as) = agent.settings.run_as.clone() else { return };
        let reader = Reader { name: run_as.clone(), admin: false };
        let mut run = Running::new(&agent, &run_as);
        loop {
            let mut news = Vec::new();
            let mut worked = false;
            // Another host runs it while it holds the lease; look again later.
            let held = match self.leased(&agent.name, &mut run.renewed).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(agent = %agent.name, "cannot take the agent's lease: {e}");
                    false
                }
            };
            for sub in agent.settings.subscribe.iter().filter(|_| held) {
                match self.serve(&agent, &reader, sub, &mut run).await {
                    Ok((stream_id, did)) => {
                        worked |= did;
                        news.push(self.parts.bus.subscribe(&stream_id));
                    }
                    Err(e) => tracing::warn!(agent = %agent.name, stream = %sub.stream, "agent cannot follow: {e}"),
                }
                if *shutdown.borrow() {
                    let _ = store::release(&self.db, &agent.name, &self.host).await;
                    return;
                }
            }
            if worked {
                continue;
            }
            // Idle: wait for an append on a followed stream, or a while.
            let heard = async {
                let waits = news.iter_mut().map(|rx| Box::pin(rx.changed()));
                if waits.len() > 0 {
                    let _ = futures_util::future::select_all(waits).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = heard => {}
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => {
                    let _ = store::release(&self.db, &agent.name, &self.host).await;
                    return;
                }
            }
        }
    }

    /// Handles what one subscription has waiting; returns its stream and
    /// whether anything was done. Calls whose writes are appends alone
    /// commit together, up to [`BATCH`] at a time, each reading what the
    /// ones before it wrote; any other call commits alone, after them.
    async fn serve(
        &self,
        agent: &Arc<Active>,
        reader: &Reader,
        sub: &Subscription,
        run: &mut Running,
    ) -> Result<(String, bool)> {
        let Some(stream) = stream::followed(&self.db, &sub.stream).await? else {
            return Err(crate::error::Error::not_found(format!("stream {:?}", sub.stream)));
        };
        let start = match sub.from {
            From::Start => 0,
            From::Now => stream.last_seq,
        };
        let cursor = store::cursor(&self.db, &agent.name, &stream.stream_id, start).await?;
        if cursor.paused {
            return Ok((stream.stream_id, false));
        }
        let entries = stream::entries_after(&self.db, &stream, cursor.seq, PAGE).await?;
        let mut at = cursor.seq;
        let mut batch = Batch { to: at, ..Batch::default() };
        for e in &entries {
            // Lost the lease (this host stalled): stop, committing nothing;
            // the cursor keeps whatever another host does from doubling.
            if !self.leased(&agent.name, &mut run.renewed).await? {
                run.known = Before::default();
                return Ok((stream.stream_id, false));
            }
            let wanted = (sub.labels.is_empty() || e.label.as_ref().is_some_and(|l| sub.labels.contains(l)))
                && (agent.settings.receive_own || e.agent != reader.name);
            let too_far = e.hops >= MAX_HOPS;
            if !wanted || too_far {
                batch.skipped += 1;
                batch.looped += i64::from(wanted && too_far);
                batch.to = e.seq;
                continue;
            }
            let entry = entry_of(e);
            let first = self.call(agent, reader, &stream, &entry, &run.known).await?;
            let alone = match &first.1 {
                Verdict::Ready(c) => {
                    !c.afters.is_empty() || c.effects.iter().any(|w| !matches!(w, Effect::Append { .. }))
                }
                _ => true,
            };
            if !alone {
                let (call, Verdict::Ready(checked)) = first else { continue };
                // Over quota: what the batch holds lands before the wait.
                if !run.quota.fits(checked.effects.len())
                    && !self.flush(agent, &stream, &mut at, &mut batch, run).await?
                {
                    return Ok((stream.stream_id, true));
                }
                run.quota.take(checked.effects.len()).await;
                batch.writes += checked.effects.len();
                run.known.add(call.writes);
                batch.handled.push(store::Handled { effects: checked.effects, hops: e.hops + 1, record: call.record });
                batch.to = e.seq;
                let since = *batch.since.get_or_insert_with(std::time::Instant::now);
                let full = batch.handled.len() >= BATCH || since.elapsed() >= BATCH_FOR;
                if full && !self.flush(agent, &stream, &mut at, &mut batch, run).await? {
                    return Ok((stream.stream_id, true));
                }
                continue;
            }
            // What came before commits first; this entry then, alone.
            if !self.flush(agent, &stream, &mut at, &mut batch, run).await? {
                return Ok((stream.stream_id, true));
            }
            match self.handle(agent, reader, &stream, &entry, e.hops, at, run, first).await? {
                Committed::Done(_) => at = e.seq,
                // Someone else moved the cursor, or what the call planned
                // after: start again from the cursor, on fresh reads.
                Committed::Lost => {
                    run.known = Before::default();
                    return Ok((stream.stream_id, true));
                }
            }
            batch.to = at;
        }
        self.flush(agent, &stream, &mut at, &mut batch, run).await?;
        Ok((stream.stream_id, !entries.is_empty()))
    }

    /// Commits the batch, moving the cursor from `at` to past it; false if
    /// it lost (nothing written; start again from the cursor).
    async fn flush(
        &self,
        agent: &Active,
        stream: &stream::Followed,
        at: &mut i64,
        batch: &mut Batch,
        run: &mut Running,
    ) -> Result<bool> {
        if batch.to == *at {
            return Ok(true);
        }
        let taken = std::mem::take(batch);
        let step = Step::Moved {
            handled: taken.handled,
            run_as: run.run_as.clone(),
            skipped: taken.skipped,
            looped: taken.looped,
        };
        match store::commit(&self.db, &agent.name, &stream.stream_id, *at, taken.to, step).await? {
            Committed::Done(appended) => {
                for (stream_id, seq) in appended {
                    stream::events::announce(&self.parts.bus, &self.db, &stream_id, seq).await;
                }
                run.known.appends.clear();
                *at = taken.to;
                batch.to = taken.to;
                Ok(true)
            }
            Committed::Lost => {
                run.known = Before::default();
                run.quota.refund(taken.writes);
                Ok(false)
            }
        }
    }

    /// Handles one entry (which `hops` agent calls led to) on its own: its
    /// `first` call's outcome, then more attempts until one succeeds or
    /// they run out, and commits the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn handle(
        &self,
        agent: &Arc<Active>,
        reader: &Reader,
        stream: &stream::Followed,
        entry: &StreamEntry,
        hops: i64,
        at: i64,
        run: &mut Running,
        first: (AgentCall, Verdict),
    ) -> Result<Committed> {
        let attempts = agent.settings.max_attempts.max(1);
        let mut backoff = FIRST_BACKOFF;
        let mut last = None;
        let mut first = Some(first);
        for attempt in 1..=attempts {
            let (call, verdict) = match first.take() {
                Some(made) => made,
                None => self.call(agent, reader, stream, entry, &run.known).await?,
            };
            let error = match verdict {
                Verdict::Ready(Checked { effects, afters }) => {
                    let writes = effects.len();
                    run.quota.take(writes).await;
                    let handled = vec![store::Handled { effects, hops: hops + 1, record: call.record }];
                    let step = Step::Moved { handled, run_as: reader.name.clone(), skipped: 0, looped: 0 };
                    let committed =
                        store::commit(&self.db, &agent.name, &stream.stream_id, at, entry.seq as i64, step).await?;
                    match &committed {
                        Committed::Done(appended) => {
                            run.known.seqs.extend(appended.iter().map(|(s, seq)| (s.clone(), *seq as u64)));
                            self.after_commit(&agent.name, &call.writes, afters).await;
                        }
                        Committed::Lost => run.quota.refund(writes),
                    }
                    return Ok(committed);
                }
                Verdict::Stale => format!("what the call read kept moving under it for {MAX_STALE} calls in a row"),
                Verdict::Refused(error) => error,
            };
            tracing::warn!(agent = %agent.name, seq = entry.seq, attempt, "agent call failed: {error}");
            store::failed_once(&self.db, &agent.name, &stream.stream_id, &error).await?;
            let mut record = call.record;
            record.error = Some(error.clone());
            record.result = None;
            last = Some((error, record));
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        let Some((error, record)) = last else { return Ok(Committed::Lost) };
        let letter = DeadLetter {
            id: format!("dl_{}", &record.decision_id[4..]),
            stream_id: stream.stream_id.clone(),
            seq: entry.seq as i64,
            attempts: i64::from(attempts),
            error,
            at: crate::clock::now_ms(),
        };
        let pause = agent.settings.on_dead_letter == OnDeadLetter::Pause;
        store::commit(
            &self.db,
            &agent.name,
            &stream.stream_id,
            at,
            entry.seq as i64,
            Step::Dead { letter, record: Box::new(record), pause },
        )
        .await
    }

    /// One call of `agent` on `entry`, off the async workers, and whether
    /// its writes may commit; a call that read a stash which then moved is
    /// made again, up to [`MAX_STALE`] times.
    async fn call(
        &self,
        agent: &Arc<Active>,
        reader: &Reader,
        stream: &stream::Followed,
        entry: &StreamEntry,
        before: &Before,
    ) -> Result<(AgentCall, Verdict)> {
        let mut tries = 0;
        let mut before = Arc::new(before.clone());
        loop {
            let (decider, active, who, sid, e) =
                (self.parts.decider.clone(), agent.clone(), reader.clone(), stream.stream_id.clone(), entry.clone());
            let base = before.clone();
            let call = tokio::task::spawn_blocking(move || decider.call_agent_blocking(&active, &who, &sid, &e, base))
                .await
                .map_err(|e| crate::error::Error::internal(format!("running agent {}: {e}", agent.name)))??;
            let verdict = match &call.result {
                Ok(()) => self.check(reader, &call.writes).await?,
                Err(e) => Verdict::Refused(e.clone()),
            };
            tries += 1;
            if !matches!(verdict, Verdict::Stale) || tries == MAX_STALE {
                return Ok((call, verdict));
            }
            before = Arc::default();
        }
    }

    /// What the call asks to write, checked as the HTTP API would check it
    /// from `run_as` (the outer error is storage failing).
    async fn check(&self, reader: &Reader, writes: &[Planned]) -> Result<Verdict> {
        let caller = Caller { name: reader.name.clone(), admin: false };
        let mut streams: HashMap<&str, stream::Followed> = HashMap::new();
        let mut checked = Checked { effects: Vec::with_capacity(writes.len()), afters: Vec::new() };
        for write in writes {
            match write {
                Planned::Append { stream_id, label, data, seq } => {
                    let Some(label_str) = label.as_deref().map_or(Some(""), Some) else { continue };
                    if !label_str.is_empty() && !crate::name::is_valid(label_str) {
                        return Ok(Verdict::Refused(format!("{label_str:?} is not a usable label")));
                    }
                    // Each stream looked up once, however many entries go to it.
                    let target = match streams.get(stream_id.as_str()) {
                        Some(s) => s,
                        None => match stream::followed(&self.db, stream_id).await? {
                            Some(s) if s.stream_id == *stream_id => streams.entry(stream_id).or_insert(s),
                            _ => {
                                return Ok(Verdict::Refused(format!("there is no stream {stream_id:?} to append to")));
                            }
                        },
                    };
                    if stream::HOST_LABELS.contains(&label_str) && target.owner == crate::agent::SYSTEM {
                        return Ok(Verdict::Refused(format!(
                            "{label_str:?} entries on the host's streams (a team's) are the host's; \
                             an agent may not write them"
                        )));
                    }
                    let value: serde_json::Value = match serde_json::from_str(data) {
                        Ok(v) => v,
                        Err(e) => return Ok(Verdict::Refused(format!("the entry's data is not JSON: {e}"))),
                    };
                    if let Some(binding) = &target.binding
                        && let Err(e) = self.parts.schemas.check(&self.db, binding, &value).await
                    {
                        return refused(e, &format!("an entry for stream {stream_id}"));
                    }
                    if self.parts.hooks.watches(label_str) {
                        match self.parts.hooks.admit(&caller, &target.hooked(), label_str, &value).await {
                            Ok(Some(after)) => checked.afters.push((*seq as i64, after)),
                            Ok(None) => {}
                            Err(e) => return refused(e, &format!("a {label_str:?} entry")),
                        }
                    }
                    let (stream_id, label, data, seq) = (stream_id.clone(), label.clone(), data.clone(), *seq as i64);
                    checked.effects.push(Effect::Append { stream_id, label, data, seq });
                }
                Planned::Put { name, persistent, body, content_type, read_version, .. } => {
                    let max = self.parts.max_stash_bytes[usize::from(*persistent)];
                    let plan = stash::plan_agent_put(
                        &self.db,
                        &self.parts.schemas,
                        max,
                        &reader.name,
                        name,
                        *persistent,
                        body,
                        content_type,
                        *read_version as i64,
                    )
                    .await?;
                    match plan {
                        stash::AgentPut::Ready { next, expected } => {
                            checked.effects.push(Effect::Put { next, expected })
                        }
                        stash::AgentPut::Refused(why) => {
                            return Ok(Verdict::Refused(format!("writing stash {name:?}: {why}")));
                        }
                        stash::AgentPut::Stale => return Ok(Verdict::Stale),
                    }
                }
            }
        }
        Ok(Verdict::Ready(checked))
    }

    /// Once a call's writes are in: readers of the stashes it wrote see them,
    /// live readers of its entries wake, and the hooks on its entries (a
    /// contract deciding a `claim`) run, as after an HTTP append.
    async fn after_commit(&self, agent: &str, writes: &[Planned], afters: Vec<(i64, AfterAppend)>) {
        for w in writes {
            match w {
                Planned::Put { name, persistent, .. } => self.parts.stash_cache.invalidate(*persistent, name),
                Planned::Append { stream_id, seq, .. } => {
                    stream::events::announce(&self.parts.bus, &self.db, stream_id, *seq as i64).await;
                }
            }
        }
        for (seq, after) in afters {
            if let Err(e) = after(seq).await {
                tracing::warn!(agent, seq, "the hook on an agent's entry failed: {e}");
            }
        }
    }
}

/// A refusal of `what` from the HTTP API's rules, as the agent's error; the
/// host's own failures stay errors.
fn refused(e: crate::error::Error, what: &str) -> Result<Verdict> {
    match e.refusal() {
        Some(why) => Ok(Verdict::Refused(format!("{what} was refused: {why}"))),
        None => Err(e),
    }
}

/// How retrying a dead letter went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    /// True: handled at last, its writes committed and the letter gone.
    pub handled: bool,
    /// Why it failed again (the letter stays, with this error).
    pub error: Option<String>,
}

impl Agents {
    /// Tries a dead letter's entry once more, now; None if the agent has no
    /// such letter.
    pub async fn retry(&self, agent: &Arc<Active>, id: &str) -> Result<Option<Retried>> {
        let Some(letter) = store::dead_letter(&self.db, &agent.name, id).await? else { return Ok(None) };
        let Some(run_as) = agent.settings.run_as.clone() else {
            return Err(crate::error::Error::validation("the agent has no run_as to act as", vec![]));
        };
        let reader = Reader { name: run_as.clone(), admin: false };
        let stream = stream::followed(&self.db, &letter.stream_id).await?;
        let found = match &stream {
            Some(stream) => stream::entries_after(&self.db, stream, letter.seq - 1, 1).await?,
            None => Vec::new(),
        };
        let (Some(e), Some(stream)) = (found.into_iter().find(|e| e.seq == letter.seq), stream) else {
            let error = "the entry is no longer in its stream (deleted, or past its retention)".to_string();
            store::failed_again(&self.db, &letter.id, &error).await?;
            return Ok(Some(Retried { handled: false, error: Some(error) }));
        };
        let (call, verdict) = self.call(agent, &reader, &stream, &entry_of(&e), &Before::default()).await?;
        let Checked { effects, afters } = match verdict {
            Verdict::Ready(checked) => checked,
            Verdict::Refused(error) => {
                store::failed_again(&self.db, &letter.id, &error).await?;
                return Ok(Some(Retried { handled: false, error: Some(error) }));
            }
            Verdict::Stale => {
                let error = format!("what the call read kept moving under it for {MAX_STALE} calls in a row");
                store::failed_again(&self.db, &letter.id, &error).await?;
                return Ok(Some(Retried { handled: false, error: Some(error) }));
            }
        };
        let hops = e.hops + 1;
        match store::retried(&self.db, &agent.name, &letter, &effects, &run_as, hops, &call.record).await? {
            Committed::Done(_) => {
                self.after_commit(&agent.name, &call.writes, afters).await;
                Ok(Some(Retried { handled: true, error: None }))
            }
            Committed::Lost => Ok(Some(Retried {
                handled: false,
                error: Some("another retry of this letter, or a write to what it writes, came first; try again".into()),
            })),
        }
    }
}

/// An entry as `on-entry` takes it.
fn entry_of(e: &stream::EntryRow) -> StreamEntry {
    StreamEntry {
        seq: e.seq as u64,
        label: e.label.clone(),
        data: e.data.clone(),
        agent: e.agent.clone(),
        created_at: crate::clock::rfc3339(e.created_at),
    }
}

/// One subscription's state, as `GET /policies/{name}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionStatus {
    pub stream_id: String,
    /// The last entry handled or skipped.
    pub cursor: i64,
    /// Entries after the cursor not yet handled.
    pub lag: i64,
    pub processed: i64,
    pub failed: i64,
    /// Entries not for this agent: other labels, its own, or too far
    /// down a chain of agents.
    pub skipped: i64,
    /// Of the skipped, those that came through [`MAX_HOPS`] agent calls.
    pub looped: i64,
    pub paused: bool,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentStatus {
    pub subscriptions: Vec<SubscriptionStatus>,
    pub dead_letters: i64,
    /// The host running it now (`pid<pid>-<random>`), and until when its
    /// lease holds unless renewed.
    pub lease: Option<Lease>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Lease {
    pub holder: String,
    pub until: String,
}

/// Where an agent is on each stream it has followed.
pub async fn status(db: &Db, policy: &str) -> Result<AgentStatus> {
    let mut subscriptions = Vec::new();
    for c in store::cursors(db, policy).await? {
        let last = stream::followed(db, &c.stream_id).await?.map_or(c.seq, |s| s.last_seq);
        subscriptions.push(SubscriptionStatus {
            lag: (last - c.seq).max(0),
            stream_id: c.stream_id,
            cursor: c.seq,
            processed: c.processed,
            failed: c.failed,
            skipped: c.skipped,
            looped: c.looped,
            paused: c.paused,
            last_error: c.last_error,
        });
    }
    let lease =
        store::holder(db, policy).await?.map(|(holder, until)| Lease { holder, until: crate::clock::rfc3339(until) });
    Ok(AgentStatus { subscriptions, dead_letters: store::dead_letter_count(db, policy).await?, lease })
}

/// An agent's dead letters, oldest first.
pub async fn dead_letters(db: &Db, policy: &str, limit: i64) -> Result<Vec<DeadLetter>> {
    store::dead_letters(db, policy, limit).await
}
