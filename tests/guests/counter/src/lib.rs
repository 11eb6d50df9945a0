//! Counts its calls in a static and reports the count: with a fresh
//! instance per decision it must always say 1.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/claim-policy", generate_all });

use std::sync::atomic::{AtomicU64, Ordering};

struct Policy;
export!(Policy);

static CALLS: AtomicU64 = AtomicU64::new(0);

impl Guest for Policy {
    fn decide(_config: String, _claim: Claim) -> Verdict {
        let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        Verdict::Deny(format!("call {n}"))
    }
}
