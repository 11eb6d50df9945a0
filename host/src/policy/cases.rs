//! `cairn policy test`: run a policy against a file of cases, offline, in
//! the spirit of `opa test`. Each case gives an input, optionally a config
//! and the state the policy's imports see, and what to expect.
//!
//! ```json
//! {"cases": [{
//!   "name": "approves an open subtask",
//!   "config": {"max_open_claims": 2},
//!   "input": {"claimant": "research-bot", "target": {"subtask": {"contract": "c", "subtask_id": "research"}}},
//!   "state": {"stashes": [{"name": "c", "persistent": true, "body": {"objective": "o"}}]},
//!   "expect": {"verdict": "approve"}
//! }]}
//! ```
//!
//! `expect` takes `verdict` (with `reason_contains`) for claims,
//! `violations` (the fields, in any order) for handoffs, `actions` (their
//! types, in order) for escalations, `appends` and `puts` (in order: each a
//! label or stash name, or an object whose given fields must match, `data`
//! and `body` holding at least the keys given) for agents, whose input is
//! `{"stream_id", "entry": {"seq", "label", "data", "agent"}, "run_as"}`,
//! and `error_contains` for decisions that must fail closed.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::view::{Reads, View};
use super::{Fixture, Input, Limits, Loaded, Runtime};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub config: Value,
    pub input: Value,
    #[serde(default)]
    pub state: Fixture,
    #[serde(default)]
    pub limits: Limits,
    pub expect: Expect,
}

