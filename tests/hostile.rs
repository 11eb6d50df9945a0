//! Hostile clients: requests built to break the host for everyone, each
//! refused or contained. Each test here fails without its fix.

use std::io::{Read, Write};

use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, Server, guests};

on_both_backends!(
    times_past_ten_years_are_refused_and_expiries_stay_dates,
    team_streams_cannot_be_forged,
    policies_show_an_agent_only_what_it_may_know,
    amplifying_patches_are_refused_before_they_are_built,
    namesake_contracts_never_meet
);

const TEN_YEARS: i64 = 10 * 365 * 86_400;

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

/// A `ttl`, `extra_time` or `retention_seconds` past ten years is refused
/// with 422 before anything is stored; extensions saturate at ten years
/// from now; and discovery, listing and deletion keep working.
async fn times_past_ten_years_are_refused_and_expiries_stay_dates(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let agent = server.register("timekeeper").await;
    let me = server.as_agent(&agent);
    let huge = 9_223_372_036_854_775_i64;

    for body in [
        json!({"name": "far", "ttl": huge}),
        json!({"name": "far", "ttl": TEN_YEARS + 1}),
        json!({"name": "far", "retention_seconds": huge}),
    ] {
        let r = me.post("/stream", body.clone()).await.expect(422);
        assert_eq!(r.code(), "validation_failed", "{body}");
    }
    assert_eq!(me.put_text(&format!("/stash/far?ttl={huge}"), "x").await.expect(422).code(), "validation_failed");
    me.get("/stash/far").await.expect(404);

    // The longest allowed ttl still stores a stash that is there to read.
    me.put_text(&format!("/stash/long?ttl={TEN_YEARS}"), "x").await.expect(201);
    assert_eq!(me.get("/stash/long").await.expect(200).text, "x");

    let created = me.post("/stream", json!({"name": "kept", "discoverable": true, "ttl": TEN_YEARS})).await.expect(201);
    let id = created.json()["stream_id"].as_str().unwrap().to_string();
    let r = me.patch(&format!("/stream/{id}"), json!({"extra_time": huge})).await.expect(422);
    assert_eq!(r.code(), "validation_failed");
    for _ in 0..3 {
        me.patch(&format!("/stream/{id}"), json!({"extra_time": TEN_YEARS})).await.expect(200);
    }
    let info = me.get("/streams?name=kept").await.expect(200).json();
    let expires = info["streams"][0]["expires_at"].as_str().unwrap().to_string();
    let year: i64 = expires[..4].parse().unwrap();
    let this_year: i64 = cairn_host::clock::rfc3339(cairn_host::clock::now_ms())[..4].parse().unwrap();
    assert!(year <= this_year + 10, "extensions saturate at ten years from now, got {expires}");
    server.anonymous().get("/discover?type=stream").await.expect(200);
    me.delete(&format!("/stream/{id}")).await.expect(204);
}

/// Anyone holding a team's stream id could append `algedonic` entries that
/// looked like the host's echoes. The label is the host's alone there, and
/// the host's entries are signed `cairn`, with the reporter in the data.
async fn team_streams_cannot_be_forged(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let mate = server.register("mate").await;
    let l = server.as_agent(&lead);
    let m = server.as_agent(&mate);
    l.post("/teams", json!({"name": "crew"})).await.expect(201);
    l.post("/teams/crew/members", json!({"agent_name": "mate"})).await.expect(201);
    let stream_id = l.get("/teams/crew").await.expect(200).json()["stream_id"].as_str().unwrap().to_string();

    let forged = json!({"label": "algedonic", "data": {"event": "signal", "signal": {"level": "HALT"}}});
    for agent in [&l, &m] {
        let r = agent.post(&format!("/stream/{stream_id}"), forged.clone()).await.expect(403);
        assert_eq!(r.code(), "reserved_label");
    }
    m.post(&format!("/stream/{stream_id}"), json!({"label": "note", "data": "other labels stay open"}))
        .await
        .expect(201);

    let halt = json!({"level": "HALT", "category": "SECURITY", "issue": "keys in logs"});
    let signal =
        m.post("/teams/crew/signals", halt).await.expect(201).json()["signal_id"].as_str().unwrap().to_string();
    // The note is optional: no body at all acknowledges.
    l.post_empty(&format!("/signals/{signal}/acknowledge")).await.expect(200);
    let echoes = m.get(&format!("/stream/{stream_id}?label=algedonic")).await.expect(200).json();
    let entries = echoes["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{echoes}");
    assert!(entries.iter().all(|e| e["agent"] == "cairn"), "{echoes}");
    assert_eq!(entries[0]["data"]["signal"]["reporter"], "mate");
    assert_eq!(entries[1]["data"]["by"], "lead");
}

