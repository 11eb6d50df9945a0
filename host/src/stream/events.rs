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

use sqlx::postgres::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const CHANNEL: &str = "cairn_stream";

#[derive(Default)]
pub struct Bus {
    channels: Mutex<HashMap<String, watch::Sender<i64>>>,
}

impl Bus {
    pub fn subscribe(&self, stream_id: &str) -> watch::Receiver<i64> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.entry(stream_id.to_string()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    pub fn publish(&self, stream_id: &str, seq: i64) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = channels.get(stream_id) {
            if tx.receiver_count() == 0 {
                channels.remove(stream_id);
            } else {
                tx.send_modify(|last| *last = (*last).max(seq));
            }
        }
    }

    fn wake_all(&self) {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for tx in channels.values() {
            tx.send_modify(|_| {});
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
}
