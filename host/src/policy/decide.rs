//! The decider: the one way a decision is made, for real or as a dry run.
//!
//! Every enabled policy bound to the hook in the scope decides, beside the
//! hook's bundled policy (see [`super::bundled`]), which stays in force as
//! the baseline unless a bound policy's settings say `replaces_bundled`.
//! All run in the same sandbox. Their answers combine into one typed [`Decision`], and
//! each becomes a decision-log row that the caller commits in the same
//! transaction as the decision's effect, so no effect lands without its
//! record.
//!
//! A decision reads through the caller's [`View`]; what the view lacks is
//! fetched between runs (see [`super::view`]), so the guest never waits on
//! storage and its deadline counts only its own work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use serde_json::Value;

use super::decision::{Action, Outcome, Verdict, Violation};
use super::input::Input;
use super::registry::{Active, Registry, Scope, hook_str};
use super::runtime::LogLine;
use super::store::DecisionRow;
use super::view::{Answer, MAX_ROUNDS, Read, Reader, Reads, Source, View};
use super::{Evaluation, Hook};
use crate::clock;
use crate::error::Result;

/// One policy decision, as the host's metrics count it.
pub struct Observed<'a> {
    pub policy: &'a str,
    pub hook: &'static str,
    /// What was decided (the fail-closed decision, if it failed): see
    /// [`Outcome::label`].
    pub verdict: &'static str,
    pub failed: bool,
    pub duration: Duration,
}

/// Called once per policy decision.
pub type Observer = dyn Fn(&Observed<'_>) + Send + Sync;

/// What to decide, for whom, and where.
#[derive(Debug, Clone)]
pub struct Request {
    pub scope: Scope,
    /// The agent the decision is about, as recorded.
    pub agent: String,
    /// Whom the policies' reads are made as.
    pub reader: Reader,
    pub input: Input,
    /// The config of the bundled baseline.
    pub default_config: Value,
}

/// The combined decision and the rows that record how it was reached.
#[derive(Debug)]
pub struct Decision {
    pub outcome: Outcome,
    pub records: Vec<DecisionRow>,
    /// The record of the policy whose answer carried the decision (the
    /// deny, the refusal), where one did.
    decided_by: Option<String>,
}

impl Decision {
    /// A claim's verdict (a deny for any other hook's decision).
    pub fn verdict(&self) -> Verdict {
        match &self.outcome {
            Outcome::Verdict(v) => v.clone(),
            _ => Verdict::Deny("not a claim decision".into()),
        }
    }

    pub fn violations(&self) -> &[Violation] {
        match &self.outcome {
            Outcome::Violations(v) => v,
            _ => &[],
        }
    }

    pub fn actions(&self) -> &[Action] {
        match &self.outcome {
            Outcome::Actions(a) => a,
            _ => &[],
        }
    }

    /// The record to look up beside the effect: the one whose answer
    /// carried the decision, else the last.
    pub fn decision_id(&self) -> Option<String> {
        self.decided_by.clone().or_else(|| self.records.last().map(|r| r.decision_id.clone()))
    }
}

/// A dry run's decision (the fail-closed one if the policy failed; why, is
/// in `evaluation.result`), with what was seen on the way.
pub struct DryRun {
    pub outcome: Outcome,
    pub evaluation: Evaluation,
    pub record: DecisionRow,
}

/// `dec_`, a 32-bit count of this process's decisions and 64 random bits:
/// unique, and in the order they were made among records of the same
/// millisecond (the records of one decision, listed by `at` then id).
pub fn new_decision_id() -> String {
    static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes());
    rand::rng().fill_bytes(&mut b[4..]);
    format!("dec_{}", hex::encode(b))
}

/// `team:NAME` or `stash:NAME` (the scope as settings and `--scope` say it), as stored with each decision.
pub fn scope_label(scope: &Scope) -> Option<String> {
    match scope {
        Scope::Global => None,
        Scope::Team(t) => Some(format!("team:{t}")),
        Scope::Stash(s) => Some(format!("stash:{s}")),
    }
}

pub struct Decider {
    registry: Arc<Registry>,
    source: Arc<dyn Source>,
    observe: Arc<Observer>,
    handle: tokio::runtime::Handle,
}

