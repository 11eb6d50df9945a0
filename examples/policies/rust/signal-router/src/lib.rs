//! Escalation policy: a HALT, or an ALERT in one of the `halt_on`
//! categories (by default SECURITY), halts the scope; every signal is sent
//! to the lead, with the category's entry from the `runbook` stash if set.

wit_bindgen::generate!({ path: "wit", world: "cairn:policy/escalation-policy", generate_all });

use cairn::coord::types::{Notification, SignalLevel};
use cairn::coord::{log, stash_read};
use serde_json::Value;

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn escalate(config: String, signal: Signal) -> Vec<Action> {
        let config: Value = serde_json::from_str(&config).unwrap_or_default();
        let halt_on: Vec<&str> = match config["halt_on"].as_array() {
            Some(categories) => categories.iter().filter_map(Value::as_str).collect(),
            None => vec!["SECURITY"],
        };
        let level = match signal.level {
            SignalLevel::Halt => "HALT",
            SignalLevel::Alert => "ALERT",
        };
        let halt = level == "HALT" || halt_on.contains(&signal.category.as_str());
        let advice = config["runbook"]
            .as_str()
            .and_then(|name| stash_read::get(name, true))
            .and_then(|doc| serde_json::from_slice::<Value>(&doc.body).ok())
            .and_then(|book| book[signal.category.as_str()].as_str().map(str::to_string));
        log::log(log::Level::Warn, &format!("{level} {} from {}: halt={halt}", signal.category, signal.reporter));
        let mut message = signal.issue.clone();
        if let Some(advice) = advice {
            message.push_str("\nRunbook: ");
            message.push_str(&advice);
        }
        let notify = Action::Notify(Notification {
            to: "lead".into(),
            summary: format!("{level} {} from {}", signal.category, signal.reporter),
            message,
        });
        if halt { vec![Action::HaltScope, notify] } else { vec![notify] }
    }
}
