// The policy, shared by `task-reader` and `v0-1-task-reader`: the same code
// built against two versions of the WIT.

struct Policy;
export!(Policy);

use cairn::coord::types::{ClaimTarget, TaskStatus};
use cairn::coord::{log, task_read};

impl Guest for Policy {
    fn decide(_config: String, claim: Claim) -> Verdict {
        let ClaimTarget::Task(target) = claim.target else {
            return Verdict::Deny("only team tasks are handled".into());
        };
        let Some(task) = task_read::get(&target.team, target.id) else {
            return Verdict::Deny(format!("task #{} is not visible", target.id));
        };
        let all = task_read::team_tasks(&target.team);
        log::log(
            log::Level::Info,
            &format!("task #{} of {} tasks, blocked by {:?}", task.id, all.len(), task.blocked_by),
        );
        let open: Vec<u64> = all
            .iter()
            .filter(|t| task.blocked_by.contains(&t.id) && !matches!(t.status, TaskStatus::Completed))
            .map(|t| t.id)
            .collect();
        if !open.is_empty() {
            return Verdict::Deny(format!("still blocked by {open:?}"));
        }
        if task.metadata.contains("\"needs_approval\":true") {
            return Verdict::Escalate("the task asks for the lead's approval".into());
        }
        Verdict::Approve
    }
}
