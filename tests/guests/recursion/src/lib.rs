//! Recurses without end (not in tail position, so it cannot become a loop).
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

struct Policy;
export!(Policy);

#[allow(unconditional_recursion)] // the point of this guest
fn deeper(n: u64) -> u64 {
    let below = deeper(std::hint::black_box(n + 1));
    std::hint::black_box(below) + n
}

impl Guest for Policy {
    fn decide(_config: String, _claim: Claim) -> Verdict {
        Verdict::Deny(deeper(0).to_string())
    }
}
