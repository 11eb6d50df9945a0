//! Policies bound to real hooks, over HTTP: claims, completions and signals
//! that change state. Failing guests fail closed here, not only in the dry
//! run (which has its own fail-closed path), and the settings that decide
//! which policies run (`enabled`, `order`, several on one hook,
//! `isolation`) are seen working on real decisions.

use crate::support::{self, Backend, Call, Server};
use serde_json::{Value, json};

on_both_backends!(
    failing_claim_policies_deny_real_claims,
    failing_handoff_policies_refuse_completions,
    failing_escalation_policies_fall_back_to_the_bundled_one,
    settings_decide_which_policies_run
);

/// The ways the failing guests fail, each with the limits that make it
/// fail for the reason named (the memory bomb and the huge result get time
/// to reach their caps, so the clock does not stop them first).
fn failures() -> [(&'static str, Value); 4] {
    [
        ("trap", json!({})),
        ("loop", json!({"timeout_ms": 50})),
        ("memory", json!({"timeout_ms": 10000, "memory_bytes": 16777216})),
        ("huge", json!({"timeout_ms": 20000, "memory_bytes": 536870912})),
    ]
}

/// The claim guest that fails as `how` says.
fn claim_guest(how: &str) -> &'static str {
    match how {
        "trap" => "panic",
        "loop" => "infinite-loop",
        "memory" => "memory-bomb",
        _ => "huge-result",
    }
}

/// A team led by the admin-made `lead`, with `mate`, and one pending task.
async fn team(lead: &Call<'_>, name: &str, mate: &str) {
    lead.post("/teams", json!({"name": name})).await.expect(201);
    lead.post(&format!("/teams/{name}/members"), json!({"agent_name": mate})).await.expect(201);
    lead.post(&format!("/teams/{name}/tasks"), json!({"subject": "work"})).await.expect(201);
}

/// The team's decision records of `policy`.
async fn records(lead: &Call<'_>, team: &str, policy: &str) -> Vec<Value> {
    let log = lead.get(&format!("/teams/{team}/decisions?limit=1000")).await.expect(200).json();
    log["decisions"].as_array().unwrap().iter().filter(|d| d["policy"] == policy).cloned().collect()
}

/// The contract `site` with one open subtask; returns its execution stream.
async fn contract(c: &Call<'_>) -> String {
    c.put_text(
        "/stash/site?persistent=true&schema=agent-contract",
        r#"{"objective": "o", "subtasks": [{"id": "research", "description": "d", "status": "open"}]}"#,
    )
    .await
    .expect(201);
    let exec = c.post("/stream", json!({"name": "site-exec", "linked_stash": "site"})).await.expect(201).json();
    exec["stream_id"].as_str().unwrap().to_string()
}

/// `mate`'s claim of the subtask `research`.
fn claim_entry() -> Value {
    json!({"label": "claim", "data": {"type": "claim", "subtask_id": "research", "agent_name": "mate"}})
}

