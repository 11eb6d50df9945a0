//! Claim policy: deny an agent that already holds `max_open_claims`
//! subtasks of the contract; escalate a subtask whose `budget_usdc` is over
//! `max_budget_usdc`. Team tasks are approved here: the bundled
//! claim-approval keeps deciding beside this policy (blocked tasks, tasks
//! another member holds) unless its settings say `replaces_bundled`.

wit_bindgen::generate!({ path: "wit", world: "cairn:policy/claim-policy", generate_all });

use cairn::coord::types::ClaimTarget;
use cairn::coord::{log, stash_read};
use serde_json::Value;

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(config: String, claim: Claim) -> Verdict {
        let config: Value = match serde_json::from_str(&config) {
            Ok(c) => c,
            Err(e) => return Verdict::Deny(format!("bad config: {e}")),
        };
        let ClaimTarget::Subtask(target) = claim.target else { return Verdict::Approve };
        let Some(doc) = stash_read::get(&target.contract, true) else {
            return Verdict::Deny(format!("no contract {}", target.contract));
        };
        let contract: Value = serde_json::from_slice(&doc.body).unwrap_or_default();
        let subtasks = contract["subtasks"].as_array().map(Vec::as_slice).unwrap_or_default();
        let Some(subtask) = subtasks.iter().find(|s| s["id"] == target.subtask_id.as_str()) else {
            return Verdict::Deny(format!("no subtask {} in {}", target.subtask_id, target.contract));
        };
        let budget = subtask["budget_usdc"].as_f64().unwrap_or(0.0);
        let held = subtasks
            .iter()
            .filter(|s| s["status"] == "claimed" && s["assigned_agent"] == claim.claimant.as_str())
            .count();
        log::log(
            log::Level::Info,
            &format!("{} wants {} ({budget} USDC) and holds {held}", claim.claimant, target.subtask_id),
        );
        if let Some(limit) = config["max_open_claims"].as_u64()
            && held as u64 >= limit
        {
            return Verdict::Deny(format!("{} already holds {held} subtasks; the limit is {limit}", claim.claimant));
        }
        match config["max_budget_usdc"].as_f64() {
            Some(ceiling) if budget > ceiling => {
                Verdict::Escalate(format!("{budget} USDC is over {ceiling}; the creator decides"))
            }
            _ => Verdict::Approve,
        }
    }
}
