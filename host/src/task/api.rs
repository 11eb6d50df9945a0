//! The team routes: create, list, show, update and members, and the
//! team's decision log.

use super::*;
use crate::AppState;

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
    let rows = crate::policy::store::decisions_in(&app.db, &format!("team:{team}"), p.window()?, limit).await?;
    Ok(Json(DecisionList::page(rows, p.after)))
}
