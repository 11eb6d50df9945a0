//! `GET /discover`: find discoverable stashes and streams without a key.
//! Each resource module answers for its own table ([`crate::stash::discover`],
//! [`crate::stream::discover`]); this module resolves the filters, merges the
//! two lists oldest first and pages the result.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Json, Query, Result};
use crate::{AppState, clock, db, name};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(discover))
}

/// Filters as the resource modules see them.
pub struct Criteria {
    /// Only resources bound to one of these schemas (None: any or none).
    pub schema_ids: Option<Vec<String>>,
    /// Each must appear in the name, description or labels.
    pub words: Vec<String>,
    pub label: Option<String>,
    /// Only streams linked to this stash.
    pub linked_to: Option<String>,
    /// How many rows to fetch: offset + limit, since paging happens after the merge.
    pub fetch: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaRef {
    schema_id: String,
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Found {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    description: String,
    labels: Vec<String>,
    owner: String,
    updated_at: String,
    /// Stashes: the bound schema, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<SchemaRef>)]
    schema: Option<Option<SchemaRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<String>,
    /// Streams: the linked stash, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    linked_stash: Option<Option<String>>,
    #[serde(skip)]
    created_at: i64,
}

impl Found {
    #[allow(clippy::too_many_arguments)]
    pub fn stash(
        name: String,
        persistent: bool,
        description: String,
        labels: &str,
        owner: String,
        schema: Option<(String, String)>,
        created_at: i64,
        updated_at: i64,
    ) -> Self {
        Self {
            kind: "stash",
            name,
            description,
            labels: db::decode_labels(labels),
            owner,
            updated_at: clock::rfc3339(updated_at),
            schema: Some(schema.map(|(schema_id, name)| SchemaRef { schema_id, name })),
            persistent: Some(persistent),
            stream_id: None,
            linked_stash: None,
            created_at,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn stream(
        stream_id: String,
        name: String,
        description: String,
        labels: &str,
        owner: String,
        linked_stash: Option<String>,
        created_at: i64,
        updated_at: i64,
    ) -> Self {
        Self {
            kind: "stream",
            name,
            description,
            labels: db::decode_labels(labels),
            owner,
            updated_at: clock::rfc3339(updated_at),
            schema: None,
            persistent: None,
            stream_id: Some(stream_id),
            linked_stash: Some(linked_stash),
            created_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct DiscoverParams {
    /// `stash` or `stream`; both when absent.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A public schema's name or `sch_` id.
    schema: Option<String>,
    /// Words that must all appear in the name, description or labels.
    q: Option<String>,
    label: Option<String>,
    /// A stash name: streams linked to it.
    linked_to: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Discovered {
    results: Vec<Found>,
}

/// Discoverable stashes and streams; no key needed.
#[utoipa::path(get, path = "/discover", tag = "discover", params(DiscoverParams),
    responses((status = 200, body = Discovered)))]
async fn discover(State(app): State<AppState>, Query(p): Query<DiscoverParams>) -> Result<Json<Discovered>> {
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    let (stashes, streams) = match p.kind.as_deref() {
        None => (true, true),
        Some("stash") => (true, false),
        Some("stream") => (false, true),
        Some(other) => return Err(Error::bad_request(format!("type must be stash or stream, not {other:?}"))),
    };
    if let Some(label) = &p.label {
        name::check("label", label)?;
    }
    if let Some(stash) = &p.linked_to {
        name::check("stash", stash)?;
    }
    let schema_ids = match &p.schema {
        Some(s) => Some(crate::schema::public_ids(&app.db, s).await?),
        None => None,
    };
    let criteria = Criteria {
        schema_ids,
        words: p.q.as_deref().unwrap_or_default().split_whitespace().map(String::from).collect(),
        label: p.label,
        linked_to: p.linked_to,
        fetch: offset + limit,
    };
    let mut results = Vec::new();
    if stashes {
        results.extend(crate::stash::discover(&app.db, &criteria).await?);
    }
    if streams {
        results.extend(crate::stream::discover(&app.db, &criteria).await?);
    }
    // Same order as each store's query, so paging is stable across both.
    results.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    let results = results.into_iter().skip(offset as usize).take(limit as usize).collect();
    Ok(Json(Discovered { results }))
}
