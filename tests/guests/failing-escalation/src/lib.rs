//! An escalation policy that fails the way its config says (see `fail.rs`).
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/escalation-policy", generate_all });

use crate::cairn::coord::types::Notification;

#[path = "../../failing-handoff/src/fail.rs"]
mod fail;

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn escalate(config: String, signal: Signal) -> Vec<Action> {
        let message = fail::fail(&config);
        vec![Action::Notify(Notification { to: signal.reporter, summary: "failed".into(), message })]
    }
}
