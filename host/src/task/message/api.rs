//! The routes of this part of the agent-teams protocol: handlers parse,
//! call the team's writer and map the answer.

use super::*;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send, inbox)).routes(routes!(events))
}

/// Wakes the inboxes a committed write sent to, and the readers of any
/// stream entries it appended.
pub async fn announce(app: &AppState, team: &str, committed: &Committed) {
    for (agent, id) in &committed.inboxes {
        crate::stream::announce(app, &inbox_key(team, agent), *id).await;
    }
    for (stream_id, seq) in &committed.entries {
        crate::stream::announce(app, stream_id, *seq).await;
    }
}

/// SendMessage.
#[utoipa::path(post, path = "/teams/{team}/messages", tag = "messages", params(("team" = String, Path)),
    request_body = NewMessage, responses((status = 201, body = Sent), (status = 404), (status = 422)))]
async fn send(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Json(req): Json<NewMessage>,
) -> Result<(StatusCode, Json<Sent>)> {
    team_for(&app.db, &caller, &team).await?;
    if req.summary.len() > MAX_SUMMARY {
        return Err(invalid("summary", format!("summary is over {MAX_SUMMARY} bytes; keep it to one line")));
    }
    if req.message.len() > MAX_MESSAGE {
        return Err(invalid("message", format!("message is over {MAX_MESSAGE} bytes")));
    }
    let mut reply_to = None;
    let request_id = match req.kind {
        Kind::Message => {
            if req.request_id.is_some() || req.approve.is_some() {
                return Err(invalid("request_id", "request_id and approve belong to shutdown messages only".into()));
            }
            if req.message.trim().is_empty() && req.summary.trim().is_empty() {
                return Err(invalid("message", "the message is empty: give a message or a summary".into()));
            }
            None
        }
        Kind::ShutdownRequest => {
            if req.request_id.is_some() {
                return Err(invalid(
                    "request_id",
                    "a shutdown_request gets a fresh request_id; do not send one".into(),
                ));
            }
            let mut b = [0u8; 8];
            rand::rng().fill_bytes(&mut b);
            Some(format!("req_{}", hex::encode(b)))
        }
        Kind::ShutdownResponse => {
            let Some(id) = &req.request_id else {
                return Err(invalid("request_id", "a shutdown_response names the request_id it answers".into()));
            };
            if req.approve.is_none() {
                return Err(invalid("approve", "a shutdown_response says approve: true or false".into()));
            }
            let asked = store::shutdown_request(&app.db, &team, id, &caller.name).await?.ok_or_else(|| {
                invalid("request_id", format!("no shutdown_request {id:?} was sent to you in team {team}"))
            })?;
            reply_to = Some(asked.sender);
            Some(id.clone())
        }
    };
    let now = clock::now_ms();
    let (sender, rid) = (caller.name.clone(), request_id.clone());
    let outcome = app
        .teams
        .transact_mut(&team, move |s, _| {
            let caller = Caller { name: sender, admin: false };
            let request_id = rid;
            let recipients = match &reply_to {
                // A response goes back to whoever asked, however it is addressed.
                Some(asker) => {
                    let named = recipients(s, &caller.name, &req.to)?;
                    if named != [asker.clone()] {
                        return Err(invalid("to", format!("answer the shutdown request to {asker}, who sent it")));
                    }
                    named
                }
                None => recipients(s, &caller.name, &req.to)?,
            };
            if recipients.is_empty() {
                return Err(invalid("to", format!("team {} has no one else to send to", s.team.name)));
            }
            let message = MessageRow {
                id: s.next_message_id(),
                sender: caller.name.clone(),
                addressed: req.to.clone(),
                kind: req.kind,
                summary: req.summary.clone(),
                message: req.message.clone(),
                request_id: request_id.clone(),
                approve: req.approve,
                created_at: now,
            };
            let id = message.id;
            Ok((vec![Write::Message { message, recipients }], id))
        })
        .await?;
    let (id, committed) = outcome.ok_or_else(|| super::super::team_not_found(&team))?;
    announce(&app, &team, &committed).await;
    Ok((StatusCode::CREATED, Json(Sent { id, request_id })))
}

/// The caller's inbox, oldest first.
#[utoipa::path(get, path = "/teams/{team}/messages", tag = "messages", params(("team" = String, Path), InboxParams),
    responses((status = 200, body = Inbox), (status = 404)))]
async fn inbox(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Query(p): Query<InboxParams>,
) -> Result<Json<Inbox>> {
    team_for(&app.db, &caller, &team).await?;
    let (limit, _) = crate::pagination::page(p.limit, None)?;
    let after = p.after.unwrap_or(0);
    let rows = store::inbox(&app.db, &team, &caller.name, after, limit).await?;
    let next_after = rows.last().map_or(after, |m| m.id);
    Ok(Json(Inbox { messages: rows.iter().map(MessageView::from).collect(), next_after }))
}

/// The inbox as server-sent events: the backlog after `after` (or
/// `Last-Event-ID`), then each message as it arrives. Event `message`, id =
/// message id.
#[utoipa::path(get, path = "/teams/{team}/messages/events", tag = "messages", params(("team" = String, Path), InboxParams),
    responses((status = 200, content_type = "text/event-stream"), (status = 404)))]
async fn events(
    State(app): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    Query(p): Query<InboxParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    team_for(&app.db, &caller, &team).await?;
    let last_event_id = crate::stream::last_event_id(&headers, "the id of the last message")?;
    let keep_alive = Duration::from_secs(app.config.sse_keep_alive_secs.clamp(1, 15));
    let reader = Reader {
        wake: app.bus.subscribe(&inbox_key(&team, &caller.name)),
        shutdown: app.shutdown.clone(),
        cursor: last_event_id.or(p.after).unwrap_or(0),
        buffer: VecDeque::new(),
        agent: caller.name,
        team,
        app,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        let m = r.next().await?;
        let event = Event::default()
            .id(m.id.to_string())
            .event("message")
            .json_data(MessageView::from(&m))
            .unwrap_or_else(|_| Event::default().comment("unserialisable message"));
        Some((Ok(event), r))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}

struct Reader {
    app: AppState,
    team: String,
    agent: String,
    cursor: i64,
    buffer: VecDeque<MessageRow>,
    wake: tokio::sync::watch::Receiver<i64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Reader {
    /// The next message; `None` ends the response (shutdown, storage error).
    async fn next(&mut self) -> Option<MessageRow> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(m) = self.buffer.pop_front() {
                self.cursor = m.id;
                return Some(m);
            }
            match store::inbox(&self.app.db, &self.team, &self.agent, self.cursor, SSE_BATCH).await {
                Ok(rows) if !rows.is_empty() => {
                    self.buffer.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(team = %self.team, agent = %self.agent, "inbox read failed: {e}");
                    return None;
                }
            }
            tokio::select! {
                _ = self.wake.changed() => {}
                _ = self.shutdown.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(self.app.config.sse_recheck_secs)) => {}
            }
        }
    }
}
