//! Policies over HTTP against a real server: upload, settings, dry runs
//! through live imports, the decision log, failing closed, hot swap under
//! load, and reloading after a restart.

use crate::support::{self, Backend, Call, Server, guests};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    upload_evaluate_and_log,
    refusals_name_what_is_wrong,
    failures_fail_closed_and_are_counted,
    hot_swap_under_concurrent_decisions,
    guest_output_is_capped_not_refused,
    decision_log_is_swept_by_age_and_count
);

fn claim_input(claimant: &str, contract: &str) -> Value {
    json!({"claimant": claimant, "target": {"subtask": {"contract": contract, "subtask_id": "research"}}})
}

async fn upload_evaluate_and_log(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let bot = server.register("research-bot").await;

    let created = ad.upload_policy("reader", "claim", guests::wasm("stash-reader")).await.expect(201).json();
    assert_eq!((created["version"].as_i64(), created["world"].as_str()), (Some(1), Some("claim-policy")));
    assert_eq!(created["hook"], "claim");
    assert_eq!(created["sha256"].as_str().unwrap().len(), 64);
    let imports: Vec<&str> = created["imports"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    assert!(
        imports.contains(&"cairn:coord/stash-read@0.2.0") && imports.contains(&"cairn:coord/log@0.2.0"),
        "{imports:?}"
    );
    assert_eq!(created["settings"]["limits"]["timeout_ms"], 100);
    // The same bytes again are no new version.
    let again = ad.upload_policy("reader", "claim", guests::wasm("stash-reader")).await.expect(200).json();
    assert_eq!((again["version"].as_i64(), &again["sha256"]), (Some(1), &created["sha256"]));
    assert_eq!(
        server.as_agent(&bot).upload_policy("mine", "claim", guests::wasm("approve-all")).await.expect(403).code(),
        "forbidden"
    );

    // The policy reads a real contract through its stash import.
    server
        .as_agent(&bot)
        .put_text(
            "/stash/website-redesign?persistent=true&discoverable=true",
            r#"{"objective":"o","subtasks":[{"id":"research","description":"d","status":"open"}]}"#,
        )
        .await
        .expect(201);
    let verdict = ad
        .post("/policies/reader/evaluate", json!({"input": claim_input("research-bot", "website-redesign")}))
        .await
        .expect(200)
        .json();
    assert_eq!(verdict["result"], json!({"verdict": "approve"}));
    assert_eq!(verdict["error"], Value::Null);
    assert!(
        verdict["logs"][0]["message"].as_str().unwrap().starts_with("read website-redesign version 1"),
        "{verdict}"
    );
    let missing = ad
        .post("/policies/reader/evaluate", json!({"input": claim_input("research-bot", "nowhere")}))
        .await
        .expect(200)
        .json();
    assert_eq!(missing["result"]["reason"], "no contract nowhere");
    assert_eq!(
        ad.post("/policies/reader/evaluate", json!({"input": {"claimant": "x"}})).await.expect(422).code(),
        "validation_failed"
    );
    server.as_agent(&bot).post("/policies/reader/evaluate", json!({"input": {}})).await.expect(403);

    // The decision log holds each decision with its input and result.
    let log = ad.get("/policies/reader/decisions").await.expect(200).json();
    let entries = log["decisions"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["input"]["target"]["subtask"]["contract"], "website-redesign");
    assert_eq!(entries[0]["result"], json!({"verdict": "approve"}));
    assert_eq!((entries[0]["version"].as_i64(), entries[0]["dry_run"].as_bool()), (Some(1), Some(true)));
    assert_eq!(entries[0]["agent"], "admin");
    assert!(entries[0]["duration_us"].as_i64().unwrap() > 0);
    assert_eq!(entries[0]["logs"][0]["level"], "info");
    assert_eq!(entries[1]["result"]["verdict"], "deny");
    let after = ad
        .get(&format!("/policies/reader/decisions?after={}", entries[0]["decision_id"].as_str().unwrap()))
        .await
        .expect(200)
        .json();
    assert_eq!(after["decisions"].as_array().unwrap().len(), 1);
    server.as_agent(&bot).get("/policies/reader/decisions").await.expect(403);
    // Paging with next_after: the last listed, or `after` itself at the end.
    let page = ad.get("/policies/reader/decisions?limit=1").await.expect(200).json();
    assert_eq!(page["next_after"], entries[0]["decision_id"], "{page}");
    let next = ad.get(&format!("/policies/reader/decisions?after={}", page["next_after"].as_str().unwrap())).await;
    let next = next.expect(200).json();
    assert_eq!(next["next_after"], entries[1]["decision_id"], "{next}");
    let end = ad.get(&format!("/policies/reader/decisions?after={}", next["next_after"].as_str().unwrap())).await;
    let end = end.expect(200).json();
    assert_eq!((end["decisions"].as_array().map(Vec::len), &end["next_after"]), (Some(0), &next["next_after"]));
    // The newest page: the last decision, and nothing to mix it with `after`.
    let newest = ad.get("/policies/reader/decisions?latest=true&limit=1").await.expect(200).json();
    assert_eq!(newest["decisions"][0]["decision_id"], entries[1]["decision_id"], "{newest}");
    let both = format!("/policies/reader/decisions?latest=true&after={}", page["next_after"].as_str().unwrap());
    assert!(ad.get(&both).await.expect(400).json()["error"]["message"].as_str().unwrap().contains("not both"));
    let none_failed = ad.get("/policies/reader/decisions?failed=true").await.expect(200).json();
    assert_eq!(none_failed["decisions"].as_array().map(Vec::len), Some(0), "{none_failed}");

    // Settings: a config-driven policy.
    ad.upload_policy("gate", "claim", guests::wasm("config-driven")).await.expect(201);
    let configured = ad
        .send(
            ad.req(Method::PUT, "/policies/gate/settings")
                .json(&json!({"scope": "global", "config": {"allow": ["research-bot"]}, "order": 2})),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(configured["settings"]["config"], json!({"allow": ["research-bot"]}));
    assert_eq!(configured["settings"]["order"], 2);
    let ok =
        ad.post("/policies/gate/evaluate", json!({"input": claim_input("research-bot", "c")})).await.expect(200).json();
    assert_eq!(ok["result"]["verdict"], "approve");
    let no =
        ad.post("/policies/gate/evaluate", json!({"input": claim_input("other-bot", "c")})).await.expect(200).json();
    assert_eq!(no["result"]["verdict"], "deny");
    // An agent sees what binds it: gate, not reader, which is bound nowhere
    // (its settings were never given, so no scope is assumed).
    assert_eq!(created["settings"]["scope"], Value::Null);
    let listed = server.as_agent(&bot).get("/policies").await.expect(200).json();
    let names: Vec<&str> = listed["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gate"]);
    let claims = listed["deciding"].as_array().unwrap().iter().find(|d| d["hook"] == "claim").unwrap();
    assert_eq!(claims, &json!({"hook": "claim", "scope": "global", "bundled": "claim-approval", "policies": ["gate"]}));

    // Policies outlive a restart.
    let again = server.restart(&[]);
    // Every component, the bundled ones too, came from the precompiled cache.
    assert_eq!(again.metric("cairn_policy_components_total{from=\"compiled\"}").await, 0.0);
    assert!(again.metric("cairn_policy_components_total{from=\"cache\"}").await >= 2.0);
    let ad = again.as_agent(&admin);
    let shown = ad.get("/policies/gate").await.expect(200).json();
    assert_eq!((shown["version"].as_i64(), shown["load_error"].clone()), (Some(1), Value::Null));
    let ok =
        ad.post("/policies/gate/evaluate", json!({"input": claim_input("research-bot", "c")})).await.expect(200).json();
    assert_eq!(ok["result"]["verdict"], "approve");
    // The decision took an instance made ahead, or made one and had the
    // pool filled behind it.
    let prepared = ad.get("/policies/gate").await.expect(200).json()["prepared"].clone();
    let served = prepared["hits"].as_u64().unwrap_or(0) + prepared["misses"].as_u64().unwrap_or(0);
    assert!(served >= 1, "{prepared}");
    // What the instances made ahead hold is shown, and scraped.
    support::wait_for("an instance made ahead", std::time::Duration::from_secs(30), || async {
        ad.get("/policies/gate").await.expect(200).json()["prepared"]["ready"].as_u64() > Some(0)
    })
    .await;
    let prepared = ad.get("/policies/gate").await.expect(200).json()["prepared"].clone();
    assert_eq!(prepared["reset"], "dirty", "{prepared}");
    // Only slots reset whole are primed.
    assert_eq!(prepared["primed"], 0, "{prepared}");
    assert!(prepared["memory_bytes"].as_u64() > Some(0), "{prepared}");
    assert!(again.metric("cairn_policy_prepared_memory_bytes{policy=\"gate\"}").await > 0.0);
    let scraped = again.anonymous().get("/metrics").await.expect(200).text;
    for reset in ["dirty", "whole"] {
        let series = format!("cairn_policy_slots_resident_bytes{{reset=\"{reset}\"}} ");
        assert!(scraped.contains(&series), "{series} in /metrics");
    }
    ad.delete("/policies/gate").await.expect(204);
    ad.get("/policies/gate").await.expect(404);
    ad.delete("/policies/gate").await.expect(404);
}

async fn refusals_name_what_is_wrong(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let wrong = ad.upload_policy("p", "handoff", guests::wasm("approve-all")).await.expect(422).json();
    assert_eq!(wrong["error"]["code"], "policy_rejected");
    assert!(wrong["error"]["message"].as_str().unwrap().contains("does not fit world `handoff-policy`"), "{wrong}");
    assert_eq!(wrong["error"]["details"][0]["path"], "world/handoff-policy");
    // A component larger than any other body is taken (padded here with a
    // custom section to 30 MiB), and one over 128 MiB is refused from its
    // declared length.
    let mut padded = guests::wasm("approve-all");
    let (name, payload) = (b"padding", vec![0u8; 30 << 20]);
    let mut section = leb128(name.len());
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    padded.push(0);
    padded.extend(leb128(section.len()));
    padded.extend(section);
    ad.upload_policy("padded", "claim", padded).await.expect(201);
    let huge = "PUT /policies/huge?hook=claim";
    let (status, body) =
        support::raw::declared_only(&server, huge, support::ADMIN_KEY, "application/wasm", 129 << 20).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("payload_too_large")), "{body}");
    // Settings sent with the bytes are checked with them: refused together,
    // nothing is stored, and a failed upload makes no version.
    let with = |settings: &str| {
        ad.req(Method::PUT, "/policies/gate?hook=claim")
            .header("Content-Type", "application/wasm")
            .header("Cairn-Settings", settings)
            .body(guests::wasm("config-driven"))
    };
    let typo = ad.send(with(r#"{"scope": {"teams": "squad"}}"#)).await.expect(400);
    assert_eq!(typo.code(), "invalid_settings", "{}", typo.text);
    assert_eq!(ad.send(with(r#"{"limits": {"timeout_ms": 0}}"#)).await.expect(422).code(), "validation_failed");
    // No scope is assumed, and a scope must name a team or contract that exists.
    let unscoped = ad.send(with(r#"{"config": {"allow": ["a"]}}"#)).await.expect(422).json();
    assert_eq!(unscoped["error"]["details"][0]["path"], "/scope", "{unscoped}");
    let squad = r#"{"scope": {"team": "squad"}, "config": {"allow": ["a"]}, "order": 4}"#;
    assert_eq!(ad.send(with(squad)).await.expect(422).code(), "unknown_scope");
    let contract = r#"{"scope": {"stash": "nowhere"}}"#;
    assert_eq!(ad.send(with(contract)).await.expect(422).code(), "unknown_scope");
    ad.get("/policies/gate").await.expect(404);
    ad.post("/teams", json!({"name": "squad"})).await.expect(201);
    let made = ad.send(with(squad)).await;
    let made = made.expect(201).json();
    assert_eq!(made["settings"]["scope"], json!({"team": "squad"}));
    assert_eq!(
        (made["settings"]["config"]["allow"][0].as_str(), made["settings"]["order"].as_i64()),
        (Some("a"), Some(4))
    );
    let again = ad
        .send(
            ad.req(Method::PUT, "/policies/gate?hook=claim")
                .header("Cairn-Settings", r#"{"limits": {"timeout_ms": 0}}"#)
                .body(guests::wasm("deny-all")),
        )
        .await
        .expect(422);
    assert_eq!(again.code(), "validation_failed");
    let kept = ad.get("/policies/gate").await.expect(200).json();
    assert_eq!(
        (kept["version"].as_i64(), &kept["sha256"], kept["settings"]["order"].as_i64()),
        (Some(1), &made["sha256"], Some(4))
    );
    let junk =
        ad.send(ad.req(Method::PUT, "/policies/p?hook=claim").body(b"\0asm\x01\0\0\0".to_vec())).await.expect(422);
    let said = junk.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(said.starts_with("not a loadable wasm component: this is a core WebAssembly module"), "{said}");
    assert!(said.contains("cargo build --target wasm32-wasip2"), "{said}");
    let text = ad.send(ad.req(Method::PUT, "/policies/p?hook=claim").body(b"#!/bin/sh".to_vec())).await.expect(422);
    let said = text.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(said.contains("this is not WebAssembly") && said.contains("this one starts 23 21 2f 62"), "{said}");
    ad.send(ad.req(Method::PUT, "/policies/p?hook=claim").body(Vec::new())).await.expect(400);
    ad.send(ad.req(Method::PUT, "/policies/p?hook=judge").body(vec![1u8])).await.expect(400);
    ad.send(ad.req(Method::PUT, "/policies/bad%20name?hook=claim").body(guests::wasm("approve-all"))).await.expect(400);
    ad.get("/policies/p").await.expect(404);

    // Grants: taking stash-read away from a policy that imports it is refused
    // before anything changes.
    ad.upload_policy("reader", "claim", guests::wasm("stash-reader")).await.expect(201);
    let refused = ad
        .send(ad.req(Method::PUT, "/policies/reader/settings").json(&json!({"scope": "global", "grants": ["log"]})))
        .await
        .expect(422)
        .json();
    assert!(refused["error"]["message"].as_str().unwrap().contains("cairn:coord/stash-read@0.2.0"), "{refused}");
    assert_eq!(ad.get("/policies/reader").await.expect(200).json()["settings"]["grants"], Value::Null);
    ad.send(
        ad.req(Method::PUT, "/policies/reader/settings").json(&json!({"scope": "global", "grants": ["stash-write"]})),
    )
    .await
    .expect(422);
    ad.send(
        ad.req(Method::PUT, "/policies/reader/settings").json(&json!({"scope": "global", "limits": {"timeout_ms": 0}})),
    )
    .await
    .expect(422);
    ad.send(ad.req(Method::PUT, "/policies/reader/settings").json(&json!({"limit": {}}))).await.expect(400);
    ad.send(ad.req(Method::PUT, "/policies/nobody/settings").json(&json!({}))).await.expect(404);
}

async fn failures_fail_closed_and_are_counted(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    for (name, guest) in [("loop", "infinite-loop"), ("bomb", "memory-bomb"), ("boom", "panic"), ("escape", "escape")] {
        ad.upload_policy(name, "claim", guests::wasm(guest)).await.expect(201);
    }
    ad.send(
        ad.req(Method::PUT, "/policies/loop/settings").json(&json!({"scope": "global", "limits": {"timeout_ms": 20}})),
    )
    .await
    .expect(200);
    // The bomb gets time to reach its (smaller) cap, so memory, not the clock, stops it.
    ad.send(
        ad.req(Method::PUT, "/policies/bomb/settings")
            .json(&json!({"scope": "global", "limits": {"timeout_ms": 10000, "memory_bytes": 16777216}})),
    )
    .await
    .expect(200);
    let input = json!({"input": claim_input("a", "c")});
    let timed_out = ad.post("/policies/loop/evaluate", input.clone()).await.expect(200).json();
    assert_eq!(timed_out["error"], "timed out after 20 ms");
    let id = timed_out["decision_id"].as_str().unwrap();
    let said = format!("policy loop failed (decision {id}): timed out after 20 ms");
    assert_eq!(timed_out["result"], json!({"verdict": "deny", "reason": said}));
    let oom = ad.post("/policies/bomb/evaluate", input.clone()).await.expect(200).json();
    assert!(oom["error"].as_str().unwrap().starts_with("exceeded its memory limit of 16777216 bytes"), "{oom}");
    let panicked = ad.post("/policies/boom/evaluate", input.clone()).await.expect(200).json();
    assert!(panicked["stderr"].as_str().unwrap().contains("policy bug"), "{panicked}");
    // The reason is two readable lines' worth: what failed and what the
    // guest said; the backtrace is in the error, not in the reason.
    let reason = panicked["result"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("policy boom failed (decision dec_"), "{reason}");
    assert!(reason.contains("(a panic or uncaught exception in the guest?); the guest wrote: "), "{reason}");
    assert!(reason.contains("policy bug") && !reason.contains("backtrace") && !reason.contains('\n'), "{reason}");
    assert!(panicked["error"].as_str().unwrap().contains("wasm backtrace"), "{panicked}");
    // Under a raised memory cap the 100 MB reason can be built; the result limit still refuses it.
    ad.upload_policy("huge", "claim", guests::wasm("huge-result")).await.expect(201);
    ad.send(
        ad.req(Method::PUT, "/policies/huge/settings")
            .json(&json!({"scope": "global", "limits": {"timeout_ms": 20000, "memory_bytes": 536870912}})),
    )
    .await
    .expect(200);
    let huge = ad.post("/policies/huge/evaluate", input.clone()).await.expect(200).json();
    assert!(huge["error"].as_str().unwrap().ends_with("decision, over the 262144-byte limit"), "{}", huge["error"]);
    let escape = ad.post("/policies/escape/evaluate", input.clone()).await.expect(200).json();
    let report = escape["result"]["reason"].as_str().unwrap();
    assert!(
        report.contains("file:refused") && report.contains("env:empty(0)") && report.contains("net:refused"),
        "{report}"
    );

    // The host is fine, and counts what happened.
    server.wait_healthy().await;
    let shown = ad.get("/policies/loop").await.expect(200).json();
    assert_eq!((shown["stats"]["decisions"].as_u64(), shown["stats"]["failures"].as_u64()), (Some(1), Some(1)));
    assert_eq!(shown["stats"]["last_error"]["message"], "timed out after 20 ms", "{shown}");
    let boom = ad.get("/policies/boom").await.expect(200).json();
    let said = boom["stats"]["last_error"]["message"].as_str().unwrap_or_default();
    assert!(said.starts_with("trapped: wasm `unreachable` executed") && !said.contains('\n'), "{boom}");
    let metrics = server.anonymous().get("/metrics").await.expect(200).text;
    let series = r#"cairn_policy_decisions_total{policy="loop",hook="claim",outcome="failed",verdict="deny"} 1"#;
    assert!(metrics.contains(series), "{metrics}");
    let series = r#"cairn_policy_decisions_total{policy="escape",hook="claim",outcome="ok",verdict="deny"} 1"#;
    assert!(metrics.contains(series), "{metrics}");
    assert!(metrics.contains(r#"cairn_policy_decision_duration_seconds_count{policy="bomb"} 1"#), "{metrics}");
    let log = ad.get("/policies/loop/decisions").await.expect(200).json();
    assert_eq!(log["decisions"][0]["error"], "timed out after 20 ms");
    // A guest's stdout and stderr are kept with its decision.
    let log = ad.get("/policies/escape/decisions").await.expect(200).json();
    assert_eq!(log["decisions"][0]["stdout"], "escape attempt finished\n");
    assert_eq!(log["decisions"][0]["stderr"], "to stderr\n");
    let log = ad.get("/policies/boom/decisions").await.expect(200).json();
    assert!(log["decisions"][0]["stderr"].as_str().unwrap().contains("policy bug while deciding for a"), "{log}");
    // A deleted policy's series leave /metrics; its decision log stays.
    ad.delete("/policies/loop").await.expect(204);
    let metrics = server.anonymous().get("/metrics").await.expect(200).text;
    assert!(!metrics.contains(r#"policy="loop""#), "{metrics}");
    assert!(metrics.contains(r#"policy="bomb""#), "{metrics}");
    ad.get("/policies/loop/decisions").await.expect(200);
}

/// The sweeper keeps each policy's newest `--decision-log-max` records and
/// none older than `--decision-log-days`.
async fn decision_log_is_swept_by_age_and_count(backend: Backend) {
    let args = ["--sweep-interval", "1", "--decision-log-max", "3"];
    let Some(server) = Server::start_with(backend, &args).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    ad.upload_policy("kept", "claim", guests::wasm("approve-all")).await.expect(201);
    ad.upload_policy("aged", "claim", guests::wasm("deny-all")).await.expect(201);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = ad.post("/policies/kept/evaluate", json!({"input": claim_input("a", "c")})).await.expect(200).json();
        ids.push(r["decision_id"].as_str().unwrap().to_string());
    }
    ad.post("/policies/aged/evaluate", json!({"input": claim_input("a", "c")})).await.expect(200);
    // Make the one record of `aged` 31 days old, behind the host's back.
    let month_ago = cairn_host::clock::now_ms() - 31 * 86_400 * 1000;
    let sql = format!("UPDATE policy_decisions SET at = {month_ago} WHERE policy = 'aged'");
    support::run_sql(&server.database_url, &[sql.as_str()]).await;
    let listed = |name: &'static str| {
        let ad = &ad;
        async move {
            let log = ad.get(&format!("/policies/{name}/decisions")).await.expect(200).json();
            log["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["decision_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    support::wait_for("the sweeper to cut both logs", std::time::Duration::from_secs(60), || async {
        listed("kept").await.len() == 3 && listed("aged").await.is_empty()
    })
    .await;
    assert_eq!(listed("kept").await, ids[2..], "the newest three are kept");
}

/// A guest that writes too much keeps its decision: 100 log lines of at
/// most 4 KiB are kept and the rest counted, and stdout and stderr keep
/// 16 KiB each, with a last line saying how much more was written.
async fn guest_output_is_capped_not_refused(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let config = json!({"lines": 150, "line_bytes": 5000, "stdout_bytes": 20000, "stderr_bytes": 21000});
    let settings = json!({"scope": "global", "config": config, "limits": {"timeout_ms": 20000}});
    ad.install_guest("chatty", "claim", "chatty", settings).await;
    let r = ad.post("/policies/chatty/evaluate", json!({"input": claim_input("a", "c")})).await.expect(200).json();
    assert_eq!((r["error"].clone(), r["result"]["verdict"].as_str()), (Value::Null, Some("approve")), "{}", r["error"]);
    let logs = r["logs"].as_array().unwrap();
    assert_eq!((logs.len(), r["logs_dropped"].as_u64()), (100, Some(50)));
    for (i, line) in logs.iter().enumerate() {
        let message = line["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{i}:")) && message.ends_with('…'), "line {i}");
        assert_eq!(message.len(), 4096 + '…'.len_utf8(), "line {i} is cut at 4 KiB");
    }
    let kept = |text: &str, byte: char, more: usize| {
        let (body, note) = text.split_at(16 * 1024);
        assert!(body.chars().all(|c| c == byte), "16 KiB of what was written");
        assert_eq!(note, format!("\n[cairn: {more} more bytes were written and not kept]\n"));
    };
    kept(r["stdout"].as_str().unwrap(), 'o', 20000 - 16384);
    kept(r["stderr"].as_str().unwrap(), 'e', 21000 - 16384);
    // The decision log keeps the same, and the count of dropped lines.
    let log = ad.get("/policies/chatty/decisions").await.expect(200).json();
    let d = &log["decisions"][0];
    assert_eq!((d["logs_dropped"].as_u64(), d["logs"].as_array().map(Vec::len)), (Some(50), Some(100)));
    assert_eq!((&d["stdout"], &d["stderr"]), (&r["stdout"], &r["stderr"]));
}

/// `--policy-fuel` makes `limits.fuel` bound a decision and report what it
/// used; `--policy-cache` puts the compiled components where it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_flags_on_the_binary() {
    let cache = support::scratch();
    let dir = cache.path().join("compiled");
    let dir_arg = dir.to_str().unwrap();
    let Some(server) = Server::start_with(Backend::Sqlite, &["--policy-fuel", "--policy-cache", dir_arg]).await else {
        return;
    };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let limits = json!({"scope": "global", "limits": {"fuel": 2_000_000, "timeout_ms": 30000}});
    ad.install_guest("spin", "claim", "infinite-loop", limits.clone()).await;
    ad.install_guest("ok", "claim", "approve-all", limits).await;
    let input = json!({"input": claim_input("a", "c")});
    let spun = ad.post("/policies/spin/evaluate", input.clone()).await.expect(200).json();
    assert_eq!(spun["error"], "ran out of fuel (2000000 units)", "{spun}");
    assert_eq!(spun["result"]["verdict"], "deny");
    let ok = ad.post("/policies/ok/evaluate", input).await.expect(200).json();
    assert!(ok["fuel_used"].as_u64().is_some_and(|f| f > 0 && f < 2_000_000), "{ok}");
    // Both uploads, and the bundled policies, were compiled into the cache.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the cache directory was made")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in ["spin", "ok"] {
        let shown = ad.get(&format!("/policies/{name}")).await.expect(200).json();
        let sha = shown["sha256"].as_str().unwrap();
        assert!(files.iter().any(|f| f.starts_with(sha) && f.ends_with(".cwasm")), "{name}: {sha} in {files:?}");
    }
}

/// Decisions under way when a new version is uploaded finish on the
/// version they started with; from the upload's answer on, the new one
/// decides. Version 1 spins for seconds, so the upload surely lands while
/// its decisions run.
async fn hot_swap_under_concurrent_decisions(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let slow = json!({"scope": "global", "config": {"ms": 3000}, "limits": {"timeout_ms": 30000}});
    ad.install_guest("swap", "claim", "slow", slow).await;
    let input = json!({"input": claim_input("a", "c")});
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let rb = ad.req(Method::POST, "/policies/swap/evaluate").json(&input);
            tokio::spawn(async move { rb.send().await })
        })
        .collect();
    support::wait_for("two decisions under way on version 1", std::time::Duration::from_secs(30), || async {
        ad.get("/policies/swap").await.expect(200).json()["stats"]["running"] == 2
    })
    .await;
    let v2 = ad.upload_policy("swap", "claim", guests::wasm("deny-all")).await.expect(200).json();
    assert_eq!(v2["version"], 2);
    assert!(in_flight.iter().all(|d| !d.is_finished()), "the upload was answered while version 1 still decided");
    let after = ad.post("/policies/swap/evaluate", input.clone()).await.expect(200).json();
    assert_eq!((after["version"].as_i64(), after["result"]["verdict"].as_str()), (Some(2), Some("deny")), "{after}");
    for d in in_flight {
        let r = d.await.unwrap().expect("a decision under way is answered");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("its whole body");
        assert_eq!((v["version"].as_i64(), v["result"]["verdict"].as_str()), (Some(1), Some("approve")), "{v}");
        assert_eq!(v["error"], Value::Null, "{v}");
    }
    let log = ad.get("/policies/swap/decisions?limit=1000").await.expect(200).json();
    let mut verdicts: Vec<(i64, &str)> = log["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["version"].as_i64().unwrap(), d["result"]["verdict"].as_str().unwrap()))
        .collect();
    verdicts.sort();
    assert_eq!(verdicts, [(1, "approve"), (1, "approve"), (2, "deny")], "each decision is its version's");
}

/// Two hosts on one PostgreSQL: a policy uploaded, changed or deleted
/// through one is served accordingly by the other, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sharing_postgres_follow_each_others_policies() {
    let Some(db) = support::fresh_database(Backend::Postgres).await else { return };
    let one = Server::start_on(&db, &[]);
    let two = Server::start_on(&db, &[]);
    let admin = one.admin();
    let (a1, a2) = (one.as_agent(&admin), two.as_agent(&admin));
    let input = json!({"input": claim_input("a", "c")});
    // Waits until host two gives `want` (it hears of changes by NOTIFY).
    async fn served_by_two(a2: &Call<'_>, input: &Value, want: Option<&str>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = a2.post("/policies/shared/evaluate", input.clone()).await;
            let got = (r.status == 200).then(|| r.json()["result"]["verdict"].as_str().unwrap_or_default().to_string());
            if got.as_deref() == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "host two still gives {got:?}, want {want:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    a1.upload_policy("shared", "claim", guests::wasm("approve-all")).await.expect(201);
    served_by_two(&a2, &input, Some("approve")).await;
    a1.upload_policy("shared", "claim", guests::wasm("deny-all")).await.expect(200);
    served_by_two(&a2, &input, Some("deny")).await;
    assert_eq!(a2.get("/policies/shared").await.expect(200).json()["version"], 2);
    a1.delete("/policies/shared").await.expect(204);
    served_by_two(&a2, &input, None).await;

    // A change no one announces (made in the database itself) reaches host
    // two when its LISTEN connection is lost: it re-reads every policy then.
    a1.upload_policy("shared", "claim", guests::wasm("approve-all")).await.expect(201);
    a1.upload_policy("donor", "claim", guests::wasm("deny-all")).await.expect(201);
    served_by_two(&a2, &input, Some("approve")).await;
    let mut sql = <sqlx::PgConnection as sqlx::Connection>::connect(&db).await.expect("connect to the test database");
    sqlx::query(
        "UPDATE policies SET wasm = d.wasm, sha256 = d.sha256, imports = d.imports, version = policies.version + 1 \
         FROM policies d WHERE policies.name = 'shared' AND d.name = 'donor'",
    )
    .execute(&mut sql)
    .await
    .expect("swap the bytes behind the hosts' backs");
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut sql)
    .await
    .expect("end the hosts' LISTEN connections");
    assert!(killed.len() >= 2 && killed.iter().all(|k| k.0), "both hosts were listening: {killed:?}");
    served_by_two(&a2, &input, Some("deny")).await;
}

/// Unsigned LEB128, as wasm encodes sizes.
fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
