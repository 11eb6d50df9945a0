//! The protocol's own rules, used on a hook while no policy is bound to it
//! for the team. Each takes the same JSON input a policy would get and
//! returns the same JSON decision, so the decision log reads alike whoever
//! decided. What the protocol leaves to the team is in [`TeamRules`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

/// A team's settings for the built-in rules (`rules` on the team).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamRules {
    /// Who may mark a task completed.
    #[serde(default)]
    pub complete: Completer,
    /// Whether a HANDOFF without `reasoning_chain` is refused (true) or
    /// accepted, since the protocol only recommends it (false, default).
    #[serde(default)]
    pub require_reasoning_chain: bool,
}

impl Default for TeamRules {
    fn default() -> Self {
        Self { complete: Completer::OwnerOrLead, require_reasoning_chain: false }
    }
}

/// Who may complete a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Completer {
    /// Its owner; anyone else's task only the lead (the protocol's rule).
    #[default]
    OwnerOrLead,
    /// Only the lead, who completes tasks after reviewing the HANDOFF.
    LeadOnly,
    /// Any member.
    Anyone,
}

impl TeamRules {
    /// Why `caller` may not complete a task owned by `owner`, if it may not.
    pub fn may_complete(&self, caller: &str, lead: &str, owner: Option<&str>, admin: bool) -> Result<(), String> {
        if admin || caller == lead {
            return Ok(());
        }
        match self.complete {
            Completer::Anyone => Ok(()),
            Completer::OwnerOrLead if owner == Some(caller) => Ok(()),
            Completer::OwnerOrLead => Err(match owner {
                Some(o) => format!("task is {o}'s; only its owner or the lead ({lead}) may complete it"),
                None => format!("task has no owner; claim it first, or ask the lead ({lead}) to complete it"),
            }),
            Completer::LeadOnly => Err(format!("this team's rules let only the lead ({lead}) complete tasks")),
        }
    }
}

/// The built-in claim rule: the task is unowned or the claimant's, and
/// every task it is blocked by is completed.
pub fn claim(claimant: &str, id: i64, owner: Option<&str>, open_blockers: &[i64]) -> Value {
    if let Some(o) = owner.filter(|o| *o != claimant) {
        return json!({"verdict": "deny", "reason": format!("task #{id} is already owned by {o}")});
    }
    if !open_blockers.is_empty() {
        let list: Vec<String> = open_blockers.iter().map(|b| format!("#{b}")).collect();
        return json!({"verdict": "deny", "reason": format!(
            "task #{id} is blocked by {}, not yet completed; claim it once they are", list.join(", ")
        )});
    }
    json!({"verdict": "approve"})
}

/// Subjects the protocol exempts from a HANDOFF.
const EXEMPT_PREFIXES: [&str; 5] = ["BLOCKER:", "HALT:", "ALERT:", "[HALT]", "[ALERT]"];
const NO_UNCERTAINTY: &str = "No areas of uncertainty flagged.";
const PRIORITIES: [&str; 3] = ["[HIGH]", "[MEDIUM]", "[LOW]"];

/// Whether a task needs no HANDOFF: skipped, a blocker or algedonic task, or
/// a subject marking one.
pub fn exempt(subject: &str, metadata: &Value) -> bool {
    let skipped = metadata.get("skipped").is_some_and(|s| s.as_bool().unwrap_or(!s.is_null()));
    let kind = metadata.get("type").and_then(Value::as_str);
    skipped
        || matches!(kind, Some("blocker" | "algedonic"))
        || EXEMPT_PREFIXES.iter().any(|p| subject.trim_start().starts_with(p))
}

