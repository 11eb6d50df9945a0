//! Agent: triages questions. For every `question` entry on the streams it
//! follows, it appends a `triage` entry (the label is configurable) saying
//! whether the question is `urgent`, because it names one of the `urgent`
//! words (by default "outage" and "security"), or `normal`, and which words
//! matched, and adds the question to a persistent `open-questions` stash
//! (the name is configurable). An `answer` entry whose `data.question` is a
//! question's seq takes it off the stash. The question is `data.text`, or
//! `data.message` as the contracts pattern writes it; one without either is
//! logged and left alone.
//!
//! With `contract` in its config (the contract stash of the discussion
//! stream it follows), a question that names a `subtask_id` is routed: the
//! entry says `route_to`, the agent assigned to that subtask, or the
//! contract's creator when the subtask is unassigned or not in the contract.
//!
//! The entry, the stash and the agent's progress commit together, so the
//! stash never counts a question twice, even when a call is retried.

wit_bindgen::generate!({ path: "wit", world: "cairn:policy/agent", generate_all });

use cairn::coord::{log, stash_read, stash_write, stream_write};
use serde_json::{Value, json};

/// Questions the stash keeps at most; the oldest go first.
const MAX_OPEN: usize = 100;

struct Agent;
export!(Agent);

impl Guest for Agent {
    fn on_entry(config: String, stream_id: String, entry: StreamEntry) -> Result<(), String> {
        let config: Value = serde_json::from_str(&config).unwrap_or_default();
        let stash = config["stash"].as_str().unwrap_or("open-questions");
        let data: Value = serde_json::from_str(&entry.data).unwrap_or_default();
        match entry.label.as_deref() {
            Some("question") => {}
            Some("answer") => {
                if let Some(seq) = data["question"].as_u64() {
                    update(stash, |open| open.retain(|q| q["question"] != seq || q["stream_id"] != stream_id))?;
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let urgent: Vec<&str> = match config["urgent"].as_array() {
            Some(words) => words.iter().filter_map(Value::as_str).collect(),
            None => vec!["outage", "security"],
        };
        let label = config["label"].as_str().unwrap_or("triage");
        let Some(text) = data["text"].as_str().or(data["message"].as_str()) else {
            log::log(log::Level::Warn, &format!("question #{} from {} has no text", entry.seq, entry.agent));
            return Ok(());
        };
        let lowered = text.to_lowercase();
        let matched: Vec<&str> = urgent.into_iter().filter(|w| lowered.contains(&w.to_lowercase())).collect();
        let priority = if matched.is_empty() { "normal" } else { "urgent" };
        log::log(log::Level::Info, &format!("question #{} from {} is {priority}", entry.seq, entry.agent));
        let mut triage = json!({"question": entry.seq, "asker": entry.agent, "priority": priority, "matched": matched});
        let mut question = json!({"question": entry.seq, "stream_id": stream_id, "asker": entry.agent,
                                  "priority": priority, "text": text});
        if let (Some(contract), Some(subtask)) = (config["contract"].as_str(), data["subtask_id"].as_str()) {
            let to = route(contract, subtask);
            log::log(log::Level::Info, &format!("question #{} about {subtask} goes to {to:?}", entry.seq));
            for record in [&mut triage, &mut question] {
                record["subtask_id"] = json!(subtask);
                record["route_to"] = json!(to);
            }
        }
        stream_write::append(&stream_id, Some(label), &triage.to_string())?;
        update(stash, |open| {
            open.push(question);
            let over = open.len().saturating_sub(MAX_OPEN);
            open.drain(..over);
        })
    }
}

/// Who answers questions about `subtask`: its assigned agent, else the
/// contract's creator (its owner). None when the contract cannot be read.
fn route(contract: &str, subtask: &str) -> Option<String> {
    let doc = stash_read::get(contract, true)?;
    let body: Value = serde_json::from_slice(&doc.body).unwrap_or_default();
    let assigned = body["subtasks"]
        .as_array()
        .and_then(|s| s.iter().find(|t| t["id"] == subtask))
        .and_then(|t| t["assigned_agent"].as_str());
    Some(assigned.unwrap_or(&doc.owner).to_string())
}

/// Reads the stash's open questions, changes them, and writes them back.
fn update(stash: &str, change: impl FnOnce(&mut Vec<Value>)) -> Result<(), String> {
    let mut open: Vec<Value> = stash_read::get(stash, true)
        .and_then(|doc| serde_json::from_slice::<Value>(&doc.body).ok())
        .and_then(|v| v["open"].as_array().cloned())
        .unwrap_or_default();
    change(&mut open);
    let body = json!({ "open": open }).to_string();
    stash_write::put(stash, true, body.as_bytes(), "application/json")?;
    Ok(())
}
