//! A handoff policy that fails the way its config says (see `fail.rs`).
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/handoff-policy", generate_all });

mod fail;

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn check(config: String, _handoff: Handoff) -> Vec<Violation> {
        vec![Violation { field: "produced".into(), message: fail::fail(&config) }]
    }
}
