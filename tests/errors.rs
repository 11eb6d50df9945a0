//! Every error status the API documents, each with a request that earns it,
//! and each in the JSON error shape, asserted by status and code. Codes
//! that need a team or a policy are asserted where those are tested:
//! `not_allowed`, `already_member`, `already_acknowledged`, `invalid_path`,
//! `halted` (423) and `handoff_rejected` in `teams.rs`, `claim_denied` in
//! `policy_hooks.rs`; 503 `unavailable` at the connection cap in
//! `connections.rs`.

use crate::support::{self, Backend, Server, raw};
use reqwest::Method;
use serde_json::json;

on_both_backends!(
    each_documented_status,
    framework_rejections_keep_the_shape,
    rate_limit_and_admin_registration,
    writes_that_keep_losing_get_contention,
    json_bodies_are_bounded_by_max_json_bytes
);

async fn each_documented_status(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (a, b) = (server.as_agent(&alice), server.as_agent(&bob));
    let anon = server.anonymous();

    // 400: malformed request.
    assert_eq!(a.put_text("/stash/bad%20name", "x").await.expect(400).code(), "invalid_name");
    assert_eq!(a.get("/stash/x?persistent=maybe").await.expect(400).code(), "invalid_query");
    assert_eq!(anon.get("/discover?type=table").await.expect(400).code(), "bad_request");

    // 401: missing, unknown, or malformed key, in both header forms.
    assert_eq!(anon.get("/me").await.expect(401).code(), "unauthorized");
    server.request(Method::GET, "/me", Some("sk_nope")).send().await.map(|r| assert_eq!(r.status(), 401)).unwrap();
    let bearer = server.http.get(format!("{}/me", server.url)).bearer_auth(&alice.key).send().await.unwrap();
    assert_eq!(bearer.status(), 200, "Authorization: Bearer works");
    let lower = server.http.get(format!("{}/me", server.url)).header("x-api-key", &alice.key).send().await.unwrap();
    assert_eq!(lower.status(), 200, "header names are case-insensitive");
    let wrong_scheme = server
        .http
        .get(format!("{}/me", server.url))
        .header("Authorization", format!("Basic {}", alice.key))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_scheme.status(), 401);
    assert_eq!(a.get("/me").await.expect(200).json(), json!({"agent_name": "alice", "admin": false}));

    // 403: authenticated but not allowed.
    a.put_text("/stash/board?shared=true", "x").await.expect(201);
    assert_eq!(b.patch_text("/stash/board/append", "y").await.expect(403).code(), "forbidden");

    // 404: missing, and other agents' private resources alike.
    a.put_text("/stash/secret", "x").await.expect(201);
    let missing = b.get("/stash/nothing-here").await.expect(404).json();
    let private = b.get("/stash/secret").await.expect(404).json();
    assert_eq!(missing["error"]["code"], private["error"]["code"]);
    assert_eq!(b.get("/schema/sch_000000").await.expect(404).code(), "unknown_schema");

    // 409: conflicts.
    assert_eq!(anon.post("/register/agent", json!({"agent_name": "alice"})).await.expect(409).code(), "name_taken");
    assert_eq!(anon.post("/register/agent", json!({"agent_name": "cairn"})).await.expect(409).code(), "name_taken");
    a.put_text("/stash/c?persistent=true&schema=agent-contract", r#"{"objective":"o"}"#).await.expect(201);
    a.post("/schema", json!({"name": "other", "definition": {"type": "object"}})).await.expect(201);
    assert_eq!(
        a.put_text("/stash/c?persistent=true&schema=other", r#"{"objective":"o"}"#).await.expect(409).code(),
        "schema_bound"
    );

    // 412: stale If-Match.
    let stale =
        a.send(a.req(Method::PUT, "/stash/c?persistent=true").header("If-Match", "\"7\"").body(r#"{"objective":"p"}"#));
    assert_eq!(stale.await.expect(412).code(), "precondition_failed");

    // 413: over the size limit.
    assert_eq!(a.put_text("/stash/big", &"x".repeat((1 << 20) + 1)).await.expect(413).code(), "payload_too_large");

    // 422: schema violations, with JSON pointers; unknown schemas; bad definitions.
    let v = a.put_text("/stash/c?persistent=true", r#"{"objective": 5}"#).await.expect(422).json();
    assert_eq!(v["error"]["code"], "schema_violation");
    assert_eq!(v["error"]["details"][0]["path"], "/objective");
    assert_eq!(a.put_text("/stash/d?schema=no-such", "{}").await.expect(422).code(), "unknown_schema");
    a.post("/schema", json!({"name": "broken", "definition": {"type": 12}})).await.expect(422);
    a.post("/schema", json!({"name": "old", "definition": {"$schema": "http://json-schema.org/draft-04/schema#"}}))
        .await
        .expect(422);
    assert_eq!(a.put_text("/stash/e?schema=agent-contract", "not json").await.expect(422).code(), "validation_failed");

    // Nothing above changed what was stored.
    assert_eq!(a.get("/stash/c?persistent=true").await.expect(200).text, r#"{"objective":"o"}"#);
    assert_eq!(a.get("/stash/board").await.text, "x");
    a.get("/stash/big").await.expect(404);
    a.get("/stash/d").await.expect(404);
}

async fn framework_rejections_keep_the_shape(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let alice = server.register("alice").await;
    let a = server.as_agent(&alice);
    // Unknown route and wrong method.
    assert_eq!(a.get("/nowhere").await.expect(404).code(), "not_found");
    assert_eq!(a.send(a.req(Method::DELETE, "/me")).await.expect(405).code(), "method_not_allowed");
    // Bad JSON, wrong types, wrong content type.
    let bad = a
        .send(a.req(Method::POST, "/stream").header("Content-Type", "application/json").body("{nope"))
        .await
        .expect(400);
    assert_eq!(bad.code(), "malformed_json");
    assert_eq!(a.post("/stream", json!({"name": 42})).await.expect(400).code(), "invalid_body");
    let no_ct = a.send(a.req(Method::POST, "/stream").body(r#"{"name":"x"}"#)).await.expect(415);
    assert_eq!(no_ct.code(), "unsupported_media_type");
    // A declared length over the limit is refused before the body is sent,
    // with the JSON shape, and the connection is closed.
    let (status, body) = raw::declared_only(&server, "POST /stream", &alice.key, "application/json", 30 << 20).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("at most")), "{body}");
    // Paths.
    a.get("/stream/st_x?after=nine").await.expect(400);
}

async fn rate_limit_and_admin_registration(backend: Backend) {
    let Some(server) = Server::start_with(backend, &["--rate-limit", "2", "--registration", "admin"]).await else {
        return;
    };
    let anon = server.anonymous();
    assert_eq!(anon.post("/register/agent", json!({"agent_name": "x"})).await.expect(401).code(), "unauthorized");
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    assert_eq!(ad.get("/me").await.expect(200).json()["admin"], true);
    let created = ad.post("/register/agent", json!({"agent_name": "worker"})).await.expect(201).json();
    let worker = support::Agent { name: "worker".into(), key: created["api_key"].as_str().unwrap().into() };
    let w = server.as_agent(&worker);
    assert_eq!(w.post("/register/agent", json!({"agent_name": "y"})).await.expect(403).code(), "forbidden");
    // A burst of twice the rate, then 429 with Retry-After.
    let mut limited = None;
    for _ in 0..10 {
        let r = w.get("/me").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the rate limit never applied").expect(429);
    assert_eq!(r.code(), "rate_limited");
    assert!(r.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1));
}

/// 409 `contention`: a stash write that loses every optimistic retry. A
/// trigger in the test's own connection makes every update of one stash
/// match no row, as if others always wrote first; nothing is half written,
/// and once it is gone the write lands.
async fn writes_that_keep_losing_get_contention(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let alice = server.register("alice").await;
    let a = server.as_agent(&alice);
    a.put_text("/stash/contended", "before").await.expect(201);
    let (lose, win) = match backend {
        Backend::Sqlite => (
            vec![
                "CREATE TRIGGER lose BEFORE UPDATE ON stashes WHEN OLD.name = 'contended' BEGIN SELECT RAISE(IGNORE); END",
            ],
            vec!["DROP TRIGGER lose"],
        ),
        Backend::Postgres => (
            vec![
                "CREATE FUNCTION lose() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
                "CREATE TRIGGER lose BEFORE UPDATE ON stashes FOR EACH ROW WHEN (OLD.name = 'contended') EXECUTE FUNCTION lose()",
            ],
            vec!["DROP TRIGGER lose ON stashes", "DROP FUNCTION lose()"],
        ),
    };
    support::run_sql(&server.database_url, &lose).await;
    let r = a.patch_text("/stash/contended/append", " after").await.expect(409);
    assert_eq!(r.code(), "contention", "{}", r.text);
    assert!(r.json()["error"]["message"].as_str().unwrap_or_default().contains("retry"), "{}", r.text);
    assert_eq!(a.put_text("/stash/contended", "replaced").await.expect(409).code(), "contention");
    assert_eq!(a.get("/stash/contended").await.expect(200).text, "before");
    support::run_sql(&server.database_url, &win).await;
    a.patch_text("/stash/contended/append", " after").await.expect(200);
    assert_eq!(a.get("/stash/contended").await.expect(200).text, "before after");
}

/// 503 `unavailable` with `Retry-After: 1` when every database connection
/// stays busy for the pool's 10 s: the test locks the stash table, so the
/// host's writes hold all 16 of its PostgreSQL connections while they wait.
/// Nothing refused is stored; once the lock goes, the waiting writes land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_database_pool_answers_503() {
    let Some(server) = Server::start(Backend::Postgres).await else { return };
    let alice = server.register("alice").await;
    let mut sql = <sqlx::PgConnection as sqlx::Connection>::connect(&server.database_url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut sql).await.expect("begin");
    sqlx::query("LOCK TABLE stashes IN ACCESS EXCLUSIVE MODE").execute(&mut sql).await.expect("lock");
    let writes: Vec<_> = (0..24)
        .map(|i| {
            let rb = server
                .request(Method::PUT, &format!("/stash/s{i}"), Some(&alice.key))
                .header("Content-Type", "text/plain")
                .body("x");
            tokio::spawn(async move {
                let r = rb.send().await.expect("an answer");
                let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                (i, r.status().as_u16(), retry, r.text().await.unwrap_or_default())
            })
        })
        .collect();
    // The refusals come after the pool's 10 s wait; the lock holds until then.
    let mut refused = Vec::new();
    support::wait_for("a write refused with 503", std::time::Duration::from_secs(60), || {
        let done = writes.iter().any(|w| w.is_finished());
        async move { done }
    })
    .await;
    sqlx::query("ROLLBACK").execute(&mut sql).await.expect("unlock");
    let a = server.as_agent(&alice);
    for w in writes {
        let (i, status, retry, body) = w.await.unwrap();
        match status {
            201 => {}
            503 => {
                let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
                assert_eq!(v["error"]["code"], "unavailable", "{body}");
                assert_eq!(retry.as_deref(), Some("1"), "{body}");
                refused.push(i);
            }
            other => panic!("write {i}: {other} {body}"),
        }
    }
    assert!(!refused.is_empty(), "with the pool exhausted for 10 s, some write is refused");
    for i in 0..24 {
        let want = if refused.contains(&i) { 404 } else { 200 };
        a.get(&format!("/stash/s{i}")).await.expect(want);
    }
}

/// `--max-json-bytes` bounds every JSON body (entries, task metadata,
/// schemas, settings), refused with 413 from a declared length before it is
/// read, or once a body without one passes it. Stash bodies have their own
/// limits and are not JSON bodies.
async fn json_bodies_are_bounded_by_max_json_bytes(backend: Backend) {
    let Some(server) = Server::start_with(backend, &["--max-json-bytes", "4096"]).await else { return };
    let alice = server.register("alice").await;
    let a = server.as_agent(&alice);
    let id =
        a.post("/stream", json!({"name": "s"})).await.expect(201).json()["stream_id"].as_str().unwrap().to_string();
    a.post("/teams", json!({"name": "t"})).await.expect(201);
    a.post("/teams/t/tasks", json!({"subject": "x"})).await.expect(201);
    let big = "x".repeat(5000);
    let refused = [
        a.post(&format!("/stream/{id}"), json!({"data": big})).await,
        a.patch("/teams/t/tasks/1", json!({"metadata": {"notes": big}})).await,
        a.post("/schema", json!({"name": "huge", "definition": {"description": big}})).await,
        a.post("/teams/t/messages", json!({"to": "all", "message": big})).await,
    ];
    for r in refused {
        let r = r.expect(413);
        assert_eq!(r.code(), "payload_too_large", "{}", r.text);
        assert!(r.json()["error"]["message"].as_str().unwrap_or_default().contains("--max-json-bytes"), "{}", r.text);
    }
    // Sent chunked, without a length, the body is cut off at the limit. One
    // chunk, written whole before the host answers: a client still writing
    // after the refusal would lose the answer to the connection's close.
    let body = format!("{{\"data\": \"{}\"}}", "y".repeat(5000));
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
    let chunked = a.send(
        a.req(Method::POST, &format!("/stream/{id}"))
            .header("Content-Type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks)),
    );
    assert_eq!(chunked.await.expect(413).code(), "payload_too_large");
    // Under the limit is fine, and stash bodies are bounded by their own limits.
    a.post(&format!("/stream/{id}"), json!({"data": "x".repeat(3000)})).await.expect(201);
    a.put_text("/stash/doc", &big).await.expect(201);
    let log = a.get(&format!("/stream/{id}")).await.expect(200).json();
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(1), "nothing refused was stored");
    assert_eq!(a.get("/teams/t/tasks/1").await.expect(200).json()["metadata"], json!({}));
}

/// Bad flags stop the host at start, with a message, instead of being
/// ignored or quietly changed.
#[test]
fn bad_flags_stop_the_host_at_start() {
    let serve = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", "sqlite::memory:"])
            .args(args)
            .env_remove("CAIRN_CONFIG")
            .output()
            .expect("run cairn serve");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = serve(&["--config", "/nonexistent/cairn.toml"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the config file /nonexistent/cairn.toml (--config or CAIRN_CONFIG) does not exist"),
        "{stderr}"
    );
    let (code, stderr) = serve(&["--sse-keep-alive", "20"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--sse-keep-alive") && stderr.contains("1..=15"), "{stderr}");
}
