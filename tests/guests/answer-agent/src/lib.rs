//! An agent: answers each `question` entry with an `answer` entry on the
//! same stream. A question whose text is `fail` gets an `err` after the
//! agent has appended (so the append must not land), and `trap` traps.
//! Config `{"spin_ms": N}` makes each call take N ms; `{"forgive": 1}`
//! answers `fail` like any question; `{"tally": "NAME"}` also counts the
//! questions in the ephemeral stash NAME (`{"count": N}`), checking that it
//! reads its own write back; `{"claim_as": "AGENT"}` answers a question
//! naming a `subtask` with a `claim` entry for AGENT instead. Hostile
//! ones: `{"trap": 1}` traps on every entry, `{"hog_mb": N}` fills N MiB
//! first, `{"answer_to": "st_..."}` appends its answers there.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/agent", generate_all });

use cairn::coord::{stash_read, stash_write, stream_read, stream_write};

struct Agent;
export!(Agent);

impl Guest for Agent {
    fn on_entry(config: String, stream_id: String, entry: StreamEntry) -> Result<(), String> {
        if let Some(ms) = number(&config, "spin_ms") {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            while std::time::Instant::now() < until {}
        }
        if number(&config, "trap").is_some_and(|n| n > 0) {
            panic!("trapping on every entry, as configured");
        }
        if let Some(mib) = number(&config, "hog_mb") {
            let hog = vec![1u8; (mib as usize) << 20];
            std::hint::black_box(&hog);
        }
        let text = field(&entry.data, "text").unwrap_or_default();
        if let (Some(agent), Some(subtask)) = (field(&config, "claim_as"), field(&entry.data, "subtask")) {
            let claim = format!("{{\"type\":\"claim\",\"subtask_id\":\"{subtask}\",\"agent_name\":\"{agent}\"}}");
            stream_write::append(&stream_id, Some("claim"), &claim)?;
            return Ok(());
        }
        if let Some(stash) = field(&config, "tally") {
            tally(&stash)?;
        }
        let answer = format!("{{\"answer\":\"{}\",\"question\":{}}}", text.to_uppercase(), entry.seq);
        let to = field(&config, "answer_to").unwrap_or_else(|| stream_id.clone());
        let seq = stream_write::append(&to, Some("answer"), &answer)?;
        // Its own append reads back, with the seq it was told.
        match stream_read::latest(&to, Some("answer")) {
            Some(e) if e.seq == seq && e.data == answer => {}
            other => return Err(format!("appended #{seq}, but the latest answer reads {:?}", other.map(|e| e.seq))),
        }
        let forgive = number(&config, "forgive").is_some_and(|n| n > 0);
        match text.as_str() {
            "fail" if forgive => Ok(()),
            "fail" => Err(format!("refusing question {} on purpose (its answer would be #{seq})", entry.seq)),
            "trap" => panic!("trapping on question {}", entry.seq),
            _ => Ok(()),
        }
    }
}

/// Adds one to the count in the ephemeral stash `name`, and reads it back.
fn tally(name: &str) -> Result<(), String> {
    let before = stash_read::get(name, false);
    let count = before.as_ref().and_then(|d| number(&String::from_utf8_lossy(&d.body), "count")).unwrap_or(0) + 1;
    let version = stash_write::put(name, false, format!("{{\"count\":{count}}}").as_bytes(), "application/json")?;
    match stash_read::get(name, false) {
        Some(d) if d.version == version && number(&String::from_utf8_lossy(&d.body), "count") == Some(count) => Ok(()),
        other => Err(format!("put {name} at version {version}, but it reads {:?}", other.map(|d| d.version))),
    }
}

/// A string field of a flat JSON object, without a JSON library.
fn field(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\""))?;
    let rest = &json[at + key.len() + 2..];
    let start = rest.find('"')? + 1;
    let end = rest[start..].find('"')? + start;
    Some(rest[start..end].to_string())
}

/// A number field of a flat JSON object.
fn number(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\""))?;
    let rest = json[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}
