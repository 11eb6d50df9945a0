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
