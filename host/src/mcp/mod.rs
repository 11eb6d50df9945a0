//! The MCP endpoint: Cairn's tools over the Model Context Protocol, at
//! `/mcp` on the HTTP listener (Streamable HTTP, through `rmcp`).
//!
//! It is stateless: every POST carries its own key and is served on its
//! own, so there are no sessions to expire or leak. Clients of the
//! 2026-07-28 revision (`server/discover`) and of the earlier ones (the
//! `initialize` handshake) are both served.
//!
//! A tool is a route of the HTTP API, called in process through the same
//! router with the caller's key: the same extractors, limits, policies and
//! errors, by construction rather than by a second copy. Each tool's
//! schemas are derived from that route's OpenAPI entry ([`schema`]); only
//! the wait tools add behaviour of their own (a long poll on the stream
//! bus), and `stash_get`/`stash_put` turn raw bodies into JSON.
//!
//! Before a request reaches `rmcp`, [`guard`] checks `Host` and `Origin`
//! against the names this host answers to (403), then the key (401), so
//! nothing runs for a request that fails either. The key is not rate
//! limited here: each tool call is, as the HTTP request it makes.

mod call;
mod schema;
mod tools;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::agent::Caller;
use crate::error::Error;

/// The revisions served, newest first.
const VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2026_07_28,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_03_26,
];

const INSTRUCTIONS: &str = "Cairn is a coordination host shared by several agents. Stashes are named documents, \
streams are append-only logs, and teams keep a shared task list with messages and algedonic signals. A team lead \
creates tasks (task_create) and teammates claim them by setting themselves as owner (task_update); completing a \
task needs a HANDOFF in metadata.handoff. Follow your inbox with wait_for_messages. Errors carry the HTTP API's \
code, message and details.";

/// The `/mcp` route, over the API router its tools call.
pub fn routes(app: AppState, api: Router, openapi: &serde_json::Value) -> anyhow::Result<Router> {
    let server = Cairn(Arc::new(Inner::new(app.clone(), api, openapi)?));
    let limit = app.config.max_persistent_bytes.max(app.config.max_json_bytes) * 2 + 64 * 1024;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        // [`guard`] checks Host and Origin, answering with the API's error body.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(limit);
    let stop = config.cancellation_token.clone();
    let mut shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|down| *down).await;
        stop.cancel();
    });
    let service =
        StreamableHttpService::new(move || Ok(server.clone()), Arc::new(NeverSessionManager::default()), config);
    let state = Arc::new(Guard { hosts: allowed_hosts(app.config.listen, &app.config.mcp_allowed_hosts), app });
    Ok(Router::new().route_service("/mcp", service).layer(axum::middleware::from_fn_with_state(state, guard)))
}

struct Guard {
    app: AppState,
    hosts: Vec<String>,
}

/// Host and Origin (403), then the key (401); the caller rides along in
/// the request's extensions, where the tools find it.
async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Err(e) = check_origin(req.headers(), &g.hosts) {
        return e.into_response();
    }
    let (mut parts, body) = req.into_parts();
    match crate::agent::api::authenticate(&parts, &g.app).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

/// Loopback always; the `--listen` address when it names one; and what the
/// operator adds.
fn allowed_hosts(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        hosts.push(ip.to_string());
    }
    hosts.extend(extra.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()));
    hosts
}

fn check_origin(headers: &HeaderMap, hosts: &[String]) -> Result<(), Error> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !host_allowed(host, hosts) {
        return Err(Error::forbidden(format!(
            "Host {host:?} is not one this host answers to over MCP; add it with --mcp-allowed-hosts"
        ))
        .with_code("host_not_allowed"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if !authority.is_some_and(|a| host_allowed(a.trim_end_matches('/'), hosts)) {
            return Err(Error::forbidden(format!(
                "Origin {origin:?} may not call this host's MCP endpoint; add its host with --mcp-allowed-hosts"
            ))
            .with_code("origin_not_allowed"));
        }
    }
    Ok(())
}

/// `authority` is `host`, `host:port`, `[v6]` or `[v6]:port`. An allowed
/// entry without a port matches any port; one with a port, only that one.
fn host_allowed(authority: &str, hosts: &[String]) -> bool {
    let authority = authority.to_ascii_lowercase();
    let (name, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, tail)) => (name.to_string(), tail.strip_prefix(':').map(str::to_string)),
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => (name.to_string(), Some(port.to_string())),
            _ => (authority.clone(), None),
        },
    };
    if name.is_empty() {
        return false;
    }
    hosts.iter().any(|h| {
        let h = h.trim_start_matches('[').replace(']', "");
        match (h.rsplit_once(':').filter(|(n, _)| !n.contains(':')), &port) {
            (Some((n, p)), Some(port)) => n == name && p == port,
            (Some(_), None) => false,
            (None, _) => h == name,
        }
    })
}

#[derive(Clone)]
struct Cairn(Arc<Inner>);

struct Inner {
    app: AppState,
    api: Router,
    tools: Vec<Tool>,
    specs: HashMap<&'static str, (&'static tools::Spec, Vec<schema::Arg>)>,
}

