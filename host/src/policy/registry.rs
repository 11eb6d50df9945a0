//! The policies a host serves, by name. Each entry is an `Arc`, swapped
//! whole on upload or settings change: a decision takes the current `Arc`
//! when it starts, so a new version serves the next decision while those
//! in flight finish on the version they began with. No restart, no lock
//! held across a decision. Hosts sharing a PostgreSQL tell each other of
//! every change (`NOTIFY cairn_policy`), and each reloads what changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::store::{self, PolicyRow};
use super::{Capability, Hook, Limits, LoadError, Loaded, Runtime};
use crate::db::Db;
use crate::error::{Error, Result, Violation};
use crate::{clock, name};

/// Where a policy applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everywhere its hook fires.
    #[default]
    Global,
    /// Only for this contract stash.
    Stash(String),
    /// Only for this team.
    Team(String),
}

/// The header that carries settings with an upload, as JSON (the body of
/// `PUT /policies/{name}/settings`): checked with the bytes and stored
/// with them, or neither is.
pub const SETTINGS_HEADER: &str = "cairn-settings";

/// A policy's settings (`PUT /policies/{name}/settings`). Fields left out
/// take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Where it decides: `"global"`, `{"team": NAME}` or `{"stash": NAME}`
    /// (a contract). Required whenever settings are given; a policy
    /// uploaded without settings has none, and decides nothing until its
    /// settings name one.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Handed to the policy as JSON text with every decision.
    #[serde(default = "empty_config")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// A JSON Schema that `config` must fit, checked whenever settings are
    /// stored (an uploaded copy of a bundled policy also fits the bundled
    /// schema).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<Value>,
    /// The `cairn:coord` interfaces linked for it; its hook's defaults when absent.
    #[serde(default)]
    pub grants: Option<BTreeSet<Capability>>,
    #[serde(default)]
    pub limits: Limits,
    /// Lower runs first among policies on one hook.
    #[serde(default)]
    pub order: i64,
    /// `fresh` (default): a new instance per decision. `reuse`: warm
    /// instances, faster, but the policy's globals survive between decisions.
    #[serde(default)]
    pub isolation: super::Isolation,
    /// False (the default): the hook's bundled policy keeps deciding beside
    /// this one in its scope, and any deny wins. True: in this scope, this
    /// policy decides instead of the bundled one.
    #[serde(default)]
    pub replaces_bundled: bool,
    /// JSON pointers into the decision's input (`/task/metadata/handoff`)
    /// whose values the decision log stores as `"[masked]"`. The policy
    /// still sees them.
    #[serde(default)]
    pub mask: Vec<String>,
    /// Agents only: the registered agent the component acts as. It reads
    /// and writes exactly what that agent could over HTTP, and its entries
    /// show that agent as their author.
    #[serde(default)]
    pub run_as: Option<String>,
    /// Agents only: the streams it follows (1 to 16).
    #[serde(default)]
    pub subscribe: Vec<Subscription>,
    /// Agents only: tries per entry before it becomes a dead letter (1–100;
    /// default 5), with backoff between them.
    #[serde(default = "max_attempts")]
    pub max_attempts: u32,
    /// Agents only: after a dead letter, go on with the next entry
    /// (`continue`, the default) or stop the subscription (`pause`).
    #[serde(default)]
    pub on_dead_letter: OnDeadLetter,
    /// Agents only: also deliver the entries `run_as` wrote (false by
    /// default, so an agent does not answer itself).
    #[serde(default)]
    pub receive_own: bool,
    /// Agents only: writes (appends and stash puts) it may make per minute
    /// on this host (1 to 1,000,000; default 600). Past it, the next entry
    /// waits.
    #[serde(default = "writes_per_minute")]
    pub writes_per_minute: u32,
    /// Agents only: bytes one call may write in all (1 to 16 MiB; default
    /// 1 MiB). A call past it fails, writing nothing.
    #[serde(default = "bytes_per_call")]
    pub bytes_per_call: usize,
}

