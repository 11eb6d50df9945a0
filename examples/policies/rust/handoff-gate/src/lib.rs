//! Handoff policy: the structured HANDOFF must fill every field in
//! `require` (by default `produced` and `uncertainty`), and each `stash:NAME`
//! it says it produced must exist as a persistent stash.

wit_bindgen::generate!({ path: "wit", world: "cairn:policy/handoff-policy", generate_all });

use cairn::coord::{log, stash_read};
use serde_json::Value;

struct Policy;
export!(Policy);

fn violation(field: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation { field: field.into(), message: message.into() }
}

fn filled(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

impl Guest for Policy {
    fn check(config: String, handoff: Handoff) -> Vec<Violation> {
        let config: Value = match serde_json::from_str(&config) {
            Ok(c) => c,
            Err(e) => return vec![violation("config", format!("bad config: {e}"))],
        };
        let Some(structured) = handoff.structured.and_then(|s| serde_json::from_str::<Value>(&s).ok()) else {
            return vec![violation("handoff", "no structured HANDOFF; put one at metadata.handoff")];
        };
        let require: Vec<&str> = match config["require"].as_array() {
            Some(fields) => fields.iter().filter_map(Value::as_str).collect(),
            None => vec!["produced", "uncertainty"],
        };
        let mut found: Vec<Violation> = require
            .into_iter()
            .filter(|f| !filled(&structured[*f]))
            .map(|f| violation(f, format!("{f} is missing or empty; fill it in before handing off")))
            .collect();
        for (i, item) in structured["produced"].as_array().into_iter().flatten().enumerate() {
            let Some(name) = item.as_str().and_then(|s| s.strip_prefix("stash:")) else { continue };
            if stash_read::get(name, true).is_none() {
                found.push(violation(
                    format!("produced[{i}]"),
                    format!("no persistent stash {name}; write it before handing off"),
                ));
            }
        }
        log::log(
            log::Level::Info,
            &format!("{} hands off {}: {} problem(s)", handoff.agent, handoff.subject, found.len()),
        );
        found
    }
}