/// The built-in HANDOFF check on a handoff input (`agent`, `subject`,
/// `metadata`, ...): `{"violations": [{"field", "message"}]}`.
pub fn handoff(input: &Value, rules: &TeamRules) -> Value {
    let subject = input["subject"].as_str().unwrap_or_default();
    let metadata = &input["metadata"];
    if exempt(subject, metadata) {
        return json!({"violations": []});
    }
    let mut v = Vec::new();
    let mut violate = |field: &str, message: String| v.push(json!({"field": field, "message": message}));
    match metadata.get("handoff").or(input.get("handoff")) {
        None | Some(Value::Null) => violate(
            "handoff",
            "no HANDOFF: store it in metadata.handoff with produced, decisions, uncertainty, integration and \
             open_questions before completing the task"
                .into(),
        ),
        Some(Value::String(text)) => {
            for (field, heading) in [
                ("produced", "produced"),
                ("decisions", "decisions"),
                ("uncertainty", "uncertainty"),
                ("integration", "integration"),
                ("open_questions", "open questions"),
            ] {
                if !text.to_lowercase().contains(heading) {
                    violate(field, format!("the HANDOFF text has no \"{heading}\" section; add it as a numbered item"));
                }
            }
        }
        Some(Value::Object(h)) => {
            let present = |k: &str| h.get(k).is_some_and(|x| !x.is_null());
            match h.get("produced") {
                Some(Value::Array(a)) if !a.is_empty() => {}
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                Some(_) => violate("produced", "produced is empty: list the files or artifacts you made".into()),
                None => violate("produced", "produced is missing: list the files or artifacts you made".into()),
            }
            for (field, what) in [
                ("decisions", "the key decisions with their rationale"),
                ("integration", "the other components this touches"),
                ("open_questions", "unresolved items, or an empty list"),
            ] {
                if !present(field) {
                    violate(field, format!("{field} is missing: give {what}"));
                }
            }
            match h.get("uncertainty") {
                None | Some(Value::Null) => violate(
                    "uncertainty",
                    format!(
                        "uncertainty is missing: list items tagged [HIGH], [MEDIUM] or [LOW], or say \"{NO_UNCERTAINTY}\""
                    ),
                ),
                Some(Value::String(s)) if s.trim() == NO_UNCERTAINTY => {}
                Some(Value::Array(items)) if items.is_empty() => violate(
                    "uncertainty",
                    format!("uncertainty is empty: if there is none, say so explicitly: \"{NO_UNCERTAINTY}\""),
                ),
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let text = item.as_str().unwrap_or_default().trim();
                        if text == NO_UNCERTAINTY && items.len() == 1 {
                            continue;
                        }
                        if !PRIORITIES.iter().any(|p| text.starts_with(p)) {
                            violate(
                                &format!("uncertainty[{i}]"),
                                "start each item with its priority: [HIGH], [MEDIUM] or [LOW]".into(),
                            );
                        }
                    }
                }
                Some(_) => violate(
                    "uncertainty",
                    "uncertainty must be a list of items tagged [HIGH], [MEDIUM] or [LOW]".into(),
                ),
            }
            if rules.require_reasoning_chain && !present("reasoning_chain") {
                violate(
                    "reasoning_chain",
                    "reasoning_chain is required by this team: say how the key decisions connect".into(),
                );
            }
        }
        Some(_) => violate("handoff", "metadata.handoff must be an object (or the protocol's text form)".into()),
    }
    json!({ "violations": v })
}

