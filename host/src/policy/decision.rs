//! Decisions as the host handles them: typed from the runtime to every
//! caller, JSON only in the decision log and over HTTP.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Hook;
use super::bindings::coord::types as wit;

/// A claim's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny(String),
    Escalate(String),
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny(_) => "deny",
            Verdict::Escalate(_) => "escalate",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Approve => "",
            Verdict::Deny(r) | Verdict::Escalate(r) => r,
        }
    }

    /// Several policies on one hook: any deny wins, then any escalation,
    /// else approve (no policy at all approves nothing: callers always
    /// have the bundled default).
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut escalated = None;
        for v in verdicts {
            match v {
                Verdict::Deny(_) => return v,
                Verdict::Escalate(_) if escalated.is_none() => escalated = Some(v),
                _ => {}
            }
        }
        escalated.unwrap_or(Verdict::Approve)
    }
}

/// One thing wrong with a HANDOFF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

/// A task named in an action: an existing one, or one that an earlier
/// `create-task` of the same list makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handle {
    Existing(u64),
    Created(String),
}

/// One effect an escalation asks for; the host carries out the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Action {
    HaltScope,
    Notify { to: String, summary: String, message: String },
    CreateTask { key: String, subject: String, description: String, metadata: Value },
    BlockTask { task: Handle, blocked_by: Handle },
    AppendToStream { stream: String, label: Option<String>, data: Value },
}

/// What one hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Verdict(Verdict),
    Violations(Vec<Violation>),
    Actions(Vec<Action>),
}

impl Outcome {
    /// What a failed decision means for its hook: a claim is denied, a
    /// HANDOFF is refused, an escalation does nothing (and the bundled
    /// policy then decides, so a signal never comes to nothing).
    /// The decision of a policy that failed; `reason` says which and why.
    pub fn fail_closed(hook: Hook, reason: &str) -> Self {
        match hook {
            Hook::Claim => Outcome::Verdict(Verdict::Deny(reason.to_string())),
            Hook::Handoff => {
                Outcome::Violations(vec![Violation { field: "policy".into(), message: reason.to_string() }])
            }
            Hook::Escalation | Hook::Agent => Outcome::Actions(Vec::new()),
        }
    }

    /// A word for what was decided, for metrics: `approve`, `deny`,
    /// `escalate` (claims), `accept`, `reject` (handoffs), `act`
    /// (escalations).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Verdict(v) => v.name(),
            Outcome::Violations(v) if v.is_empty() => "accept",
            Outcome::Violations(_) => "reject",
            Outcome::Actions(_) => "act",
        }
    }

    /// The JSON form of the decision log, case files and dry runs.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Verdict(Verdict::Approve) => json!({"verdict": "approve"}),
            Outcome::Verdict(v) => json!({"verdict": v.name(), "reason": v.reason()}),
            Outcome::Violations(vs) => json!({ "violations": vs }),
            Outcome::Actions(a) => json!({ "actions": a }),
        }
    }
}

impl From<wit::Verdict> for Verdict {
    fn from(v: wit::Verdict) -> Self {
        match v {
            wit::Verdict::Approve => Verdict::Approve,
            wit::Verdict::Deny(r) => Verdict::Deny(r),
            wit::Verdict::Escalate(r) => Verdict::Escalate(r),
        }
    }
}

impl From<wit::Violation> for Violation {
    fn from(v: wit::Violation) -> Self {
        Violation { field: v.field, message: v.message }
    }
}

fn handle(h: wit::TaskHandle) -> Handle {
    match h {
        wit::TaskHandle::Existing(id) => Handle::Existing(id),
        wit::TaskHandle::Created(key) => Handle::Created(key),
    }
}

/// JSON text from a guest, as a value; text that is not JSON stays text.
fn json_or_text(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::String(s))
}

impl From<wit::Action> for Action {
    fn from(a: wit::Action) -> Self {
        match a {
            wit::Action::HaltScope => Action::HaltScope,
            wit::Action::Notify(n) => Action::Notify { to: n.to, summary: n.summary, message: n.message },
            wit::Action::CreateTask(t) => Action::CreateTask {
                key: t.key,
                subject: t.subject,
                description: t.description,
                metadata: json_or_text(t.metadata),
            },
            wit::Action::BlockTask(b) => Action::BlockTask { task: handle(b.task), blocked_by: handle(b.blocked_by) },
            wit::Action::AppendToStream(s) => {
                Action::AppendToStream { stream: s.target_stream, label: s.label, data: json_or_text(s.data) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_deny_wins_then_escalate_else_approve() {
        let (a, d, e) = (Verdict::Approve, Verdict::Deny("no".into()), Verdict::Escalate("ask".into()));
        assert_eq!(Verdict::combine([a.clone(), e.clone(), d.clone()]), d);
        assert_eq!(Verdict::combine([a.clone(), e.clone()]), e);
        assert_eq!(Verdict::combine([a.clone(), a.clone()]), a);
    }

    #[test]
    fn outcomes_render_as_the_log_spells_them() {
        assert_eq!(Outcome::Verdict(Verdict::Deny("no".into())).to_json(), json!({"verdict": "deny", "reason": "no"}));
        let a = Outcome::Actions(vec![
            Action::HaltScope,
            Action::BlockTask { task: Handle::Existing(3), blocked_by: Handle::Created("sig".into()) },
        ]);
        assert_eq!(
            a.to_json()["actions"],
            json!([{"type": "halt-scope"}, {"type": "block-task", "task": {"existing": 3}, "blocked_by": {"created": "sig"}}])
        );
        let back: Action =
            serde_json::from_value(json!({"type": "notify", "to": "lead", "summary": "s", "message": "m"})).unwrap();
        assert!(matches!(back, Action::Notify { ref to, .. } if to == "lead"));
    }
}
