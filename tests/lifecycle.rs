//! The process around the API: graceful shutdown without losing
//! acknowledged writes, restarts, several hosts sharing one PostgreSQL, and
//! the operations endpoints.

use std::time::Duration;

use crate::support::{self, Backend, Server, SseReader};
use reqwest::Method;
use serde_json::json;

on_both_backends!(
    sigterm_loses_no_acknowledged_write,
    sigkill_loses_no_acknowledged_write,
    sigterm_finishes_requests_in_flight_and_ends_sse,
    operations_endpoints
);

/// SQLite belongs to one host: a second one is refused, with the way out.
#[test]
fn second_host_on_one_sqlite_file_is_refused() {
    let scratch = support::scratch();
    let db = format!("sqlite://{}", scratch.path().join("cairn.db").display());
    let first = Server::start_on(&db, &[]);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .env("CAIRN_ADMIN_KEY", support::ADMIN_KEY)
        .output()
        .expect("run a second cairn");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another cairn process is serving") && err.contains("PostgreSQL"), "{err}");
    // Once the first host stops, the file is free again.
    assert!(first.terminate().success());
    drop(Server::start_on(&db, &[]));
}

/// A SIGTERM sent the moment the address is printed still shuts down
/// gracefully: the handlers are in place before the address is announced.
#[test]
fn sigterm_right_after_start_is_graceful() {
    for i in 0..10 {
        let scratch = support::scratch();
        let server = Server::start_on(&format!("sqlite://{}", scratch.path().join("cairn.db").display()), &[]);
        let status = server.terminate();
        assert!(status.success(), "round {i}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_live_streams() {
    let Some(db) = support::fresh_database(Backend::Postgres).await else { return };
    // Host two never re-reads on its own within the test, so only NOTIFY
    // can bring it the entries.
    let one = Server::start_on(&db, &[]);
    let two = Server::start_on(&db, &["--sse-recheck", "3600"]);
    let agent = one.register("publisher").await;
    let id = one.as_agent(&agent).post("/stream", json!({"name": "shared"})).await.expect(201).json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Subscribe on host two, append on host one.
    let r = two.request(Method::GET, &format!("/stream/{id}/events"), Some(&agent.key)).send().await.unwrap();
    let mut sse = SseReader::new(r);
    for i in 1..=3 {
        one.as_agent(&agent).post(&format!("/stream/{id}"), json!({"data": {"i": i}})).await.expect(201);
        let e = sse.next_within(Duration::from_secs(30)).await.expect("event from the other host");
        assert_eq!(e.data["seq"], i);
        assert_eq!(e.data["data"]["i"], i);
    }
}

async fn sigterm_loses_no_acknowledged_write(backend: Backend) {
    stop_under_load(backend, "TERM").await;
}

/// A crash, not a shutdown: committed writes must already be durable.
async fn sigkill_loses_no_acknowledged_write(backend: Backend) {
    stop_under_load(backend, "KILL").await;
}

async fn stop_under_load(backend: Backend, signal: &'static str) {
    let Some(db) = support::fresh_database(backend).await else { return };
    let server = Server::start_on(&db, &[]);
    let agent = server.register("writer").await;
    let id = server.as_agent(&agent).post("/stream", json!({"name": "journal"})).await.expect(201).json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Writers run flat out while the server is told to stop. Each keeps
    // going until the host is gone: every answer it gets must be a whole
    // 201 (after SIGTERM too), and only the transport may fail.
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, url, key, id) = (server.http.clone(), server.url.clone(), agent.key.clone(), id.clone());
        let acks = acks.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0.. {
                let stash = http
                    .put(format!("{url}/stash/w{w}-{n}?persistent=true"))
                    .header("X-API-KEY", &key)
                    .body(format!("{w}:{n}"))
                    .send()
                    .await;
                match answer(stash, signal).await {
                    Some(body) => {
                        assert_eq!(body["version"], 1, "{body}");
                        acked.push(format!("w{w}-{n}"));
                    }
                    None => break,
                }
                let entry = http
                    .post(format!("{url}/stream/{id}"))
                    .header("X-API-KEY", &key)
                    .json(&json!({"data": format!("{w}:{n}")}))
                    .send()
                    .await;
                match answer(entry, signal).await {
                    Some(body) => {
                        assert!(body["seq"].as_i64().is_some_and(|s| s > 0), "{body}");
                        acked.push(format!("entry {w}:{n}"));
                    }
                    None => break,
                }
                acks.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
            }
            acked
        }));
    }
    // Stopped once the writers are well under way, however long that takes.
    support::wait_for("40 acknowledged writes", Duration::from_secs(60), || {
        let n = acks.load(std::sync::atomic::Ordering::Relaxed);
        async move { n >= 40 }
    })
    .await;
    let status = tokio::task::spawn_blocking(move || server.stop_with(signal)).await.unwrap();
    if signal == "TERM" {
        assert!(status.success(), "cairn exits cleanly on SIGTERM: {status}");
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }

    // Every acknowledged write is there after a restart.
    let again = Server::start_on(&db, &[]);
    let a = again.as_agent(&agent);
    let mut entries = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let page = a.get(&format!("/stream/{id}?after={after}&limit=1000")).await.expect(200).json();
        let batch = page["entries"].as_array().unwrap().clone();
        if batch.is_empty() {
            break;
        }
        entries.extend(batch.iter().map(|e| format!("entry {}", e["data"].as_str().unwrap())));
        after = page["next_after"].as_i64().unwrap();
    }
    for ack in &acked {
        if ack.starts_with("entry ") {
            assert!(entries.contains(ack), "acknowledged {ack} was lost");
        } else {
            a.get(&format!("/stash/{ack}?persistent=true")).await.expect(200);
        }
    }
}

