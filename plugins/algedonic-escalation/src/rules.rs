//! From a signal to actions, as the protocol maps them, over plain data so
//! that it is tested natively.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The policy's config (`config.schema.json` documents it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Categories that halt the team or contract.
    #[serde(default = "halts")]
    pub halt_categories: Vec<String>,
    /// Categories that pause and notify.
    #[serde(default = "alerts")]
    pub alert_categories: Vec<String>,
    /// More categories, each mapped to `halt` or `alert`.
    #[serde(default)]
    pub categories: BTreeMap<String, Severity>,
    /// Who is told of every signal: an agent's name, or `lead` (default).
    #[serde(default = "lead")]
    pub notify: String,
    /// Also append every signal to this stream (an id, or a name of one of
    /// the scope's streams).
    pub stream: Option<String>,
}

fn halts() -> Vec<String> {
    ["SECURITY", "DATA", "ETHICS"].map(String::from).to_vec()
}

fn alerts() -> Vec<String> {
    ["QUALITY", "SCOPE", "META-BLOCK"].map(String::from).to_vec()
}

fn lead() -> String {
    "lead".into()
}

impl Default for Config {
    fn default() -> Self {
        serde_json::from_str("{}").expect("the empty config is valid")
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).map_err(|e| format!("bad config: {e}"))
    }

    /// The category's own severity, if this config knows it.
    fn severity_of(&self, category: &str) -> Option<Severity> {
        let c = category.to_uppercase();
        if let Some(s) = self.categories.iter().find(|(k, _)| k.to_uppercase() == c).map(|(_, s)| *s) {
            return Some(s);
        }
        if self.halt_categories.iter().any(|h| h.to_uppercase() == c) {
            Some(Severity::Halt)
        } else if self.alert_categories.iter().any(|a| a.to_uppercase() == c) {
            Some(Severity::Alert)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Alert,
    Halt,
}

/// A signal, as the component received it.
#[derive(Debug, Clone, Default)]
pub struct Signal {
    pub id: String,
    pub halt: bool,
    pub category: String,
    pub reporter: String,
    /// The team, or None for a contract.
    pub team: Option<String>,
    pub contract: Option<String>,
    pub task_id: Option<u64>,
    pub issue: String,
    pub evidence: String,
    pub impact: String,
    pub recommended_action: String,
}

/// An action, mirroring the WIT `action` variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    HaltScope,
    Notify { to: String, summary: String, message: String },
    CreateTask { key: String, subject: String, description: String, metadata: String },
    BlockTask { task: u64, blocked_by_created: String },
    Append { stream: String, label: String, data: String },
}

/// A signal halts if its level is HALT or its category is a halting one: a
/// known category can raise an ALERT to a HALT, never lower a HALT.
pub fn severity(config: &Config, s: &Signal) -> Severity {
    let level = if s.halt { Severity::Halt } else { Severity::Alert };
    config.severity_of(&s.category).map_or(level, |c| c.max(level))
}

