//! What discovery asks of each resource: the filters ([`Criteria`]) and
//! one found stash or stream ([`Found`]). Stash and stream answer for their
//! own tables; `discover` merges and pages their answers.

use serde::Serialize;
use utoipa::ToSchema;

use crate::{clock, db};

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
    /// Oldest first, then by name: how discovery orders what it merges.
    pub fn order(&self) -> (i64, &str) {
        (self.created_at, &self.name)
    }

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
