//! Tries to return a 100 MB reason.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(_config: String, _claim: Claim) -> Verdict {
        Verdict::Deny("x".repeat(100 << 20))
    }
}