/// One stream an agent follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// A stream id (`st_...`), or the name of a discoverable stream.
    pub stream: String,
    /// Only entries with one of these labels; all when empty.
    #[serde(default)]
    pub labels: Vec<String>,
    /// `start` (default): every entry the stream holds; `now`: only those
    /// appended after the binding is first seen.
    #[serde(default)]
    pub from: From,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum From {
    #[default]
    Start,
    Now,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDeadLetter {
    #[default]
    Continue,
    Pause,
}

/// The agent part of [`Settings`], as stored in one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentBinding {
    #[serde(default)]
    pub run_as: Option<String>,
    #[serde(default)]
    pub subscribe: Vec<Subscription>,
    #[serde(default = "max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub on_dead_letter: OnDeadLetter,
    #[serde(default)]
    pub receive_own: bool,
    #[serde(default = "writes_per_minute")]
    pub writes_per_minute: u32,
    #[serde(default = "bytes_per_call")]
    pub bytes_per_call: usize,
}

fn max_attempts() -> u32 {
    5
}

fn writes_per_minute() -> u32 {
    600
}

fn bytes_per_call() -> usize {
    super::view::DEFAULT_WRITE_BYTES
}

impl Default for AgentBinding {
    fn default() -> Self {
        Self {
            run_as: None,
            subscribe: Vec::new(),
            max_attempts: max_attempts(),
            on_dead_letter: OnDeadLetter::Continue,
            receive_own: false,
            writes_per_minute: writes_per_minute(),
            bytes_per_call: bytes_per_call(),
        }
    }
}

const MAX_SUBSCRIPTIONS: usize = 16;

/// What the decision log stores in place of a masked value.
pub const MASKED: &str = "[masked]";
const MAX_MASKS: usize = 32;
const MAX_POINTER_BYTES: usize = 512;

fn enabled() -> bool {
    true
}

fn empty_config() -> Value {
    json!({})
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            scope: None,
            config: empty_config(),
            config_schema: None,
            grants: None,
            limits: Limits::default(),
            order: 0,
            isolation: super::Isolation::Fresh,
            replaces_bundled: false,
            mask: Vec::new(),
            run_as: None,
            subscribe: Vec::new(),
            max_attempts: max_attempts(),
            on_dead_letter: OnDeadLetter::Continue,
            receive_own: false,
            writes_per_minute: writes_per_minute(),
            bytes_per_call: bytes_per_call(),
        }
    }
}

impl Settings {
    pub fn grants_for(&self, hook: Hook) -> BTreeSet<Capability> {
        self.grants.clone().unwrap_or_else(|| hook.default_grants())
    }

    /// Whether this policy decides in `scope` (a global one decides everywhere).
    pub fn applies_in(&self, scope: &Scope) -> bool {
        self.enabled && matches!(&self.scope, Some(s) if *s == Scope::Global || s == scope)
    }

    fn agent_binding(&self) -> AgentBinding {
        AgentBinding {
            run_as: self.run_as.clone(),
            subscribe: self.subscribe.clone(),
            max_attempts: self.max_attempts,
            on_dead_letter: self.on_dead_letter,
            receive_own: self.receive_own,
            writes_per_minute: self.writes_per_minute,
            bytes_per_call: self.bytes_per_call,
        }
    }

