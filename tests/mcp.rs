//! The MCP endpoint with real clients: the official Python SDK (in its
//! default 2026-07-28 mode and in its legacy `initialize` mode) drives a
//! whole agent team and the contracts pattern over MCP only, and the MCP
//! Inspector's CLI lists the tools. Requests without a valid key, or from
//! a foreign Host or Origin, are refused before any tool runs.
//!
//! The clients are installed by `.ci/toolchains` (`tests/mcp/`); without
//! them a test prints why and passes, and under `CI=true` it fails.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, Backend, Server, guests};

on_both_backends!(python_sdk_runs_an_agent_team, python_sdk_runs_the_contracts_pattern);

fn scripts() -> PathBuf {
    guests::workspace().join("tests").join("mcp")
}

/// The toolchain venv's Python, if it has the MCP SDK.
fn python() -> Option<&'static PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let python = guests::toolchains_dir().join("python/bin/python");
        let ok = Command::new(&python).args(["-c", "import mcp.client"]).output().is_ok_and(|o| o.status.success());
        if ok { Ok(python) } else { Err(format!("{} has no MCP SDK (run .ci/toolchains)", python.display())) }
    });
    skip_unless(found)
}

fn inspector() -> Option<&'static PathBuf> {
    static CLI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = CLI.get_or_init(|| {
        let cli = scripts().join("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js");
        if cli.is_file() {
            Ok(cli)
        } else {
            Err("the MCP Inspector is not installed in tests/mcp (run .ci/toolchains)".into())
        }
    });
    skip_unless(found)
}

fn skip_unless<T>(found: &Result<T, String>) -> Option<&T> {
    match found {
        Ok(t) => Some(t),
        Err(why) => {
            support::skip(why);
            None
        }
    }
}

/// Runs one scenario of `tests/mcp/scenarios.py` in both SDK modes.
async fn scenario(server: &Server, name: &str, python: &PathBuf) {
    let mut keys = serde_json::Map::new();
    for agent in ["lead", "coder", "tester"] {
        keys.insert(agent.into(), server.register(agent).await.key.into());
    }
    let keys = Value::Object(keys).to_string();
    let url = format!("{}/mcp", server.url);
    for mode in ["auto", "legacy"] {
        // The client is another process; blocking this test's thread on it
        // blocks nothing the server needs.
        let out = Command::new(python)
            .arg(scripts().join("scenarios.py"))
            .args([mode, name, &url, &keys])
            .output()
            .expect("run the Python MCP client");
        let (stdout, stderr) = support::text(&out);
        assert!(out.status.success(), "{name} over MCP ({mode}) failed:\n{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), format!("{name} ({mode}): ok"));
    }
}

async fn python_sdk_runs_an_agent_team(backend: Backend) {
    let Some(python) = python() else { return };
    let Some(server) = Server::start(backend).await else { return };
    scenario(&server, "team", python).await;
}

async fn python_sdk_runs_the_contracts_pattern(backend: Backend) {
    let Some(python) = python() else { return };
    let Some(server) = Server::start(backend).await else { return };
    scenario(&server, "contract", python).await;
}

/// The tool list: order, descriptions and schemas, as the SDK sees them.
#[tokio::test]
async fn python_sdk_lists_the_tools_in_both_modes() {
    let Some(python) = python() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    scenario(&server, "tools", python).await;
}

#[tokio::test]
async fn inspector_cli_lists_the_tools() {
    let Some(cli) = inspector() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let agent = server.register("inspector").await;
    let home = support::scratch();
    let out = Command::new("node")
        .arg(cli)
        .arg("--cli")
        .arg(format!("{}/mcp", server.url))
        .args(["--method", "tools/list", "--header", &format!("Authorization: Bearer {}", agent.key)])
        // The Inspector keeps a catalog under HOME; keep it in the scratch dir.
        .env("HOME", home.path())
        .output()
        .expect("run the MCP Inspector");
    let (stdout, stderr) = support::text(&out);
    assert!(out.status.success(), "the Inspector failed:\n{stdout}\n{stderr}");
    let start = stdout.find('{').unwrap_or_else(|| panic!("no JSON in the Inspector's output:\n{stdout}"));
    let listed: Value = serde_json::from_str(&stdout[start..]).expect("the Inspector prints the list as JSON");
    let names: Vec<&str> =
        listed["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names.first(), Some(&"stash_get"));
    assert_eq!(names.len(), 23, "{names:?}");
    assert!(names.contains(&"wait_for_messages") && names.contains(&"acknowledge_signal"), "{names:?}");
}

/// A tools/call that would create a stream named `name`.
fn create_stream(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "stream_create", "arguments": {"name": name}}})
}

