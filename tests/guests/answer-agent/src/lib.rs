//! An agent: answers each `question` entry with an `answer` entry on the
//! same stream. A question whose text is `fail` gets an `err` after the
//! agent has appended (so the append must not land), and `trap` traps.
//! Config `{"spin_ms": N}` makes each call take N ms; `{"forgive": 1}`
//! answers `fail` like any question.
wit_bindgen::generate!({ path: "../../../wit", world: "cairn:policy/agent", generate_all });

use cairn::coord::stream_write;

struct Agent;
export!(Agent);

impl Guest for Agent {
    fn on_entry(config: String, stream_id: String, entry: StreamEntry) -> Result<(), String> {
        if let Some(ms) = number(&config, "spin_ms") {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            while std::time::Instant::now() < until {}
        }
        let text = field(&entry.data, "text").unwrap_or_default();
        let answer = format!("{{\"answer\":\"{}\",\"question\":{}}}", text.to_uppercase(), entry.seq);
        let seq = stream_write::append(&stream_id, Some("answer"), &answer)?;
        let forgive = number(&config, "forgive").is_some_and(|n| n > 0);
        match text.as_str() {
            "fail" if forgive => Ok(()),
            "fail" => Err(format!("refusing question {} on purpose (its answer would be #{seq})", entry.seq)),
            "trap" => panic!("trapping on question {}", entry.seq),
            _ => Ok(()),
        }
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
