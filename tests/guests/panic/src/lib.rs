//! Panics.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(_config: String, claim: Claim) -> Verdict {
        panic!("policy bug while deciding for {}", claim.claimant)
    }
}