/// The actions for `s`; `working` are the owners of in-progress tasks (team
/// signals only).
pub fn escalate(config: &Config, s: &Signal, working: &[String]) -> Vec<Action> {
    let sev = severity(config, s);
    let level = if sev == Severity::Halt { "HALT" } else { "ALERT" };
    let category = s.category.to_uppercase();
    let description = format!(
        "Issue: {}\nEvidence: {}\nImpact: {}\nRecommended action: {}",
        s.issue, s.evidence, s.impact, s.recommended_action
    );
    let summary = format!("ALGEDONIC {level}: {category}");
    let mut actions = Vec::new();
    if sev == Severity::Halt {
        actions.push(Action::HaltScope);
    }
    if s.team.is_some() {
        let metadata = serde_json::json!({"type": "algedonic", "level": level, "category": category,
            "signal_id": s.id, "reporter": s.reporter});
        actions.push(Action::CreateTask {
            key: "signal".into(),
            subject: format!("[{level}]: {category}"),
            description: description.clone(),
            metadata: metadata.to_string(),
        });
        if let Some(task) = s.task_id {
            actions.push(Action::BlockTask { task, blocked_by_created: "signal".into() });
        }
    }
    let what = if sev == Severity::Halt { "work is halted until it is acknowledged" } else { "work on it is paused" };
    actions.push(Action::Notify {
        to: config.notify.clone(),
        summary: summary.clone(),
        message: format!(
            "[cairn→{}] ⚠️ ALGEDONIC {level}: {category} raised by {}; {what}.\n\n{description}",
            config.notify, s.reporter
        ),
    });
    if sev == Severity::Halt && s.team.is_some() {
        let mut owners: Vec<&String> = working.iter().collect();
        owners.sort();
        owners.dedup();
        for owner in owners {
            actions.push(Action::Notify {
                to: owner.clone(),
                summary: format!("STOP: team halted ({category})"),
                message: format!(
                    "[cairn→{owner}] STOP work now: {} raised a HALT ({category}). Claims and completions are \
                     refused until the lead acknowledges the signal.",
                    s.reporter
                ),
            });
        }
    }
    if let Some(stream) = &config.stream {
        let data = serde_json::json!({"signal_id": s.id, "level": level, "category": category,
            "reporter": s.reporter, "issue": s.issue});
        actions.push(Action::Append { stream: stream.clone(), label: "escalation".into(), data: data.to_string() });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(halt: bool, category: &str) -> Signal {
        Signal {
            id: "sig_1".into(),
            halt,
            category: category.into(),
            reporter: "a".into(),
            team: Some("t".into()),
            task_id: Some(3),
            issue: "keys in logs".into(),
            ..Signal::default()
        }
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::HaltScope => "halt",
                Action::Notify { .. } => "notify",
                Action::CreateTask { .. } => "create",
                Action::BlockTask { .. } => "block",
                Action::Append { .. } => "append",
            })
            .collect()
    }

    #[test]
    fn a_halt_stops_the_team_and_every_owner() {
        let a = escalate(&Config::default(), &signal(true, "security"), &["b".into(), "a".into(), "b".into()]);
        assert_eq!(kinds(&a), ["halt", "create", "block", "notify", "notify", "notify"]);
        assert!(matches!(&a[1], Action::CreateTask { subject, .. } if subject == "[HALT]: SECURITY"));
        assert!(matches!(&a[3], Action::Notify { to, .. } if to == "lead"));
    }

    #[test]
    fn alert_categories_pause_and_notify_the_lead() {
        let a = escalate(&Config::default(), &signal(false, "SCOPE"), &["b".into()]);
        assert_eq!(kinds(&a), ["create", "block", "notify"]);
    }

    #[test]
    fn categories_raise_but_never_lower_a_level() {
        let c = Config::default();
        assert_eq!(severity(&c, &signal(false, "DATA")), Severity::Halt);
        assert_eq!(severity(&c, &signal(true, "QUALITY")), Severity::Halt);
        assert_eq!(severity(&c, &signal(false, "unknown")), Severity::Alert);
        let c = Config::parse(r#"{"categories": {"LEGAL": "halt"}}"#).unwrap();
        assert_eq!(severity(&c, &signal(false, "legal")), Severity::Halt);
    }

    #[test]
    fn config_routes_escalations() {
        let c = Config::parse(r#"{"notify": "security-officer", "stream": "incidents"}"#).unwrap();
        let a = escalate(&c, &signal(false, "SCOPE"), &[]);
        assert!(matches!(&a[2], Action::Notify { to, .. } if to == "security-officer"));
        assert!(matches!(a.last(), Some(Action::Append { stream, .. }) if stream == "incidents"));
        assert!(Config::parse(r#"{"categories": {"X": "panic"}}"#).is_err());
    }

    #[test]
    fn contract_signals_have_no_tasks_or_stop_messages() {
        let mut s = signal(true, "ETHICS");
        s.team = None;
        s.contract = Some("c".into());
        assert_eq!(kinds(&escalate(&Config::default(), &s, &["b".into()])), ["halt", "notify"]);
    }
}
