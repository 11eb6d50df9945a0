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
use crate::search::{Criteria, Found};
use crate::{AppState, name};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(discover))
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
    results.sort_by(|a, b| a.order().cmp(&b.order()));
    let results = results.into_iter().skip(offset as usize).take(limit as usize).collect();
    Ok(Json(Discovered { results }))
}