impl Inner {
    fn new(app: AppState, api: Router, openapi: &Value) -> anyhow::Result<Self> {
        let components = schema::components(openapi);
        let mut list = Vec::new();
        let mut specs = HashMap::new();
        for spec in tools::TOOLS {
            let shape = schema::Shape {
                method: spec.method,
                path: spec.path,
                omit: spec.omit,
                extra: (spec.extra)(),
                body: spec.body,
            };
            let derived =
                schema::derive(openapi, &components, &shape).map_err(|e| anyhow::anyhow!("tool {}: {e}", spec.name))?;
            let output = match spec.call {
                tools::Call::StashGet => schema::standalone(&tools::stash_get_output(), &components),
                _ => {
                    derived.output.ok_or_else(|| anyhow::anyhow!("tool {}: its route has no JSON answer", spec.name))?
                }
            };
            let annotations =
                ToolAnnotations::with_title(spec.title).read_only(spec.read_only).destructive(false).open_world(false);
            let tool = Tool::new(spec.name, spec.description, Arc::new(derived.input))
                .with_title(spec.title)
                .with_raw_output_schema(Arc::new(output))
                .with_annotations(annotations);
            list.push(tool);
            specs.insert(spec.name, (spec, derived.args));
        }
        Ok(Self { app, api, tools: list, specs })
    }
}

impl ServerHandler for Cairn {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("cairn", env!("CARGO_PKG_VERSION"))
                    .with_title("Cairn")
                    .with_description("A coordination host for AI agents: stashes, streams and team task lists."),
            )
            .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.0.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.0.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some((spec, args)) = self.0.specs.get(request.name.as_ref()) else {
            return Err(ErrorData::invalid_params(
                format!("there is no tool {:?}; tools/list names them", request.name),
                None,
            ));
        };
        let parts = context.extensions.get::<axum::http::request::Parts>();
        let caller = parts.and_then(|p| p.extensions.get::<Caller>());
        let (Some(parts), Some(caller)) = (parts, caller) else {
            return Err(ErrorData::internal_error("the request reached a tool without a caller", None));
        };
        let call = call::Call {
            app: &self.0.app,
            api: &self.0.api,
            caller,
            key: call::key_headers(&parts.headers),
            cancel: context.ct.clone(),
        };
        let arguments = request.arguments.unwrap_or_default();
        let result = match call.run(spec, args, arguments).await {
            Ok(answer) => {
                let mut result = CallToolResult::success(vec![ContentBlock::text(answer.text)]);
                result.structured_content = Some(answer.value);
                result
            }
            Err(failure) => failure_result(failure),
        };
        Ok(result.into())
    }
}

/// A refusal as the tool's error result: the HTTP status beside the API's
/// error body, as text too for clients that show only text.
fn failure_result(f: call::Failure) -> CallToolResult {
    let mut value = match f.body {
        Value::Object(o) if o.contains_key("error") => o,
        other => {
            let mut o = Map::new();
            o.insert("error".into(), json!({"code": "internal", "message": other.to_string(), "details": []}));
            o
        }
    };
    value.insert("status".into(), f.status.as_u16().into());
    CallToolResult::structured_error(Value::Object(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        allowed_hosts("127.0.0.1:8080".parse().unwrap(), &["cairn.example:443".into(), "Team.Internal".into()])
    }

    #[test]
    fn loopback_and_named_hosts_pass_others_get_403() {
        let h = hosts();
        for ok in ["127.0.0.1:8080", "localhost", "localhost:9", "[::1]:8080", "team.internal:1", "cairn.example:443"] {
            assert!(host_allowed(ok, &h), "{ok}");
        }
        for bad in ["evil.example", "cairn.example", "cairn.example:80", "127.0.0.2:8080", "", "[::1", ":8080"] {
            assert!(!host_allowed(bad, &h), "{bad}");
        }
    }

    #[test]
    fn a_listen_address_that_names_a_host_is_allowed() {
        let h = allowed_hosts("10.1.2.3:8080".parse().unwrap(), &[]);
        assert!(host_allowed("10.1.2.3:8080", &h));
        let any = allowed_hosts("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(!host_allowed("0.0.0.0:8080", &any) && host_allowed("127.0.0.1:8080", &any));
    }

    #[test]
    fn origins_are_checked_like_hosts() {
        let h = hosts();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(check_origin(&headers, &h).is_ok());
        headers.insert(header::ORIGIN, "http://localhost:3000".parse().unwrap());
        assert!(check_origin(&headers, &h).is_ok());
        for bad in ["https://evil.example", "null", "file://x"] {
            headers.insert(header::ORIGIN, bad.parse().unwrap());
            let e = check_origin(&headers, &h).unwrap_err();
            assert_eq!((e.status().as_u16(), e.code()), (403, "origin_not_allowed"), "{bad}");
        }
        headers.remove(header::ORIGIN);
        headers.insert(header::HOST, "rebound.example".parse().unwrap());
        assert_eq!(check_origin(&headers, &h).unwrap_err().code(), "host_not_allowed");
    }
}
