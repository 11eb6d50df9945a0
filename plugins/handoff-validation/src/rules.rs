//! The HANDOFF check of the agent-teams protocol, over JSON and text, so
//! that it is tested natively.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The policy's config (`config.schema.json` documents it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What a missing `reasoning_chain` is: a warning (logged) or a violation.
    #[serde(default)]
    pub reasoning_chain: Strictness,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strictness {
    #[default]
    Warn,
    Require,
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).map_err(|e| format!("bad config: {e}"))
    }
}

/// One problem: the field at fault, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// What the check found: violations refuse the HANDOFF, warnings do not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub violations: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Report {
    fn violate(&mut self, field: &str, message: impl Into<String>) {
        self.violations.push(Problem { field: field.into(), message: message.into() });
    }
}

pub const NO_UNCERTAINTY: &str = "No areas of uncertainty flagged.";
const PRIORITIES: [&str; 3] = ["[HIGH]", "[MEDIUM]", "[LOW]"];
const EXEMPT_PREFIXES: [&str; 5] = ["BLOCKER:", "HALT:", "ALERT:", "[HALT]", "[ALERT]"];

/// The protocol's exemptions: skipped work, blocker and algedonic tasks, and
/// subjects that mark one.
pub fn exempt(subject: &str, metadata: &Value) -> bool {
    let skipped = metadata.get("skipped").is_some_and(|s| s.as_bool().unwrap_or(!s.is_null()));
    let kind = metadata.get("type").and_then(Value::as_str);
    skipped
        || matches!(kind, Some("blocker" | "algedonic"))
        || EXEMPT_PREFIXES.iter().any(|p| subject.trim_start().starts_with(p))
}

/// Checks a HANDOFF given as JSON (`structured`) or in the protocol's text
/// form (`text`); with neither, that is the violation.
pub fn check(
    config: &Config,
    subject: &str,
    metadata: &Value,
    structured: Option<&Value>,
    text: Option<&str>,
) -> Report {
    let mut r = Report::default();
    if exempt(subject, metadata) {
        return r;
    }
    let text = match structured {
        Some(Value::String(t)) => Some(t.as_str()),
        _ => text,
    };
    match (structured, text) {
        (Some(Value::Object(h)), _) => check_structured(config, h, &mut r),
        (Some(Value::String(_)), Some(t)) | (None, Some(t)) => match sections(t) {
            Some(h) => check_structured(config, &h, &mut r),
            None => r.violate(
                "handoff",
                "no HANDOFF found in the text: end it with \"HANDOFF:\" and the numbered sections 1. Produced, \
                 2. Key decisions, 3. Reasoning chain, 4. Areas of uncertainty, 5. Integration points, 6. Open questions",
            ),
        },
        (Some(_), _) => r.violate("handoff", "the HANDOFF must be an object or the protocol's text form"),
        (None, None) => r.violate(
            "handoff",
            "no HANDOFF: give produced, decisions, uncertainty, integration and open_questions \
             (in metadata.handoff, or as the protocol's numbered text)",
        ),
    }
    r
}

