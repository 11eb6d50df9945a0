//! The one error type. Every failure a handler can meet becomes an [`Error`],
//! and every [`Error`] becomes the JSON body the API promises:
//! `{"error": {"code", "message", "details"}}`.
//!
//! axum's own rejections (bad JSON, wrong content type, bad query or path,
//! oversized bodies) are converted here too, through the extractor wrappers
//! [`Json`], [`Query`] and [`Path`], so no response leaves the host in another
//! shape.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Error {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Value>,
    retry_after: Option<u64>,
    /// The policy decision behind a refusal, to look up in the decision log.
    decision_id: Option<String>,
}

/// One entry of `details` for schema and input validation failures.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// A JSON pointer into the offending document ("" is the whole document).
    pub path: String,
    pub message: String,
}

impl Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new(), retry_after: None, decision_id: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for a thing the caller cannot see. Private resources of other
    /// agents also take this path, so existence never leaks.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} was not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 422: the request was well formed but its content breaks a rule.
    pub fn validation(message: impl Into<String>, details: Vec<Violation>) -> Self {
        let details = details.into_iter().map(|v| serde_json::to_value(v).unwrap_or(Value::Null)).collect();
        Self { details, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message) }
    }

    /// 423: the team or contract is halted by an algedonic HALT.
    pub fn locked(message: impl Into<String>) -> Self {
        Self::new(StatusCode::LOCKED, "halted", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Keeps the status, names the failure more precisely.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Names the policy decision that refused, as `decision_id` in the body.
    pub fn with_decision(mut self, decision_id: Option<String>) -> Self {
        self.decision_id = decision_id;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// A refusal (a 4xx) as one line an agent's status can show: its code,
    /// message and where each detail points; None for the host's own
    /// failures (a 5xx), which are not the writer's to fix.
    pub fn refusal(&self) -> Option<String> {
        if !self.status.is_client_error() {
            return None;
        }
        let mut line = format!("{}: {}", self.code, self.message);
        for d in self.details.iter().take(5) {
            let (path, message) = (d["path"].as_str().unwrap_or_default(), d["message"].as_str().unwrap_or_default());
            line.push_str(&format!("; at {:?}: {message}", if path.is_empty() { "/" } else { path }));
        }
        Some(line)
    }

    /// The JSON error body: `{"error": {"code", "message", "details"}}`.
    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message, "details": self.details});
        if let Some(id) = &self.decision_id {
            error["decision_id"] = json!(id);
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way; the connection
            // cannot be reused.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut => Self::unavailable("the database is busy; retry shortly", 1),
            _ => Self::internal(format!("storage error: {err}")),
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {}", source_text(&e)),
            ),
            JsonRejection::JsonDataError(e) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the body does not have the expected fields and types: {}", source_text(&e)),
            ),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "this endpoint takes JSON: send `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) => e.into(),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<BytesRejection> for Error {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large("the request body is larger than this endpoint accepts")
        } else if let Some(late) = find_source::<BodyTimedOut>(&rejection) {
            Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", late.to_string())
        } else {
            Self::bad_request(format!("could not read the request body: {}", rejection.body_text()))
        }
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", format!("bad query string: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", format!("bad path: {}", rejection.body_text()))
    }
}

/// The request body did not arrive within the listener's body read timeout.
/// The listener raises it inside the body; extractors meet it as a failed
/// read and answer 408.
#[derive(Debug)]
pub struct BodyTimedOut {
    pub after: std::time::Duration,
}

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s; send it whole and promptly, or raise --body-read-timeout",
            self.after.as_secs()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

fn find_source<'a, T: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// serde's message is the useful part; axum wraps it in a generic prefix.
fn source_text(err: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = err;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// `axum::Json`, but rejections become [`Error`].
pub struct Json<T>(pub T);

/// The body length a request declares (`Content-Length`), if it declares one.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The largest JSON request body (`--max-json-bytes`), put in each
/// request's extensions by the router; [`Json`] bodies past it are 413.
#[derive(Clone, Copy, Debug)]
pub struct JsonLimit(pub usize);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let limit = req.extensions().get::<JsonLimit>().copied();
        // A declared length over the limit is refused before anything is read.
        if let Some(JsonLimit(n)) = limit
            && declared_length(req.headers()).is_some_and(|d| d > n as u64)
        {
            return Err(json_too_large(n));
        }
        let req = match limit {
            Some(JsonLimit(n)) => req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, n))),
            None => req,
        };
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(json_too_large(limit.map_or(0, |l| l.0)))
            }
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// A JSON body that may be left out: no body at all (no length, or a
/// length of 0) is `T::default()`; any other body is read as [`Json`].
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let none = match declared_length(req.headers()) {
            Some(n) => n == 0,
            None => !req.headers().contains_key(header::TRANSFER_ENCODING),
        };
        if none {
            return Ok(Self(T::default()));
        }
        Json::<T>::from_request(req, state).await.map(|Json(v)| Self(v))
    }
}

fn json_too_large(limit: usize) -> Error {
    Error::too_large(format!(
        "this JSON body is over {limit} bytes, the most this server takes in one (--max-json-bytes); \
         send less, or keep large documents in a stash"
    ))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query`, but rejections become [`Error`].
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path`, but rejections become [`Error`].
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Router fallback: unknown routes answer in the API's error shape.
pub async fn route_not_found(uri: axum::http::Uri) -> Error {
    Error::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {}; see /openapi.json", uri.path()))
}

/// Router fallback for a known path with the wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}; see /openapi.json", uri.path()),
    )
}

impl Error {
    /// 503 with `Retry-After`: the host cannot take this request now.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// 429 with `Retry-After`, for callers over their request rate.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this agent; retry after {retry_after_secs} s"),
        );
        e.retry_after = Some(retry_after_secs);
        e
    }
}

/// The raw request body; rejections (over the size limit) become [`Error`].
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        Ok(Self(axum::body::Bytes::from_request(req, state).await?))
    }
}
