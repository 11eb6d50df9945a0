//! JSON forms of policy inputs and decisions: what case files, the
//! evaluate endpoint and the decision log speak. Inputs are checked here,
//! at the serde boundary, so a bad input is a 422 naming the field and never
//! reaches a guest.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bindings::coord::types as wit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimInput {
    pub claimant: String,
    pub target: TargetInput,
    #[serde(default)]
    pub request: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetInput {
    Task { team: String, id: u64 },
    Subtask { contract: String, subtask_id: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRefInput {
    pub team: String,
    pub id: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffInput {
    pub agent: String,
    #[serde(default)]
    pub task: Option<TaskRefInput>,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub metadata: Value,
    /// The structured HANDOFF; taken from `metadata.handoff` when absent.
    #[serde(default)]
    pub handoff: Option<Value>,
    /// The HANDOFF in the protocol's text form.
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalInput {
    #[serde(default = "test_signal_id")]
    pub id: String,
    pub level: LevelInput,
    pub category: String,
    pub reporter: String,
    pub scope: ScopeInput,
    #[serde(default)]
    pub task_id: Option<u64>,
    #[serde(default)]
    pub issue: String,
    #[serde(default)]
    pub evidence: String,
    #[serde(default)]
    pub impact: String,
    #[serde(default)]
    pub recommended_action: String,
    #[serde(default)]
    pub partial_handoff: Option<Value>,
}

fn test_signal_id() -> String {
    "sig_test".into()
}

#[derive(Debug, Deserialize)]
pub enum LevelInput {
    #[serde(rename = "HALT")]
    Halt,
    #[serde(rename = "ALERT")]
    Alert,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScopeInput {
    Team(String),
    Contract(String),
}

fn json_text(v: &Value) -> String {
    if v.is_null() { "{}".into() } else { v.to_string() }
}

impl From<ClaimInput> for wit::Claim {
    fn from(c: ClaimInput) -> Self {
        Self {
            claimant: c.claimant,
            target: match c.target {
                TargetInput::Task { team, id } => wit::ClaimTarget::Task(wit::TaskRef { team, id }),
                TargetInput::Subtask { contract, subtask_id } => {
                    wit::ClaimTarget::Subtask(wit::SubtaskRef { contract, subtask_id })
                }
            },
            request: json_text(&c.request),
        }
    }
}

impl From<HandoffInput> for wit::Handoff {
    fn from(h: HandoffInput) -> Self {
        let structured = h.handoff.or_else(|| h.metadata.get("handoff").cloned());
        Self {
            agent: h.agent,
            task: h.task.map(|t| wit::TaskRef { team: t.team, id: t.id }),
            subject: h.subject,
            metadata: json_text(&h.metadata),
            structured: structured.map(|v| v.to_string()),
            text: h.text,
        }
    }
}

impl From<SignalInput> for wit::Signal {
    fn from(s: SignalInput) -> Self {
        Self {
            id: s.id,
            level: match s.level {
                LevelInput::Halt => wit::SignalLevel::Halt,
                LevelInput::Alert => wit::SignalLevel::Alert,
            },
            category: s.category,
            reporter: s.reporter,
            scope: match s.scope {
                ScopeInput::Team(t) => wit::SignalScope::Team(t),
                ScopeInput::Contract(c) => wit::SignalScope::Contract(c),
            },
            task_id: s.task_id,
            issue: s.issue,
            evidence: s.evidence,
            impact: s.impact,
            recommended_action: s.recommended_action,
            partial_handoff: s.partial_handoff.map(|v| v.to_string()),
        }
    }
}

/// `{"verdict": "approve"}`, `{"verdict": "deny", "reason": ...}`, ...
pub fn verdict_json(v: &wit::Verdict) -> Value {
    match v {
        wit::Verdict::Approve => json!({"verdict": "approve"}),
        wit::Verdict::Deny(reason) => json!({"verdict": "deny", "reason": reason}),
        wit::Verdict::Escalate(reason) => json!({"verdict": "escalate", "reason": reason}),
    }
}

#[derive(Debug, Serialize)]
pub struct ViolationJson<'a> {
    pub field: &'a str,
    pub message: &'a str,
}

pub fn violations_json(vs: &[wit::Violation]) -> Value {
    json!({"violations": vs.iter().map(|v| ViolationJson { field: &v.field, message: &v.message }).collect::<Vec<_>>()})
}

fn handle_json(h: &wit::TaskHandle) -> Value {
    match h {
        wit::TaskHandle::Existing(id) => json!({"existing": id}),
        wit::TaskHandle::Created(key) => json!({"created": key}),
    }
}

/// Actions as `{"type": "halt-scope"}`, `{"type": "notify", "to": ...}`, ...
pub fn actions_json(actions: &[wit::Action]) -> Value {
    let list: Vec<Value> = actions
        .iter()
        .map(|a| match a {
            wit::Action::HaltScope => json!({"type": "halt-scope"}),
            wit::Action::Notify(n) => json!({"type": "notify", "to": n.to, "summary": n.summary, "message": n.message}),
            wit::Action::CreateTask(t) => json!({"type": "create-task", "key": t.key, "subject": t.subject,
                "description": t.description, "metadata": serde_json::from_str::<Value>(&t.metadata).unwrap_or(Value::String(t.metadata.clone()))}),
            wit::Action::BlockTask(b) => json!({"type": "block-task", "task": handle_json(&b.task), "blocked_by": handle_json(&b.blocked_by)}),
            wit::Action::AppendToStream(s) => json!({"type": "append-to-stream", "stream": s.target_stream, "label": s.label,
                "data": serde_json::from_str::<Value>(&s.data).unwrap_or(Value::String(s.data.clone()))}),
        })
        .collect();
    json!({ "actions": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_inputs_convert_and_refuse_unknown_fields() {
        let c: ClaimInput = serde_json::from_value(
            json!({"claimant": "a", "target": {"subtask": {"contract": "c", "subtask_id": "s"}}}),
        )
        .unwrap();
        let w: wit::Claim = c.into();
        assert_eq!(w.request, "{}");
        assert!(matches!(w.target, wit::ClaimTarget::Subtask(ref s) if s.subtask_id == "s"));
        assert!(
            serde_json::from_value::<ClaimInput>(json!({"claimant": "a", "target": {"subtask": {}}, "x": 1})).is_err()
        );
        assert!(serde_json::from_value::<ClaimInput>(json!({"claimant": "a", "target": {"team": "t"}})).is_err());
    }

    #[test]
    fn handoff_defaults_to_metadata_handoff() {
        let h: HandoffInput =
            serde_json::from_value(json!({"agent": "a", "metadata": {"handoff": {"produced": ["x"]}}})).unwrap();
        let w: wit::Handoff = h.into();
        assert_eq!(w.structured.as_deref(), Some(r#"{"produced":["x"]}"#));
    }

    #[test]
    fn decisions_render_as_json() {
        assert_eq!(verdict_json(&wit::Verdict::Deny("no".into())), json!({"verdict": "deny", "reason": "no"}));
        let a = actions_json(&[
            wit::Action::HaltScope,
            wit::Action::BlockTask(wit::TaskBlock {
                task: wit::TaskHandle::Existing(3),
                blocked_by: wit::TaskHandle::Created("sig".into()),
            }),
        ]);
        assert_eq!(
            a["actions"][1],
            json!({"type": "block-task", "task": {"existing": 3}, "blocked_by": {"created": "sig"}})
        );
    }
}