/// A trap, a loop, a memory bomb and an oversized result, each bound to a
/// team and to a contract: the claim is denied, nothing is assigned, and
/// the record says why.
async fn failing_claim_policies_deny_real_claims(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let (lead, mate) = (server.register("lead").await, server.register("mate").await);
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    for (how, limits) in failures() {
        let (t, p) = (format!("t-{how}"), format!("claim-{how}"));
        team(&l, &t, "mate").await;
        ad.install_guest(&p, "claim", claim_guest(how), json!({"scope": {"team": t}, "limits": limits})).await;
        let r = m.patch(&format!("/teams/{t}/tasks/1"), json!({"owner": "mate"})).await.expect(409);
        assert_eq!(r.code(), "claim_denied");
        // The refusal names the decision; the team's log has it.
        let decided = r.json()["error"]["decision_id"].as_str().unwrap_or_default().to_string();
        let logged = l.get(&format!("/teams/{t}/decisions?limit=1000")).await.expect(200).json();
        let found = logged["decisions"].as_array().unwrap().iter().any(|d| d["decision_id"] == decided.as_str());
        assert!(found, "{how}: {decided} in {logged}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(" failed (decision dec_"), "{how}: {}", r.text);
        let task = m.get(&format!("/teams/{t}/tasks/1")).await.expect(200).json();
        assert_eq!((task["owner"].clone(), task["status"].as_str()), (Value::Null, Some("pending")), "{how}");
        // Moving it to in_progress is a claim too, and is refused the same way.
        m.patch(&format!("/teams/{t}/tasks/1"), json!({"status": "in_progress"})).await.expect(409);
        let rec = records(&l, &t, &p).await;
        assert_eq!(rec.len(), 2, "{how}: {rec:?}");
        assert!(rec.iter().all(|d| d["error"].is_string() && d["result"]["verdict"] == "deny"), "{how}: {rec:?}");
    }

    // On a contract: the claim entry is kept, its decision is a deny, and
    // the subtask stays open.
    let creator = server.register("creator").await;
    let c = server.as_agent(&creator);
    let exec = contract(&c).await;
    ad.install_guest("contract-trap", "claim", "panic", json!({"scope": {"stash": "site"}})).await;
    let r = m.post(&format!("/stream/{exec}"), claim_entry()).await.expect(201).json();
    assert_eq!(r["decision"]["verdict"], "deny", "{r}");
    assert!(r["decision"]["reason"].as_str().unwrap().contains(" failed (decision dec_"), "{r}");
    let doc = c.get("/stash/site?persistent=true").await.expect(200).json();
    assert_eq!(doc["subtasks"][0]["status"], "open", "{doc}");
    let log = ad.get("/policies/contract-trap/decisions").await.expect(200).json();
    assert_eq!(log["decisions"][0]["scope"], "stash:site");
    assert!(log["decisions"][0]["error"].is_string(), "{log}");
}

/// Each failure of a bound handoff policy refuses the completion with a
/// `policy` violation, and the task stays in progress.
async fn failing_handoff_policies_refuse_completions(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let (lead, mate) = (server.register("lead").await, server.register("mate").await);
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    for (how, limits) in failures() {
        let (t, p) = (format!("t-{how}"), format!("handoff-{how}"));
        team(&l, &t, "mate").await;
        m.patch(&format!("/teams/{t}/tasks/1"), json!({"status": "in_progress"})).await.expect(200);
        let settings = json!({"scope": {"team": t}, "limits": limits, "config": {"fail": how}});
        ad.install_guest(&p, "handoff", "failing-handoff", settings).await;
        let r = m
            .patch(
                &format!("/teams/{t}/tasks/1"),
                json!({"status": "completed", "metadata": {"handoff": support::handoff()}}),
            )
            .await
            .expect(422);
        assert_eq!(r.code(), "handoff_rejected", "{how}");
        let details = r.json()["error"]["details"].clone();
        assert!(details.to_string().contains(" failed (decision dec_"), "{how}: {details}");
        let task = m.get(&format!("/teams/{t}/tasks/1")).await.expect(200).json();
        assert_eq!(task["status"], "in_progress", "{how}");
        let rec = records(&l, &t, &p).await;
        assert!(rec.len() == 1 && rec[0]["error"].is_string(), "{how}: {rec:?}");
    }
}

/// A signal never comes to nothing: when every bound escalation policy
/// fails, the bundled one decides, on a team and on a contract.
async fn failing_escalation_policies_fall_back_to_the_bundled_one(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let (lead, mate) = (server.register("lead").await, server.register("mate").await);
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    for (how, limits) in failures() {
        let (t, p) = (format!("t-{how}"), format!("escalation-{how}"));
        team(&l, &t, "mate").await;
        let settings = json!({"scope": {"team": t}, "limits": limits, "config": {"fail": how}});
        ad.install_guest(&p, "escalation", "failing-escalation", settings).await;
        let halt = m
            .post(&format!("/teams/{t}/signals"), json!({"level": "HALT", "category": "security", "issue": how}))
            .await
            .expect(201)
            .json();
        let info = m.get(&format!("/teams/{t}")).await.expect(200).json();
        assert_eq!((info["halted"].as_bool(), info["halted_by"][0].clone()), (Some(true), halt["signal_id"].clone()));
        let to_lead = l.get(&format!("/teams/{t}/messages")).await.expect(200).json();
        assert!(to_lead.to_string().contains("ALGEDONIC HALT: SECURITY"), "{how}: {to_lead}");
        assert!(records(&l, &t, &p).await[0]["error"].is_string(), "{how}");
        let bundled = records(&l, &t, "algedonic-escalation").await;
        assert_eq!(bundled.len(), 1, "{how}: the bundled policy decided once");
        assert_eq!(bundled[0]["error"], Value::Null, "{how}");
    }

    // A contract's HALT, with a failing policy bound to the contract.
    let creator = server.register("creator").await;
    let c = server.as_agent(&creator);
    let exec = contract(&c).await;
    ad.install_guest("contract-escalation", "escalation", "failing-escalation", json!({"scope": {"stash": "site"}}))
        .await;
    let r = m
        .post(
            &format!("/stream/{exec}"),
            json!({"label": "algedonic", "data": {"level": "HALT", "category": "security", "issue": "leak"}}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(r["decision"]["halted"], true, "{r}");
    assert_eq!(m.post(&format!("/stream/{exec}"), claim_entry()).await.expect(423).code(), "halted");
}

/// `enabled`, `order`, several policies on one hook and `isolation`, set
/// over HTTP and seen on real claims.
async fn settings_decide_which_policies_run(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let (lead, mate) = (server.register("lead").await, server.register("mate").await);
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    let claim = |team: &'static str, task: u32| {
        let m = &m;
        async move { m.patch(&format!("/teams/{team}/tasks/{task}"), json!({"owner": "mate"})).await }
    };
    let reason = |r: &crate::support::Reply| r.json()["error"]["message"].as_str().unwrap_or_default().to_string();

    // Disabled, a policy decides nothing: the bundled rule approves.
    team(&l, "off", "mate").await;
    l.post("/teams/off/tasks", json!({"subject": "more"})).await.expect(201);
    ad.install_guest("no", "claim", "deny-all", json!({"scope": {"team": "off"}})).await;
    claim("off", 1).await.expect(409);
    ad.set_policy("no", json!({"scope": {"team": "off"}, "enabled": false})).await;
    claim("off", 2).await.expect(200);
    assert_eq!(records(&l, "off", "no").await.len(), 1, "a disabled policy leaves no record");

    // Several on one hook: any deny wins, the first in `order` (not in
    // name) gives the reason, and a failed policy counts as a deny.
    team(&l, "many", "mate").await;
    for t in 2..=4 {
        l.post("/teams/many/tasks", json!({"subject": format!("task {t}")})).await.expect(201);
    }
    ad.install_guest("yes", "claim", "approve-all", json!({"scope": {"team": "many"}})).await;
    let second = json!({"scope": {"team": "many"}, "order": 2, "config": {"tag": "second"}});
    ad.install_guest("a-gate", "claim", "config-driven", second).await;
    let first = json!({"scope": {"team": "many"}, "order": 1, "config": {"tag": "first"}});
    ad.install_guest("z-gate", "claim", "config-driven", first).await;
    let r = claim("many", 1).await.expect(409);
    assert!(reason(&r).contains("\"first\""), "{}", r.text);
    let swapped = json!({"scope": {"team": "many"}, "order": 3, "config": {"tag": "first"}});
    ad.set_policy("z-gate", swapped).await;
    let r = claim("many", 2).await.expect(409);
    assert!(reason(&r).contains("\"second\""), "{}", r.text);
    // With both gates approving the claimant, an approve and a trap still deny.
    for gate in ["a-gate", "z-gate"] {
        ad.set_policy(gate, json!({"scope": {"team": "many"}, "config": {"allow": ["mate"]}})).await;
    }
    claim("many", 3).await.expect(200);
    ad.install_guest("boom", "claim", "panic", json!({"scope": {"team": "many"}})).await;
    let r = claim("many", 4).await.expect(409);
    assert!(reason(&r).contains(" failed (decision dec_"), "{}", r.text);

    // `fresh`: every decision's instance is new; `reuse`: one warm instance
    // serves them in turn, so the counter guest counts on.
    team(&l, "count", "mate").await;
    for t in 2..=4 {
        l.post("/teams/count/tasks", json!({"subject": format!("task {t}")})).await.expect(201);
    }
    ad.install_guest("counter", "claim", "counter", json!({"scope": {"team": "count"}})).await;
    for t in 1..=2 {
        let r = claim("count", t).await.expect(409);
        assert!(reason(&r).ends_with("call 1"), "{}", r.text);
    }
    ad.set_policy("counter", json!({"scope": {"team": "count"}, "isolation": "reuse"})).await;
    let calls: Vec<String> =
        [reason(&claim("count", 3).await.expect(409)), reason(&claim("count", 4).await.expect(409))]
            .into_iter()
            .map(|r| r.rsplit(' ').next().unwrap_or_default().to_string())
            .collect();
    assert_eq!(calls, ["1", "2"], "one instance served both decisions");
}