impl CaseFile {
    /// Refuses a file that could not fail: no cases, a case that expects
    /// nothing, or two cases of one name (a report could not tell them apart).
    pub fn check(&self) -> Result<(), String> {
        if self.cases.is_empty() {
            return Err("it has no cases; add at least one under \"cases\"".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for case in &self.cases {
            if !names.insert(case.name.as_str()) {
                return Err(format!("two cases are called {:?}; give each its own name", case.name));
            }
            if case.expect.is_empty() {
                return Err(format!(
                    "case {:?} expects nothing, so it cannot fail; give its \"expect\" a verdict, \
                     reason_contains, violations, actions, appends, puts or error_contains",
                    case.name
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub verdict: Option<String>,
    pub reason_contains: Option<String>,
    pub violations: Option<Vec<String>>,
    pub actions: Option<Vec<String>>,
    /// An agent's appends, in order.
    pub appends: Option<Vec<Want>>,
    /// An agent's stash writes, in order.
    pub puts: Option<Vec<Want>>,
    pub error_contains: Option<String>,
}

/// One expected write: a label (or stash name) alone, or the fields it must
/// have. `data` and `body` match when they hold at least the keys given.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Want {
    Named(String),
    Fields(serde_json::Map<String, Value>),
}

impl Want {
    /// Why `got` is not this write; None when it is.
    fn differs(&self, key: &str, got: &Value) -> Option<String> {
        match self {
            Self::Named(name) => (got[key] != Value::String(name.clone())).then(|| format!("{key} {name:?}")),
            Self::Fields(fields) => fields
                .iter()
                .find_map(|(field, want)| (!holds(&got[field.as_str()], want)).then(|| format!("{field} {want}"))),
        }
    }
}

/// True when `got` is `want`, or, for objects, has each of `want`'s keys
/// with a value that holds its own.
fn holds(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(got), Value::Object(want)) => want.iter().all(|(k, w)| got.get(k).is_some_and(|g| holds(g, w))),
        _ => got == want,
    }
}

/// Compares a list of writes in order; says the first that differs.
fn writes_differ(what: &str, key: &str, want: &[Want], got: &Value) -> Option<String> {
    let got = got.as_array().map(Vec::as_slice).unwrap_or_default();
    if got.len() != want.len() {
        return Some(format!("expected {} {what}, got {}", want.len(), got.len()));
    }
    want.iter().zip(got).enumerate().find_map(|(i, (w, g))| {
        w.differs(key, g).map(|why| format!("expected {what} #{} to have {why}, got {g}", i + 1))
    })
}

impl Expect {
    fn is_empty(&self) -> bool {
        let Self { verdict, reason_contains, violations, actions, appends, puts, error_contains } = self;
        verdict.is_none()
            && reason_contains.is_none()
            && violations.is_none()
            && actions.is_none()
            && appends.is_none()
            && puts.is_none()
            && error_contains.is_none()
    }
}

#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// The decision as JSON (`{"error": ...}` when it failed).
    pub actual: Value,
    /// Why the case failed; None when it passed.
    pub failure: Option<String>,
}

/// Runs every case; a case whose input does not parse fails on its own.
pub fn run(runtime: &Runtime, loaded: &Loaded, policy: &str, file: CaseFile) -> Vec<CaseResult> {
    file.cases.into_iter().map(|case| run_one(runtime, loaded, policy, case)).collect()
}

fn run_one(runtime: &Runtime, loaded: &Loaded, policy: &str, case: Case) -> CaseResult {
    let config = if case.config.is_null() { "{}".to_string() } else { case.config.to_string() };
    let state: Arc<dyn View> = Arc::new(case.state);
    let actual = if loaded.hook == super::Hook::Agent {
        call_agent(runtime, loaded, policy, &case.limits, &config, case.input, state)
    } else {
        decide(runtime, loaded, policy, &case.limits, &config, case.input, state)
    };
    let actual = match actual {
        Ok(v) => v,
        Err(bad_input) => {
            return CaseResult {
                name: case.name,
                actual: Value::Null,
                failure: Some(format!("bad input: {bad_input}")),
            };
        }
    };
    let failure = compare(&case.expect, &actual);
    CaseResult { name: case.name, actual, failure }
}

/// One decision as JSON (`{"error": ...}` when it failed closed), or why
/// the input is not one this hook takes.
pub fn decide(
    runtime: &Runtime,
    loaded: &Loaded,
    policy: &str,
    limits: &Limits,
    config: &str,
    input: Value,
    state: Arc<dyn View>,
) -> Result<Value, String> {
    let input = Input::parse(loaded.hook, input)?;
    let reads = Reads::new(state, Arc::default());
    let e = super::evaluate(runtime, loaded, policy, limits, super::Isolation::Fresh, config, &input, reads);
    Ok(match e.result {
        Ok(outcome) => outcome.to_json(),
        Err(error) => failure(&error, &e.stderr),
    })
}

/// A failed run as a case sees it, and as the server tells the agent: the
/// error's first line and the guest's last word (its panic message or
/// exception), which cases may expect.
fn failure(error: &str, stderr: &str) -> Value {
    serde_json::json!({ "error": super::decide::what_failed(error, stderr) })
}

/// An agent case's input: the entry, and the stream it is on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentInput {
    stream_id: String,
    entry: EntryInput,
    /// The agent the call acts as (its binding's `run_as`), for what it
    /// reads back of its own writes.
    #[serde(default = "case_agent")]
    run_as: String,
}

fn case_agent() -> String {
    "case-agent".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryInput {
    seq: u64,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    data: Value,
    agent: String,
    #[serde(default = "case_time")]
    created_at: String,
}

fn case_time() -> String {
    "2026-01-01T00:00:00.000Z".into()
}

/// One agent call as JSON: `{"appends": [{"stream_id", "label", "data"}],
/// "puts": [{"name", "persistent", "version", "body"}]}` (planned, nothing
/// is written), or `{"error": ...}` when it failed.
pub fn call_agent(
    runtime: &Runtime,
    loaded: &Loaded,
    policy: &str,
    limits: &Limits,
    config: &str,
    input: Value,
    state: Arc<dyn View>,
) -> Result<Value, String> {
    let input: AgentInput = serde_json::from_value(input).map_err(|e| e.to_string())?;
    let e = input.entry;
    let entry = super::view::StreamEntry {
        seq: e.seq,
        label: e.label,
        data: e.data.to_string(),
        agent: e.agent,
        created_at: e.created_at,
    };
    let reads = Reads::writable(state, Arc::default(), &input.run_as, super::view::DEFAULT_WRITE_BYTES, Arc::default());
    let out =
        runtime.on_entry(loaded, policy, limits, super::Isolation::Fresh, config, &input.stream_id, &entry, reads);
    Ok(match out.result {
        Ok(Ok(())) => {
            use super::view::Planned;
            let (mut appends, mut puts) = (Vec::new(), Vec::new());
            for write in &out.writes {
                match write {
                    Planned::Append { stream_id, label, data, .. } => {
                        let data = serde_json::from_str::<Value>(data).unwrap_or(Value::Null);
                        appends.push(serde_json::json!({"stream_id": stream_id, "label": label, "data": data}));
                    }
                    Planned::Put { name, persistent, body, version, .. } => {
                        // JSON bodies as JSON, so cases and people read them.
                        let body = serde_json::from_slice::<Value>(body)
                            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
                        puts.push(serde_json::json!({"name": name, "persistent": persistent, "version": version,
                                                     "body": body}));
                    }
                }
            }
            serde_json::json!({ "appends": appends, "puts": puts })
        }
        Ok(Err(said)) => serde_json::json!({ "error": format!("returned an error: {said}") }),
        Err(error) => failure(&error, &out.stderr),
    })
}

fn compare(expect: &Expect, actual: &Value) -> Option<String> {
    if let Some(error) = actual.get("error").and_then(Value::as_str) {
        return match &expect.error_contains {
            Some(want) if error.contains(want.as_str()) => None,
            Some(want) => Some(format!("expected an error containing {want:?}, got error {error:?}")),
            None => Some(format!("the decision failed: {error}")),
        };
    }
    if let Some(want) = &expect.error_contains {
        return Some(format!("expected an error containing {want:?}, got {actual}"));
    }
    if let Some(want) = &expect.verdict {
        let got = actual.get("verdict").and_then(Value::as_str).unwrap_or("none");
        if got != want {
            return Some(format!("expected verdict {want}, got {actual}"));
        }
    }
    if let Some(want) = &expect.reason_contains {
        let got = actual.get("reason").and_then(Value::as_str).unwrap_or_default();
        if !got.contains(want.as_str()) {
            return Some(format!("expected a reason containing {want:?}, got {actual}"));
        }
    }
    if let Some(want) = &expect.violations {
        let mut got: Vec<&str> =
            actual["violations"].as_array().into_iter().flatten().filter_map(|v| v["field"].as_str()).collect();
        let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            return Some(format!("expected violations of {want:?}, got {actual}"));
        }
    }
    if let Some(want) = &expect.appends
        && let Some(why) = writes_differ("appends", "label", want, &actual["appends"])
    {
        return Some(format!("{why} (all: {actual})"));
    }
    if let Some(want) = &expect.puts
        && let Some(why) = writes_differ("stash writes", "name", want, &actual["puts"])
    {
        return Some(format!("{why} (all: {actual})"));
    }
    if let Some(want) = &expect.actions {
        let got: Vec<&str> =
            actual["actions"].as_array().into_iter().flatten().filter_map(|a| a["type"].as_str()).collect();
        if got != *want {
            return Some(format!("expected actions {want:?}, got {actual}"));
        }
    }
    None
}

/// The table `cairn policy test` prints, ending in "N passed, N failed".
pub fn report(results: &[CaseResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    for r in results {
        match &r.failure {
            None => out.push_str(&format!("PASS  {:width$}  {}\n", r.name, r.actual)),
            Some(why) => out.push_str(&format!("FAIL  {:width$}  {why}\n", r.name)),
        }
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    out.push_str(&format!("{} passed, {failed} failed\n", results.len() - failed));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(v: Value) -> Expect {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn files_that_cannot_fail_are_refused() {
        let file = |v: Value| serde_json::from_value::<CaseFile>(v).unwrap().check();
        let case = |name: &str, expect: Value| json!({"name": name, "input": {}, "expect": expect});
        assert!(file(json!({"cases": []})).unwrap_err().contains("no cases"));
        let vacuous = file(json!({"cases": [case("a", json!({"verdict": "approve"})), case("b", json!({}))]}));
        assert!(vacuous.unwrap_err().contains("case \"b\" expects nothing"));
        let twice =
            file(json!({"cases": [case("a", json!({"verdict": "approve"})), case("a", json!({"verdict": "deny"}))]}));
        assert!(twice.unwrap_err().contains("two cases are called \"a\""));
        assert_eq!(file(json!({"cases": [case("a", json!({"error_contains": "x"}))]})), Ok(()));
    }

    #[test]
    fn compares_each_kind_of_expectation() {
        let deny = json!({"verdict": "deny", "reason": "over budget"});
        assert_eq!(compare(&expect(json!({"verdict": "deny", "reason_contains": "budget"})), &deny), None);
        assert!(compare(&expect(json!({"verdict": "approve"})), &deny).unwrap().contains("expected verdict approve"));
        let v = json!({"violations": [{"field": "b", "message": ""}, {"field": "a", "message": ""}]});
        assert_eq!(compare(&expect(json!({"violations": ["a", "b"]})), &v), None);
        assert!(compare(&expect(json!({"violations": ["a"]})), &v).is_some());
        let a = json!({"actions": [{"type": "halt-scope"}, {"type": "notify"}]});
        assert_eq!(compare(&expect(json!({"actions": ["halt-scope", "notify"]})), &a), None);
        assert!(compare(&expect(json!({"actions": ["notify", "halt-scope"]})), &a).is_some());
        let w = json!({"appends": [{"stream_id": "st_a", "label": "triage", "data": {"priority": "urgent", "n": 1}}],
                       "puts": [{"name": "open", "body": {"open": [1]}}]});
        assert_eq!(compare(&expect(json!({"appends": ["triage"], "puts": ["open"]})), &w), None);
        let fields = json!({"appends": [{"label": "triage", "data": {"priority": "urgent"}}],
                            "puts": [{"name": "open", "body": {"open": [1]}}]});
        assert_eq!(compare(&expect(fields), &w), None);
        let why = compare(&expect(json!({"appends": [{"data": {"priority": "normal"}}]})), &w).unwrap();
        assert!(why.starts_with("expected appends #1 to have data {\"priority\":\"normal\"}"), "{why}");
        let why = compare(&expect(json!({"puts": [{"body": {"open": []}}]})), &w).unwrap();
        assert!(why.starts_with("expected stash writes #1 to have body"), "{why}");
        let why = compare(&expect(json!({"appends": ["triage", "triage"]})), &w).unwrap();
        assert!(why.starts_with("expected 2 appends, got 1"), "{why}");
        assert!(compare(&expect(json!({"appends": ["answer"]})), &w).unwrap().contains("label \"answer\""));
        let e = json!({"error": "timed out after 5 ms"});
        assert_eq!(compare(&expect(json!({"error_contains": "timed out"})), &e), None);
        assert!(compare(&expect(json!({"verdict": "deny"})), &e).unwrap().contains("the decision failed"));
    }

    #[test]
    fn the_report_ends_with_the_totals() {
        let r = vec![
            CaseResult { name: "a".into(), actual: json!({"verdict": "approve"}), failure: None },
            CaseResult { name: "bb".into(), actual: Value::Null, failure: Some("expected x".into()) },
        ];
        let text = report(&r);
        assert!(text.starts_with("PASS  a     {\"verdict\":\"approve\"}\nFAIL  bb    expected x\n"), "{text}");
        assert!(text.ends_with("1 passed, 1 failed\n"));
    }
}
