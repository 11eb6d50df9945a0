//! The routes of this part of the agent-teams protocol: handlers parse,
//! call the team's writer and map the answer.

use super::*;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get, update))
}

/// TaskCreate: a new pending task.
#[utoipa::path(post, path = "/teams/{team}/tasks", tag = "tasks", params(("team" = String, Path)), request_body = NewTask,
    responses((status = 201, body = TaskView), (status = 403), (status = 404), (status = 422)))]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Json(req): Json<NewTask>,
) -> Result<(StatusCode, Json<TaskView>)> {
    let team_row = team_for(&app.db, &caller, &team).await?;
    check_subject(&req.subject)?;
    check_text("description", &req.description, MAX_TEXT)?;
    check_text("active_form", &req.active_form, MAX_SUBJECT)?;
    let metadata = object("metadata", req.metadata.unwrap_or_else(|| json!({})))?;
    if let Some(owner) = req.owner.as_deref().filter(|o| *o != caller.name) {
        lead_only(&caller, &team_row, &format!("assign a task to {owner}"))?;
    }
    let now = clock::now_ms();
    let (name, caller_name) = (team.clone(), caller.name.clone());
    let committed = app
        .teams
        .transact_mut(&team, move |s, _| {
            if let Some(owner) = &req.owner
                && !s.members.contains(owner)
            {
                return Err(not_member(&s.team, owner, "owner"));
            }
            let missing: Vec<i64> = req.blocked_by.iter().copied().filter(|b| !s.tasks.contains_key(b)).collect();
            if !missing.is_empty() {
                return Err(unknown_tasks(&name, "blocked_by", &missing));
            }
            let id = s.next_task_id();
            let row = TaskRow {
                team: name.clone(),
                id,
                subject: req.subject,
                description: req.description,
                active_form: req.active_form,
                status: Status::Pending,
                owner: req.owner,
                metadata: Value::Object(metadata).to_string(),
                created_by: caller_name,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            let view = task_view(&row, req.blocked_by.clone(), Vec::new());
            let told = super::event(super::TaskEvent::Created, &row, &req.blocked_by, &row.created_by);
            let mut writes = vec![Write::PutTask(row)];
            writes.extend(req.blocked_by.iter().map(|&b| Write::Block { task: id, blocked_by: b }));
            writes.push(told);
            Ok((writes, view))
        })
        .await?;
    let (task, committed) = committed.ok_or_else(|| super::super::team_not_found(&team))?;
    // The `task` entry's live readers (dashboards, agents) hear of it now.
    crate::task::message::announce(&app, &team, &committed).await;
    Ok((StatusCode::CREATED, Json(task)))
}

/// TaskList: the team's tasks by id, each with its open blockers only.
#[utoipa::path(get, path = "/teams/{team}/tasks", tag = "tasks", params(("team" = String, Path), ListParams),
    responses((status = 200, body = TaskList), (status = 404)))]
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<TaskList>> {
    team_for(&app.db, &caller, &team).await?;
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    let rows = store::tasks(&app.db, &team, p.status, p.owner.as_deref(), limit, offset).await?;
    if p.detail == Some(super::Detail::Full) {
        let (mut blocked_by, mut blocks): (BTreeMap<i64, Vec<i64>>, BTreeMap<i64, Vec<i64>>) = Default::default();
        for (task, blocker) in store::deps(&app.db, &team).await? {
            blocked_by.entry(task).or_default().push(blocker);
            blocks.entry(blocker).or_default().push(task);
        }
        let tasks = rows
            .iter()
            .map(|t| {
                let (by, of) = (blocked_by.remove(&t.id), blocks.remove(&t.id));
                TaskItem::Full(super::task_view(t, by.unwrap_or_default(), of.unwrap_or_default()))
            })
            .collect();
        return Ok(Json(TaskList { tasks }));
    }
    let mut open: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (task, blocker) in store::open_blockers(&app.db, &team).await? {
        open.entry(task).or_default().push(blocker);
    }
    let tasks = rows
        .into_iter()
        .map(|t| {
            TaskItem::Summary(TaskSummary {
                blocked_by: open.remove(&t.id).unwrap_or_default(),
                id: t.id,
                subject: t.subject,
                status: t.status,
                owner: t.owner,
            })
        })
        .collect();
    Ok(Json(TaskList { tasks }))
}

/// TaskGet: the whole task, metadata included.
#[utoipa::path(get, path = "/teams/{team}/tasks/{id}", tag = "tasks", params(("team" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = TaskView), (status = 404)))]
async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path((team, id)): Path<(String, i64)>,
) -> Result<Json<TaskView>> {
    team_for(&app.db, &caller, &team).await?;
    let task = store::task(&app.db, &team, id).await?.ok_or_else(|| task_not_found(&team, id))?;
    let (blocked_by, blocks) = store::edges(&store::deps(&app.db, &team).await?, id);
    Ok(Json(task_view(&task, blocked_by, blocks)))
}

/// TaskUpdate. Taking a task goes through the claim policy (409 on a
/// denial), completing it through the handoff policy (422 listing what the
/// HANDOFF lacks); while the team is halted both get 423.
#[utoipa::path(patch, path = "/teams/{team}/tasks/{id}", tag = "tasks", params(("team" = String, Path), ("id" = i64, Path)),
    request_body = TaskUpdate,
    responses((status = 200, body = TaskView), (status = 403), (status = 404),
        (status = 409, description = "blocked, claim denied or escalated"), (status = 422, description = "HANDOFF rejected, cycle"),
        (status = 423, description = "team halted")))]
async fn update(
    State(app): State<AppState>,
    caller: Caller,
    Path((team, id)): Path<(String, i64)>,
    Json(req): Json<TaskUpdate>,
) -> Result<Json<TaskView>> {
    crate::name::check("team", &team)?;
    let request = serde_json::to_value(&req).unwrap_or_default();
    let outcome =
        app.teams.transact_mut(&team, move |s, decider| plan_update(s, decider, &caller, id, &req, request)).await?;
    let (updated, committed) = outcome.ok_or_else(|| super::super::team_not_found(&team))?;
    crate::task::message::announce(&app, &team, &committed).await;
    match updated {
        Updated::Done(view) => Ok(Json(*view)),
        Updated::Denied(reason, id) => {
            Err(Error::conflict("claim_denied", format!("claim refused: {reason}")).with_decision(id))
        }
        Updated::Escalated(reason, lead, id) => Err(Error::conflict(
            "claim_escalated",
            format!("the claim needs a human decision ({reason}); the lead ({lead}) has been asked"),
        )
        .with_decision(id)),
        Updated::Rejected(message, details, id) => {
            Err(Error::validation(message, details).with_code("handoff_rejected").with_decision(id))
        }
    }
}