async fn post_mcp(server: &Server, headers: &[(&str, &str)], body: &Value) -> support::Reply {
    let mut rb = server
        .request(Method::POST, "/mcp", None)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-11-25")
        .json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    support::Reply::from(rb.send().await.expect("POST /mcp")).await
}

/// No key, a wrong key, a foreign Host or Origin: refused with the API's
/// error body, and the tool never ran. The same call with the key and a
/// local origin does run, so the check can fail.
#[tokio::test]
async fn refused_requests_run_nothing() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let agent = server.register("careful").await;
    let me = server.as_agent(&agent);
    let bearer = format!("Bearer {}", agent.key);

    assert_eq!(post_mcp(&server, &[], &create_stream("none")).await.expect(401).code(), "unauthorized");
    let wrong = post_mcp(&server, &[("Authorization", "Bearer sk_not_a_key")], &create_stream("wrong")).await;
    assert_eq!(wrong.expect(401).code(), "unauthorized");
    let origin = [("Authorization", bearer.as_str()), ("Origin", "https://evil.example")];
    assert_eq!(post_mcp(&server, &origin, &create_stream("origin")).await.expect(403).code(), "origin_not_allowed");
    let host = [("X-API-KEY", agent.key.as_str()), ("Host", "rebound.example:8080")];
    assert_eq!(post_mcp(&server, &host, &create_stream("host")).await.expect(403).code(), "host_not_allowed");
    for name in ["none", "wrong", "origin", "host"] {
        let found = me.get(&format!("/streams?name={name}")).await.expect(200).json();
        assert_eq!(found["streams"], json!([]), "the refused call for {name:?} created a stream");
    }

    let local = [("Authorization", bearer.as_str()), ("Origin", "http://localhost:3000")];
    let ran = post_mcp(&server, &local, &create_stream("local")).await.expect(200).json();
    assert_eq!(ran["result"]["isError"], false, "{ran}");
    assert_eq!(ran["result"]["structuredContent"]["name"], "local", "{ran}");
    let found = me.get("/streams?name=local").await.expect(200).json();
    assert_eq!(found["streams"].as_array().map(Vec::len), Some(1), "{found}");

    // No OAuth metadata is published: clients then send the static key.
    for doc in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
    ] {
        server.anonymous().get(doc).await.expect(404);
    }

    // A name added with --mcp-allowed-hosts is accepted.
    let server = Server::start_with(Backend::Sqlite, &["--mcp-allowed-hosts", "cairn.internal"]).await.expect("server");
    let agent = server.register("named").await;
    let named = [("X-API-KEY", agent.key.as_str()), ("Host", "cairn.internal:8080")];
    post_mcp(&server, &named, &create_stream("named")).await.expect(200);
}

/// An error from a tool is its route's error body, with the status.
#[tokio::test]
async fn tool_errors_carry_the_api_error_body() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let agent = server.register("asker").await;
    let key = [("X-API-KEY", agent.key.as_str())];
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "task_get", "arguments": {"team": "nowhere", "id": 1}}});
    let r = post_mcp(&server, &key, &call).await.expect(200).json();
    assert_eq!(r["result"]["isError"], true, "{r}");
    let err = &r["result"]["structuredContent"];
    assert_eq!(err["status"], 404, "{r}");
    let http = server.as_agent(&agent).get("/teams/nowhere/tasks/1").await.expect(404).json();
    assert_eq!(err["error"], http["error"], "MCP and HTTP give the same error");
    let unknown =
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm_rf", "arguments": {}}});
    let r = post_mcp(&server, &key, &unknown).await.expect(200).json();
    assert!(r["error"]["message"].as_str().is_some_and(|m| m.contains("rm_rf")), "{r}");
}
