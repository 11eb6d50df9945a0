//! The contract hooks against a real server: claims decided and applied to
//! the contract, racing claims, budgets, escalation, deliverables without a
//! HANDOFF, and a HALT that locks claims until the creator acknowledges it.

use crate::support::{self, Agent, Backend, Call, Server};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    an_open_claim_is_approved_and_applied,
    thirty_racing_claims_assign_one_agent,
    racing_claims_of_different_subtasks_all_land,
    over_budget_claims_are_denied_with_the_reason,
    approval_subtasks_escalate_and_copies_check_their_config,
    deliverables_are_checked_only_where_the_contract_asks,
    a_halt_locks_claims_until_the_creator_acknowledges
);

const CONTRACT: &str = r#"{
  "objective": "Redesign the landing page",
  "subtasks": [
    {"id": "research", "description": "Analyse the funnel", "status": "open", "budget_usdc": 10.0},
    {"id": "design", "description": "Wireframes", "status": "open", "budget_usdc": 15.0, "requires_approval": true},
    {"id": "implement", "description": "Build it", "status": "open", "budget_usdc": 20.0}
  ],
  "budget_usdc": 45.0,
  "deadline": "2999-01-01T00:00:00Z"
}"#;

/// The creator's contract and its discussion and execution streams.
async fn contract(call: &Call<'_>) -> (String, String) {
    call.put_text("/stash/site?persistent=true&schema=agent-contract", CONTRACT).await.expect(201);
    let disc = call.post("/stream", json!({"name": "site-discussion"})).await.expect(201).json();
    let exec = call.post("/stream", json!({"name": "site-execution", "linked_stash": "site"})).await.expect(201).json();
    (disc["stream_id"].as_str().unwrap().into(), exec["stream_id"].as_str().unwrap().into())
}

async fn claim(server: &Server, agent: &Agent, stream: &str, subtask: &str, extra: Value) -> support::Reply {
    let mut data = json!({"type": "claim", "subtask_id": subtask, "agent_name": agent.name});
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    server.as_agent(agent).post(&format!("/stream/{stream}"), json!({"data": data, "label": "claim"})).await
}