async fn operations_endpoints(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    server.wait_healthy().await;
    let anon = server.anonymous();
    let health = anon.get("/healthz").await.expect(200).json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], if backend == Backend::Sqlite { "sqlite" } else { "postgres" });

    let agent = server.register("ops").await;
    let a = server.as_agent(&agent);
    a.put_text("/stash/m", "x").await.expect(201);
    a.get("/stash/m").await.expect(200);
    a.get("/stash/zzz").await.expect(404);
    let metrics = anon.get("/metrics").await.expect(200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    for needle in [
        r#"cairn_http_requests_total{method="PUT",route="/stash/{name}",status="201"} 1"#,
        r#"cairn_http_requests_total{method="GET",route="/stash/{name}",status="404"} 1"#,
        r#"cairn_http_request_duration_seconds_bucket{le="#,
        r#"cairn_http_request_duration_seconds_count{method="GET",route="/stash/{name}"} 2"#,
    ] {
        assert!(metrics.text.contains(needle), "metrics lack {needle}:\n{}", metrics.text);
    }

    // The OpenAPI document lists every route of the API contract.
    let doc = anon.get("/openapi.json").await.expect(200).json();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/register/agent", "post"),
        ("/me", "get"),
        ("/stash/{name}", "put"),
        ("/stash/{name}", "get"),
        ("/stash/{name}", "delete"),
        ("/stashes", "get"),
        ("/stash/{name}/append", "patch"),
        ("/stash/{name}/replace", "patch"),
        ("/stash/{name}/json", "patch"),
        ("/stream", "post"),
        ("/stream/{stream_id}", "post"),
        ("/stream/{stream_id}", "get"),
        ("/stream/{stream_id}", "patch"),
        ("/stream/{stream_id}", "delete"),
        ("/stream/{stream_id}/latest", "get"),
        ("/stream/{stream_id}/events", "get"),
        ("/streams", "get"),
        ("/schema", "post"),
        ("/schemas", "get"),
        ("/schema/{schema}", "get"),
        ("/schema/{schema}", "delete"),
        ("/discover", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "openapi.json lacks {method} {path}");
    }
}

/// A write's answer: its JSON body when it was acknowledged, `None` when the
/// host could not be reached or (on SIGKILL) died mid-answer. After SIGTERM
/// every answer that arrives is whole and a 201.
async fn answer(sent: reqwest::Result<reqwest::Response>, signal: &str) -> Option<serde_json::Value> {
    let r = sent.ok()?;
    let status = r.status();
    let body = match r.text().await {
        Ok(b) => b,
        Err(e) if signal == "KILL" => {
            let _ = e;
            return None;
        }
        Err(e) => panic!("an answer cut off by SIG{signal}: {e}"),
    };
    if signal == "KILL" && status != 201 {
        return None;
    }
    assert_eq!(status, 201, "after SIG{signal}: {body}");
    Some(serde_json::from_str(&body).unwrap_or_else(|e| panic!("a partial body after SIG{signal} ({e}): {body}")))
}

/// SIGTERM while a claim is mid-decision and SSE responses are open: the
/// claim completes with its body, the SSE responses end, and the host exits
/// cleanly.
async fn sigterm_finishes_requests_in_flight_and_ends_sse(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let (lead, mate) = (server.register("lead").await, server.register("mate").await);
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    l.post("/teams", json!({"name": "t"})).await.expect(201);
    l.post("/teams/t/members", json!({"agent_name": "mate"})).await.expect(201);
    l.post("/teams/t/tasks", json!({"subject": "work"})).await.expect(201);
    let settings = json!({"scope": {"team": "t"}, "config": {"ms": 1500}, "limits": {"timeout_ms": 20000}});
    ad.install_guest("slow", "claim", "slow", settings).await;
    let id =
        m.post("/stream", json!({"name": "s"})).await.expect(201).json()["stream_id"].as_str().unwrap().to_string();
    let stream = m.req(Method::GET, &format!("/stream/{id}/events")).send().await.expect("subscribe");
    let mut stream = SseReader::new(stream);
    let inbox = m.req(Method::GET, "/teams/t/messages/events").send().await.expect("subscribe");
    let mut inbox = SseReader::new(inbox);

    let claim = {
        let rb = m.req(Method::PATCH, "/teams/t/tasks/1").json(&json!({"owner": "mate"}));
        tokio::spawn(async move { rb.send().await })
    };
    support::wait_for("the claim to be mid-decision", Duration::from_secs(30), || async {
        ad.get("/policies/slow").await.expect(200).json()["stats"]["running"] == 1
    })
    .await;
    let pid = server.pid();
    let stopped = tokio::task::spawn_blocking(move || server.terminate());
    let claimed = claim.await.unwrap().expect("the claim in flight is answered");
    assert_eq!(claimed.status(), 200);
    let task: serde_json::Value = claimed.json().await.expect("the claim's whole body");
    assert_eq!((task["owner"].as_str(), task["id"].as_i64()), (Some("mate"), Some(1)), "{task}");
    assert!(stream.ends_within(Duration::from_secs(30)).await, "the stream's SSE response ended");
    assert!(inbox.ends_within(Duration::from_secs(30)).await, "the inbox's SSE response ended");
    let status = stopped.await.unwrap();
    assert!(status.success(), "cairn {pid} exits cleanly on SIGTERM: {status}");
}
