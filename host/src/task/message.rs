//! SendMessage and the inbox. A message goes to one member, to `lead`, or
//! to `all` (every member but the sender), and lands in each recipient's
//! inbox under one id. Shutdown requests get a fresh `request_id`; a
//! response names it and goes back to whoever asked. Inboxes are read by
//! page (`after`) or live over SSE, woken through the same bus as streams.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::store::{self, Committed, MessageRow, Write};
use super::{invalid, team_for};
use crate::agent::Caller;
use crate::error::{Json, Path, Query, Result};
use crate::{AppState, clock};

const MAX_SUMMARY: usize = 1_000;
const MAX_MESSAGE: usize = 64 * 1024;
const SSE_BATCH: i64 = 100;
const RECHECK: Duration = Duration::from_secs(5);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send, inbox)).routes(routes!(events))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Message,
    ShutdownRequest,
    ShutdownResponse,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::ShutdownRequest => "shutdown_request",
            Kind::ShutdownResponse => "shutdown_response",
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// A member's name, `lead`, or `all`.
    to: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: Kind,
    /// For a `shutdown_response`: the request it answers.
    request_id: Option<String>,
    /// For a `shutdown_response`: whether the agent agrees to shut down.
    approve: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct Sent {
    id: i64,
    request_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    id: i64,
    from: String,
    to: String,
    #[serde(rename = "type")]
    kind: String,
    summary: String,
    message: String,
    request_id: Option<String>,
    approve: Option<bool>,
    created_at: String,
}

impl From<&MessageRow> for MessageView {
    fn from(m: &MessageRow) -> Self {
        Self {
            id: m.id,
            from: m.sender.clone(),
            to: m.addressed.clone(),
            kind: m.kind.clone(),
            summary: m.summary.clone(),
            message: m.message.clone(),
            request_id: m.request_id.clone(),
            approve: m.approve,
            created_at: clock::rfc3339(m.created_at),
        }
    }
}

/// The bus key that wakes one inbox.
fn inbox_key(team: &str, agent: &str) -> String {
    format!("inbox:{team}:{agent}")
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

/// Who a message addressed `to` reaches, as `sender` sees the team.
pub fn recipients(s: &store::Snapshot, sender: &str, to: &str) -> Result<Vec<String>> {
    match to {
        "lead" => Ok(vec![s.team.lead.clone()]),
        "all" => Ok(s.members.iter().filter(|m| *m != sender).cloned().collect()),
        agent if s.members.contains(agent) => Ok(vec![agent.to_string()]),
        agent => Err(invalid(
            "to",
            format!("{agent:?} is not a member of team {}; send to a member, \"lead\" or \"all\"", s.team.name),
        )),
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
                kind: req.kind.as_str().into(),
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
    let (id, committed) = outcome.ok_or_else(|| super::team_not_found(&team))?;
    announce(&app, &team, &committed).await;
    Ok((StatusCode::CREATED, Json(Sent { id, request_id })))
}

#[derive(Deserialize, IntoParams)]
pub struct InboxParams {
    /// Only messages with a larger id.
    after: Option<i64>,
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Inbox {
    messages: Vec<MessageView>,
    /// Pass as `after` to get what comes next.
    next_after: i64,
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
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}
