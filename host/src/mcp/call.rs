//! One tool call: its arguments placed into a request to the API router,
//! and the answer taken back as JSON.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::schema::{Arg, Place};
use super::tools::{self, Spec};
use crate::AppState;
use crate::agent::Caller;
use crate::error::Error;

/// A refusal: the status and the JSON error body, as the route gave them.
pub struct Failure {
    pub status: StatusCode,
    pub body: Value,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self { status: e.status(), body: e.body() }
    }
}

pub struct Call<'a> {
    pub app: &'a AppState,
    pub api: &'a Router,
    pub caller: &'a Caller,
    /// The caller's key, as it came: the routes authenticate it again.
    pub key: HeaderMap,
    pub cancel: CancellationToken,
}

/// The headers that carry a key, and nothing else of the MCP request.
pub fn key_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::HeaderName::from_static("x-api-key")] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    out
}

struct Reply {
    headers: HeaderMap,
    body: axum::body::Bytes,
}

/// A tool's answer: the structured content, and the same as JSON text
/// (the route's own bytes where there are some, not a second rendering).
pub struct Answer {
    pub value: Value,
    pub text: String,
}

impl From<Value> for Answer {
    fn from(value: Value) -> Self {
        Self { text: value.to_string(), value }
    }
}

impl Call<'_> {
    pub async fn run(&self, spec: &Spec, args: &[Arg], mut arguments: Map<String, Value>) -> Result<Answer, Failure> {
        match spec.call {
            tools::Call::Route => self.route(spec, args, arguments).await,
            tools::Call::StashGet => self.stash_get(spec, args, arguments).await.map(Answer::from),
            tools::Call::StashPut => {
                let content = arguments.remove("content").ok_or_else(|| missing(spec, "content"))?;
                let content_type = take_string(spec, &mut arguments, "content_type")?;
                let if_match = take_version(spec, &mut arguments)?;
                let (body, default_type) = match content {
                    Value::String(s) => (s.into_bytes(), "text/plain"),
                    other => {
                        (serde_json::to_vec(&other).map_err(|e| Error::internal(e.to_string()))?, "application/json")
                    }
                };
                let content_type = content_type.unwrap_or_else(|| default_type.to_string());
                let (uri, _) = place(spec, args, arguments)?;
                let reply = self.send(Method::PUT, &uri, Some(&content_type), if_match, body).await?;
                json_of(&reply)
            }
            tools::Call::WaitEntries => {
                let key = string_arg(spec, &arguments, "stream_id")?;
                self.wait(spec, args, arguments, &key, "entries").await
            }
            tools::Call::WaitMessages => {
                let team = string_arg(spec, &arguments, "team")?;
                let key = crate::task::inbox_key(&team, &self.caller.name);
                self.wait(spec, args, arguments, &key, "messages").await
            }
        }
    }

    async fn route(&self, spec: &Spec, args: &[Arg], mut arguments: Map<String, Value>) -> Result<Answer, Failure> {
        let if_match = take_version(spec, &mut arguments)?;
        let (uri, body) = place(spec, args, arguments)?;
        let method = Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes())
            .map_err(|e| Error::internal(format!("tool {}: {e}", spec.name)))?;
        let reply = match body {
            Some(body) => {
                let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
                self.send(method, &uri, Some("application/json"), if_match, bytes).await?
            }
            None => self.send(method, &uri, None, if_match, Vec::new()).await?,
        };
        json_of(&reply)
    }

    async fn stash_get(&self, spec: &Spec, args: &[Arg], arguments: Map<String, Value>) -> Result<Value, Failure> {
        let name = string_arg(spec, &arguments, "name")?;
        let (uri, _) = place(spec, args, arguments)?;
        let reply = self.send(Method::GET, &uri, None, None, Vec::new()).await?;
        let header = |n: &str| reply.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let number = |n: &str| header(n).and_then(|v| v.parse::<i64>().ok()).unwrap_or_default();
        let content_type = header("content-type").unwrap_or_default();
        let mut out = json!({
            "name": name,
            "persistent": header("x-stash-persistent").as_deref() == Some("true"),
            "version": number("x-stash-version"),
            "content_type": content_type,
            "size": number("x-stash-size"),
            "expires_at": header("x-stash-expires-at"),
        });
        match std::str::from_utf8(&reply.body) {
            Ok(text) => {
                out["text"] = text.into();
                let is_json = content_type.split(';').next().is_some_and(|t| {
                    let t = t.trim();
                    t == "application/json" || t.ends_with("+json")
                });
                if is_json && let Ok(v) = serde_json::from_str::<Value>(text) {
                    out["json"] = v;
                }
            }
            Err(_) => out["base64"] = base64(&reply.body).into(),
        }
        Ok(out)
    }

    /// Reads, and while the page is empty waits for a wake-up on `key`
    /// (or the recheck, or the deadline) and reads again.
    async fn wait(
        &self,
        spec: &Spec,
        args: &[Arg],
        mut arguments: Map<String, Value>,
        key: &str,
        items: &str,
    ) -> Result<Answer, Failure> {
        let secs = match arguments.remove("timeout_s") {
            None | Some(Value::Null) => tools::DEFAULT_WAIT_SECS,
            Some(v) => v.as_u64().filter(|s| *s <= tools::MAX_WAIT_SECS).ok_or_else(|| {
                invalid(spec, format!("timeout_s must be a whole number of seconds from 0 to {}", tools::MAX_WAIT_SECS))
            })?,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        // Subscribed before the first read, so an append between the two
        // still wakes this wait.
        let mut wake = self.app.bus.subscribe(key);
        let mut shutdown = self.app.shutdown.clone();
        loop {
            let page = self.route(spec, args, arguments.clone()).await?;
            let found = page.value.get(items).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
            if found || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
                return Ok(page);
            }
            tokio::select! {
                _ = wake.changed() => {}
                // Appends made by another host arrive by NOTIFY; this bounds a lost one.
                _ = tokio::time::sleep(Duration::from_secs(self.app.config.sse_recheck_secs)) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
                _ = self.cancel.cancelled() => {
                    return Err(Error::new(StatusCode::REQUEST_TIMEOUT, "cancelled", "the client cancelled the wait").into());
                }
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        if_match: Option<i64>,
        body: Vec<u8>,
    ) -> Result<Reply, Failure> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(headers) = request.headers_mut() {
            headers.extend(self.key.clone());
            if let Some(t) = content_type.and_then(|t| HeaderValue::from_str(t).ok()) {
                headers.insert(header::CONTENT_TYPE, t);
            }
            if let Some(v) = if_match.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok()) {
                headers.insert(header::IF_MATCH, v);
            }
        }
        let request = request.body(Body::from(body)).map_err(|e| invalid_uri(uri, e))?;
        let response = match self.api.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let limit = self.app.config.max_persistent_bytes.max(self.app.config.max_json_bytes) + 64 * 1024;
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|e| Error::internal(format!("reading the answer of {uri}: {e}")))?;
        if !parts.status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(
                |_| json!({"error": {"code": "internal", "message": String::from_utf8_lossy(&bytes), "details": []}}),
            );
            return Err(Failure { status: parts.status, body });
        }
        Ok(Reply { headers: parts.headers, body: bytes })
    }
}

