//! The routes of this part of the agent-teams protocol: handlers parse,
//! call the team's writer and map the answer.

use super::*;
use crate::AppState;
use crate::task::message::announce;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(raise, list)).routes(routes!(acknowledge_in_team)).routes(routes!(acknowledge))
}

/// Raises a HALT or ALERT: the escalation policy decides the actions and
/// the host carries them out.
#[utoipa::path(post, path = "/teams/{team}/signals", tag = "signals", params(("team" = String, Path)),
    request_body = NewSignal, responses((status = 201, body = Raised), (status = 404), (status = 422)))]
async fn raise(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Json(req): Json<NewSignal>,
) -> Result<(StatusCode, Json<Raised>)> {
    team_for(&app.db, &caller, &team).await?;
    let category = req.category.trim().to_uppercase();
    if category.is_empty() || category.len() > 64 {
        return Err(invalid("category", "category must be 1 to 64 characters, e.g. SECURITY or QUALITY".into()));
    }
    if req.issue.trim().is_empty() {
        return Err(invalid("issue", "issue must say what is wrong".into()));
    }
    for (field, text) in [
        ("issue", &req.issue),
        ("evidence", &req.evidence),
        ("impact", &req.impact),
        ("recommended_action", &req.recommended_action),
    ] {
        if text.len() > MAX_TEXT {
            return Err(invalid(field, format!("{field} is over {MAX_TEXT} bytes")));
        }
    }
    let signal_id = new_signal_id();
    let input = SignalInput {
        id: signal_id.clone(),
        level: match req.level {
            Level::Halt => LevelInput::Halt,
            Level::Alert => LevelInput::Alert,
        },
        category: category.clone(),
        reporter: caller.name.clone(),
        scope: ScopeInput::Team(team.clone()),
        task_id: req.task_id.and_then(|t| u64::try_from(t).ok()),
        issue: req.issue.clone(),
        evidence: req.evidence.clone(),
        impact: req.impact.clone(),
        recommended_action: req.recommended_action.clone(),
        partial_handoff: req.partial_handoff.clone(),
    };
    let body = serde_json::to_value(&input).unwrap_or_default();
    let now = clock::now_ms();
    let (name, reporter, level, cat, sig) =
        (team.clone(), caller.name.clone(), req.level, category.clone(), signal_id.clone());
    let reader = caller.reader();
    let outcome = app
        .teams
        .transact_mut(&team, move |s, decider| {
            if let Some(id) = req.task_id
                && !s.tasks.contains_key(&id)
            {
                return Err(invalid("task_id", format!("team {name} has no task #{id}")));
            }
            let request = Request {
                scope: Scope::Team(name.clone()),
                agent: reporter.clone(),
                reader,
                input: Input::Signal(input),
                default_config: json!({}),
            };
            let decision = decider.decide_blocking(&request, &s.view())?;
            let mut effects =
                TeamEffects { work: s.clone(), reporter: &reporter, now, created: HashMap::new(), writes: Vec::new() };
            let carried = signal::carry_out(decision.actions(), &mut effects);
            let (mut writes, work) = (effects.writes, effects.work);
            s.team.next_task_id = work.team.next_task_id;
            s.team.next_message_id = work.team.next_message_id;
            let (halts, signal_task_id, reports) = (carried.halts, carried.signal_task, carried.reports);
            let row = SignalRow {
                signal_id: sig.clone(),
                scope_kind: ScopeKind::Team,
                scope: name.clone(),
                level,
                category: cat.clone(),
                reporter: reporter.clone(),
                task_id: req.task_id,
                body: body.to_string(),
                signal_task_id,
                actions: Value::Array(reports.clone()).to_string(),
                halts,
                acknowledged_by: None,
                acknowledged_at: None,
                note: None,
                created_at: now,
            };
            writes.push(Write::Append {
                label: "algedonic".into(),
                data: json!({"event": "signal", "signal": SignalView::from(&row)}).to_string(),
                agent: crate::agent::SYSTEM.into(),
            });
            writes.push(Write::PutSignal(row));
            writes.push(Write::Decisions(decision.records));
            Ok((writes, (signal_task_id, reports)))
        })
        .await?;
    let ((signal_task_id, actions), committed) = outcome.ok_or_else(|| super::super::team_not_found(&team))?;
    announce(&app, &team, &committed).await;
    tracing::warn!(team = %team, signal = %signal_id, level = req.level.as_str(), category = %category,
        reporter = %caller.name, "algedonic signal raised");
    Ok((StatusCode::CREATED, Json(Raised { signal_id, signal_task_id, actions })))
}

/// The team's signals, oldest first.
#[utoipa::path(get, path = "/teams/{team}/signals", tag = "signals", params(("team" = String, Path), ListParams),
    responses((status = 200, body = SignalList), (status = 404)))]
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<SignalList>> {
    team_for(&app.db, &caller, &team).await?;
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    let rows = store::signals(&app.db, ScopeKind::Team, &team, limit, offset).await?;
    Ok(Json(SignalList { signals: rows.iter().map(SignalView::from).collect() }))
}