impl Decider {
    /// Must be made inside the tokio runtime whose storage `source` uses.
    pub fn new(registry: Arc<Registry>, source: Arc<dyn Source>, observe: Arc<Observer>) -> Self {
        Self { registry, source, observe, handle: tokio::runtime::Handle::current() }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Decides `req` against `view`. Runs guests on this thread, so call it
    /// where blocking is allowed (a `spawn_blocking` closure), never on an
    /// async worker.
    pub fn decide_blocking(&self, req: &Request, view: &Arc<dyn View>) -> Result<Decision> {
        let hook = req.input.hook();
        let mut policies: Vec<(Arc<Active>, Value)> = self
            .registry
            .for_hook(hook, &req.scope)
            .into_iter()
            .map(|a| {
                let config = a.settings.config.clone();
                (a, config)
            })
            .collect();
        // The bundled policy is the baseline: it decides beside the bound
        // ones unless one of them replaces it in this scope.
        let replaced = policies.iter().any(|(a, _)| a.settings.replaces_bundled);
        if !replaced && super::bundled::for_hook(hook).is_some() {
            policies.push((self.registry.default_blocking(hook)?, req.default_config.clone()));
        }
        // What any of them masks is masked in every record of the decision.
        let mask: Vec<String> = policies.iter().flat_map(|(a, _)| a.settings.mask.iter().cloned()).collect();
        let mut outcomes = Vec::with_capacity(policies.len());
        let mut records = Vec::with_capacity(policies.len());
        let mut failures = 0;
        for (active, config) in &policies {
            let (outcome, record, failed) = self.run(req, active, config, view, &mask)?;
            failures += usize::from(failed);
            outcomes.push(outcome);
            records.push(record);
        }
        // The record that decided: the first deny (else escalation) of a
        // claim, the first HANDOFF refusal; else the last.
        let deciding = |pick: &dyn Fn(&Outcome) -> bool| outcomes.iter().position(pick);
        let decided_by = match hook {
            Hook::Claim => deciding(&|o| matches!(o, Outcome::Verdict(Verdict::Deny(_))))
                .or_else(|| deciding(&|o| matches!(o, Outcome::Verdict(Verdict::Escalate(_))))),
            Hook::Handoff => deciding(&|o| matches!(o, Outcome::Violations(v) if !v.is_empty())),
            Hook::Escalation | Hook::Agent => None,
        };
        let decided_by = decided_by.map(|i| records[i].decision_id.clone());
        let outcome = match hook {
            Hook::Claim => Outcome::Verdict(Verdict::combine(outcomes.into_iter().filter_map(|o| match o {
                Outcome::Verdict(v) => Some(v),
                _ => None,
            }))),
            Hook::Handoff => Outcome::Violations(
                outcomes
                    .into_iter()
                    .flat_map(|o| match o {
                        Outcome::Violations(v) => v,
                        _ => Vec::new(),
                    })
                    .collect(),
            ),
            // A signal must never come to nothing: when every policy that
            // replaced the bundled one failed, the bundled one decides.
            Hook::Escalation if replaced && failures == outcomes.len() => {
                let default = self.registry.default_blocking(hook)?;
                let (outcome, record, _) = self.run(req, &default, &req.default_config, view, &mask)?;
                records.push(record);
                outcome
            }
            // The same action asked for twice (the baseline's HALT and a
            // bound policy's) is carried out once.
            Hook::Escalation | Hook::Agent => Outcome::Actions(outcomes.into_iter().fold(Vec::new(), |mut all, o| {
                if let Outcome::Actions(actions) = o {
                    for a in actions {
                        if !all.contains(&a) {
                            all.push(a);
                        }
                    }
                }
                all
            })),
        };
        Ok(Decision { outcome, records, decided_by })
    }

    /// One policy's decision on a config of the caller's choosing, without
    /// effect; its record is marked `dry_run` for the caller to store.
    pub fn dry_run_blocking(
        &self,
        active: &Arc<Active>,
        config: &Value,
        input: Input,
        reader: Reader,
    ) -> Result<DryRun> {
        let req =
            Request { scope: Scope::Global, agent: reader.name.clone(), reader, input, default_config: Value::Null };
        let view: Arc<dyn View> = Arc::new(super::view::Empty);
        let (evaluation, outcome, mut record) = self.evaluate(&req, active, config, &view, &active.settings.mask)?;
        record.dry_run = true;
        record.scope = None;
        Ok(DryRun { outcome, evaluation, record })
    }

    /// One policy's decision (the fail-closed one if it failed), its record,
    /// and whether it failed.
    fn run(
        &self,
        req: &Request,
        active: &Arc<Active>,
        config: &Value,
        view: &Arc<dyn View>,
        mask: &[String],
    ) -> Result<(Outcome, DecisionRow, bool)> {
        let (evaluation, outcome, record) = self.evaluate(req, active, config, view, mask)?;
        if let Err(e) = &evaluation.result {
            let hook = hook_str(req.input.hook());
            tracing::warn!(policy = %active.name, hook, "policy failed, failing closed: {e}");
        }
        Ok((outcome, record, evaluation.result.is_err()))
    }

    /// Runs `active` until it reads nothing it has not been given; returns
    /// the run, the decision it stands for (the fail-closed one when the run
    /// failed) and its record, with result and error filled in, and the
    /// input's values at `mask` masked.
    fn evaluate(
        &self,
        req: &Request,
        active: &Arc<Active>,
        config: &Value,
        view: &Arc<dyn View>,
        mask: &[String],
    ) -> Result<(Evaluation, Outcome, DecisionRow)> {
        let hook = req.input.hook();
        let input = masked(req.input.to_json(), mask);
        let mut record = new_record(active, hook, &req.agent, &input, scope_label(&req.scope));
        let loaded = match &active.loaded {
            Ok(l) => l.clone(),
            Err(e) => {
                let evaluation = Evaluation::failed(format!("does not load: {e}"));
                let outcome = settle(hook, &evaluation, &mut record);
                return Ok((evaluation, outcome, record));
            }
        };
        // Shown in the policy's status, so an operator (or a test) can see a
        // decision under way on this version.
        let _running = active.stats.start();
        let runtime = self.registry.runtime();
        let config_text = config.to_string();
        let evaluation = self.rounds(
            &req.reader,
            |fetched| {
                let reads = Reads::new(view.clone(), fetched);
                super::evaluate(
                    runtime,
                    &loaded,
                    &active.name,
                    &active.settings.limits,
                    active.settings.isolation,
                    &config_text,
                    &req.input,
                    reads,
                )
            },
            |e| &e.misses,
        )?;
        let evaluation = evaluation.unwrap_or_else(|| {
            Evaluation::failed(format!(
                "kept reading new things for {MAX_ROUNDS} rounds; a decision may read only what a few rounds gather"
            ))
        });
        let failed = evaluation.result.is_err();
        active.stats.observe(evaluation.duration, failed);
        if let Err(e) = &evaluation.result {
            active.stats.failed_with(e);
        }
        let e = &evaluation;
        note_run(&mut record, e.duration, e.fuel_used, &e.logs, e.logs_dropped, &e.stdout, &e.stderr);
        let outcome = settle(hook, &evaluation, &mut record);
        (self.observe)(&Observed {
            policy: &active.name,
            hook: hook_str(hook),
            verdict: outcome.label(),
            failed,
            duration: evaluation.duration,
        });
        Ok((evaluation, outcome, record))
    }
}

/// One call of an agent's `on-entry`: whether it returned `ok`, the writes
/// to commit if it did, and its record for the decision log.
pub struct AgentCall {
    pub result: std::result::Result<(), String>,
    pub writes: Vec<super::view::Planned>,
    pub record: DecisionRow,
}

impl Decider {
    /// Runs `active` (an agent) on one entry, as `reader`, until it reads
    /// nothing it has not been given (what came `before` it, or fetched). Blocks: call it off the async workers.
    pub fn call_agent_blocking(
        &self,
        active: &Arc<Active>,
        reader: &Reader,
        stream_id: &str,
        entry: &super::view::StreamEntry,
        before: Arc<super::view::Before>,
    ) -> Result<AgentCall> {
        let input = serde_json::json!({"stream_id": stream_id, "entry": {
            "seq": entry.seq, "label": entry.label, "agent": entry.agent, "created_at": entry.created_at,
            "data": serde_json::from_str::<Value>(&entry.data).unwrap_or(Value::Null),
        }});
        let input = masked(input, &active.settings.mask);
        let mut record = new_record(active, Hook::Agent, &reader.name, &input, Some(format!("stream:{stream_id}")));
        let loaded = match &active.loaded {
            Ok(l) => l.clone(),
            Err(e) => {
                let error = format!("does not load: {e}");
                record.error = Some(error.clone());
                return Ok(AgentCall { result: Err(error), writes: Vec::new(), record });
            }
        };
        let _running = active.stats.start();
        let config = active.settings.config.to_string();
        let done = self.rounds(
            reader,
            |fetched| {
                let reads = Reads::writable(
                    Arc::new(super::view::Empty),
                    fetched,
                    &reader.name,
                    active.settings.bytes_per_call,
                    before.clone(),
                );
                self.registry.runtime().on_entry(
                    &loaded,
                    &active.name,
                    &active.settings.limits,
                    active.settings.isolation,
                    &config,
                    stream_id,
                    entry,
                    reads,
                )
            },
            |out| &out.misses,
        )?;
        let Some(out) = done else {
            let error = format!("kept reading new things for {MAX_ROUNDS} rounds");
            record.error = Some(error.clone());
            return Ok(AgentCall { result: Err(error), writes: Vec::new(), record });
        };
        let result = match out.result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(said)) => Err(format!("returned an error: {said}")),
            Err(e) => Err(e),
        };
        active.stats.observe(out.duration, result.is_err());
        if let Err(e) = &result {
            active.stats.failed_with(e);
            record.error = Some(e.clone());
        }
        let writes = if result.is_ok() { out.writes } else { Vec::new() };
        record.result = result.is_ok().then(|| serde_json::json!({"ok": true, "writes": writes.len()}).to_string());
        note_run(&mut record, out.duration, out.fuel_used, &out.logs, out.logs_dropped, &out.stdout, &out.stderr);
        (self.observe)(&Observed {
            policy: &active.name,
            hook: hook_str(Hook::Agent),
            verdict: if result.is_ok() { "ok" } else { "failed" },
            failed: result.is_err(),
            duration: out.duration,
        });
        Ok(AgentCall { result, writes, record })
    }
}