/// The request's path with its parameters filled in, its query, and the
/// JSON body (when the route takes one).
fn place(
    spec: &Spec,
    args: &[Arg],
    arguments: Map<String, Value>,
) -> Result<(String, Option<Map<String, Value>>), Error> {
    let mut path = spec.path.to_string();
    let mut query = Vec::new();
    let mut body = spec.body.then(Map::new);
    for (name, value) in arguments {
        let Some(arg) = args.iter().find(|a| a.name == name) else {
            let known: Vec<&str> = args.iter().map(|a| a.name.as_str()).collect();
            return Err(invalid(
                spec,
                format!("{name:?} is not an argument of {}; it takes {}", spec.name, known.join(", ")),
            ));
        };
        match arg.place {
            Place::Path => {
                let text = scalar(spec, &name, &value)?.ok_or_else(|| missing(spec, &name))?;
                path = path.replace(&format!("{{{name}}}"), &encode(&text));
            }
            Place::Query => {
                if let Some(text) = scalar(spec, &name, &value)? {
                    query.push(format!("{}={}", encode(&name), encode(&text)));
                }
            }
            Place::Body => {
                if let Some(b) = body.as_mut() {
                    b.insert(name, value);
                }
            }
        }
    }
    if let Some(name) = args.iter().find(|a| a.place == Place::Path && path.contains(&format!("{{{}}}", a.name))) {
        return Err(missing(spec, &name.name));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    Ok((path, body))
}

/// A path or query value as text; arrays of scalars join with commas (as
/// `labels` does over HTTP); null is no value.
fn scalar(spec: &Spec, name: &str, value: &Value) -> Result<Option<String>, Error> {
    Ok(match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match scalar(spec, name, item)? {
                    Some(p) if !matches!(item, Value::Array(_)) => parts.push(p),
                    _ => return Err(invalid(spec, format!("{name} takes a list of plain values"))),
                }
            }
            Some(parts.join(","))
        }
        Value::Object(_) => return Err(invalid(spec, format!("{name} takes a plain value, not an object"))),
    })
}

