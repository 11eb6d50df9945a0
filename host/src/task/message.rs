//! SendMessage and the inbox. A message goes to one member, to `lead`, or
//! to `all` (every member but the sender), and lands in each recipient's
//! inbox under one id. Shutdown requests get a fresh `request_id`; a
//! response names it and goes back to whoever asked. Inboxes are read by
//! page (`after`) or live over SSE, woken through the same bus as streams.

mod api;

pub use api::{announce, routes};

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
use crate::clock;
use crate::error::{Json, Path, Query, Result};

const MAX_SUMMARY: usize = 1_000;
const MAX_MESSAGE: usize = 64 * 1024;
const SSE_BATCH: i64 = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Message,
    ShutdownRequest,
    ShutdownResponse,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::ShutdownRequest => "shutdown_request",
            Kind::ShutdownResponse => "shutdown_response",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Kind::Message, Kind::ShutdownRequest, Kind::ShutdownResponse].into_iter().find(|k| k.as_str() == s)
    }
}

crate::text_column!(Kind);

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
    kind: Kind,
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
            kind: m.kind,
            summary: m.summary.clone(),
            message: m.message.clone(),
            request_id: m.request_id.clone(),
            approve: m.approve,
            created_at: clock::rfc3339(m.created_at),
        }
    }
}

/// The bus key that wakes one inbox.
pub fn inbox_key(team: &str, agent: &str) -> String {
    format!("inbox:{team}:{agent}")
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
