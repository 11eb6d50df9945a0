//! What the protocol leaves to each team: who may complete a task, and how
//! strict the HANDOFF check is. The checks themselves are policies (the
//! bundled ones by default); these settings feed the bundled handoff
//! policy's config.

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
    /// accepted with a logged warning, since the protocol only recommends it
    /// (false, default). Applies where the bundled handoff policy decides.
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
    /// The bundled handoff policy's config for this team.
    pub fn handoff_config(&self) -> Value {
        json!({"reasoning_chain": if self.require_reasoning_chain { "require" } else { "warn" }})
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_authority_follows_the_rules() {
        let r = TeamRules::default();
        assert!(r.may_complete("a", "lead", Some("a"), false).is_ok());
        assert!(r.may_complete("lead", "lead", Some("a"), false).is_ok());
        assert!(r.may_complete("b", "lead", Some("a"), false).is_err());
        let lead_only = TeamRules { complete: Completer::LeadOnly, ..r.clone() };
        assert!(lead_only.may_complete("a", "lead", Some("a"), false).is_err());
        assert!(TeamRules { complete: Completer::Anyone, ..r }.may_complete("b", "lead", None, false).is_ok());
    }

    #[test]
    fn the_reasoning_chain_rule_becomes_handoff_config() {
        assert_eq!(TeamRules::default().handoff_config(), json!({"reasoning_chain": "warn"}));
        let strict = TeamRules { require_reasoning_chain: true, ..TeamRules::default() };
        assert_eq!(strict.handoff_config(), json!({"reasoning_chain": "require"}));
    }
}
