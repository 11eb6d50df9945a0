//! Handoff validation, Cairn's bundled handoff policy.
//!
//! Checks the agent-teams protocol's HANDOFF when work is declared
//! complete: the required fields `produced` (not empty), `decisions`,
//! `uncertainty` (each item tagged `[HIGH]`, `[MEDIUM]` or `[LOW]`, or the
//! explicit "No areas of uncertainty flagged."), `integration` and
//! `open_questions`; `reasoning_chain` is recommended, a warning or a
//! violation by config. It takes the HANDOFF as JSON or in the protocol's
//! numbered text form, and applies the protocol's exemptions. The check is
//! in [`rules`].

pub mod rules;

wit_bindgen::generate!({ path: "../../wit", world: "cairn:policy/handoff-policy", generate_all });

use cairn::coord::log;
use serde_json::Value;

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn check(config: String, handoff: Handoff) -> Vec<Violation> {
        let config = match rules::Config::parse(&config) {
            Ok(c) => c,
            Err(e) => return vec![Violation { field: "config".into(), message: e }],
        };
        let metadata: Value = serde_json::from_str(&handoff.metadata).unwrap_or(Value::Null);
        let structured = handoff.structured.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok());
        let report = rules::check(&config, &handoff.subject, &metadata, structured.as_ref(), handoff.text.as_deref());
        for w in &report.warnings {
            log::log(log::Level::Warn, &format!("{}: {w}", handoff.agent));
        }
        report.violations.into_iter().map(|p| Violation { field: p.field, message: p.message }).collect()
    }
}
