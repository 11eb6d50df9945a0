wit_bindgen::generate!({ path: "../../../../wit", world: "cairn:policy/claim-policy", generate_all });

use cairn::coord::types::ClaimTarget;
use cairn::coord::{log, stash_read};

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(config: String, claim: Claim) -> Verdict {
        let config: serde_json::Value = match serde_json::from_str(&config) {
            Ok(c) => c,
            Err(e) => return Verdict::Deny(format!("bad config: {e}")),
        };
        let ceiling = config["max_budget_usdc"].as_f64().unwrap_or(f64::INFINITY);
        let ClaimTarget::Subtask(target) = claim.target else { return Verdict::Approve };
        let Some(doc) = stash_read::get(&target.contract, true) else {
            return Verdict::Deny(format!("no contract {}", target.contract));
        };
        let contract: serde_json::Value = serde_json::from_slice(&doc.body).unwrap_or_default();
        let budget = contract["subtasks"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == target.subtask_id.as_str()))
            .and_then(|s| s["budget_usdc"].as_f64())
            .unwrap_or(0.0);
        log::log(log::Level::Info, &format!("{} wants {} ({budget} USDC)", claim.claimant, target.subtask_id));
        if budget > ceiling {
            Verdict::Escalate(format!("{budget} USDC is over {ceiling}; the creator decides"))
        } else {
            Verdict::Approve
        }
    }
}
