//! Reads the contract through the stash import: approves a claim on an
//! open subtask, denies otherwise. Logs what it saw.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

struct Policy;
export!(Policy);

use cairn::coord::types::ClaimTarget;
use cairn::coord::{log, stash_read};

impl Guest for Policy {
    fn decide(_config: String, claim: Claim) -> Verdict {
        let ClaimTarget::Subtask(target) = claim.target else {
            return Verdict::Deny("only contract subtasks are handled".into());
        };
        let Some(doc) = stash_read::get(&target.contract, true) else {
            return Verdict::Deny(format!("no contract {}", target.contract));
        };
        let body = String::from_utf8_lossy(&doc.body).into_owned();
        log::log(log::Level::Info, &format!("read {} version {} ({} bytes)", doc.name, doc.version, body.len()));
        let marker = format!("\"id\":\"{}\"", target.subtask_id);
        match body.split(&marker).nth(1) {
            Some(rest) if rest.split('}').next().unwrap_or_default().contains("\"status\":\"open\"") => {
                Verdict::Approve
            }
            Some(_) => Verdict::Deny(format!("subtask {} is not open", target.subtask_id)),
            None => Verdict::Deny(format!("no subtask {}", target.subtask_id)),
        }
    }
}
