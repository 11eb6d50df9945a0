//! The dashboard at `/ui`: plain ES modules and a stylesheet from
//! `host/ui/`, embedded in the binary. The page talks to this host alone,
//! through the HTTP API and its SSE endpoints, with the key the user signs
//! in with; the Content-Security-Policy holds it to that.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::Error;

/// Every file the page loads: name, Content-Type, contents.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("../ui/style.css")),
    ("app.js", JS, include_str!("../ui/app.js")),
    ("api.js", JS, include_str!("../ui/api.js")),
    ("dom.js", JS, include_str!("../ui/dom.js")),
    ("signals.js", JS, include_str!("../ui/signals.js")),
    ("team.js", JS, include_str!("../ui/team.js")),
    ("contract.js", JS, include_str!("../ui/contract.js")),
    ("policies.js", JS, include_str!("../ui/policies.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Scripts and styles from this origin only, API calls to it only, no
/// inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/ui", get(index)).route("/ui/", get(index)).route("/ui/{file}", get(asset))
}

async fn index() -> Response {
    serve("index.html").unwrap_or_else(IntoResponse::into_response)
}

async fn asset(Path(file): Path<String>) -> Response {
    serve(&file).unwrap_or_else(IntoResponse::into_response)
}

fn serve(file: &str) -> Result<Response, Error> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| Error::not_found(format!("dashboard file {file:?}; the dashboard starts at /ui")))?;
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new binary may bring new files; the browser asks each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module one file imports is served, and the page's own assets
    /// stay under the 300 KB budget.
    #[test]
    fn every_import_is_served_and_the_page_is_small() {
        let served: Vec<&str> = ASSETS.iter().map(|(n, _, _)| *n).collect();
        for (name, _, body) in ASSETS {
            for line in body.lines() {
                if let Some(rest) = line.split(" from './").nth(1) {
                    let target = rest.split('\'').next().unwrap_or_default();
                    assert!(served.contains(&target), "{name} imports {target}, which /ui does not serve");
                }
            }
        }
        let total: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
        assert!(total < 300 * 1024, "the dashboard's assets are {total} bytes");
    }
}