    /// An agent's binding: who it acts as and what it follows.
    fn validate_agent(&self, hook: Hook) -> Result<()> {
        let bad = |path: &str, message: String| {
            Error::validation(message.clone(), vec![Violation { path: path.into(), message }])
        };
        if hook != Hook::Agent {
            if self.run_as.is_some() || !self.subscribe.is_empty() {
                return Err(bad("/run_as", "run_as and subscribe are for agents (hook=agent) only".into()));
            }
            return Ok(());
        }
        let Some(run_as) = &self.run_as else {
            return Err(bad("/run_as", "an agent needs run_as: the registered agent it acts as".into()));
        };
        name::check("run_as", run_as)?;
        if self.subscribe.is_empty() || self.subscribe.len() > MAX_SUBSCRIPTIONS {
            return Err(bad("/subscribe", format!("an agent follows 1 to {MAX_SUBSCRIPTIONS} streams")));
        }
        for (i, sub) in self.subscribe.iter().enumerate() {
            if !sub.stream.starts_with("st_") {
                name::check("stream", &sub.stream)?;
            }
            if sub.labels.len() > 32 {
                return Err(bad(&format!("/subscribe/{i}/labels"), "at most 32 labels".into()));
            }
            for label in &sub.labels {
                name::check("label", label)?;
            }
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(bad("/max_attempts", "max_attempts takes 1 to 100".into()));
        }
        if !(1..=1_000_000).contains(&self.writes_per_minute) {
            return Err(bad("/writes_per_minute", "writes_per_minute takes 1 to 1000000".into()));
        }
        let most = super::view::MAX_WRITE_BYTES;
        if !(1..=most).contains(&self.bytes_per_call) {
            return Err(bad("/bytes_per_call", format!("bytes_per_call takes 1 to {most}")));
        }
        Ok(())
    }

    /// Checks settings given by an operator, whose scope must be explicit
    /// (an agent's reach is its subscriptions instead).
    fn validate(&self, hook: Hook) -> Result<()> {
        self.limits.validate()?;
        self.validate_agent(hook)?;
        match &self.scope {
            None if hook == Hook::Agent => {}
            None => {
                return Err(Error::validation(
                    "settings must name a scope: \"global\", {\"team\": NAME} or {\"stash\": NAME}",
                    vec![Violation { path: "/scope".into(), message: "required; no scope is assumed".into() }],
                ));
            }
            Some(Scope::Stash(n) | Scope::Team(n)) => name::check("scope", n)?,
            Some(Scope::Global) => {}
        }
        if !self.config.is_object() {
            return Err(Error::validation("config must be a JSON object", vec![]));
        }
        if let Some(schema) = &self.config_schema {
            super::config_schema::check(schema, &self.config, "the policy's config_schema")?;
        }
        if self.mask.len() > MAX_MASKS {
            return Err(Error::validation(
                format!("mask lists {} pointers; at most {MAX_MASKS} are taken", self.mask.len()),
                vec![Violation { path: "/mask".into(), message: "too many pointers".into() }],
            ));
        }
        for (i, pointer) in self.mask.iter().enumerate() {
            if !pointer.starts_with('/') || pointer.len() > MAX_POINTER_BYTES {
                return Err(Error::validation(
                    format!(
                        "mask entry {pointer:?} is not a JSON pointer into the input: it starts with / \
                         (as in /task/metadata/handoff) and is at most {MAX_POINTER_BYTES} bytes"
                    ),
                    vec![Violation { path: format!("/mask/{i}"), message: "not a JSON pointer".into() }],
                ));
            }
        }
        for cap in self.grants.iter().flatten() {
            if !hook.offers(*cap) {
                return Err(Error::validation(
                    format!("the {} world cannot be granted {}", hook.world(), cap.name()),
                    vec![Violation { path: "/grants".into(), message: format!("{} is not offered", cap.name()) }],
                ));
            }
        }
        Ok(())
    }
}

/// Latency buckets for `GET /policies`, in microseconds (the last is +Inf).
pub const LATENCY_BUCKETS_US: [u64; 12] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 50_000, 250_000, 1_000_000];

/// Counters that survive new versions of a policy.
#[derive(Default)]
pub struct Stats {
    pub decisions: AtomicU64,
    pub failures: AtomicU64,
    /// Decisions in progress now.
    running: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// The first line of the latest failure, and when (ms).
    last_error: std::sync::Mutex<Option<(String, i64)>>,
}