async fn subtask(call: &Call<'_>, id: &str) -> Value {
    let doc = call.get("/stash/site?persistent=true").await.expect(200).json();
    doc["subtasks"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone()
}

async fn entries(call: &Call<'_>, stream: &str, label: &str) -> Vec<Value> {
    call.get(&format!("/stream/{stream}?label={label}&limit=1000")).await.expect(200).json()["entries"]
        .as_array()
        .unwrap()
        .clone()
}

async fn an_open_claim_is_approved_and_applied(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let bot = server.register("research-bot").await;
    let c = server.as_agent(&creator);
    let (disc, _) = contract(&c).await;
    let r = claim(&server, &bot, &disc, "research", json!({"message": "I have analytics access"})).await.expect(201);
    let decision = &r.json()["decision"];
    assert_eq!(
        (decision["verdict"].as_str(), decision["applied"].as_bool()),
        (Some("approve"), Some(true)),
        "{}",
        r.text
    );
    let s = subtask(&c, "research").await;
    assert_eq!((s["status"].as_str(), s["assigned_agent"].as_str()), (Some("claimed"), Some("research-bot")));
    let d = entries(&c, &disc, "claim-decision").await;
    assert_eq!(d.len(), 1);
    assert_eq!((d[0]["agent"].as_str(), d[0]["data"]["claim_seq"].as_i64()), (Some("cairn"), Some(1)));
    // The decision is in the log, scoped to the contract, by the bundled policy.
    let log = server.as_agent(&server.admin()).get("/policies/claim-approval/decisions").await.expect(200).json();
    let decisions = log["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{log}");
    let d = &decisions[0];
    assert_eq!(
        (d["scope"].as_str(), d["hook"].as_str(), d["agent"].as_str(), d["dry_run"].as_bool()),
        (Some("stash:site"), Some("claim"), Some("research-bot"), Some(false)),
        "{d}"
    );
    assert_eq!(d["result"]["verdict"], "approve", "{d}");
    assert_eq!(d["input"]["target"]["subtask"]["subtask_id"], "research", "{d}");
    // A second claim on it is refused: it is no longer open.
    let other = server.register("late-bot").await;
    let r = claim(&server, &other, &disc, "research", json!({})).await.expect(201).json();
    assert_eq!(r["decision"]["verdict"], "deny");
    assert!(r["decision"]["reason"].as_str().unwrap().contains("already claimed by research-bot"), "{r}");
    // Agents cannot forge the host's entries, nor claim for someone else.
    c.post(&format!("/stream/{disc}"), json!({"label": "claim-decision", "data": {"verdict": "approve"}}))
        .await
        .expect(403);
    server
        .as_agent(&other)
        .post(
            &format!("/stream/{disc}"),
            json!({"label": "claim", "data": {"subtask_id": "implement", "agent_name": "research-bot"}}),
        )
        .await
        .expect(422);
    server.as_agent(&other).post(&format!("/stream/{disc}"), json!({"label": "claim", "data": {}})).await.expect(422);
}

async fn thirty_racing_claims_assign_one_agent(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let c = server.as_agent(&creator);
    let (disc, _) = contract(&c).await;
    let mut agents = Vec::new();
    for i in 0..30 {
        agents.push(server.register(&format!("racer-{i}")).await);
    }
    let racing = agents.iter().map(|a| claim(&server, a, &disc, "implement", json!({})));
    let replies = futures_util::future::join_all(racing).await;
    let applied: Vec<String> = replies
        .into_iter()
        .map(|r| r.expect(201).json())
        .filter(|r| r["decision"]["applied"] == true)
        .map(|r| r["decision"]["agent_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(applied.len(), 1, "{applied:?}");
    let s = subtask(&c, "implement").await;
    assert_eq!(s["assigned_agent"].as_str(), Some(applied[0].as_str()));
    let d = entries(&c, &disc, "claim-decision").await;
    assert_eq!(d.len(), 30, "every claim gets its decision entry");
    assert_eq!(d.iter().filter(|e| e["data"]["applied"] == true).count(), 1);
}

/// Thirty agents claim sixty different subtasks of one contract at once:
/// every claim is approved and applied, none is told to retry.
async fn racing_claims_of_different_subtasks_all_land(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let c = server.as_agent(&creator);
    let subtasks: Vec<Value> =
        (0..60).map(|i| json!({"id": format!("part-{i}"), "description": "d", "status": "open"})).collect();
    let doc = json!({"objective": "many parts", "subtasks": subtasks}).to_string();
    c.put_text("/stash/big?persistent=true&schema=agent-contract", &doc).await.expect(201);
    let disc = c.post("/stream", json!({"name": "big-discussion"})).await.expect(201).json();
    let disc = disc["stream_id"].as_str().unwrap().to_string();
    let mut agents = Vec::new();
    for i in 0..30 {
        agents.push(server.register(&format!("racer-{i}")).await);
    }
    let parts: Vec<String> = (0..60).map(|i| format!("part-{i}")).collect();
    let racing = parts.iter().enumerate().map(|(i, p)| claim(&server, &agents[i % 30], &disc, p, json!({})));
    let replies = futures_util::future::join_all(racing).await;
    for (i, r) in replies.into_iter().enumerate() {
        let r = r.expect(201).json();
        assert_eq!(r["decision"]["applied"], true, "part-{i}: {r}");
    }
    let doc = c.get("/stash/big?persistent=true").await.expect(200).json();
    for (i, s) in doc["subtasks"].as_array().unwrap().iter().enumerate() {
        assert_eq!(s["status"], "claimed", "{s}");
        assert_eq!(s["assigned_agent"].as_str(), Some(agents[i % 30].name.as_str()));
    }
    let d = entries(&c, &disc, "claim-decision").await;
    assert_eq!(d.len(), 60);
    assert!(d.iter().all(|e| e["data"]["applied"] == true));
}

async fn over_budget_claims_are_denied_with_the_reason(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let bot = server.register("research-bot").await;
    let c = server.as_agent(&creator);
    let (disc, _) = contract(&c).await;
    let r = claim(&server, &bot, &disc, "research", json!({"budget_usdc": 25})).await.expect(201).json();
    assert_eq!(r["decision"]["verdict"], "deny");
    assert_eq!(r["decision"]["reason"], "the claim asks 25 USDC, over the subtask research's budget of 10 USDC");
    assert_eq!(subtask(&c, "research").await["status"], "open");
    let d = entries(&c, &disc, "claim-decision").await;
    assert_eq!(d[0]["data"]["reason"], r["decision"]["reason"]);
}

async fn approval_subtasks_escalate_and_copies_check_their_config(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let bot = server.register("design-bot").await;
    let c = server.as_agent(&creator);
    let (disc, _) = contract(&c).await;
    // The contract marks "design" as needing approval: escalated, not applied.
    let r = claim(&server, &bot, &disc, "design", json!({})).await.expect(201).json();
    assert_eq!(
        (r["decision"]["verdict"].as_str(), r["decision"]["escalated"].as_bool()),
        (Some("escalate"), Some(true))
    );
    assert_eq!(subtask(&c, "design").await["status"], "open");
    // An exported copy, bound to this contract with a config: its schema is checked.
    let scratch = support::scratch();
    let exported = scratch.path().join("claim-approval.wasm");
    let wasm = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["policy", "export", "claim-approval", "--out"])
        .arg(&exported)
        .output()
        .unwrap();
    assert!(wasm.status.success());
    let bytes = std::fs::read(&exported).unwrap();
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    assert_eq!(ad.upload_policy("claim-approval", "claim", bytes.clone()).await.expect(409).code(), "name_taken");
    ad.upload_policy("site-claims", "claim", bytes).await.expect(201);
    let bad = ad
        .send(
            ad.req(Method::PUT, "/policies/site-claims/settings")
                .json(&json!({"scope": {"stash": "site"}, "config": {"max_open_claims": "one"}})),
        )
        .await
        .expect(422);
    assert_eq!(bad.code(), "invalid_config");
    assert_eq!(bad.json()["error"]["details"][0]["path"], "/config/max_open_claims");
    ad.send(ad.req(Method::PUT, "/policies/site-claims/settings").json(&json!({
        "scope": {"stash": "site"}, "config": {"approval_required": ["impl*"]}
    })))
    .await
    .expect(200);
    let r = claim(&server, &bot, &disc, "implement", json!({})).await.expect(201).json();
    assert_eq!(r["decision"]["verdict"], "escalate", "{r}");
    let log = ad.get("/policies/site-claims/decisions").await.expect(200).json();
    assert_eq!(log["decisions"][0]["scope"], "stash:site");
}

async fn deliver(call: &Call<'_>, stream: &str, deliverable: &str) -> Value {
    let data = json!({"subtask_id": "research", "deliverable": deliverable});
    call.post(&format!("/stream/{stream}"), json!({"label": "deliverable", "data": data})).await.expect(201).json()
}

/// The HANDOFF gate applies on contracts that ask for it (`"handoff":
/// "required"`, or a handoff policy bound to the contract); elsewhere the
/// host adds nothing after a deliverable, as the contracts pattern expects.
async fn deliverables_are_checked_only_where_the_contract_asks(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let bot = server.register("research-bot").await;
    let c = server.as_agent(&creator);
    let (_, exec) = contract(&c).await;
    let b = server.as_agent(&bot);

    // Not asked: the deliverable stands alone, with no decision.
    let r = deliver(&b, &exec, "Analysis in stash 'findings'").await;
    assert!(r["decision"].is_null(), "{r}");
    assert!(entries(&b, &exec, "handoff-rejected").await.is_empty());
    let latest = b.get(&format!("/stream/{exec}/latest")).await.expect(200).json();
    assert_eq!((latest["label"].as_str(), latest["seq"].as_i64()), (Some("deliverable"), r["seq"].as_i64()));

    // Asked in the document.
    let mut gated: Value = serde_json::from_str(CONTRACT).unwrap();
    gated["handoff"] = json!("required");
    c.put_text("/stash/gated?persistent=true&schema=agent-contract", &gated.to_string()).await.expect(201);
    let gexec = c.post("/stream", json!({"name": "gated-execution"})).await.expect(201).json();
    let gexec = gexec["stream_id"].as_str().unwrap();
    let r = deliver(&b, gexec, "Analysis in stash 'findings'").await;
    assert_eq!(r["decision"]["accepted"], false, "{r}");
    let rejected = entries(&b, gexec, "handoff-rejected").await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["data"]["deliverable_seq"], r["seq"]);
    assert_eq!(rejected[0]["data"]["violations"][0]["field"], "handoff");
    assert_eq!(rejected[0]["agent"], "cairn");
    // The protocol's text form in the message passes, and adds no rejection.
    let text = "Analysis done.\n\nHANDOFF:\n1. Produced: stash findings\n2. Key decisions: 30-day window\n\
        3. Reasoning chain: seasonality is weekly, so 30 days is enough\n\
        4. Areas of uncertainty:\n- [MEDIUM] bot traffic in the funnel\n5. Integration points: design\n6. Open questions: none";
    let r = deliver(&b, gexec, text).await;
    assert_eq!(r["decision"]["accepted"], true, "{r}");
    assert_eq!(entries(&b, gexec, "handoff-rejected").await.len(), 1);

    // Asked by binding a handoff policy to the contract.
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    ad.install_guest("site-handoffs", "handoff", "handoff-basic", json!({"scope": {"stash": "site"}})).await;
    let r = deliver(&b, &exec, "Analysis in stash 'findings'").await;
    assert_eq!(r["decision"]["accepted"], false, "{r}");
    let rejected = entries(&b, &exec, "handoff-rejected").await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["data"]["violations"][0]["field"], "produced");
}

