//! One writer per key. Writes to one team, or one contract, queue for a
//! single task that takes everything waiting at that moment as one batch
//! (and, usually, one transaction): like stream appends, N racing writers
//! cost one commit, and none of them ever sees the others as contention.
//! Each worker keeps a state between batches (a snapshot, say) and goes
//! away after a while without work, so idle keys cost nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Most jobs in one batch.
pub const MAX_BATCH: usize = 256;
/// Jobs waiting per key before submitters wait for room.
const QUEUE: usize = 4096;
/// A worker with nothing to do for this long exits and drops its state.
const IDLE: Duration = Duration::from_secs(30);

/// What a worker does with a batch of its key's jobs.
pub trait Batch: Send + Sync + 'static {
    type Job: Send + 'static;
    /// Kept between batches of one key; `None` at first and after a failure.
    type State: Send + 'static;

    fn run<'a>(&'a self, key: &'a str, state: &'a mut Option<Self::State>, jobs: Vec<Self::Job>) -> BoxFuture<'a, ()>;
}

type Workers<J> = Arc<Mutex<HashMap<String, mpsc::Sender<J>>>>;

pub struct Serial<B: Batch> {
    batch: Arc<B>,
    workers: Workers<B::Job>,
}

impl<B: Batch> Serial<B> {
    pub fn new(batch: B) -> Self {
        Self { batch: Arc::new(batch), workers: Arc::default() }
    }

    pub fn batch(&self) -> &B {
        &self.batch
    }

    /// Queues `job` for `key`'s worker, starting one if there is none.
    pub async fn submit(&self, key: &str, mut job: B::Job) -> Result<()> {
        loop {
            let tx = {
                let mut workers =
                    self.workers.lock().map_err(|_| Error::internal("a writer queue lock is poisoned"))?;
                workers
                    .entry(key.to_string())
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(QUEUE);
                        tokio::spawn(work(self.batch.clone(), key.to_string(), rx, self.workers.clone()));
                        tx
                    })
                    .clone()
            };
            match tx.send(job).await {
                Ok(()) => return Ok(()),
                // The worker went idle and closed just now: start another.
                Err(mpsc::error::SendError(back)) => {
                    job = back;
                    if let Ok(mut workers) = self.workers.lock()
                        && workers.get(key).is_some_and(|t| t.same_channel(&tx))
                    {
                        workers.remove(key);
                    }
                }
            }
        }
    }
}

async fn work<B: Batch>(batch: Arc<B>, key: String, mut rx: mpsc::Receiver<B::Job>, workers: Workers<B::Job>) {
    let mut state = None;
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        match tokio::time::timeout(IDLE, rx.recv_many(&mut jobs, MAX_BATCH)).await {
            Ok(0) => return,
            Ok(_) => batch.run(&key, &mut state, std::mem::take(&mut jobs)).await,
            Err(_idle) => {
                {
                    let Ok(mut w) = workers.lock() else { return };
                    if !rx.is_empty() {
                        continue;
                    }
                    w.remove(&key);
                }
                // A submitter may have sent between the check and the close.
                rx.close();
                while let Ok(job) = rx.try_recv() {
                    jobs.push(job);
                }
                if !jobs.is_empty() {
                    batch.run(&key, &mut state, std::mem::take(&mut jobs)).await;
                }
                return;
            }
        }
    }
}
