//! Running a hook for real. Every enabled policy bound to the hook in the
//! scope decides; with none bound, the host's built-in rule does. Their
//! answers combine into one decision, and each becomes a decision-log row
//! that the caller commits in the same transaction as the decision's
//! effect, so no effect lands without its record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::registry::{Scope, combine, hook_str};
use super::store::DecisionRow;
use super::{Hook, api, live};
use crate::agent::Caller;
use crate::error::{Error, Result};
use crate::{AppState, clock};

/// The combined decision and the rows that record how it was reached.
#[derive(Debug)]
pub struct Decision {
    pub result: Value,
    pub records: Vec<DecisionRow>,
}

impl Decision {
    /// A claim's verdict: `approve`, `deny` or `escalate`.
    pub fn verdict(&self) -> &str {
        self.result["verdict"].as_str().unwrap_or("deny")
    }

    pub fn reason(&self) -> &str {
        self.result["reason"].as_str().unwrap_or_default()
    }
}

/// The decision log's name for a hook's built-in rule. The colon keeps it
/// apart from every policy name a user can choose.
pub fn builtin_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Claim => "builtin:claim",
        Hook::Handoff => "builtin:handoff",
        Hook::Escalation => "builtin:escalation",
        Hook::Agent => "builtin:agent",
    }
}

/// `team:NAME` or `contract:NAME`, as stored with each decision.
pub fn scope_label(scope: &Scope) -> Option<String> {
    match scope {
        Scope::Global => None,
        Scope::Team(t) => Some(format!("team:{t}")),
        Scope::Stash(s) => Some(format!("contract:{s}")),
    }
}

/// Decides `input` on `hook` for `caller`. `builtin` is the host's own rule,
/// used when no policy is bound, and for escalations when every bound
/// policy failed (a signal must never come to nothing).
pub async fn decide(
    app: &AppState,
    hook: Hook,
    scope: &Scope,
    caller: &Caller,
    input: Value,
    builtin: impl Fn(&Value) -> Value,
) -> Result<Decision> {
    let agent = caller.name.as_str();
    let policies = app.policies.for_hook(hook, scope);
    let row = |policy: &str, version: i64, result: &Value, error: Option<String>, duration: Duration| DecisionRow {
        decision_id: api::new_decision_id(),
        policy: policy.to_string(),
        version,
        hook: hook_str(hook).into(),
        dry_run: false,
        agent: agent.to_string(),
        input: input.to_string(),
        result: Some(result.to_string()),
        error,
        duration_us: duration.as_micros() as i64,
        fuel_used: None,
        logs: "[]".into(),
        stdout: String::new(),
        stderr: String::new(),
        at: clock::now_ms(),
        scope: scope_label(scope),
    };
    let run_builtin = |builtin: &dyn Fn(&Value) -> Value| {
        let started = Instant::now();
        let result = builtin(&input);
        let record = row(builtin_name(hook), 0, &result, None, started.elapsed());
        (result, record)
    };
    if policies.is_empty() {
        let (result, record) = run_builtin(&builtin);
        return Ok(Decision { result, records: vec![record] });
    }

    let mut results = Vec::with_capacity(policies.len());
    let mut records = Vec::with_capacity(policies.len());
    let mut failures = 0;
    for active in policies {
        let (outcome, mut record) = match active.loaded.clone() {
            Err(e) => {
                let error = format!("does not load: {e}");
                (Err(error), row(&active.name, active.version, &Value::Null, None, Duration::ZERO))
            }
            Ok(loaded) => {
                let state = Arc::new(live::Live {
                    db: app.db.clone(),
                    agent: agent.to_string(),
                    admin: caller.admin,
                    handle: tokio::runtime::Handle::current(),
                });
                let runtime = app.policies.runtime().clone();
                let (settings, name, input) = (active.settings.clone(), active.name.clone(), input.clone());
                let config = settings.config.to_string();
                let evaluation = tokio::task::spawn_blocking(move || {
                    super::evaluate(
                        &runtime,
                        &loaded,
                        &name,
                        &settings.limits,
                        settings.isolation,
                        &config,
                        input,
                        state,
                    )
                })
                .await
                .map_err(|e| Error::internal(format!("running policy {}: {e}", active.name)))?
                // The host builds these inputs itself; one that does not fit is a host bug.
                .map_err(|e| Error::internal(format!("policy {} refused the host's input: {e}", active.name)))?;
                active.stats.observe(evaluation.duration, evaluation.result.is_err());
                app.metrics.observe_policy(&active.name, evaluation.result.is_err(), evaluation.duration);
                let mut record = row(&active.name, active.version, &Value::Null, None, evaluation.duration);
                record.fuel_used = evaluation.fuel_used.map(|f| f as i64);
                record.logs = serde_json::to_string(&evaluation.logs).unwrap_or_else(|_| "[]".into());
                record.stdout = evaluation.stdout;
                record.stderr = evaluation.stderr;
                (evaluation.result, record)
            }
        };
        let result = match outcome {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(policy = %active.name, hook = hook_str(hook), "policy failed, failing closed: {e}");
                failures += 1;
                record.error = Some(e.clone());
                api::fail_closed(hook, &e)
            }
        };
        record.result = Some(result.to_string());
        results.push(result);
        records.push(record);
    }

    let result = match hook {
        Hook::Claim => combine(&results),
        Hook::Handoff => json!({"violations": concat(&results, "violations")}),
        Hook::Escalation if failures == results.len() => {
            let (result, record) = run_builtin(&builtin);
            records.push(record);
            result
        }
        Hook::Escalation | Hook::Agent => json!({"actions": concat(&results, "actions")}),
    };
    Ok(Decision { result, records })
}

fn concat(results: &[Value], key: &str) -> Vec<Value> {
    results.iter().filter_map(|r| r[key].as_array()).flatten().cloned().collect()
}
