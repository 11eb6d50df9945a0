//! The `cairn:coord` imports, as the sandbox answers them: every read goes
//! through the decision's [`Reads`](super::view::Reads), from memory, and
//! log lines are kept for the decision's record.

use super::bindings::coord::{
    self,
    types::{StashDocument, StreamEntry, Task, TaskStatus},
};
use super::limits;
use super::runtime::{LogLine, Sandbox};
use super::view::{Answer, MAX_PAGE, Read, Status};

impl Sandbox {
    fn read(&mut self, read: Read) -> Answer {
        self.reads.get(read)
    }
}

impl coord::types::Host for Sandbox {}

impl coord::stash_read::Host for Sandbox {
    fn get(&mut self, name: String, persistent: bool) -> Option<StashDocument> {
        match self.read(Read::Stash { name, persistent }) {
            Answer::Stash(s) => s,
            _ => None,
        }
    }
}

impl coord::stash_write::Host for Sandbox {
    fn put(&mut self, name: String, persistent: bool, body: Vec<u8>, content_type: String) -> Result<u64, String> {
        if !crate::name::is_valid(&name) {
            return Err(format!("{name:?} is not a usable stash name"));
        }
        if content_type.len() > limits::MAX_CONTENT_TYPE_BYTES {
            return Err(format!("a content type is at most {} bytes", limits::MAX_CONTENT_TYPE_BYTES));
        }
        self.reads.put(name, persistent, body, content_type)
    }
}

impl coord::stream_read::Host for Sandbox {
    fn read(&mut self, stream_id: String, label: Option<String>, after: u64, limit: u32) -> Vec<StreamEntry> {
        match Sandbox::read(self, Read::Stream { stream_id, label, after, limit: limit.min(MAX_PAGE) }) {
            Answer::Entries(e) => e,
            _ => Vec::new(),
        }
    }

    fn latest(&mut self, stream_id: String, label: Option<String>) -> Option<StreamEntry> {
        match Sandbox::read(self, Read::Latest { stream_id, label }) {
            Answer::Entry(e) => e,
            _ => None,
        }
    }
}

impl coord::stream_write::Host for Sandbox {
    fn append(&mut self, stream_id: String, label: Option<String>, data: String) -> Result<u64, String> {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&data) {
            return Err(format!("the entry's data is not JSON: {e}"));
        }
        self.reads.append(stream_id, label, data)
    }
}

fn tasks(a: Answer) -> Vec<Task> {
    match a {
        Answer::Tasks(t) => t,
        _ => Vec::new(),
    }
}

impl coord::task_read::Host for Sandbox {
    fn get(&mut self, team: String, id: u64) -> Option<Task> {
        match self.read(Read::Task { team, id }) {
            Answer::Task(t) => t,
            _ => None,
        }
    }

    fn team_tasks(&mut self, team: String) -> Vec<Task> {
        tasks(self.read(Read::Tasks { team }))
    }

    fn owned_by(&mut self, team: String, owner: String, status: Option<TaskStatus>) -> Vec<Task> {
        tasks(self.read(Read::OwnedBy { team, owner, status: status.map(Status::of) }))
    }
}

impl coord::contract_read::Host for Sandbox {
    fn subtask(&mut self, contract: String, subtask_id: String) -> Option<String> {
        match self.read(Read::Subtask { contract, id: subtask_id }) {
            Answer::Json(j) => j,
            _ => None,
        }
    }

    fn assigned_to(&mut self, contract: String, agent: String) -> Vec<String> {
        match self.read(Read::AssignedTo { contract, agent }) {
            Answer::JsonList(l) => l,
            _ => Vec::new(),
        }
    }

    fn header(&mut self, contract: String) -> Option<String> {
        match self.read(Read::ContractHeader { contract }) {
            Answer::Json(j) => j,
            _ => None,
        }
    }
}

impl coord::log::Host for Sandbox {
    fn log(&mut self, level: coord::log::Level, mut message: String) {
        use coord::log::Level;
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        if message.len() > limits::MAX_LOG_LINE_BYTES {
            let mut cut = limits::MAX_LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        tracing::info!(target: "cairn::policy::guest", policy = %self.policy, level, "{message}");
        if self.logs.len() < limits::MAX_LOG_LINES {
            self.logs.push(LogLine { level, message });
        } else {
            self.logs_dropped += 1;
        }
    }
}

/// 0.1.0 imports: each calls its 0.2.0 twin.
mod v0_1 {
    use super::super::bindings::coord as now;
    use super::super::bindings::v0_1::cairn::coord0_1_0 as old;
    use super::super::runtime::Sandbox;
    use super::{StashDocument, StreamEntry, Task};

    impl old::stash_read::Host for Sandbox {
        fn get(&mut self, name: String, persistent: bool) -> Option<StashDocument> {
            now::stash_read::Host::get(self, name, persistent)
        }
    }

    impl old::stash_write::Host for Sandbox {
        fn put(&mut self, name: String, persistent: bool, body: Vec<u8>, content_type: String) -> Result<u64, String> {
            now::stash_write::Host::put(self, name, persistent, body, content_type)
        }
    }

    impl old::stream_read::Host for Sandbox {
        fn read(&mut self, stream_id: String, label: Option<String>, after: u64, limit: u32) -> Vec<StreamEntry> {
            now::stream_read::Host::read(self, stream_id, label, after, limit)
        }

        fn latest(&mut self, stream_id: String, label: Option<String>) -> Option<StreamEntry> {
            now::stream_read::Host::latest(self, stream_id, label)
        }
    }

    impl old::stream_write::Host for Sandbox {
        fn append(&mut self, stream_id: String, label: Option<String>, data: String) -> Result<u64, String> {
            now::stream_write::Host::append(self, stream_id, label, data)
        }
    }

    impl old::task_read::Host for Sandbox {
        fn get(&mut self, team: String, id: u64) -> Option<Task> {
            now::task_read::Host::get(self, team, id)
        }

        fn team_tasks(&mut self, team: String) -> Vec<Task> {
            now::task_read::Host::team_tasks(self, team)
        }
    }

    impl old::log::Host for Sandbox {
        fn log(&mut self, level: old::log::Level, message: String) {
            use now::log::Level as L;
            let level = match level {
                old::log::Level::Trace => L::Trace,
                old::log::Level::Debug => L::Debug,
                old::log::Level::Info => L::Info,
                old::log::Level::Warn => L::Warn,
                old::log::Level::Error => L::Error,
            };
            now::log::Host::log(self, level, message)
        }
    }
}