/// Acknowledges a team signal (lead or admin): completes its signal task
/// and, if it was the last standing HALT, lifts the halt.
#[utoipa::path(post, path = "/teams/{team}/signals/{signal_id}/acknowledge", tag = "signals",
    params(("team" = String, Path), ("signal_id" = String, Path)), request_body = Acknowledgement,
    responses((status = 200, body = SignalView), (status = 403), (status = 404), (status = 409)))]
async fn acknowledge_in_team(
    State(app): State<AppState>,
    caller: Caller,
    Path((team, signal_id)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<Acknowledgement>,
) -> Result<Json<SignalView>> {
    let signal =
        store::signal(&app.db, &signal_id).await?.filter(|s| s.scope_kind == ScopeKind::Team && s.scope == team);
    let team_row = team_for(&app.db, &caller, &team).await?;
    let signal = signal.ok_or_else(|| Error::not_found(format!("signal {signal_id} in team {team}")))?;
    lead_only(&caller, &team_row, "acknowledge a signal")?;
    acknowledge_team_signal(&app, &caller, signal, req.note).await.map(Json)
}

/// Acknowledges any signal by id, by whoever may (the team's lead, the
/// contract's creator, an admin).
#[utoipa::path(post, path = "/signals/{signal_id}/acknowledge", tag = "signals", params(("signal_id" = String, Path)),
    request_body = Acknowledgement,
    responses((status = 200, body = SignalView), (status = 403), (status = 404), (status = 409)))]
async fn acknowledge(
    State(app): State<AppState>,
    caller: Caller,
    Path(signal_id): Path<String>,
    OptionalJson(req): OptionalJson<Acknowledgement>,
) -> Result<Json<SignalView>> {
    let not_found = || Error::not_found(format!("signal {signal_id}"));
    let signal = store::signal(&app.db, &signal_id).await?.ok_or_else(not_found)?;
    if signal.scope_kind == ScopeKind::Contract {
        app.contracts.acknowledge(&caller, signal, req.note).await?;
        let row = store::signal(&app.db, &signal_id).await?.ok_or_else(not_found)?;
        return Ok(Json(SignalView::from(&row)));
    }
    let team_row = team_for(&app.db, &caller, &signal.scope).await.map_err(|_| not_found())?;
    lead_only(&caller, &team_row, "acknowledge a signal")?;
    acknowledge_team_signal(&app, &caller, signal, req.note).await.map(Json)
}

async fn acknowledge_team_signal(
    app: &AppState,
    caller: &Caller,
    signal: SignalRow,
    note: String,
) -> Result<SignalView> {
    if signal.acknowledged_at.is_some() {
        return Err(Error::conflict(
            "already_acknowledged",
            format!("signal {} was acknowledged by {}", signal.signal_id, signal.acknowledged_by.unwrap_or_default()),
        ));
    }
    let team = signal.scope.clone();
    let now = clock::now_ms();
    let by = caller.name.clone();
    let outcome = app
        .teams
        .transact_mut(&team, move |s, _| {
            if !s.open_signals.contains(&signal.signal_id) {
                return Err(Error::conflict(
                    "already_acknowledged",
                    format!("signal {} was just acknowledged", signal.signal_id),
                ));
            }
            let mut row = signal.clone();
            row.acknowledged_by = Some(by.clone());
            row.acknowledged_at = Some(now);
            row.note = Some(note.clone());
            let mut writes = Vec::new();
            if let Some(task) = row
                .signal_task_id
                .and_then(|id| s.tasks.get(&id))
                .filter(|t| t.status != crate::task::store::Status::Completed)
            {
                let mut done = task.clone();
                done.status = crate::task::store::Status::Completed;
                done.version += 1;
                done.updated_at = now;
                let told = crate::task::tasks::event(crate::task::tasks::TaskEvent::Completed, &done, &[], &by);
                writes.push(Write::PutTask(done));
                writes.push(told);
            }
            let lifted = row.halts && s.halts.iter().all(|h| *h == row.signal_id);
            if lifted {
                let summary = format!("HALT lifted ({})", row.category);
                let text = format!(
                    "[cairn→all] {} acknowledged the {} HALT {}; work may resume.{}",
                    by,
                    row.category,
                    row.signal_id,
                    if note.is_empty() { String::new() } else { format!(" Note: {note}") }
                );
                let message = MessageRow::from_host(s.next_message_id(), "all", summary, text, now);
                let to = s.members.iter().cloned().collect();
                writes.push(Write::Message { message, recipients: to });
            }
            writes.push(Write::Append {
                label: "algedonic".into(),
                data: json!({"event": "acknowledged", "signal_id": row.signal_id, "by": by, "note": note,
                         "halt_lifted": lifted})
                .to_string(),
                agent: crate::agent::SYSTEM.into(),
            });
            writes.push(Write::PutSignal(row.clone()));
            Ok((writes, row))
        })
        .await?;
    let (row, committed) = outcome.ok_or_else(|| super::super::team_not_found(&team))?;
    announce(app, &team, &committed).await;
    tracing::info!(team = %team, signal = %row.signal_id, by = %caller.name, "signal acknowledged");
    Ok(SignalView::from(&row))
}
