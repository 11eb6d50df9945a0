//! Registration over HTTP, and the extractor that turns a key into a
//! [`Caller`] for every other route.

use super::*;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register)).routes(routes!(me))
}

/// Registers an agent and returns its key, once.
#[utoipa::path(post, path = "/register/agent", tag = "agents", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 409, description = "name taken")))]
async fn register(
    State(app): State<AppState>,
    caller: Option<Caller>,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>)> {
    if app.config.registration == Registration::Admin {
        match caller {
            None => return Err(Error::unauthorized("registration needs an admin key on this server")),
            Some(c) if !c.admin => return Err(Error::forbidden("only an admin may register agents on this server")),
            Some(_) => {}
        }
    }
    name::check("agent", &req.agent_name)?;
    if is_reserved(&req.agent_name) {
        return Err(Error::conflict("name_taken", format!("the agent name {:?} is reserved", req.agent_name)));
    }
    let key = new_key();
    if !insert(&app.db, &req.agent_name, &hash_key(&key), false).await? {
        return Err(Error::conflict(
            "name_taken",
            format!("an agent named {:?} already exists; pick another name", req.agent_name),
        ));
    }
    tracing::info!(agent = %req.agent_name, "agent registered");
    Ok((StatusCode::CREATED, Json(RegisterResponse { agent_name: req.agent_name, api_key: key })))
}

/// The agent a request's key names, or a 401; not rate limited (the
/// extractor is). `/mcp` uses this, since each of its tool calls is
/// limited as the HTTP request it makes.
pub async fn authenticate(parts: &Parts, app: &AppState) -> Result<Caller> {
    let Some(key) = presented_key(parts) else {
        return Err(Error::unauthorized("missing API key: send `X-API-KEY: sk_...` or `Authorization: Bearer sk_...`"));
    };
    app.keys.resolve(&app.db, key).await
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self> {
        let caller = authenticate(parts, app).await?;
        app.limiter.check(&caller.name)?;
        Ok(caller)
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = Error;

    /// No key: `None`. A key that does not resolve is still a 401.
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Option<Self>> {
        if presented_key(parts).is_none() {
            return Ok(None);
        }
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, app).await.map(Some)
    }
}