impl Decider {
    /// Runs `run` on what earlier rounds fetched until it misses nothing,
    /// fetching each round's misses (as `reader`) in between; None when it
    /// still missed something after [`MAX_ROUNDS`].
    fn rounds<T>(
        &self,
        reader: &Reader,
        mut run: impl FnMut(Arc<HashMap<Read, Answer>>) -> T,
        misses: impl Fn(&T) -> &[Read],
    ) -> Result<Option<T>> {
        let mut fetched: Arc<HashMap<Read, Answer>> = Arc::default();
        for _ in 0..MAX_ROUNDS {
            let done = run(fetched.clone());
            let missed = misses(&done);
            if missed.is_empty() {
                return Ok(Some(done));
            }
            let answers = self.handle.block_on(self.source.fetch(reader, missed))?;
            let map = Arc::make_mut(&mut fetched);
            for (read, answer) in missed.iter().cloned().zip(answers) {
                map.insert(read, answer);
            }
        }
        Ok(None)
    }
}

/// A decision record of `active` on `hook` about `agent`, before the run.
fn new_record(active: &Active, hook: Hook, agent: &str, input: &Value, scope: Option<String>) -> DecisionRow {
    DecisionRow {
        decision_id: new_decision_id(),
        policy: active.name.clone(),
        version: active.version,
        hook: hook_str(hook).into(),
        dry_run: false,
        agent: agent.to_string(),
        input: input.to_string(),
        result: None,
        error: None,
        duration_us: 0,
        fuel_used: None,
        logs: "[]".into(),
        logs_dropped: 0,
        stdout: String::new(),
        stderr: String::new(),
        at: clock::now_ms(),
        scope,
    }
}

