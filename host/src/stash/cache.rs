//! A read-through cache of stashes, for SQLite only.
//!
//! Every SQLite query in sqlx crosses from a tokio worker to the
//! connection's own thread and back; under load those hand-offs, not SQLite,
//! are where a stash read spends its time. Hot reads are served from here
//! instead. This is sound only while one process owns the database, which
//! [`crate::db::Db`] enforces with an exclusive lock file in SQLite mode; on
//! PostgreSQL, where several hosts share the data, there is no cache.
//!
//! Entries are keyed by store and name, then by the caller, because lookup
//! depends on who asks (their own stash first, then a shared one). A write
//! of any kind to a name bumps the write epoch and then drops the name; a
//! read fills the cache only if the epoch did not move while it read the
//! database, so a fill can never resurrect a value older than the last
//! acknowledged write. Expired entries are never served. When the cached
//! bodies pass the byte budget the cache is emptied and refills from use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::store::Stash;

/// Bodies larger than this are always read from the database.
const MAX_ENTRY_BYTES: usize = 64 * 1024;
const BUDGET_BYTES: usize = 64 << 20;

type Key = (bool, String);

#[derive(Default)]
struct Inner {
    names: HashMap<Key, HashMap<String, Option<Arc<Stash>>>>,
    bytes: usize,
}

pub struct Cache {
    enabled: bool,
    epoch: AtomicU64,
    inner: Mutex<Inner>,
}

/// Proof of the epoch a read started in.
pub struct Ticket(u64);

impl Cache {
    pub fn new(enabled: bool) -> Self {
        Self { enabled, epoch: AtomicU64::new(0), inner: Mutex::default() }
    }

    /// The cached answer for `caller`: `Some(None)` means "known absent".
    pub fn get(&self, caller: &str, persistent: bool, name: &str, now: i64) -> Option<Option<Arc<Stash>>> {
        if !self.enabled {
            return None;
        }
        let inner = self.inner.lock().ok()?;
        let hit = inner.names.get(&(persistent, name.to_string()))?.get(caller)?.clone();
        match hit {
            Some(s) if s.expires_at.is_some_and(|at| at <= now) => None,
            other => Some(other),
        }
    }

    /// Call before reading the database for a later [`Cache::fill`].
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    pub fn fill(&self, ticket: Ticket, caller: &str, persistent: bool, name: &str, found: Option<&Stash>) {
        if !self.enabled || found.is_some_and(|s| s.body.len() > MAX_ENTRY_BYTES) {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        // A write finished while we read: what we read may be older than it.
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        let size = found.map_or(0, |s| s.body.len()) + name.len() + caller.len() + 256;
        if inner.bytes + size > BUDGET_BYTES {
            inner.names.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        inner
            .names
            .entry((persistent, name.to_string()))
            .or_default()
            .insert(caller.to_string(), found.cloned().map(Arc::new));
    }

    /// After any committed change to this name.
    pub fn invalidate(&self, persistent: bool, name: &str) {
        if !self.enabled {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut inner) = self.inner.lock()
            && let Some(callers) = inner.names.remove(&(persistent, name.to_string()))
        {
            let freed: usize =
                callers.values().map(|s| s.as_ref().map_or(0, |s| s.body.len()) + name.len() + 256).sum();
            inner.bytes = inner.bytes.saturating_sub(freed);
        }
    }

    /// After changes to many names at once (the sweeper).
    pub fn clear(&self) {
        if !self.enabled {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut inner) = self.inner.lock() {
            inner.names.clear();
            inner.bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stash(body: &str, expires_at: Option<i64>) -> Stash {
        Stash {
            owner: "a".into(),
            name: "n".into(),
            persistent: false,
            body: body.as_bytes().to_vec(),
            content_type: "text/plain".into(),
            size: body.len() as i64,
            version: 1,
            ttl: None,
            expires_at,
            renewed_at: 0,
            schema_id: None,
            schema_version: None,
            schema_name: None,
            shared: false,
            discoverable: false,
            description: String::new(),
            labels: String::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn fills_are_dropped_when_a_write_happened_meanwhile() {
        let c = Cache::new(true);
        let t = c.ticket();
        c.invalidate(false, "n");
        c.fill(t, "a", false, "n", Some(&stash("old", None)));
        assert!(c.get("a", false, "n", 0).is_none(), "a stale read must not be cached");
        let t = c.ticket();
        c.fill(t, "a", false, "n", Some(&stash("new", None)));
        assert_eq!(c.get("a", false, "n", 0).unwrap().unwrap().body, b"new");
        assert!(c.get("b", false, "n", 0).is_none(), "entries are per caller");
        c.invalidate(false, "n");
        assert!(c.get("a", false, "n", 0).is_none());
    }

    #[test]
    fn expired_entries_and_disabled_caches_serve_nothing() {
        let c = Cache::new(true);
        c.fill(c.ticket(), "a", false, "n", Some(&stash("x", Some(100))));
        assert!(c.get("a", false, "n", 99).is_some());
        assert!(c.get("a", false, "n", 100).is_none());
        let off = Cache::new(false);
        off.fill(off.ticket(), "a", false, "n", Some(&stash("x", None)));
        assert!(off.get("a", false, "n", 0).is_none());
    }

    #[test]
    fn absence_is_cached_until_the_name_is_written() {
        let c = Cache::new(true);
        c.fill(c.ticket(), "a", true, "n", None);
        assert_eq!(c.get("a", true, "n", 0).map(|s| s.is_none()), Some(true));
        c.invalidate(true, "n");
        assert!(c.get("a", true, "n", 0).is_none());
    }
}
