//! Approves claimants listed in its config's `allow`; escalates those in
//! `escalate`; denies the rest, naming the config it read.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(config: String, claim: Claim) -> Verdict {
        let listed = |key: &str| {
            config.split(&format!("\"{key}\"")).nth(1).is_some_and(|rest| {
                let list = rest.split(']').next().unwrap_or_default();
                list.contains(&format!("\"{}\"", claim.claimant))
            })
        };
        if listed("allow") {
            Verdict::Approve
        } else if listed("escalate") {
            Verdict::Escalate(format!("{} needs a human", claim.claimant))
        } else {
            Verdict::Deny(format!("{} is not allowed by config {config}", claim.claimant))
        }
    }
}
