//! [`State`] over the host's database, as one agent sees it. Imports are
//! synchronous to the guest, and decisions run on blocking threads, so each
//! read blocks that thread on the async query; a failed read is logged and
//! looks like absence to the guest (which then decides on what it has, and
//! the decision log shows the warning).

use tokio::runtime::Handle;

use super::State;
use super::bindings::coord::types::{StashDocument, StreamEntry, Task};
use crate::db::Db;

pub struct Live {
    pub db: Db,
    pub agent: String,
    /// Admins read every team's tasks; others only their teams'.
    pub admin: bool,
    pub handle: Handle,
}

impl Live {
    fn block<T: Default>(&self, what: &str, f: impl std::future::Future<Output = crate::error::Result<T>>) -> T {
        self.handle.block_on(f).unwrap_or_else(|e| {
            tracing::warn!(agent = %self.agent, "policy read of {what} failed: {e}");
            T::default()
        })
    }
}

impl State for Live {
    fn stash(&self, name: &str, persistent: bool) -> Option<StashDocument> {
        self.block("a stash", crate::stash::read_for_policy(&self.db, &self.agent, name, persistent))
    }

    fn stream_read(&self, stream_id: &str, label: Option<&str>, after: u64, limit: u32) -> Vec<StreamEntry> {
        self.block("a stream", crate::stream::read_for_policy(&self.db, stream_id, label, after, limit, false))
    }

    fn stream_latest(&self, stream_id: &str, label: Option<&str>) -> Option<StreamEntry> {
        self.block("a stream", crate::stream::read_for_policy(&self.db, stream_id, label, 0, 1, true)).pop()
    }

    fn task(&self, team: &str, id: u64) -> Option<Task> {
        let id = i64::try_from(id).ok()?;
        self.block("a task", crate::task::read_for_policy(&self.db, &self.agent, self.admin, team, Some(id))).pop()
    }

    fn tasks(&self, team: &str) -> Vec<Task> {
        self.block("a team's tasks", crate::task::read_for_policy(&self.db, &self.agent, self.admin, team, None))
    }
}