/// A plain agent's policy request with a large body is refused from its
/// headers: the 403 comes while the body is still unsent. (20 MiB: under
/// the host's own limit, which a larger declared length meets first, 413.)
#[tokio::test]
async fn policy_routes_check_the_caller_before_reading_the_body() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let agent = server.register("plain").await;
    let authority = server.url.trim_start_matches("http://").to_string();
    for (method, path, content_type) in [
        ("POST", "/policies/gate/evaluate", "application/json"),
        ("PUT", "/policies/gate?hook=claim", "application/wasm"),
        ("PUT", "/policies/gate/settings", "application/json"),
    ] {
        let (authority, key) = (authority.clone(), agent.key.clone());
        let answer = tokio::task::spawn_blocking(move || {
            let mut tcp = std::net::TcpStream::connect(&authority).expect("connect");
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nX-API-KEY: {key}\r\n\
                 Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{{",
                20 << 20
            );
            tcp.write_all(head.as_bytes()).expect("send the head");
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await
        .expect("raw request");
        assert!(answer.starts_with("HTTP/1.1 403"), "{method} {path}: {answer:?}");
        assert!(answer.contains("only an admin"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    }

    // A refused body of a usual size is drained, not kept, so the client's
    // next request on the same pooled connection still gets through.
    let me = server.as_agent(&agent);
    for _ in 0..10 {
        let upload = me.req(Method::PUT, "/policies/gate?hook=claim").body(vec![0u8; 1 << 20]);
        me.send(upload).await.expect(403);
        me.get("/me").await.expect(200);
    }
}

/// A policy's scope names a team; an agent outside that team must not
/// learn of it from `GET /policies`. Members and admins still see it.
async fn policies_show_an_agent_only_what_it_may_know(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let lead = server.register("lead").await;
    let outsider = server.register("outsider").await;
    server.as_agent(&lead).post("/teams", json!({"name": "secret"})).await.expect(201);
    ad.install_guest("team-gate", "claim", "approve-all", json!({"scope": {"team": "secret"}})).await;
    ad.install_guest("everywhere", "claim", "approve-all", json!({"scope": "global"})).await;
    // Bound nowhere yet: only admins see it.
    ad.upload_policy("unbound", "claim", guests::wasm("approve-all")).await.expect(201);

    let names = |list: serde_json::Value| -> Vec<String> {
        list["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
    };
    let o = server.as_agent(&outsider);
    let seen = o.get("/policies").await.expect(200);
    assert!(!seen.text.contains("secret"), "an outsider learns of team secret: {}", seen.text);
    assert_eq!(names(seen.json()), ["everywhere"]);
    o.get("/policies/team-gate").await.expect(404);
    o.get("/policies/everywhere").await.expect(200);
    let l = server.as_agent(&lead);
    let mut for_lead = names(l.get("/policies").await.expect(200).json());
    for_lead.sort();
    assert_eq!(for_lead, ["everywhere", "team-gate"]);
    l.get("/policies/team-gate").await.expect(200);
    let lead_sees = l.get("/policies").await.expect(200).json();
    let secret: Vec<&serde_json::Value> =
        lead_sees["deciding"].as_array().unwrap().iter().filter(|d| d["scope"] == "team:secret").collect();
    assert_eq!(secret.len(), 1, "{lead_sees}");
    assert_eq!(secret[0]["policies"], json!(["everywhere", "team-gate"]));
    o.get("/policies/unbound").await.expect(404);
    assert_eq!(names(ad.get("/policies").await.expect(200).json()).len(), 3);
}

/// A small request whose result would be huge (a replace-all, or one
/// `set` matched by thousands of items) is refused with 413 before the
/// result is built: the server's peak memory stays far below it.
async fn amplifying_patches_are_refused_before_they_are_built(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let agent = server.register("amplifier").await;
    let me = server.as_agent(&agent);

    // 500 KB of "a", each to become 2 KB: a 1 GB result.
    me.put_text("/stash/text", &"a".repeat(500_000)).await.expect(201);
    let replace = json!({"old": "a", "new": "b".repeat(2_000)});
    let r = me.send(me.req(Method::PATCH, "/stash/text/replace?all=true").json(&replace)).await.expect(413);
    assert_eq!(r.code(), "payload_too_large");

    // 10,000 items, each to get a 100 KB field: another 1 GB.
    let items: Vec<_> = (0..10_000).map(|_| json!({})).collect();
    me.put_text("/stash/doc", &json!({"items": items}).to_string()).await.expect(201);
    let patch = json!({"update_items": [{"path": "items", "set": {"x": "y".repeat(100_000)}}]});
    assert_eq!(me.patch("/stash/doc/json", patch).await.expect(413).code(), "payload_too_large");

    let peak = server.memory_mib().peak;
    assert!(peak < 300, "the server peaked at {peak} MiB for two refused patches");
    // What fits still works.
    let small = json!({"old": "aaaa", "new": "b"});
    let done = me.send(me.req(Method::PATCH, "/stash/text/replace?all=true").json(&small)).await.expect(200).json();
    assert_eq!(done["replacements"], 125_000);
    let fits = json!({"update_items": [{"path": "items", "set": {"x": 1}}]});
    assert_eq!(me.patch("/stash/doc/json", fits).await.expect(200).json()["items_matched"], 10_000);
}

/// A pattern that needs backtracking (a backreference under `anyOf`) let
/// one small document take minutes of CPU. Such schemas are refused; a
/// linear pattern validates a large document and answers.
#[tokio::test]
async fn backtracking_patterns_are_refused() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let agent = server.register("schemer").await;
    let me = server.as_agent(&agent);
    let evil = json!({"name": "evil", "definition": {"type": "object", "properties": {"s":
        {"anyOf": [{"type": "string", "pattern": "^(a|a)*(\\1)b$"}, {"type": "number"}]}}}});
    let r = me.post("/schema", evil).await.expect(422);
    assert!(r.text.contains("backreferences"), "{}", r.text);

    let linear = json!({"name": "linear", "target_type": "stash", "definition": {"type": "object", "properties":
        {"s": {"type": "string", "pattern": "^(a|aa)*b$"}}}});
    me.post("/schema", linear).await.expect(201);
    let doc = json!({"s": "a".repeat(38_000)}).to_string();
    let r = me.put_text("/stash/big?schema=linear", &doc).await.expect(422);
    assert_eq!(r.code(), "schema_violation");
    server.anonymous().get("/healthz").await.expect(200);
}

/// Two agents' private contracts of one name: a HALT on one used to halt
/// the other, whose owner could not acknowledge it, and its 423 named the
/// other's private signal. Contract signals are keyed by creator and name.
async fn namesake_contracts_never_meet(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    let contract = json!({"objective": "o", "deadline": "2099-01-01T00:00:00Z",
        "subtasks": [{"id": "s1", "description": "d", "status": "open"}]})
    .to_string();
    let mut discussion = Vec::new();
    for agent in [&alice, &mallory] {
        let me = server.as_agent(agent);
        me.put_text("/stash/plan?persistent=true", &contract).await.expect(201);
        let s = me.post("/stream", json!({"name": "plan-discussion"})).await.expect(201).json();
        discussion.push(s["stream_id"].as_str().unwrap().to_string());
    }
    let (a, m) = (server.as_agent(&alice), server.as_agent(&mallory));
    let halt = json!({"label": "algedonic", "data": {"level": "HALT", "category": "SECURITY", "issue": "mine"}});
    let raised = m.post(&format!("/stream/{}", discussion[1]), halt).await.expect(201).json();
    let signal = raised["decision"]["signal_id"].as_str().unwrap_or_default().to_string();
    assert!(signal.starts_with("sig_"), "{raised}");

    // Mallory's contract is halted; Alice's, of the same name, is not.
    let claim = |who: &str| json!({"label": "claim", "data": {"subtask_id": "s1", "agent_name": who}});
    let r = m.post(&format!("/stream/{}", discussion[1]), claim("mallory")).await.expect(423);
    assert!(r.text.contains(&signal), "{}", r.text);
    let r = a.post(&format!("/stream/{}", discussion[0]), claim("alice")).await;
    assert!(!r.text.contains(&signal), "Alice's claim names Mallory's private signal: {}", r.text);
    r.expect(201);
    // Only Mallory (or an admin) lifts her HALT.
    a.post(&format!("/signals/{signal}/acknowledge"), json!({})).await.expect(403);
    m.post(&format!("/signals/{signal}/acknowledge"), json!({"note": "fixed"})).await.expect(200);
    m.post(&format!("/stream/{}", discussion[1]), claim("mallory")).await.expect(201);
}
