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
    let method = method_label(req.method()).to_string();
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

/// The method as a label: clients may send any token as a method, and each
/// would be a new series, so those outside HTTP's own are `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ]
    .iter()
    .find(|m| *m == method)
    .map_or("other", Method::as_str)
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn only_http_methods_become_labels() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["FOO", "get", "X-1"] {
            assert_eq!(method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()), "other", "{made_up}");
        }
    }
}
