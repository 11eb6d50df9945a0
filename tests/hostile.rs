//! Hostile clients: requests built to break the host for everyone, each
//! refused or contained. Each test here fails without its fix.

use std::io::{Read, Write};

use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, Server};

/// Names that read as the host's own (`Admin`, `cairn.`) register as
/// nobody; the real names beside them still do.
#[tokio::test]
async fn look_alike_reserved_names_do_not_register() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    for name in ["admin", "Admin", "ADMIN", "Cairn", "cairn.", "admin_", "c-a-i-r-n"] {
        let r = server.anonymous().post("/register/agent", json!({"agent_name": name})).await;
        let r = r.expect(409);
        assert_eq!(r.code(), "name_taken", "{name}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("reserved"), "{name}: {}", r.text);
    }
    server.register("admins").await;
    server.register("cairn-watcher").await;
}

/// `.` and `..` are refused as names wherever a name is taken, since
/// clients resolve them as path segments and could not address the thing.
#[tokio::test]
async fn dot_names_are_refused() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let agent = server.register("dotty").await;
    let me = server.as_agent(&agent);
    for name in [".", ".."] {
        assert_eq!(me.post("/teams", json!({"name": name})).await.expect(400).code(), "invalid_name");
        assert_eq!(me.post("/stream", json!({"name": name})).await.expect(400).code(), "invalid_name");
    }
    me.post("/teams", json!({"name": "..."})).await.expect(201);

    // An HTTP client would resolve `/stash/..` before sending it; a raw
    // socket sends it as written.
    let authority = server.url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(&authority).expect("connect");
        let request = format!(
            "PUT /stash/.. HTTP/1.1\r\nHost: {authority}\r\nX-API-KEY: {}\r\nContent-Type: text/plain\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\nhi",
            agent.key
        );
        tcp.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).expect("read");
        answer
    })
    .await
    .expect("raw request");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"invalid_name\""), "{answer}");
}

/// Made-up methods, which need no key, each used to add a series to
/// `/metrics`; now they share one label.
#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    for i in 0..40 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let r = server.request(method, "/healthz", None).send().await.expect("send");
        assert_eq!(r.status().as_u16(), 405);
    }
    let metrics = server.anonymous().get("/metrics").await.expect(200).text;
    assert!(!metrics.contains("BREW"), "a client-chosen method became a label");
    let other = metrics.lines().filter(|l| l.contains("method=\"other\"")).count();
    assert!(other > 0, "the made-up methods are counted as other:\n{metrics}");
}
