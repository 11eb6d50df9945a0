//! Group commit for appends.
//!
//! One task per shard takes appends from a channel and writes everything
//! queued at that moment in a single transaction: per stream, one counter
//! bump by `k` and one multi-row insert. Callers get their seq only after the
//! commit, so an acknowledged entry is durable and seqs stay gap-free. Under
//! load this turns N transactions into one; with a single caller it costs
//! nothing extra (the batch is just that caller's entry).
//!
//! SQLite has one writer connection, so it gets one shard. PostgreSQL gets
//! several, keyed by stream id, so unrelated streams commit in parallel
//! while each stream still has exactly one writer in this process.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use tokio::sync::{mpsc, oneshot};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::with_db;

/// Most entries written in one transaction.
const MAX_BATCH: usize = 512;
/// Appends waiting per shard before callers wait for room.
const QUEUE: usize = 4096;

/// One entry to append.
pub struct Append {
    pub stream_id: String,
    pub label: Option<String>,
    /// The entry's data, serialised JSON.
    pub data: String,
    pub agent: String,
    pub now: i64,
}

struct Job {
    append: Append,
    /// The entry's seq, or None when the stream is gone or expired.
    reply: oneshot::Sender<Result<Option<i64>>>,
}

pub struct Appender {
    shards: Vec<mpsc::Sender<Job>>,
}

impl Appender {
    pub fn start(db: &Db) -> Self {
        let n = if db.postgres().is_some() { 4 } else { 1 };
        let shards = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(db.clone(), rx));
                tx
            })
            .collect();
        Self { shards }
    }

    /// Appends one entry and returns its seq once committed.
    pub async fn append(&self, append: Append) -> Result<Option<i64>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        append.stream_id.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % self.shards.len()];
        let (reply, rx) = oneshot::channel();
        shard.send(Job { append, reply }).await.map_err(|_| Error::internal("the appender has stopped"))?;
        rx.await.map_err(|_| Error::internal("the appender dropped an append"))?
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Group by stream, keeping each stream's arrival order.
        let mut groups: Vec<(String, Vec<Job>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for job in batch.drain(..) {
            match index.get(&job.append.stream_id) {
                Some(&i) => groups[i].1.push(job),
                None => {
                    index.insert(job.append.stream_id.clone(), groups.len());
                    groups.push((job.append.stream_id.clone(), vec![job]));
                }
            }
        }
        match write(&db, &groups).await {
            Ok(lasts) => {
                for ((_, jobs), last) in groups.into_iter().zip(lasts) {
                    let first = last.map(|l| l - jobs.len() as i64 + 1);
                    for (i, job) in jobs.into_iter().enumerate() {
                        let _ = job.reply.send(Ok(first.map(|f| f + i as i64)));
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!("append batch failed: {message}");
                for job in groups.into_iter().flat_map(|(_, jobs)| jobs) {
                    let _ = job.reply.send(Err(Error::internal(format!("storage error: {message}"))));
                }
            }
        }
    }
}

/// Writes every group in one transaction; returns each stream's new last seq
/// (None: the stream is gone, nothing written for it).
async fn write(db: &Db, groups: &[(String, Vec<Job>)]) -> Result<Vec<Option<i64>>, sqlx::Error> {
    with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        let mut lasts = Vec::with_capacity(groups.len());
        for (stream_id, jobs) in groups {
            let now = jobs.iter().map(|j| j.append.now).max().unwrap_or_default();
            let last: Option<(i64,)> = sqlx::query_as(
                "UPDATE streams SET last_seq = last_seq + $1, updated_at = $2
                 WHERE stream_id = $3 AND expires_at > $2 RETURNING last_seq",
            )
            .bind(jobs.len() as i64)
            .bind(now)
            .bind(stream_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((last,)) = last else {
                lasts.push(None);
                continue;
            };
            let first = last - jobs.len() as i64 + 1;
            let mut sql =
                String::from("INSERT INTO stream_entries (stream_id, seq, label, data, agent, created_at) VALUES ");
            for i in 0..jobs.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6));
            }
            let mut q = sqlx::query(&sql);
            for (i, job) in jobs.iter().enumerate() {
                q = q
                    .bind(stream_id)
                    .bind(first + i as i64)
                    .bind(job.append.label.as_deref())
                    .bind(job.append.data.as_str())
                    .bind(job.append.agent.as_str())
                    .bind(job.append.now);
            }
            q.execute(&mut *tx).await?;
            lasts.push(Some(last));
        }
        tx.commit().await?;
        Ok(lasts)
    }
    .await)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock;
    use crate::stream::store::{self, EntryQuery, StreamRow};

    fn row(id: &str, expires_at: i64) -> StreamRow {
        StreamRow {
            stream_id: id.into(),
            owner: "o".into(),
            name: id.into(),
            description: String::new(),
            labels: String::new(),
            discoverable: false,
            linked_stash: None,
            ttl: 60,
            expires_at,
            retention_seconds: None,
            schema_id: None,
            schema_version: None,
            schema_name: None,
            last_seq: 0,
            created_at: clock::now_ms(),
            updated_at: clock::now_ms(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_keep_every_stream_gap_free() {
        for db in crate::testing::databases().await {
            let now = clock::now_ms();
            for id in ["st_a", "st_b", "st_c"] {
                assert!(matches!(store::insert(&db, &row(id, now + 60_000)).await.unwrap(), store::Insert::Done));
            }
            assert!(matches!(store::insert(&db, &row("st_gone", now - 1)).await.unwrap(), store::Insert::Done));
            let appender = Arc::new(Appender::start(&db));
            let ids = ["st_a", "st_b", "st_c", "st_gone"];
            let tasks: Vec<_> = (0..400)
                .map(|n| {
                    let appender = appender.clone();
                    let stream_id = ids[n % ids.len()].to_string();
                    tokio::spawn(async move {
                        let seq = appender
                            .append(Append {
                                stream_id: stream_id.clone(),
                                label: Some("t".into()),
                                data: format!("{n}"),
                                agent: "a".into(),
                                now: clock::now_ms(),
                            })
                            .await
                            .unwrap();
                        (stream_id, n, seq)
                    })
                })
                .collect();
            let mut by_stream: HashMap<String, Vec<(i64, usize)>> = HashMap::new();
            for t in tasks {
                let (id, n, seq) = t.await.unwrap();
                match seq {
                    Some(seq) => by_stream.entry(id).or_default().push((seq, n)),
                    None => assert_eq!(id, "st_gone", "only the expired stream refuses appends"),
                }
            }
            assert!(!by_stream.contains_key("st_gone"));
            for id in ["st_a", "st_b", "st_c"] {
                let mut got = by_stream.remove(id).unwrap();
                got.sort();
                let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
                assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "{id}");
                // Each seq holds the entry its caller was told about.
                let q = EntryQuery { label: None, after: 0, not_before: 0, limit: 1000, offset: 0 };
                let stored = store::entries(&db, id, &q).await.unwrap();
                let stored: Vec<(i64, String)> = stored.into_iter().map(|e| (e.seq, e.data)).collect();
                let told: Vec<(i64, String)> = got.iter().map(|(s, n)| (*s, n.to_string())).collect();
                assert_eq!(stored, told, "{id}");
            }
        }
    }
}
