//! `/healthz`, `/metrics` and the middleware that counts every request.

use super::*;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(metrics))
}

/// Counts and times every request under its route template (not its raw
/// path, so ids do not explode the label space).
pub async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    app.metrics
        .latency
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    app.metrics.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    response
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503)))]
async fn healthz(State(app): State<AppState>) -> Result<Json<Health>> {
    app.db.ping().await.map_err(|e| {
        Error::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("database unreachable: {e}"))
    })?;
    Ok(Json(Health { status: "ok", database: app.db.kind() }))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", description = "Prometheus exposition format")))]
async fn metrics(State(app): State<AppState>) -> Result<Response> {
    let body = app.metrics.encode()?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}
