//! A handoff policy: `produced` must be present in the structured HANDOFF.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/handoff-policy", generate_all });

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn check(_config: String, handoff: Handoff) -> Vec<Violation> {
        match handoff.structured {
            Some(h) if h.contains("\"produced\"") => Vec::new(),
            _ => vec![Violation { field: "produced".into(), message: "list what you produced".into() }],
        }
    }
}
