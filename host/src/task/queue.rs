//! The team's writer: every write to a team goes through [`Teams::transact`],
//! which queues it for the team's one writer ([`crate::serial`]). The
//! writer commits what is queued as one batch against the team's snapshot
//! (see [`store::commit_batch`]), so racing claims are decided one after
//! another on the team as it stands, and none is refused for contention.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::store::{self, Committed, Job, Planned, Snapshot, Write};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::policy::Decider;
use crate::serial::{Batch, Serial};

pub struct Writer {
    db: Db,
    decider: Arc<Decider>,
}

impl Batch for Writer {
    type Job = Job;
    type State = Snapshot;

    fn run<'a>(&'a self, team: &'a str, snapshot: &'a mut Option<Snapshot>, jobs: Vec<Job>) -> BoxFuture<'a, ()> {
        Box::pin(store::commit_batch(&self.db, &self.decider, team, snapshot, jobs))
    }
}

/// The writers of every team.
pub struct Teams(Serial<Writer>);

impl Teams {
    pub fn new(db: Db, decider: Arc<Decider>) -> Self {
        Self(Serial::new(Writer { db, decider }))
    }

    /// Runs one write to `team`: `plan` reads the team's snapshot (and may
    /// decide on it, on a blocking thread) and returns the writes, which
    /// commit before this returns. `Err` from the plan is its refusal
    /// (nothing of it is written); `Ok(None)` means there is no such team.
    /// Plans must not change the snapshot: the writer applies their writes.
    pub async fn transact<T, F>(&self, team: &str, plan: F) -> Result<Option<(T, Committed)>>
    where
        T: Send + 'static,
        F: FnOnce(&Snapshot, &Decider) -> Result<(Vec<Write>, T)> + Send + 'static,
    {
        self.transact_mut(team, move |s, d| plan(s, d)).await
    }

    /// [`Self::transact`] for plans that take ids (`next_task_id`,
    /// `next_message_id`); they change the snapshot through those alone.
    pub async fn transact_mut<T, F>(&self, team: &str, plan: F) -> Result<Option<(T, Committed)>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Snapshot, &Decider) -> Result<(Vec<Write>, T)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<Option<(T, Committed)>>>();
        let job: Job = Box::new(move |snapshot, decider| {
            let Some(s) = snapshot else {
                return Planned { writes: Vec::new(), reply: Box::new(move |_| drop(tx.send(Ok(None)))) };
            };
            match plan(s, decider) {
                Ok((writes, value)) => {
                    Planned { writes, reply: Box::new(move |c| drop(tx.send(c.map(|c| c.map(|c| (value, c)))))) }
                }
                Err(refused) => Planned { writes: Vec::new(), reply: Box::new(move |_| drop(tx.send(Err(refused)))) },
            }
        });
        self.0.submit(team, job).await?;
        rx.await
            .map_err(|_| Error::internal(format!("team {team}'s writer failed while planning this write; retry")))?
    }
}