/// Counts a decision as running until dropped.
pub struct Running<'a>(&'a Stats);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn start(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        Running(self)
    }

    pub fn observe(&self, duration: Duration, failed: bool) {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let us = duration.as_micros() as u64;
        let i = LATENCY_BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Remembers the first line of a failure's error.
    pub fn failed_with(&self, error: &str) {
        let line: String = error.lines().next().unwrap_or(error).chars().take(500).collect();
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((line, crate::clock::now_ms()));
        }
    }

    pub fn to_json(&self) -> Value {
        let last_error = self.last_error.lock().ok().and_then(|l| l.clone());
        let mut histogram = serde_json::Map::new();
        for (i, bucket) in self.buckets.iter().enumerate() {
            let key = LATENCY_BUCKETS_US.get(i).map_or_else(|| "inf".to_string(), |b| b.to_string());
            histogram.insert(format!("le_{key}_us"), json!(bucket.load(Ordering::Relaxed)));
        }
        json!({
            "decisions": self.decisions.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "running": self.running.load(Ordering::Relaxed),
            "latency": histogram,
            "last_error": last_error.map(|(message, at)| json!({"message": message, "at": crate::clock::rfc3339(at)})),
        })
    }
}

/// One policy as served now.
pub struct Active {
    pub name: String,
    pub hook: Hook,
    pub version: i64,
    pub sha256: String,
    pub imports: Vec<String>,
    pub settings: Settings,
    /// The loaded component, or why it could not be loaded (then every
    /// decision fails closed).
    pub loaded: std::result::Result<Arc<Loaded>, String>,
    pub stats: Arc<Stats>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Whether the team or contract a scope names exists; the resources answer.
pub trait Scopes: Send + Sync {
    fn exists<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<bool>>;
    /// Whether an agent of this name is registered (an agent's `run_as`).
    fn agent_exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>>;
}

pub struct Registry {
    runtime: Arc<Runtime>,
    scopes: Arc<dyn Scopes>,
    active: RwLock<HashMap<String, Arc<Active>>>,
    /// The bundled defaults, compiled on first use.
    defaults: RwLock<HashMap<Hook, Arc<Active>>>,
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>, scopes: Arc<dyn Scopes>) -> Self {
        Self { runtime, scopes, active: RwLock::default(), defaults: RwLock::default() }
    }

    /// Checks settings an operator gives, as stored with a component
    /// whose SHA-256 is `sha256`: their own rules, the config against its
    /// schemas, and that the scope names a team or contract that exists.
    async fn check(&self, settings: &Settings, hook: Hook, sha256: &str) -> Result<()> {
        settings.validate(hook)?;
        if let Some(bundled) = super::bundled::by_sha256(sha256) {
            bundled.check_config(&settings.config)?;
        }
        if let Some(run_as) = &settings.run_as
            && !self.scopes.agent_exists(run_as).await?
        {
            return Err(Error::validation(
                format!("run_as names {run_as:?}, which is not a registered agent; register it first"),
                vec![Violation { path: "/run_as".into(), message: format!("no agent {run_as:?}") }],
            )
            .with_code("unknown_agent"));
        }
        if let Some(scope) = &settings.scope
            && !self.scopes.exists(scope).await?
        {
            let (what, n) = match scope {
                Scope::Team(n) => ("team", n),
                Scope::Stash(n) => ("contract", n),
                Scope::Global => return Ok(()),
            };
            return Err(Error::validation(
                format!("the scope names the {what} {n:?}, which does not exist; create it first, or fix the name"),
                vec![Violation { path: "/scope".into(), message: format!("no {what} {n:?}") }],
            )
            .with_code("unknown_scope"));
        }
        Ok(())
    }

