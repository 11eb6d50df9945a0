//! Never returns.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(_config: String, _claim: Claim) -> Verdict {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}