fn check_structured(config: &Config, h: &Map<String, Value>, r: &mut Report) {
    let present = |k: &str| h.get(k).is_some_and(|x| !x.is_null());
    match h.get("produced") {
        Some(Value::Array(a)) if !a.is_empty() => {}
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(_) => r.violate("produced", "produced is empty: list the files or artifacts you made"),
        None => r.violate("produced", "produced is missing: list the files or artifacts you made"),
    }
    if !present("decisions") {
        r.violate("decisions", "decisions is missing: give the key decisions with their rationale");
    }
    match h.get("uncertainty") {
        None | Some(Value::Null) => r.violate(
            "uncertainty",
            format!("uncertainty is missing: list items tagged [HIGH], [MEDIUM] or [LOW], or say \"{NO_UNCERTAINTY}\""),
        ),
        Some(Value::String(s)) if s.trim() == NO_UNCERTAINTY => {}
        Some(Value::Array(items)) if items.is_empty() => {
            r.violate("uncertainty", format!("uncertainty is empty: if there is none, say so: \"{NO_UNCERTAINTY}\""))
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let text = item.as_str().unwrap_or_default().trim().trim_start_matches("- ");
                if (text == NO_UNCERTAINTY && items.len() == 1) || PRIORITIES.iter().any(|p| text.starts_with(p)) {
                    continue;
                }
                r.violate(&format!("uncertainty[{i}]"), "start each item with its priority: [HIGH], [MEDIUM] or [LOW]");
            }
        }
        Some(_) => r.violate("uncertainty", "uncertainty must be a list of items tagged [HIGH], [MEDIUM] or [LOW]"),
    }
    if !present("integration") {
        r.violate("integration", "integration is missing: name the other components this touches");
    }
    if !present("open_questions") {
        r.violate("open_questions", "open_questions is missing: list unresolved items, or give an empty list");
    }
    if !present("reasoning_chain") {
        let why = "reasoning_chain is missing: say how the key decisions connect (\"X because Y, which required Z\")";
        match config.reasoning_chain {
            Strictness::Require => r.violate("reasoning_chain", why),
            Strictness::Warn => r.warnings.push(why.into()),
        }
    }
}

