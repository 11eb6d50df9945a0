//! Live delivery of stream entries.
//!
//! The bus carries wake-ups, not entries: "stream X has reached seq N".
//! Subscribers then read what they have not seen from storage, so delivery
//! is ordered, gap-free and resumable whatever the bus drops or repeats.
//!
//! In one process a `watch` channel per watched stream is enough. With
//! PostgreSQL several host processes share the data, so every append also
//! sends `NOTIFY cairn_stream, '<stream_id>:<seq>'`, and each process's
//! listener feeds what it hears into its own bus. When the listener's
//! connection drops, every subscriber is woken to re-read, since
//! notifications sent meanwhile are gone.

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use sqlx::postgres::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

use axum::response::sse::Event;

const CHANNEL: &str = "cairn_stream";

#[derive(Default)]
pub struct Bus {
    channels: Mutex<HashMap<String, watch::Sender<i64>>>,
    reads: Mutex<HashMap<ReadKey, SharedRead>>,
}

/// One live read: a stream's entries after `after` (with `label`), wanted
/// by readers that were woken by the bus reaching `seen`. Readers woken
/// later never join an earlier read, which may have missed their entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ReadKey {
    pub stream: String,
    pub label: Option<String>,
    pub after: i64,
    pub seen: i64,
}

/// What a live read found: each entry's seq and its event, rendered once
/// for every reader; `None` when the stream is gone.
pub(super) type Batch = Arc<Result<Option<Vec<(i64, Event)>>, String>>;

type SharedRead = Shared<BoxFuture<'static, Batch>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    /// Runs `read` once for all the live readers asking for the same entries
    /// at the same time, so an append to a stream with N subscribers costs
    /// one query, not N.
    pub(super) async fn read_once(&self, key: ReadKey, read: impl Future<Output = Batch> + Send + 'static) -> Batch {
        let shared = lock(&self.reads).entry(key.clone()).or_insert_with(|| read.boxed().shared()).clone();
        // Done or abandoned, the read leaves the table; readers still
        // waiting on it hold their own handles.
        let _leave = Leave { bus: self, key, read: shared.clone() };
        shared.await
    }

    pub fn subscribe(&self, stream_id: &str) -> watch::Receiver<i64> {
        let mut channels = lock(&self.channels);
        channels.entry(stream_id.to_string()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    pub fn publish(&self, stream_id: &str, seq: i64) {
        let mut channels = lock(&self.channels);
        if let Some(tx) = channels.get(stream_id) {
            if tx.receiver_count() == 0 {
                channels.remove(stream_id);
            } else {
                tx.send_modify(|last| *last = (*last).max(seq));
            }
        }
    }

    fn wake_all(&self) {
        let channels = lock(&self.channels);
        for tx in channels.values() {
            tx.send_modify(|_| {});
        }
    }
}

struct Leave<'a> {
    bus: &'a Bus,
    key: ReadKey,
    read: SharedRead,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut reads = lock(&self.bus.reads);
        if reads.get(&self.key).is_some_and(|r| r.ptr_eq(&self.read)) {
            reads.remove(&self.key);
        }
    }
}

/// Tells the other host processes on this database about an append.
pub async fn notify_others(pool: &PgPool, stream_id: &str, seq: i64) -> Result<(), sqlx::Error> {
    crate::db::notify(pool, CHANNEL, &format!("{stream_id}:{seq}")).await
}

/// Feeds notifications from PostgreSQL into `bus` until `shutdown` fires.
pub async fn listen(pool: PgPool, bus: Arc<Bus>, shutdown: watch::Receiver<bool>) {
    crate::db::listen(pool, CHANNEL, shutdown, |payload| match payload {
        Some(p) => {
            if let Some((id, seq)) = p.rsplit_once(':') {
                bus.publish(id, seq.parse().unwrap_or(i64::MAX));
            }
        }
        // Anything sent while we were away is lost: make everyone re-read.
        None => bus.wake_all(),
    })
    .await
}

/// Wakes live readers of `stream_id`, in this process and in every other.
pub async fn announce(bus: &Bus, db: &crate::db::Db, stream_id: &str, seq: i64) {
    bus.publish(stream_id, seq);
    if let Some(pool) = db.postgres()
        && let Err(e) = notify_others(pool, stream_id, seq).await
    {
        // The entry is stored; remote readers catch up on their next re-check.
        tracing::warn!(stream = %stream_id, seq, "could not notify other hosts: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_wake_on_publish_and_idle_channels_go_away() {
        let bus = Bus::default();
        let mut rx = bus.subscribe("st_a");
        bus.publish("st_a", 3);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 3);
        bus.publish("st_a", 2);
        assert_eq!(*rx.borrow_and_update(), 3, "seq never goes back");
        drop(rx);
        bus.publish("st_a", 4);
        assert!(bus.channels.lock().unwrap().is_empty());
    }

    fn key(after: i64, seen: i64) -> ReadKey {
        ReadKey { stream: "st_a".into(), label: None, after, seen }
    }

    /// Readers asking for the same entries at once share one read; a reader
    /// woken later, or at another position, gets its own; and finished
    /// reads leave the table.
    #[tokio::test]
    async fn concurrent_readers_of_the_same_entries_share_one_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let bus = Bus::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let read = |runs: &Arc<AtomicUsize>| {
            let (runs, mut released) = (runs.clone(), released.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
                Arc::new(Ok(Some(Vec::new())))
            }
        };
        let readers = futures_util::future::join_all((0..50).map(|_| bus.read_once(key(0, 7), read(&runs))));
        let later = bus.read_once(key(0, 8), read(&runs));
        let elsewhere = bus.read_once(key(3, 7), read(&runs));
        // Released only once every reader has asked.
        let release = async {
            tokio::task::yield_now().await;
            let _ = release.send(true);
        };
        let (shared, _, _, ()) = futures_util::join!(readers, later, elsewhere, release);
        assert_eq!(shared.len(), 50);
        assert_eq!(runs.load(Ordering::SeqCst), 3, "one read per distinct key");
        assert!(bus.reads.lock().unwrap().is_empty(), "finished reads leave the table");

        // A reader that gives up leaves no read behind.
        let abandoned = bus.read_once(key(9, 9), std::future::pending());
        assert!(tokio::time::timeout(std::time::Duration::from_millis(10), abandoned).await.is_err());
        assert!(bus.reads.lock().unwrap().is_empty());
    }
}