fn string_arg(spec: &Spec, arguments: &Map<String, Value>, name: &str) -> Result<String, Error> {
    match arguments.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(spec, format!("{name} must be a string"))),
        None => Err(missing(spec, name)),
    }
}

fn take_string(spec: &Spec, arguments: &mut Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match arguments.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(spec, format!("{name} must be a string"))),
    }
}

fn take_version(spec: &Spec, arguments: &mut Map<String, Value>) -> Result<Option<i64>, Error> {
    match arguments.remove("if_match") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| invalid(spec, "if_match must be a stash version (a positive integer)")),
    }
}

fn json_of(reply: &Reply) -> Result<Answer, Failure> {
    if reply.body.is_empty() {
        return Ok(json!({}).into());
    }
    let value = serde_json::from_slice(&reply.body)
        .map_err(|e| Error::internal(format!("the route's answer is not JSON: {e}")))?;
    // JSON that parsed is UTF-8.
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    Ok(Answer { value, text })
}

fn invalid(spec: &Spec, message: impl Into<String>) -> Error {
    Error::bad_request(format!("{}: {}", spec.name, message.into())).with_code("invalid_arguments")
}

fn missing(spec: &Spec, name: &str) -> Error {
    invalid(spec, format!("{name} is required"))
}

fn invalid_uri(uri: &str, e: impl std::fmt::Display) -> Failure {
    Error::bad_request(format!("these arguments make no valid request ({uri}): {e}"))
        .with_code("invalid_arguments")
        .into()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("a b/ü?&"), "a%20b%2F%C3%BC%3F%26");
    }

    #[test]
    fn base64_pads_like_rfc_4648() {
        for (input, want) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn arguments_go_to_path_query_and_body() {
        let spec = &tools::TOOLS.iter().find(|t| t.name == "task_update").unwrap();
        let args = vec![
            Arg { name: "team".into(), place: Place::Path },
            Arg { name: "id".into(), place: Place::Path },
            Arg { name: "owner".into(), place: Place::Body },
        ];
        let ok = json!({"team": "a b", "id": 7, "owner": "coder"}).as_object().cloned().unwrap();
        let (uri, body) = place(spec, &args, ok).unwrap();
        assert_eq!(uri, "/teams/a%20b/tasks/7");
        assert_eq!(body.unwrap()["owner"], "coder");
        let unknown = json!({"team": "t", "id": 1, "ownr": "x"}).as_object().cloned().unwrap();
        let e = place(spec, &args, unknown).unwrap_err();
        assert_eq!(e.code(), "invalid_arguments");
        assert!(e.message().contains("team, id, owner"), "{}", e.message());
        let no_id = json!({"team": "t"}).as_object().cloned().unwrap();
        assert!(place(spec, &args, no_id).unwrap_err().message().contains("id is required"));
    }
}