async fn a_halt_locks_claims_until_the_creator_acknowledges(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let bot = server.register("research-bot").await;
    let c = server.as_agent(&creator);
    let (disc, exec) = contract(&c).await;
    let b = server.as_agent(&bot);
    let r = b
        .post(
            &format!("/stream/{exec}"),
            json!({"label": "algedonic", "data": {"level": "HALT", "category": "security",
            "issue": "the analytics export contains raw emails", "evidence": "export.csv", "impact": "PII leak",
            "recommended_action": "stop and scrub"}}),
        )
        .await
        .expect(201)
        .json();
    let signal_id = r["decision"]["signal_id"].as_str().unwrap().to_string();
    assert_eq!(r["decision"]["halted"], true, "{r}");
    let decided = entries(&c, &exec, "algedonic-decision").await;
    assert_eq!(decided[0]["data"]["signal_id"], signal_id.as_str());
    let kinds: Vec<&str> =
        decided[0]["data"]["actions"].as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["halt-scope", "notify"]);
    assert_eq!(entries(&c, &exec, "escalation").await.len(), 1, "the notification, for the creator");
    // Claims on any of the contract's streams are locked; nothing is appended.
    assert_eq!(claim(&server, &bot, &disc, "research", json!({})).await.expect(423).code(), "halted");
    assert!(entries(&c, &disc, "claim").await.is_empty());
    // Other entries still flow.
    b.post(&format!("/stream/{disc}"), json!({"label": "question", "data": {"q": "scrub how?"}})).await.expect(201);
    // Only the creator (or an admin) acknowledges.
    b.post_empty(&format!("/signals/{signal_id}/acknowledge")).await.expect(403);
    let ack =
        c.post(&format!("/signals/{signal_id}/acknowledge"), json!({"note": "scrubbed"})).await.expect(200).json();
    assert_eq!((ack["acknowledged"].as_bool(), ack["acknowledged_by"].as_str()), (Some(true), Some("orchestrator")));
    assert_eq!(
        c.post_empty(&format!("/signals/{signal_id}/acknowledge")).await.expect(409).code(),
        "already_acknowledged"
    );
    let r = claim(&server, &bot, &disc, "research", json!({})).await.expect(201).json();
    assert_eq!(r["decision"]["applied"], true);
    // Bad signals are refused before they are stored.
    b.post(&format!("/stream/{exec}"), json!({"label": "algedonic", "data": {"level": "PANIC", "category": "X"}}))
        .await
        .expect(422);
}
