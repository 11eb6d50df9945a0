//! Algedonic escalation, Cairn's bundled escalation policy.
//!
//! Maps a HALT or ALERT to actions as the agent-teams protocol does: the
//! HALT categories (SECURITY, DATA, ETHICS) halt the team or contract, the
//! ALERT categories (QUALITY, SCOPE, META-BLOCK) pause and notify the lead;
//! in a team every signal gets a signal task that blocks the reporter's
//! task, and a HALT sends a stop message to each owner of an in-progress
//! task. Config adds categories and routes escalations to a named agent or
//! stream. The mapping is in [`rules`].

pub mod rules;

wit_bindgen::generate!({ path: "../../wit", world: "cairn:policy/escalation-policy", generate_all });

use cairn::coord::types::{
    NewTask, Notification, SignalLevel, SignalScope, StreamAppend, TaskBlock, TaskHandle, TaskStatus,
};
use cairn::coord::{log, task_read};

struct Policy;
export!(Policy);

impl Guest for Policy {
    fn escalate(config: String, signal: Signal) -> Vec<Action> {
        let config = match rules::Config::parse(&config) {
            Ok(c) => c,
            Err(e) => {
                // A signal must not come to nothing: fall back to the defaults.
                log::log(log::Level::Error, &format!("{e}; using the default mapping"));
                rules::Config::default()
            }
        };
        let (team, contract) = match &signal.scope {
            SignalScope::Team(t) => (Some(t.clone()), None),
            SignalScope::Contract(c) => (None, Some(c.clone())),
        };
        let working: Vec<String> = team
            .as_deref()
            .map(|t| {
                task_read::team_tasks(t)
                    .into_iter()
                    .filter(|task| matches!(task.status, TaskStatus::InProgress))
                    .filter_map(|task| task.owner)
                    .collect()
            })
            .unwrap_or_default();
        let s = rules::Signal {
            id: signal.id,
            halt: matches!(signal.level, SignalLevel::Halt),
            category: signal.category,
            reporter: signal.reporter,
            team,
            contract,
            task_id: signal.task_id,
            issue: signal.issue,
            evidence: signal.evidence,
            impact: signal.impact,
            recommended_action: signal.recommended_action,
        };
        rules::escalate(&config, &s, &working)
            .into_iter()
            .map(|a| match a {
                rules::Action::HaltScope => Action::HaltScope,
                rules::Action::Notify { to, summary, message } => Action::Notify(Notification { to, summary, message }),
                rules::Action::CreateTask { key, subject, description, metadata } => {
                    Action::CreateTask(NewTask { key, subject, description, metadata })
                }
                rules::Action::BlockTask { task, blocked_by_created } => Action::BlockTask(TaskBlock {
                    task: TaskHandle::Existing(task),
                    blocked_by: TaskHandle::Created(blocked_by_created),
                }),
                rules::Action::Append { stream, label, data } => {
                    Action::AppendToStream(StreamAppend { target_stream: stream, label: Some(label), data })
                }
            })
            .collect()
    }
}