/// The protocol's text form, after a `HANDOFF:` line (or from the top):
/// `1. Produced: ...` through `6. Open questions: ...`, each section running
/// to the next. Returns the sections as a structured HANDOFF; None if no
/// numbered section is found at all.
pub fn sections(text: &str) -> Option<Map<String, Value>> {
    let body = match text.find("HANDOFF:") {
        Some(i) => &text[i + "HANDOFF:".len()..],
        None => text,
    };
    let mut out: Map<String, Value> = Map::new();
    let mut current: Option<&str> = None;
    let mut lines: Vec<String> = Vec::new();
    let flush = |key: Option<&str>, lines: &mut Vec<String>, out: &mut Map<String, Value>| {
        if let Some(k) = key {
            let items: Vec<Value> =
                lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).map(|l| Value::String(l.into())).collect();
            let value = if k == "uncertainty" && items.len() == 1 && items[0] == NO_UNCERTAINTY {
                Value::String(NO_UNCERTAINTY.into())
            } else if items.is_empty() {
                Value::Null
            } else {
                Value::Array(items)
            };
            out.insert(k.into(), value);
        }
        lines.clear();
    };
    for line in body.lines() {
        match heading(line) {
            Some((key, rest)) => {
                flush(current, &mut lines, &mut out);
                current = Some(key);
                lines.push(rest.to_string());
            }
            None if current.is_some() => lines.push(line.trim_start_matches(['-', '*', ' ']).to_string()),
            None => {}
        }
    }
    flush(current, &mut lines, &mut out);
    // "None" is an explicit empty answer in the text form.
    for v in out.values_mut() {
        if let Value::Array(items) = v
            && items.len() == 1
            && items[0].as_str().is_some_and(|s| s.eq_ignore_ascii_case("none"))
        {
            *v = Value::Array(Vec::new());
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

/// `2. Key decisions: ...` → (`decisions`, `...`).
fn heading(line: &str) -> Option<(&'static str, &str)> {
    let l = line.trim_start();
    let digits = l.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    let rest = l[digits..].strip_prefix('.')?.trim_start();
    let (title, after) = rest.split_once(':').unwrap_or((rest, ""));
    let title = title.to_lowercase();
    let key = if title.starts_with("produced") {
        "produced"
    } else if title.contains("decision") {
        "decisions"
    } else if title.contains("reasoning") {
        "reasoning_chain"
    } else if title.contains("uncertaint") {
        "uncertainty"
    } else if title.contains("integration") {
        "integration"
    } else if title.contains("open question") {
        "open_questions"
    } else {
        return None;
    };
    Some((key, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"produced": ["src/a.rs"], "decisions": ["x because y"], "reasoning_chain": "x, so y",
               "uncertainty": ["[HIGH] parser edge cases"], "integration": ["api"], "open_questions": []})
    }

    fn fields(r: &Report) -> Vec<&str> {
        r.violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn structured(h: Value) -> Report {
        check(&Config::default(), "Build", &json!({}), Some(&h), None)
    }

    #[test]
    fn a_complete_handoff_passes() {
        assert_eq!(structured(good()), Report::default());
        let mut h = good();
        h["uncertainty"] = json!(NO_UNCERTAINTY);
        assert!(structured(h).violations.is_empty());
    }

    #[test]
    fn each_missing_or_bad_field_is_named() {
        let mut h = good();
        h["produced"] = json!([]);
        h.as_object_mut().unwrap().remove("decisions");
        h["uncertainty"] = json!(["[HIGH] ok", "untagged"]);
        assert_eq!(fields(&structured(h)), ["produced", "decisions", "uncertainty[1]"]);
        let r = check(&Config::default(), "Build", &json!({}), None, None);
        assert_eq!(fields(&r), ["handoff"]);
        assert_eq!(fields(&structured(json!({"produced": ["x"], "uncertainty": []}))).len(), 4);
    }

    #[test]
    fn reasoning_chain_warns_or_violates_by_config() {
        let mut h = good();
        h.as_object_mut().unwrap().remove("reasoning_chain");
        let warned = structured(h.clone());
        assert!(warned.violations.is_empty() && warned.warnings.len() == 1);
        let strict = Config::parse(r#"{"reasoning_chain": "require"}"#).unwrap();
        assert_eq!(fields(&check(&strict, "Build", &json!({}), Some(&h), None)), ["reasoning_chain"]);
        assert!(Config::parse(r#"{"reasoning_chain": "maybe"}"#).is_err());
    }

    #[test]
    fn the_protocols_exemptions_apply() {
        for subject in ["BLOCKER: no database", "[HALT]: SECURITY", "ALERT: scope"] {
            assert!(check(&Config::default(), subject, &json!({}), None, None).violations.is_empty());
        }
        for metadata in [json!({"skipped": true}), json!({"type": "algedonic"}), json!({"type": "blocker"})] {
            assert!(check(&Config::default(), "x", &metadata, None, None).violations.is_empty());
        }
    }

    #[test]
    fn the_text_form_is_read_by_its_numbered_sections() {
        let text = "Done with the parser.\n\nHANDOFF:\n1. Produced: src/parser.rs, tests/parser.rs\n\
            2. Key decisions: recursive descent, because the grammar is LL(1)\n\
            3. Reasoning chain: LL(1), so no backtracking\n\
            4. Areas of uncertainty (PRIORITIZED):\n- [HIGH] error recovery — test unterminated strings\n- [LOW] speed\n\
            5. Integration points: lexer\n6. Open questions: none\n";
        let r = check(&Config::default(), "Build", &json!({}), None, Some(text));
        assert_eq!(r, Report::default(), "{:?}", sections(text));
        let missing = "HANDOFF:\n1. Produced: a.rs\n4. Areas of uncertainty:\n- risky\n6. Open questions: none";
        let r = check(&Config::default(), "Build", &json!({}), None, Some(missing));
        assert_eq!(fields(&r), ["decisions", "uncertainty[0]", "integration"]);
        let none = check(&Config::default(), "Build", &json!({}), None, Some("All done, trust me."));
        assert_eq!(fields(&none), ["handoff"]);
        let flagged = "HANDOFF:\n1. Produced: a\n2. Key decisions: b\n3. Reasoning chain: c\n\
            4. Areas of uncertainty: No areas of uncertainty flagged.\n5. Integration points: d\n6. Open questions: none";
        assert!(check(&Config::default(), "Build", &json!({}), None, Some(flagged)).violations.is_empty());
    }
}
