//! Running a hook for real. Every enabled policy bound to the hook in the
//! scope decides; with none bound, the bundled policy for the hook does
//! (see [`super::bundled`]), in the same sandbox. Their answers combine
//! into one decision, and each becomes a decision-log row that the caller
//! commits in the same transaction as the decision's effect, so no effect
//! lands without its record.

use std::sync::Arc;

use serde_json::{Value, json};

use super::registry::{Active, Scope, combine, hook_str};
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

/// `team:NAME` or `contract:NAME`, as stored with each decision.
pub fn scope_label(scope: &Scope) -> Option<String> {
    match scope {
        Scope::Global => None,
        Scope::Team(t) => Some(format!("team:{t}")),
        Scope::Stash(s) => Some(format!("contract:{s}")),
    }
}

/// Decides `input` on `hook` for `caller`; the policies' imports read as
/// `reader` sees (the caller in a team; a contract's creator, whose
/// contract it is). `default_config` is the config
/// the bundled default runs with where no policy is bound (and, for
/// escalations, when every bound policy failed: a signal must never come
/// to nothing).
pub async fn decide(
    app: &AppState,
    hook: Hook,
    scope: &Scope,
    caller: &Caller,
    reader: &Caller,
    input: Value,
    default_config: Value,
) -> Result<Decision> {
    let mut policies: Vec<(Arc<Active>, Value)> =
        app.policies.for_hook(hook, scope).into_iter().map(|a| (a.clone(), a.settings.config.clone())).collect();
    let bound = !policies.is_empty();
    if !bound {
        let default = app.policies.default_for(hook).await?.ok_or_else(|| no_default(hook))?;
        policies.push((default, default_config.clone()));
    }
    let mut results = Vec::with_capacity(policies.len());
    let mut records = Vec::with_capacity(policies.len());
    let mut failures = 0;
    for (active, config) in &policies {
        let (result, record, failed) = run(app, hook, scope, caller, reader, &input, active, config).await?;
        failures += usize::from(failed);
        results.push(result);
        records.push(record);
    }
    let result = match hook {
        Hook::Claim => combine(&results),
        Hook::Handoff => json!({"violations": concat(&results, "violations")}),
        Hook::Escalation if bound && failures == results.len() => {
            let default = app.policies.default_for(hook).await?.ok_or_else(|| no_default(hook))?;
            let (result, record, _) = run(app, hook, scope, caller, reader, &input, &default, &default_config).await?;
            records.push(record);
            result
        }
        Hook::Escalation | Hook::Agent => json!({"actions": concat(&results, "actions")}),
    };
    Ok(Decision { result, records })
}

fn no_default(hook: Hook) -> Error {
    Error::internal(format!("no bundled policy decides the {} hook", hook_str(hook)))
}

/// One policy's decision (the fail-closed one if it failed), its record,
/// and whether it failed.
#[allow(clippy::too_many_arguments)]
async fn run(
    app: &AppState,
    hook: Hook,
    scope: &Scope,
    caller: &Caller,
    reader: &Caller,
    input: &Value,
    active: &Arc<Active>,
    config: &Value,
) -> Result<(Value, DecisionRow, bool)> {
    let mut record = DecisionRow {
        decision_id: api::new_decision_id(),
        policy: active.name.clone(),
        version: active.version,
        hook: hook_str(hook).into(),
        dry_run: false,
        agent: caller.name.clone(),
        input: input.to_string(),
        result: None,
        error: None,
        duration_us: 0,
        fuel_used: None,
        logs: "[]".into(),
        stdout: String::new(),
        stderr: String::new(),
        at: clock::now_ms(),
        scope: scope_label(scope),
    };
    let outcome = match active.loaded.clone() {
        Err(e) => Err(format!("does not load: {e}")),
        Ok(loaded) => {
            let state = Arc::new(live::Live {
                db: app.db.clone(),
                agent: reader.name.clone(),
                admin: reader.admin,
                handle: tokio::runtime::Handle::current(),
            });
            let runtime = app.policies.runtime().clone();
            let (settings, name, input, config) =
                (active.settings.clone(), active.name.clone(), input.clone(), config.to_string());
            let evaluation = tokio::task::spawn_blocking(move || {
                super::evaluate(&runtime, &loaded, &name, &settings.limits, settings.isolation, &config, input, state)
            })
            .await
            .map_err(|e| Error::internal(format!("running policy {}: {e}", active.name)))?
            // The host builds these inputs itself; one that does not fit is a host bug.
            .map_err(|e| Error::internal(format!("policy {} refused the host's input: {e}", active.name)))?;
            active.stats.observe(evaluation.duration, evaluation.result.is_err());
            app.metrics.observe_policy(&active.name, evaluation.result.is_err(), evaluation.duration);
            record.duration_us = evaluation.duration.as_micros() as i64;
            record.fuel_used = evaluation.fuel_used.map(|f| f as i64);
            record.logs = serde_json::to_string(&evaluation.logs).unwrap_or_else(|_| "[]".into());
            record.stdout = evaluation.stdout;
            record.stderr = evaluation.stderr;
            evaluation.result
        }
    };
    let (result, failed) = match outcome {
        Ok(v) => (v, false),
        Err(e) => {
            tracing::warn!(policy = %active.name, hook = hook_str(hook), "policy failed, failing closed: {e}");
            record.error = Some(e.clone());
            (api::fail_closed(hook, &e), true)
        }
    };
    record.result = Some(result.to_string());
    Ok((result, record, failed))
}

fn concat(results: &[Value], key: &str) -> Vec<Value> {
    results.iter().filter_map(|r| r[key].as_array()).flatten().cloned().collect()
}
