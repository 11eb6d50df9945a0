//! Task: teams and their task lists, messages and algedonic signals, the
//! agent-teams protocol over HTTP.
//!
//! - A team has a lead (its creator) and members the lead adds. Anyone
//!   outside it gets 404 for everything of the team (admins see all).
//! - Tasks ([`tasks`]) follow the task tools agents already use: integer ids
//!   per team, pending → in_progress → completed, owners, dependencies kept
//!   symmetric and acyclic, metadata merged key by key.
//! - Decisions go through the decider ([`crate::policy::Decider`]): taking
//!   a task is a claim, completing it checks the HANDOFF, a signal is
//!   escalated. With no policy bound, the bundled policies decide, with the
//!   team's [`rules`] as their config. Each decision is made on the team's
//!   snapshot and logged in the same transaction as its effect.
//! - Messages ([`message`]) go to one member, the lead or all, into inboxes
//!   read by page or live; signals ([`signal`]) may halt the team until the
//!   lead acknowledges them, and are echoed on the team's stream.
//!
//! Every write to a team runs through [`Teams::transact`]: one writer per
//! team, which orders its writes, checks rules and decides against the team
//! as it stands, and group-commits what is queued.

mod api;
mod graph;
mod message;
mod queue;
pub mod rules;
pub mod signal;
mod store;
mod tasks;
pub mod view;

pub use queue::Teams;

pub use api::routes;
pub use message::inbox_key;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::agent::Caller;
use crate::db::Db;
use crate::error::{Error, Json, Path, Query, Result, Violation};
use crate::policy::api::{DecisionList, DecisionParams};
use crate::{clock, name};
use rules::TeamRules;
use store::TeamRow;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    name: String,
    /// Settings for the built-in rules; defaults when absent.
    #[serde(default)]
    rules: Option<TeamRules>,
}

#[derive(Serialize, ToSchema)]
pub struct TeamView {
    name: String,
    lead: String,
    members: Vec<String>,
    /// The team's stream: every algedonic signal is appended to it,
    /// labelled `algedonic`, for humans to watch live.
    stream_id: String,
    /// True while an unacknowledged HALT stands.
    halted: bool,
    /// The unacknowledged HALTs, oldest first.
    halted_by: Vec<String>,
    rules: TeamRules,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct TeamList {
    teams: Vec<TeamView>,
}

pub(crate) fn team_not_found(team: &str) -> Error {
    Error::not_found(format!("team {team:?}"))
}

/// The team, if `caller` belongs to it (or is an admin); 404 otherwise, so
/// outsiders cannot learn that it exists.
pub(crate) async fn team_for(db: &Db, caller: &Caller, team: &str) -> Result<TeamRow> {
    name::check("team", team)?;
    let row = store::team(db, team).await?.ok_or_else(|| team_not_found(team))?;
    if caller.admin || store::is_member(db, team, &caller.name).await? { Ok(row) } else { Err(team_not_found(team)) }
}

/// Whether `caller` may know that `team` exists: a member, or an admin.
/// Whether a team of this name exists (a scope a policy may be bound to).
pub async fn exists(db: &Db, team: &str) -> Result<bool> {
    Ok(name::is_valid(team) && store::team(db, team).await?.is_some())
}

pub async fn knows_team(db: &Db, caller: &Caller, team: &str) -> Result<bool> {
    if !name::is_valid(team) {
        return Ok(false);
    }
    Ok(caller.admin || store::is_member(db, team, &caller.name).await?)
}

/// 422 for one field of the request body, with its pointer in `details`.
pub(crate) fn invalid(field: &str, message: String) -> Error {
    Error::validation(message.clone(), vec![Violation { path: format!("/{field}"), message }])
}

pub(crate) fn lead_only(caller: &Caller, team: &TeamRow, what: &str) -> Result<()> {
    if caller.admin || caller.name == team.lead {
        Ok(())
    } else {
        Err(Error::forbidden(format!("only the team's lead ({}) or an admin may {what}", team.lead)))
    }
}

pub(crate) fn rules_of(team: &TeamRow) -> TeamRules {
    // Written by us from a checked TeamRules.
    serde_json::from_str(&team.rules).unwrap_or_default()
}

async fn view(db: &Db, team: &TeamRow) -> Result<TeamView> {
    let halted_by = crate::signal::open_halts(db, crate::signal::ScopeKind::Team, &team.name).await?;
    Ok(TeamView {
        name: team.name.clone(),
        lead: team.lead.clone(),
        members: store::members(db, &team.name).await?,
        stream_id: team.stream_id.clone(),
        halted: !halted_by.is_empty(),
        halted_by,
        rules: rules_of(team),
        created_at: clock::rfc3339(team.created_at),
    })
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamUpdate {
    rules: TeamRules,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    agent_name: String,
}
