//! Claim approval, Cairn's bundled claim policy.
//!
//! Decides claims on team tasks and on contract subtasks from its config
//! (see `config.schema.json`): allow and deny lists with globs, a ceiling
//! on open claims per agent, budgets, subtasks that need the creator's
//! approval (escalated), the contract's deadline, and blockers. It reads
//! contracts through `contract-read` and team tasks through `task-read`,
//! by their parts: the target, its blockers and the claimant's own (through
//! `assigned-to` and `owned-by`), so a claim costs about the same in a team
//! or contract of ten or ten thousand. The decision itself is in [`rules`].

pub mod rules;

wit_bindgen::generate!({ path: "../../wit", world: "cairn:policy/claim-policy", generate_all });

use cairn::coord::types::{ClaimTarget, TaskStatus};
use cairn::coord::{contract_read, log, task_read};
use rules::{Config, Decision, Facts, Target};
use serde_json::Value;

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(config: String, claim: Claim) -> Verdict {
        let config = match Config::parse(&config) {
            Ok(c) => c,
            Err(e) => return Verdict::Deny(e),
        };
        let request: Value = serde_json::from_str(&claim.request).unwrap_or(Value::Null);
        let mut facts = Facts {
            claimant: claim.claimant.clone(),
            now: now(),
            requested_budget: request.get("budget_usdc").and_then(Value::as_f64),
            ..Facts::default()
        };
        // The claimant's open claims matter only under a ceiling; counting
        // them costs a read of everything the claimant holds.
        let count = config.max_open_claims.is_some();
        match &claim.target {
            ClaimTarget::Task(t) => task_facts(&mut facts, &t.team, t.id, count),
            ClaimTarget::Subtask(s) => subtask_facts(&mut facts, &s.contract, &s.subtask_id, count),
        }
        let what = facts.target.as_ref().map_or("something that does not exist", |t| t.label.as_str());
        let held = if count { format!(", holding {} open claim(s)", facts.open_claims) } else { String::new() };
        log::log(log::Level::Debug, &format!("{} claims {what}{held}", facts.claimant));
        match rules::decide(&config, &facts) {
            Decision::Approve => Verdict::Approve,
            Decision::Deny(r) => Verdict::Deny(r),
            Decision::Escalate(r) => Verdict::Escalate(r),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn task_facts(facts: &mut Facts, team: &str, id: u64, count: bool) {
    let Some(task) = task_read::get(team, id) else { return };
    let metadata: Value = serde_json::from_str(&task.metadata).unwrap_or(Value::Null);
    // The claimant's own tasks and the blockers, one by one: the cost of a
    // claim does not grow with the team.
    if count {
        facts.open_claims = task_read::owned_by(team, &facts.claimant, Some(TaskStatus::InProgress))
            .iter()
            .filter(|t| t.id != id)
            .count() as u32;
    }
    facts.deadline = metadata.get("deadline").and_then(Value::as_str).and_then(rules::parse_time);
    facts.target = Some(Target {
        label: format!("task #{id}"),
        id: id.to_string(),
        open: !matches!(task.status, TaskStatus::Completed),
        holder: task.owner.clone(),
        budget_usdc: metadata.get("budget_usdc").and_then(Value::as_f64),
        open_blockers: task
            .blocked_by
            .iter()
            .filter(|b| task_read::get(team, **b).is_some_and(|t| !matches!(t.status, TaskStatus::Completed)))
            .map(|b| format!("#{b}"))
            .collect(),
        requires_approval: metadata.get("needs_approval").and_then(Value::as_bool).unwrap_or(false),
    });
}

/// A subtask's JSON object from `contract-read`.
fn subtask(contract: &str, id: &str) -> Option<Value> {
    contract_read::subtask(contract, id).and_then(|s| serde_json::from_str(&s).ok())
}

fn status(s: &Value) -> &str {
    s.get("status").and_then(Value::as_str).unwrap_or("open")
}

/// A contract's facts, read by their parts: the target subtask, its
/// blockers and the claimant's own, never the whole document.
fn subtask_facts(facts: &mut Facts, contract: &str, subtask_id: &str, count: bool) {
    let Some(header) = contract_read::header(contract) else { return };
    let header: Value = serde_json::from_str(&header).unwrap_or(Value::Null);
    facts.deadline = header.get("deadline").and_then(Value::as_str).and_then(rules::parse_time);
    // Open claims: subtasks assigned to the claimant in the contract. The
    // host applies an approval in the same transaction as its decision, so
    // the contract is the whole truth.
    if count {
        let mut held: Vec<String> = contract_read::assigned_to(contract, &facts.claimant)
            .iter()
            .filter_map(|s| serde_json::from_str::<Value>(s).ok())
            .filter(|s| status(s) == "claimed")
            .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        held.sort();
        held.dedup();
        held.retain(|id| id != subtask_id);
        facts.open_claims = held.len() as u32;
    }
    let Some(sub) = subtask(contract, subtask_id) else { return };
    facts.target = Some(Target {
        label: format!("subtask {subtask_id}"),
        id: subtask_id.to_string(),
        open: status(&sub) == "open",
        holder: sub.get("assigned_agent").and_then(Value::as_str).map(str::to_string),
        budget_usdc: sub.get("budget_usdc").and_then(Value::as_f64),
        open_blockers: sub
            .get("blocked_by")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|b| subtask(contract, b).is_none_or(|s| status(&s) != "completed"))
            .map(str::to_string)
            .collect(),
        requires_approval: sub.get("requires_approval").and_then(Value::as_bool).unwrap_or(false),
    });
}
