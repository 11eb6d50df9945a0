//! The schema routes: each handler parses, checks the caller, calls the store
//! and maps the answer; every failure is the one error type.

use super::*;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(list)).routes(routes!(show, delete))
}

/// Uploads a schema, or a new version of one of the caller's schemas.
#[utoipa::path(post, path = "/schema", tag = "schemas", request_body = CreateSchema,
    responses((status = 201, body = Created), (status = 422, description = "not a valid JSON Schema")))]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateSchema>,
) -> Result<(StatusCode, Json<Created>)> {
    name::check("schema", &req.name)?;
    meta_validate(&req.definition)?;
    let definition = serde_json::to_string(&req.definition).map_err(|e| Error::internal(e.to_string()))?;
    let (schema_id, version) =
        store::upsert(&app.db, &caller.name, &req.name, &req.description, req.visibility, req.target_type, &definition)
            .await?;
    Ok((StatusCode::CREATED, Json(Created { schema_id, name: req.name, version })))
}

/// Public schemas and the caller's own.
#[utoipa::path(get, path = "/schemas", tag = "schemas", params(ListParams),
    responses((status = 200, body = SchemaList)))]
async fn list(State(app): State<AppState>, caller: Caller, Query(p): Query<ListParams>) -> Result<Json<SchemaList>> {
    let (limit, offset) = crate::pagination::page(p.limit, p.offset)?;
    let rows = store::list(&app.db, &caller.name, p.q.as_deref(), limit, offset).await?;
    Ok(Json(SchemaList { schemas: rows.into_iter().map(|r| r.summary(None)).collect() }))
}

/// One schema by id or name, with its definition.
#[utoipa::path(get, path = "/schema/{schema}", tag = "schemas", params(("schema" = String, Path), ShowParams),
    responses((status = 200, body = SchemaSummary), (status = 404)))]
async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    Query(p): Query<ShowParams>,
) -> Result<Json<SchemaSummary>> {
    let row = resolve(&app.db, &caller, &id_or_name).await?;
    let version = p.version.unwrap_or(row.latest_version);
    let Some(definition) = store::definition(&app.db, &row.schema_id, version).await? else {
        return Err(Error::not_found(format!("version {version} of schema {id_or_name:?}")));
    };
    let definition = serde_json::from_str(&definition).map_err(|e| Error::internal(e.to_string()))?;
    let mut summary = row.summary(Some(definition));
    summary.version = version;
    Ok(Json(summary))
}

/// Deletes a schema with all its versions: owner only, refused while bound.
#[utoipa::path(delete, path = "/schema/{schema}", tag = "schemas", params(("schema" = String, Path)),
    responses((status = 204), (status = 403), (status = 409, description = "still bound")))]
async fn delete(State(app): State<AppState>, caller: Caller, Path(id_or_name): Path<String>) -> Result<StatusCode> {
    let row = resolve(&app.db, &caller, &id_or_name).await?;
    if row.owner != caller.name && !caller.admin {
        return Err(Error::forbidden(format!("only the owner ({}) may delete schema {:?}", row.owner, row.name)));
    }
    let bound = crate::stash::count_bound(&app.db, &row.schema_id).await?
        + crate::stream::count_bound(&app.db, &row.schema_id).await?;
    if bound > 0 {
        return Err(Error::conflict(
            "schema_in_use",
            format!("schema {:?} is bound to {bound} stash(es) or stream(s); delete those first", row.name),
        ));
    }
    store::delete(&app.db, &row.schema_id).await?;
    app.schemas.forget(&row.schema_id);
    Ok(StatusCode::NO_CONTENT)
}