/// What a run did, into its record.
fn note_run(
    record: &mut DecisionRow,
    duration: Duration,
    fuel_used: Option<u64>,
    logs: &[LogLine],
    logs_dropped: usize,
    stdout: &str,
    stderr: &str,
) {
    record.duration_us = duration.as_micros() as i64;
    record.fuel_used = fuel_used.map(|f| f as i64);
    record.logs = logs_json(logs);
    record.logs_dropped = i64::try_from(logs_dropped).unwrap_or(i64::MAX);
    record.stdout = stdout.to_string();
    record.stderr = stderr.to_string();
}

/// The decision a run stands for: its own, or the fail-closed one, written
/// into the record with the error.
fn settle(hook: Hook, evaluation: &Evaluation, record: &mut DecisionRow) -> Outcome {
    let outcome = match &evaluation.result {
        Ok(o) => o.clone(),
        Err(e) => {
            record.error = Some(e.clone());
            Outcome::fail_closed(hook, &failure_reason(record, e, &evaluation.stderr))
        }
    };
    record.result = Some(outcome.to_json().to_string());
    outcome
}

/// What the agent whose request a failed policy decided is told: the
/// policy, the decision to look up, the first line of the error and the
/// guest's last word on stderr (a panic message, an exception). The
/// backtrace stays in the record.
fn failure_reason(record: &DecisionRow, error: &str, stderr: &str) -> String {
    format!("policy {} failed (decision {}): {}", record.policy, record.decision_id, what_failed(error, stderr))
}

