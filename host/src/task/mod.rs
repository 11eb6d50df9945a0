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

mod graph;
mod message;
mod queue;
pub mod rules;
pub mod signal;
mod store;
mod tasks;
pub mod view;

pub use queue::Teams;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::agent::Caller;
use crate::db::Db;
use crate::error::{Error, Json, Path, Query, Result, Violation};
use crate::policy::api::{DecisionList, DecisionParams, decision_json};
use crate::{AppState, clock, name};
use rules::TeamRules;
use store::TeamRow;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_team, list_teams))
        .routes(routes!(show_team, update_team))
        .routes(routes!(add_member))
        .routes(routes!(decisions))
        .merge(tasks::routes())
        .merge(message::routes())
        .merge(signal::routes())
}

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

/// Creates a team; the caller is its lead and first member.
#[utoipa::path(post, path = "/teams", tag = "teams", request_body = NewTeam,
    responses((status = 201, body = TeamView), (status = 409, description = "name taken")))]
async fn create_team(
    State(app): State<AppState>,
    caller: Caller,
    Json(req): Json<NewTeam>,
) -> Result<(StatusCode, Json<TeamView>)> {
    name::check("team", &req.name)?;
    let taken = || Error::conflict("name_taken", format!("a team named {:?} already exists; pick another", req.name));
    if store::team(&app.db, &req.name).await?.is_some() {
        return Err(taken());
    }
    let stream_name = format!("team.{}", req.name);
    let description = format!("Algedonic signals of team {}", req.name);
    let stream_id =
        crate::stream::create_hosted(&app.db, &stream_name, &description, &["algedonic"]).await?.ok_or_else(taken)?;
    let now = clock::now_ms();
    let row = TeamRow {
        name: req.name.clone(),
        lead: caller.name.clone(),
        stream_id,
        rules: serde_json::to_string(&req.rules.unwrap_or_default()).map_err(|e| Error::internal(e.to_string()))?,
        next_task_id: 1,
        next_message_id: 1,
        created_at: now,
        updated_at: now,
        version: 0,
    };
    if !store::insert_team(&app.db, &row).await? {
        return Err(taken());
    }
    tracing::info!(team = %row.name, lead = %row.lead, "team created");
    Ok((StatusCode::CREATED, Json(view(&app.db, &row).await?)))
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// The teams the caller belongs to (every team, for an admin).
#[utoipa::path(get, path = "/teams", tag = "teams", params(ListParams), responses((status = 200, body = TeamList)))]
async fn list_teams(
    State(app): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Json<TeamList>> {
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    let rows = store::teams_of(&app.db, (!caller.admin).then_some(caller.name.as_str()), limit, offset).await?;
    let mut teams = Vec::with_capacity(rows.len());
    for row in &rows {
        teams.push(view(&app.db, row).await?);
    }
    Ok(Json(TeamList { teams }))
}

/// One team: lead, members, stream, whether it is halted, and its rules.
#[utoipa::path(get, path = "/teams/{team}", tag = "teams", params(("team" = String, Path)),
    responses((status = 200, body = TeamView), (status = 404)))]
async fn show_team(State(app): State<AppState>, caller: Caller, Path(team): Path<String>) -> Result<Json<TeamView>> {
    let row = team_for(&app.db, &caller, &team).await?;
    Ok(Json(view(&app.db, &row).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamUpdate {
    rules: TeamRules,
}

/// Changes the team's rules (lead or admin).
#[utoipa::path(patch, path = "/teams/{team}", tag = "teams", params(("team" = String, Path)), request_body = TeamUpdate,
    responses((status = 200, body = TeamView), (status = 403), (status = 404)))]
async fn update_team(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Json(req): Json<TeamUpdate>,
) -> Result<Json<TeamView>> {
    let mut row = team_for(&app.db, &caller, &team).await?;
    lead_only(&caller, &row, "change the team's rules")?;
    row.rules = serde_json::to_string(&req.rules).map_err(|e| Error::internal(e.to_string()))?;
    store::set_rules(&app.db, &team, &row.rules).await?;
    Ok(Json(view(&app.db, &row).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    agent_name: String,
}

/// Adds a registered agent to the team (lead or admin).
#[utoipa::path(post, path = "/teams/{team}/members", tag = "teams", params(("team" = String, Path)),
    request_body = NewMember,
    responses((status = 201, body = TeamView), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn add_member(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Json(req): Json<NewMember>,
) -> Result<(StatusCode, Json<TeamView>)> {
    let row = team_for(&app.db, &caller, &team).await?;
    lead_only(&caller, &row, "add members")?;
    name::check("agent", &req.agent_name)?;
    if !crate::agent::exists(&app.db, &req.agent_name).await? {
        return Err(Error::validation(
            format!("no agent is registered as {:?}; it must register first", req.agent_name),
            vec![],
        ));
    }
    if !store::add_member(&app.db, &team, &req.agent_name, &caller.name).await? {
        return Err(Error::conflict(
            "already_member",
            format!("{} is already a member of team {team}", req.agent_name),
        ));
    }
    Ok((StatusCode::CREATED, Json(view(&app.db, &row).await?)))
}

/// The team's decision log: every claim, HANDOFF and escalation decided for
/// it, by policies or the built-in rules (lead or admin).
#[utoipa::path(get, path = "/teams/{team}/decisions", tag = "teams", params(("team" = String, Path), DecisionParams),
    responses((status = 200, body = DecisionList), (status = 403), (status = 404)))]
async fn decisions(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Query(p): Query<DecisionParams>,
) -> Result<Json<DecisionList>> {
    let row = team_for(&app.db, &caller, &team).await?;
    lead_only(&caller, &row, "read the team's decision log")?;
    let (limit, _) = crate::pagination::page(p.limit, None)?;
    let rows = crate::policy::store::decisions_in(&app.db, &format!("team:{team}"), p.after.as_deref(), limit).await?;
    Ok(Json(DecisionList { decisions: rows.into_iter().map(decision_json).collect() }))
}