    /// The bundled policy that decides on `hook` where no user policy is
    /// bound (version 0 in the decision log). Compiled on first use, from
    /// the precompiled cache when it is there; this blocks while it does.
    pub fn default_blocking(&self, hook: Hook) -> Result<Arc<Active>> {
        let bundled = super::bundled::for_hook(hook)
            .ok_or_else(|| Error::internal(format!("no bundled policy decides the {} hook", hook_str(hook))))?;
        if let Some(a) = self.defaults.read().ok().and_then(|m| m.get(&hook).cloned()) {
            return Ok(a);
        }
        let loaded = self
            .runtime
            .load(hook, bundled.wasm, &hook.default_grants())
            .map_err(|e| Error::internal(format!("the bundled {} does not load: {e}", bundled.name)))?;
        let now = clock::now_ms();
        let active = Arc::new(Active {
            name: bundled.name.into(),
            hook,
            version: 0,
            sha256: loaded.sha256.clone(),
            imports: loaded.imports.clone(),
            settings: Settings::default(),
            loaded: Ok(Arc::new(loaded)),
            stats: Arc::default(),
            created_at: now,
            updated_at: now,
        });
        if let Ok(mut m) = self.defaults.write() {
            return Ok(m.entry(hook).or_insert_with(|| active.clone()).clone());
        }
        Ok(active)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn get(&self, name: &str) -> Option<Arc<Active>> {
        self.active.read().ok()?.get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Active>> {
        let mut all: Vec<_> = self.active.read().map(|m| m.values().cloned().collect()).unwrap_or_default();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Each uploaded policy's instances made ahead, in bytes, for `/metrics`.
    pub fn prepared_memory(&self) -> Vec<(String, u64)> {
        self.list()
            .into_iter()
            .filter_map(|a| a.loaded.as_ref().ok().map(|l| (a.name.clone(), l.prepared().memory_bytes)))
            .collect()
    }

    /// The enabled policies on `hook` that apply in `scope`, in order.
    pub fn for_hook(&self, hook: Hook, scope: &Scope) -> Vec<Arc<Active>> {
        let mut found: Vec<_> = self
            .active
            .read()
            .map(|m| m.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.hook == hook && a.settings.applies_in(scope))
            .collect();
        found.sort_by(|a, b| (a.settings.order, &a.name).cmp(&(b.settings.order, &b.name)));
        found
    }

    fn swap(&self, active: Arc<Active>) {
        if let Ok(mut m) = self.active.write() {
            m.insert(active.name.clone(), active);
        }
    }

    fn stats_for(&self, name: &str) -> Arc<Stats> {
        self.get(name).map(|a| a.stats.clone()).unwrap_or_default()
    }

    /// Loads every stored policy; one that no longer loads stays listed and
    /// fails closed, with the reason.
    pub async fn load_all(self: &Arc<Self>, db: &Db) -> Result<()> {
        for row in store::all(db).await? {
            let this = self.clone();
            let name = row.name.clone();
            let active = tokio::task::spawn_blocking(move || this.activate(row, None))
                .await
                .map_err(|e| Error::internal(format!("loading policy {name}: {e}")))?;
            if let Err(e) = &active.loaded {
                tracing::error!(policy = %active.name, "policy does not load and will deny: {e}");
            }
            self.swap(Arc::new(active));
        }
        Ok(())
    }

    fn activate(&self, row: PolicyRow, loaded: Option<Arc<Loaded>>) -> Active {
        let hook = parse_hook(&row.hook);
        let settings = settings_of(&row);
        let loaded = match loaded {
            Some(l) => Ok(l),
            None => {
                self.runtime.load(hook, &row.wasm, &settings.grants_for(hook)).map(Arc::new).map_err(|e| e.to_string())
            }
        };
        Active {
            imports: serde_json::from_str(&row.imports).unwrap_or_default(),
            stats: self.stats_for(&row.name),
            name: row.name,
            hook,
            version: row.version,
            sha256: row.sha256,
            settings,
            loaded,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }

    /// Uploads a component as the next version of `name` (keeping its
    /// settings), or as a new policy. Returns it and whether it is new.
    pub async fn install(
        self: &Arc<Self>,
        db: &Db,
        name: &str,
        hook: Hook,
        wasm: Vec<u8>,
        with: Option<Settings>,
    ) -> Result<(Arc<Active>, bool)> {
        name::check("policy", name)?;
        if super::bundled::by_name(name).is_some() {
            return Err(Error::conflict(
                "name_taken",
                format!("{name:?} is the name of a bundled policy; upload your copy under another name"),
            ));
        }
        let existing = store::get(db, name).await?;
        let sha256 = super::cache::sha256(&wasm);
        // The same bytes again change nothing, and make no new version.
        if let Some(e) = &existing
            && e.hook == hook_str(hook)
            && e.sha256 == sha256
            && let Some(active) = self.get(name).filter(|a| a.version == e.version)
        {
            return match with {
                Some(settings) if settings != active.settings => Ok((self.configure(db, name, settings).await?, false)),
                _ => Ok((active, false)),
            };
        }
        // Settings sent with the bytes replace the current ones; both are
        // checked before either is stored, and stored in one row. Without
        // any, a new version keeps its settings, and a new policy has no
        // scope: it decides nothing until its settings name one.
        let settings = match with {
            Some(settings) => {
                self.check(&settings, hook, &sha256).await?;
                settings
            }
            None => {
                let kept = existing.as_ref().map(settings_of).unwrap_or_default();
                if let Some(bundled) = super::bundled::by_sha256(&sha256) {
                    bundled.check_config(&kept.config)?;
                }
                kept
            }
        };
        let grants = settings.grants_for(hook);
        let runtime = self.runtime.clone();
        let (loaded, wasm) = tokio::task::spawn_blocking(move || (runtime.load(hook, &wasm, &grants), wasm))
            .await
            .map_err(|e| Error::internal(format!("compiling policy: {e}")))?;
        let loaded = Arc::new(loaded.map_err(rejected)?);
        let now = clock::now_ms();
        let row = PolicyRow {
            name: name.to_string(),
            hook: hook_str(hook).into(),
            version: existing.as_ref().map_or(1, |e| e.version + 1),
            sha256: loaded.sha256.clone(),
            wasm,
            imports: serde_json::to_string(&loaded.imports).unwrap_or_else(|_| "[]".into()),
            enabled: settings.enabled,
            scope: to_json(&settings.scope),
            config: settings.config.to_string(),
            grants: to_json(&settings.grants),
            limits: to_json(&settings.limits),
            ord: settings.order,
            isolation: to_json(&settings.isolation),
            replaces_bundled: settings.replaces_bundled,
            mask: to_json(&settings.mask),
            config_schema: settings.config_schema.as_ref().map(Value::to_string),
            agent: to_json(&settings.agent_binding()),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        let active = self.commit(db, row, loaded).await?;
        tracing::info!(policy = name, version = active.version, hook = hook.world(), "policy installed");
        Ok((active, existing.is_none()))
    }

    /// Replaces a policy's settings; the component is re-linked with the
    /// new grants before anything is stored.
    pub async fn configure(self: &Arc<Self>, db: &Db, name: &str, settings: Settings) -> Result<Arc<Active>> {
        let Some(mut row) = store::get(db, name).await? else {
            return Err(Error::not_found(format!("policy {name:?}")));
        };
        let hook = parse_hook(&row.hook);
        self.check(&settings, hook, &row.sha256).await?;
        let runtime = self.runtime.clone();
        let grants = settings.grants_for(hook);
        let (loaded, r) = tokio::task::spawn_blocking(move || (runtime.load(hook, &row.wasm, &grants), row))
            .await
            .map_err(|e| Error::internal(format!("re-linking policy: {e}")))?;
        row = r;
        let loaded = Arc::new(loaded.map_err(rejected)?);
        row.enabled = settings.enabled;
        row.scope = to_json(&settings.scope);
        row.config = settings.config.to_string();
        row.grants = to_json(&settings.grants);
        row.limits = to_json(&settings.limits);
        row.ord = settings.order;
        row.isolation = to_json(&settings.isolation);
        row.replaces_bundled = settings.replaces_bundled;
        row.mask = to_json(&settings.mask);
        row.config_schema = settings.config_schema.as_ref().map(Value::to_string);
        row.agent = to_json(&settings.agent_binding());
        row.updated_at = clock::now_ms();
        self.commit(db, row, loaded).await
    }

    /// Stores a changed policy, serves it from now on, and tells other hosts.
    async fn commit(&self, db: &Db, row: PolicyRow, loaded: Arc<Loaded>) -> Result<Arc<Active>> {
        store::save(db, &row).await?;
        let name = row.name.clone();
        let active = Arc::new(self.activate(row, Some(loaded)));
        self.swap(active.clone());
        announce(db, &name).await;
        Ok(active)
    }

    pub async fn remove(&self, db: &Db, name: &str) -> Result<bool> {
        let gone = store::delete(db, name).await?;
        if let Ok(mut m) = self.active.write() {
            m.remove(name);
        }
        announce(db, name).await;
        Ok(gone)
    }

    /// Brings one policy in line with the database (after another host
    /// changed it): loads a new version or settings, or drops a deleted one.
    pub async fn refresh(self: &Arc<Self>, db: &Db, name: &str) -> Result<()> {
        let Some(row) = store::get(db, name).await? else {
            if let Ok(mut m) = self.active.write() {
                m.remove(name);
            }
            return Ok(());
        };
        if self.get(name).is_some_and(|a| a.version == row.version && a.updated_at == row.updated_at) {
            return Ok(());
        }
        let this = self.clone();
        let active = tokio::task::spawn_blocking(move || this.activate(row, None))
            .await
            .map_err(|e| Error::internal(format!("reloading policy {name}: {e}")))?;
        tracing::info!(policy = name, version = active.version, "policy reloaded: changed by another host");
        self.swap(Arc::new(active));
        Ok(())
    }

    /// Follows changes made by other hosts on the same PostgreSQL.
    pub async fn follow(self: Arc<Self>, db: Db, shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(pool) = db.postgres().cloned() else { return };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
        let refresher = {
            let (this, db) = (self.clone(), db.clone());
            tokio::spawn(async move {
                while let Some(name) = rx.recv().await {
                    let names = match name {
                        Some(n) => vec![n],
                        // Reconnected: anything may have changed meanwhile.
                        None => store::all(&db)
                            .await
                            .map(|rows| rows.into_iter().map(|r| r.name).collect())
                            .unwrap_or_default(),
                    };
                    for n in names {
                        if let Err(e) = this.refresh(&db, &n).await {
                            tracing::warn!(policy = %n, "cannot reload policy: {e}");
                        }
                    }
                }
            })
        };
        crate::db::listen(pool, POLICY_CHANNEL, shutdown, |payload| {
            let _ = tx.send(payload.map(str::to_string));
        })
        .await;
        refresher.abort();
    }
}

const POLICY_CHANNEL: &str = "cairn_policy";

/// Tells other hosts on the same PostgreSQL that a policy changed.
async fn announce(db: &Db, name: &str) {
    if let Some(pool) = db.postgres()
        && let Err(e) = crate::db::notify(pool, POLICY_CHANNEL, name).await
    {
        // Stored already; other hosts pick it up when they reconnect or restart.
        tracing::warn!(policy = name, "cannot notify other hosts of a policy change: {e}");
    }
}

/// Several policies on one hook: any deny wins, then escalate, else approve.
fn rejected(e: LoadError) -> Error {
    let at = match &e {
        LoadError::Import { import, .. } => {
            Some(Violation { path: format!("imports/{import}"), message: e.to_string() })
        }
        LoadError::WorldMismatch { world, .. } => {
            Some(Violation { path: format!("world/{world}"), message: e.to_string() })
        }
        _ => None,
    };
    Error::validation(e.to_string(), at.into_iter().collect()).with_code("policy_rejected")
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub fn hook_str(hook: Hook) -> &'static str {
    match hook {
        Hook::Claim => "claim",
        Hook::Handoff => "handoff",
        Hook::Escalation => "escalation",
        Hook::Agent => "agent",
    }
}

fn parse_hook(s: &str) -> Hook {
    match s {
        "handoff" => Hook::Handoff,
        "escalation" => Hook::Escalation,
        "agent" => Hook::Agent,
        _ => Hook::Claim,
    }
}

fn settings_of(row: &PolicyRow) -> Settings {
    let agent: AgentBinding = serde_json::from_str(&row.agent).unwrap_or_default();
    Settings {
        enabled: row.enabled,
        scope: serde_json::from_str(&row.scope).unwrap_or_default(),
        config: serde_json::from_str(&row.config).unwrap_or_else(|_| empty_config()),
        grants: serde_json::from_str(&row.grants).unwrap_or_default(),
        limits: serde_json::from_str(&row.limits).unwrap_or_default(),
        order: row.ord,
        isolation: serde_json::from_str(&row.isolation).unwrap_or_default(),
        replaces_bundled: row.replaces_bundled,
        mask: serde_json::from_str(&row.mask).unwrap_or_default(),
        config_schema: row.config_schema.as_deref().and_then(|s| serde_json::from_str(s).ok()),
        run_as: agent.run_as,
        subscribe: agent.subscribe,
        max_attempts: agent.max_attempts,
        on_dead_letter: agent.on_dead_letter,
        receive_own: agent.receive_own,
        writes_per_minute: agent.writes_per_minute,
        bytes_per_call: agent.bytes_per_call,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_defaults_and_refuse_what_the_world_lacks() {
        let s: Settings = serde_json::from_value(json!({"config": {"max": 2}, "scope": {"team": "pact"}})).unwrap();
        assert!(s.enabled);
        assert_eq!(s.scope, Some(Scope::Team("pact".into())));
        assert_eq!(s.limits, Limits::default());
        s.validate(Hook::Claim).unwrap();
        let writes: Settings = serde_json::from_value(json!({"grants": ["stash-write"], "scope": "global"})).unwrap();
        assert!(writes.validate(Hook::Claim).is_err());
        // An agent needs who it acts as and what it follows.
        assert!(writes.validate(Hook::Agent).is_err());
        let agent: Settings = serde_json::from_value(
            json!({"grants": ["stash-write"], "run_as": "bot", "subscribe": [{"stream": "st_1", "labels": ["q"]}]}),
        )
        .unwrap();
        agent.validate(Hook::Agent).unwrap();
        assert_eq!(agent.max_attempts, 5);
        assert!(agent.validate(Hook::Claim).is_err(), "run_as is for agents only");
        assert!(serde_json::from_value::<Settings>(json!({"scope": "everywhere"})).is_err());
        let global: Settings = serde_json::from_value(json!({"scope": "global"})).unwrap();
        assert_eq!(global.scope, Some(Scope::Global));
        // No scope is assumed.
        let unscoped: Settings = serde_json::from_value(json!({"config": {}})).unwrap();
        let e = unscoped.validate(Hook::Claim).unwrap_err();
        assert_eq!(e.body()["error"]["details"][0]["path"], "/scope");
        let masked: Settings = serde_json::from_value(json!({"scope": "global", "mask": ["task/x"]})).unwrap();
        assert!(masked.validate(Hook::Claim).is_err());
    }

    #[test]
    fn stats_fill_latency_buckets() {
        let s = Stats::default();
        s.observe(Duration::from_micros(20), false);
        s.observe(Duration::from_secs(5), true);
        let j = s.to_json();
        assert_eq!((j["decisions"].as_u64(), j["failures"].as_u64()), (Some(2), Some(1)));
        assert_eq!(j["latency"]["le_25_us"], 1);
        assert_eq!(j["latency"]["le_inf_us"], 1);
    }
}