/// A failure in a line: the error's first line, and the guest's last word
/// if it said one (see [`last_word`]).
pub fn what_failed(error: &str, stderr: &str) -> String {
    let first = error.lines().next().unwrap_or(error);
    match last_word(stderr) {
        Some(said) => format!("{first}; the guest wrote: {said}"),
        None => first.to_string(),
    }
}

/// What the guest last said on stderr, up to 300 characters: a Python
/// traceback's exception line (componentize-py's runtime panics after it),
/// a JS exception's message (before its stack), else the last line past
/// the boilerplate that follows a message (Rust's backtrace hint, the
/// host's own note), as a Rust panic's message is.
fn last_word(stderr: &str) -> Option<String> {
    let cut = |l: &str| -> String { l.chars().take(300).collect() };
    if let Some(at) = stderr.rfind("Traceback (most recent call last):") {
        // Frames are indented; the first line that is not is the exception.
        let exception = stderr[at..].lines().skip(1).find(|l| !l.is_empty() && !l.starts_with(char::is_whitespace));
        if let Some(line) = exception {
            return Some(cut(line.trim()));
        }
    }
    // componentize-js prints the exception's message, then "Stack:" and
    // its frames, then the abort that ends the instance.
    let lines: Vec<&str> = stderr.lines().collect();
    if let Some(at) = lines.iter().rposition(|l| l.trim_end() == "Stack:")
        && let Some(message) = lines[..at].iter().rfind(|l| !l.trim().is_empty())
    {
        return Some(cut(message.trim()));
    }
    let boilerplate = |l: &str| l.starts_with("note: run with `RUST_BACKTRACE") || l.starts_with("[cairn:");
    lines.iter().map(|l| l.trim()).rfind(|l| !l.is_empty() && !boilerplate(l)).map(cut)
}

/// `input` with the value at each pointer of `mask` (where there is one)
/// replaced, as the decision log keeps it.
fn masked(mut input: Value, mask: &[String]) -> Value {
    for pointer in mask {
        if let Some(v) = input.pointer_mut(pointer) {
            *v = Value::String(super::registry::MASKED.into());
        }
    }
    input
}

fn logs_json(logs: &[LogLine]) -> String {
    serde_json::to_string(logs).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_guests_last_word_is_its_panic_or_exception() {
        let rust =
            "thread '<unnamed>' panicked at src/lib.rs:9:5:\npolicy bug\nnote: run with `RUST_BACKTRACE=1` ...\n";
        assert_eq!(super::last_word(rust).as_deref(), Some("policy bug"));
        let python = "Traceback (most recent call last):\n  File \"app.py\", line 19, in decide\n    raise ValueError(\"no\")\n\
                      ValueError: no\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1280:25:\n\
                      Python function threw an unexpected exception\n";
        assert_eq!(super::last_word(python).as_deref(), Some("ValueError: no"));
        let js = "no\nStack:\n  decide@app.js:12:11\n\nRedirecting call to abort() to mozalloc_abort\n\n";
        assert_eq!(super::last_word(js).as_deref(), Some("no"));
        assert_eq!(super::last_word("\n  \n"), None);
    }

    #[test]
    fn masks_replace_what_they_point_at_and_skip_what_is_absent() {
        let input = json!({"task": {"metadata": {"handoff": {"produced": ["x"]}}, "subject": "s"}, "list": [1, 2]});
        let mask = ["/task/metadata/handoff".to_string(), "/list/1".to_string(), "/nowhere".to_string()];
        let out = super::masked(input, &mask);
        assert_eq!(
            out,
            json!({"task": {"metadata": {"handoff": "[masked]"}, "subject": "s"}, "list": [1, "[masked]"]})
        );
    }
}