/// The built-in escalation: a signal task, the reporter's task blocked on
/// it, and for a HALT the team halted with a stop message to every owner of
/// an in-progress task; an ALERT notifies the lead.
pub fn escalate(signal: &Value, in_progress_owners: &[String]) -> Value {
    let level = signal["level"].as_str().unwrap_or("ALERT");
    let category = signal["category"].as_str().unwrap_or_default();
    let reporter = signal["reporter"].as_str().unwrap_or_default();
    let text = |k: &str| signal[k].as_str().unwrap_or_default().to_string();
    let description = format!(
        "Issue: {}\nEvidence: {}\nImpact: {}\nRecommended action: {}",
        text("issue"),
        text("evidence"),
        text("impact"),
        text("recommended_action")
    );
    let mut actions = vec![json!({
        "type": "create-task", "key": "signal", "subject": format!("[{level}]: {category}"),
        "description": description,
        "metadata": {"type": "algedonic", "level": level, "category": category, "signal_id": signal["id"],
                     "reporter": reporter},
    })];
    if let Some(task) = signal["task_id"].as_u64() {
        actions.push(json!({"type": "block-task", "task": {"existing": task}, "blocked_by": {"created": "signal"}}));
    }
    let summary = format!("ALGEDONIC {level}: {category}");
    actions.push(json!({"type": "notify", "to": "lead", "summary": summary,
        "message": format!("[cairn→lead] ⚠️ ALGEDONIC {level}: {category} raised by {reporter}\n\n{description}")}));
    if level == "HALT" {
        actions.insert(0, json!({"type": "halt-scope"}));
        let mut owners: Vec<&String> = in_progress_owners.iter().collect();
        owners.sort();
        owners.dedup();
        for owner in owners {
            actions.push(json!({"type": "notify", "to": owner, "summary": format!("STOP: team halted ({category})"),
                "message": format!("[cairn→{owner}] STOP work now: {reporter} raised a HALT ({category}). Claims and \
                    completions are refused until the lead acknowledges the signal.")}));
        }
    }
    json!({ "actions": actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({"produced": ["src/a.rs"], "decisions": ["x because y"], "uncertainty": ["[HIGH] parser edge cases"],
               "integration": ["api"], "open_questions": []})
    }

    fn check(handoff: Value, subject: &str) -> Vec<String> {
        let input = json!({"agent": "a", "subject": subject, "metadata": {"handoff": handoff}});
        handoff_fields(&super::handoff(&input, &TeamRules::default()))
    }

    fn handoff_fields(result: &Value) -> Vec<String> {
        result["violations"].as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn a_complete_handoff_passes() {
        assert!(check(good(), "Build parser").is_empty());
        let mut h = good();
        h["uncertainty"] = json!("No areas of uncertainty flagged.");
        assert!(check(h, "Build parser").is_empty());
    }

    #[test]
    fn each_missing_or_bad_field_is_named() {
        let mut h = good();
        h["produced"] = json!([]);
        h.as_object_mut().unwrap().remove("decisions");
        h["uncertainty"] = json!(["[HIGH] ok", "untagged"]);
        assert_eq!(check(h, "Build"), ["produced", "decisions", "uncertainty[1]"]);
        assert_eq!(check(Value::Null, "Build"), ["handoff"]);
        assert_eq!(check(json!({"produced": ["x"], "uncertainty": []}), "Build").len(), 4);
    }

    #[test]
    fn reasoning_chain_is_a_setting() {
        let input = json!({"subject": "s", "metadata": {"handoff": good()}});
        let strict = TeamRules { require_reasoning_chain: true, ..TeamRules::default() };
        assert_eq!(handoff_fields(&super::handoff(&input, &strict)), ["reasoning_chain"]);
        assert!(handoff_fields(&super::handoff(&input, &TeamRules::default())).is_empty());
    }

    #[test]
    fn the_protocols_exemptions_apply() {
        assert!(check(Value::Null, "BLOCKER: no database").is_empty());
        assert!(check(Value::Null, "[HALT]: SECURITY").is_empty());
        let input = json!({"subject": "x", "metadata": {"skipped": true}});
        assert!(handoff_fields(&super::handoff(&input, &TeamRules::default())).is_empty());
        let input = json!({"subject": "x", "metadata": {"type": "algedonic"}});
        assert!(handoff_fields(&super::handoff(&input, &TeamRules::default())).is_empty());
    }

    #[test]
    fn claims_need_an_open_unblocked_task() {
        assert_eq!(claim("a", 1, None, &[])["verdict"], "approve");
        assert_eq!(claim("a", 1, Some("a"), &[])["verdict"], "approve");
        assert_eq!(claim("a", 1, Some("b"), &[])["reason"], "task #1 is already owned by b");
        assert_eq!(claim("a", 2, None, &[1])["verdict"], "deny");
    }

    #[test]
    fn completion_authority_follows_the_rules() {
        let r = TeamRules::default();
        assert!(r.may_complete("a", "lead", Some("a"), false).is_ok());
        assert!(r.may_complete("lead", "lead", Some("a"), false).is_ok());
        assert!(r.may_complete("b", "lead", Some("a"), false).is_err());
        let lead_only = TeamRules { complete: Completer::LeadOnly, ..r };
        assert!(lead_only.may_complete("a", "lead", Some("a"), false).is_err());
    }

    #[test]
    fn a_halt_stops_every_owner_and_an_alert_tells_the_lead() {
        let sig = json!({"id": "sig_1", "level": "HALT", "category": "SECURITY", "reporter": "a", "task_id": 3});
        let actions = escalate(&sig, &["b".into(), "a".into(), "b".into()])["actions"].as_array().unwrap().clone();
        let kinds: Vec<&str> = actions.iter().map(|a| a["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["halt-scope", "create-task", "block-task", "notify", "notify", "notify"]);
        assert_eq!(actions[1]["subject"], "[HALT]: SECURITY");
        let alert = json!({"id": "sig_2", "level": "ALERT", "category": "SCOPE", "reporter": "a"});
        let kinds: Vec<String> = escalate(&alert, &["b".into()])["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["create-task", "notify"]);
    }
}
