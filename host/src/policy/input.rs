//! JSON forms of policy inputs and decisions: what case files, the
//! evaluate endpoint and the decision log speak. Inputs are checked here,
//! at the serde boundary, so a bad input is a 422 naming the field and never
//! reaches a guest.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Hook;
use super::bindings::coord::types as wit;

/// A decision's input, typed; its JSON form is what the decision log keeps.
#[derive(Debug, Clone)]
pub enum Input {
    Claim(ClaimInput),
    Handoff(HandoffInput),
    Signal(SignalInput),
}

impl Input {
    pub fn hook(&self) -> Hook {
        match self {
            Input::Claim(_) => Hook::Claim,
            Input::Handoff(_) => Hook::Handoff,
            Input::Signal(_) => Hook::Escalation,
        }
    }

    /// Reads a JSON input for `hook`; `Err` says why it is not one.
    pub fn parse(hook: Hook, input: Value) -> Result<Self, String> {
        let e = |e: serde_json::Error| e.to_string();
        Ok(match hook {
            Hook::Claim => Input::Claim(serde_json::from_value(input).map_err(e)?),
            Hook::Handoff => Input::Handoff(serde_json::from_value(input).map_err(e)?),
            Hook::Escalation => Input::Signal(serde_json::from_value(input).map_err(e)?),
            Hook::Agent => {
                return Err("agent components react to stream entries; they are not evaluated on an input".into());
            }
        })
    }

    pub fn to_json(&self) -> Value {
        let v = match self {
            Input::Claim(c) => serde_json::to_value(c),
            Input::Handoff(h) => serde_json::to_value(h),
            Input::Signal(s) => serde_json::to_value(s),
        };
        // Plain data with string keys: serialising cannot fail.
        v.unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimInput {
    pub claimant: String,
    pub target: TargetInput,
    #[serde(default)]
    pub request: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetInput {
    Task { team: String, id: u64 },
    Subtask { contract: String, subtask_id: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRefInput {
    pub team: String,
    pub id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LevelInput {
    #[serde(rename = "HALT")]
    Halt,
    #[serde(rename = "ALERT")]
    Alert,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
