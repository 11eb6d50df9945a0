//! Works for as long as its config says (`{"ms": N}`, by the monotonic
//! clock), then approves: a decision that is surely under way while a test
//! swaps the policy or stops the host.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

use std::time::{Duration, Instant};

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn decide(config: String, _claim: Claim) -> Verdict {
        let ms: String =
            config.split("\"ms\":").nth(1).unwrap_or("0").trim().chars().take_while(char::is_ascii_digit).collect();
        let until = Instant::now() + Duration::from_millis(ms.parse().unwrap_or(0));
        while Instant::now() < until {
            std::hint::black_box(());
        }
        Verdict::Approve
    }
}
