//! Agent: triages questions. For every `question` entry on the streams it
//! follows, it appends a `triage` entry (the label is configurable) saying
//! whether the question is `urgent`, because it names one of the `urgent`
//! words (by default "outage" and "security"), or `normal`, and which words
//! matched. A question without `data.text` is logged and left alone.

wit_bindgen::generate!({ path: "wit", world: "cairn:policy/agent", generate_all });

use cairn::coord::{log, stream_write};
use serde_json::{Value, json};

struct Agent;
export!(Agent);

impl Guest for Agent {
    fn on_entry(config: String, stream_id: String, entry: StreamEntry) -> Result<(), String> {
        let config: Value = serde_json::from_str(&config).unwrap_or_default();
        if entry.label.as_deref() != Some("question") {
            return Ok(());
        }
        let urgent: Vec<&str> = match config["urgent"].as_array() {
            Some(words) => words.iter().filter_map(Value::as_str).collect(),
            None => vec!["outage", "security"],
        };
        let label = config["label"].as_str().unwrap_or("triage");
        let data: Value = serde_json::from_str(&entry.data).unwrap_or_default();
        let Some(text) = data["text"].as_str() else {
            log::log(log::Level::Warn, &format!("question #{} from {} has no data.text", entry.seq, entry.agent));
            return Ok(());
        };
        let lowered = text.to_lowercase();
        let matched: Vec<&str> = urgent.into_iter().filter(|w| lowered.contains(&w.to_lowercase())).collect();
        let priority = if matched.is_empty() { "normal" } else { "urgent" };
        log::log(log::Level::Info, &format!("question #{} from {} is {priority}", entry.seq, entry.agent));
        let triage = json!({"question": entry.seq, "asker": entry.agent, "priority": priority, "matched": matched});
        stream_write::append(&stream_id, Some(label), &triage.to_string())?;
        Ok(())
    }
}
