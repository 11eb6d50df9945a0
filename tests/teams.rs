//! The agent-teams protocol against a real server: a full team run, racing
//! claims, dependencies, privacy, bad input, policies bound to a team, and
//! live inboxes.

use std::time::Duration;

use crate::support::{self, Agent, Backend, Call, Server, SseReader, guests};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    full_team_run,
    fifty_concurrent_claims_leave_one_owner,
    eighty_claims_of_distinct_tasks_all_land,
    dependencies_stay_symmetric_and_acyclic,
    outsiders_get_404,
    bad_input_gets_clear_errors,
    a_team_policy_decides_and_is_logged,
    bundled_rules_stay_beside_a_bound_policy,
    the_team_stream_tells_what_happens_to_tasks,
    a_policy_reads_tasks_and_escalates_to_the_lead,
    a_0_1_policy_still_reads_tasks_and_decides,
    inbox_is_live_over_sse,
    rules_change_who_completes_and_what_a_handoff_needs
);

/// A team led by `lead` with `members`.
async fn team(server: &Server, lead: &Agent, name: &str, members: &[&Agent]) {
    let l = server.as_agent(lead);
    let t = l.post("/teams", json!({"name": name})).await.expect(201).json();
    assert_eq!(t["lead"], lead.name.as_str());
    for m in members {
        l.post(&format!("/teams/{name}/members"), json!({"agent_name": m.name})).await.expect(201);
    }
}

async fn inbox(call: &Call<'_>, team: &str) -> Vec<Value> {
    call.get(&format!("/teams/{team}/messages")).await.expect(200).json()["messages"].as_array().unwrap().clone()
}

async fn full_team_run(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("orchestrator").await;
    let coder = server.register("coder").await;
    let tester = server.register("tester").await;
    team(&server, &lead, "pact", &[&coder, &tester]).await;
    let (l, c, t) = (server.as_agent(&lead), server.as_agent(&coder), server.as_agent(&tester));

    // 1. The lead creates a teachback task, then a work task blocked by it.
    let teach = l
        .post("/teams/pact/tasks", json!({"subject": "Teachback on the parser design", "owner": "coder"}))
        .await
        .expect(201)
        .json();
    assert_eq!((teach["id"].as_i64(), teach["status"].as_str()), (Some(1), Some("pending")));
    let work = l
        .post(
            "/teams/pact/tasks",
            json!({"subject": "Build the parser", "description": "CONTEXT ... MISSION ...",
                   "active_form": "Building the parser", "blocked_by": [1], "metadata": {"phase": "code"}}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!((work["id"].as_i64(), work["blocked_by"].clone()), (Some(2), json!([1])));
    assert_eq!(c.get("/teams/pact/tasks/1").await.expect(200).json()["blocks"], json!([2]));

    // 2. A claim on the blocked task is refused, whichever way it is made.
    let r = c.patch("/teams/pact/tasks/2", json!({"owner": "coder"})).await.expect(409);
    assert_eq!(r.code(), "claim_denied");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("blocked by #1"), "{}", r.text);
    assert_eq!(c.patch("/teams/pact/tasks/2", json!({"status": "in_progress"})).await.expect(409).code(), "blocked");
    let list = c.get("/teams/pact/tasks").await.expect(200).json();
    assert_eq!(list["tasks"][1]["blocked_by"], json!([1]));

    // The assigned teammate starts the teachback task.
    let started = c.patch("/teams/pact/tasks/1", json!({"status": "in_progress"})).await.expect(200).json();
    assert_eq!((started["owner"].as_str(), started["status"].as_str()), (Some("coder"), Some("in_progress")));

    // 3. Teachback messages.
    let sent = c
        .post(
            "/teams/pact/messages",
            json!({"to": "lead", "summary": "Teachback: LL(1) parser",
                   "message": "[coder→lead] Teachback:\n- Building: the parser\nProceeding unless corrected."}),
        )
        .await
        .expect(201)
        .json();
    let got = inbox(&l, "pact").await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["id"].clone(), got[0]["from"].as_str()), (sent["id"].clone(), Some("coder")));
    assert_eq!(got[0]["summary"], "Teachback: LL(1) parser");
    l.post("/teams/pact/messages", json!({"to": "coder", "message": "[orchestrator→coder] Correct; go."}))
        .await
        .expect(201);
    assert_eq!(inbox(&c, "pact").await[0]["from"], "orchestrator");
    assert!(inbox(&t, "pact").await.is_empty(), "tester got a message addressed to coder");

    // 4. An incomplete HANDOFF is rejected, with the reason written to the task.
    let mut partial = support::handoff();
    partial.as_object_mut().unwrap().remove("integration");
    partial["uncertainty"] = json!(["error recovery"]);
    let r = c
        .patch("/teams/pact/tasks/1", json!({"status": "completed", "metadata": {"handoff": partial}}))
        .await
        .expect(422);
    assert_eq!(r.code(), "handoff_rejected");
    let details = r.json()["error"]["details"].clone();
    let paths: Vec<&str> = details.as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/metadata/handoff/uncertainty[0]", "/metadata/handoff/integration"]);
    let task = c.get("/teams/pact/tasks/1").await.expect(200).json();
    assert_eq!(task["status"], "in_progress");
    assert_eq!(task["metadata"]["handoff_rejection"]["revision"], 1);
    assert_eq!(task["metadata"]["handoff_rejection"]["corrections"].as_array().unwrap().len(), 2);
    // The refusal names the decision, as the task's record of it does.
    let decided = r.json()["error"]["decision_id"].clone();
    assert!(decided.as_str().is_some_and(|d| d.starts_with("dec_")), "{}", r.text);
    assert_eq!(task["metadata"]["handoff_rejection"]["decision_id"], decided);
    // A teammate may not complete someone else's task.
    let r = t.patch("/teams/pact/tasks/1", json!({"status": "completed"})).await.expect(403);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("coder's"), "{}", r.text);
    // The valid HANDOFF is accepted; the rejection note goes.
    let done = c
        .patch("/teams/pact/tasks/1", json!({"status": "completed", "metadata": {"handoff": support::handoff()}}))
        .await
        .expect(200)
        .json();
    assert_eq!(done["status"], "completed");
    assert!(done["metadata"].get("handoff_rejection").is_none());
    assert_eq!(done["metadata"]["handoff"]["produced"], json!(["src/parser.rs"]));
    // The work task is unblocked in TaskList, and can now be claimed.
    let list = c.get("/teams/pact/tasks?status=pending").await.expect(200).json();
    assert_eq!(
        list["tasks"],
        json!([{"id": 2, "subject": "Build the parser", "status": "pending", "owner": null, "blocked_by": []}])
    );
    let claimed = c.patch("/teams/pact/tasks/2", json!({"owner": "coder", "status": "in_progress"})).await.expect(200);
    assert_eq!(claimed.json()["owner"], "coder");

    // 5. A HALT stops the team.
    let third = l.post("/teams/pact/tasks", json!({"subject": "Write tests"})).await.expect(201).json();
    let third_id = third["id"].as_i64().unwrap();
    let halt = t
        .post(
            "/teams/pact/signals",
            json!({"level": "HALT", "category": "security", "issue": "API keys are logged in plain text",
                   "evidence": "logs/app.log line 12", "impact": "credential leak",
                   "recommended_action": "stop and rotate keys", "task_id": third_id,
                   "partial_handoff": {"produced": []}}),
        )
        .await
        .expect(201)
        .json();
    let signal_id = halt["signal_id"].as_str().unwrap().to_string();
    let signal_task = halt["signal_task_id"].as_i64().unwrap();
    assert!(halt["actions"].as_array().unwrap().iter().all(|a| a["done"] == true), "{halt}");
    let st = c.get(&format!("/teams/pact/tasks/{signal_task}")).await.expect(200).json();
    assert_eq!(
        (st["subject"].as_str(), st["metadata"]["type"].as_str()),
        (Some("[HALT]: SECURITY"), Some("algedonic"))
    );
    assert_eq!(
        c.get(&format!("/teams/pact/tasks/{third_id}")).await.expect(200).json()["blocked_by"],
        json!([signal_task])
    );
    let info = c.get("/teams/pact").await.expect(200).json();
    assert_eq!((info["halted"].as_bool(), info["halted_by"].clone()), (Some(true), json!([signal_id])));
    // Claims and completions get 423; other edits still work.
    assert_eq!(
        t.patch(&format!("/teams/pact/tasks/{third_id}"), json!({"owner": "tester"})).await.expect(423).code(),
        "halted"
    );
    let r = c
        .patch("/teams/pact/tasks/2", json!({"status": "completed", "metadata": {"handoff": support::handoff()}}))
        .await;
    r.expect(423);
    c.patch("/teams/pact/tasks/2", json!({"metadata": {"progress": "paused"}})).await.expect(200);
    // The owner of the in-progress task got a stop message; the lead got the signal.
    let stop = inbox(&c, "pact").await.into_iter().find(|m| m["from"] == "cairn").expect("a stop message");
    assert!(stop["summary"].as_str().unwrap().starts_with("STOP"), "{stop}");
    let to_lead = inbox(&l, "pact").await.into_iter().find(|m| m["from"] == "cairn").expect("the signal, to the lead");
    assert!(to_lead["message"].as_str().unwrap().contains("ALGEDONIC HALT: SECURITY"), "{to_lead}");
    // The signal is on the team's stream, labelled algedonic.
    let stream_id = info["stream_id"].as_str().unwrap();
    let entries = t.get(&format!("/stream/{stream_id}?label=algedonic")).await.expect(200).json();
    assert_eq!(entries["entries"][0]["data"]["signal"]["signal_id"], signal_id.as_str());
    // Only the lead acknowledges; that lifts the halt and completes the signal task.
    t.post(&format!("/teams/pact/signals/{signal_id}/acknowledge"), json!({})).await.expect(403);
    let ack = l
        .post(&format!("/teams/pact/signals/{signal_id}/acknowledge"), json!({"note": "keys rotated"}))
        .await
        .expect(200)
        .json();
    assert_eq!((ack["acknowledged"].as_bool(), ack["acknowledged_by"].as_str()), (Some(true), Some("orchestrator")));
    let again = l.post_empty(&format!("/signals/{signal_id}/acknowledge")).await.expect(409);
    assert_eq!(again.code(), "already_acknowledged", "{}", again.text);
    assert_eq!(c.get("/teams/pact").await.expect(200).json()["halted"], false);
    assert_eq!(c.get(&format!("/teams/pact/tasks/{signal_task}")).await.expect(200).json()["status"], "completed");
    c.patch("/teams/pact/tasks/2", json!({"status": "completed", "metadata": {"handoff": support::handoff()}}))
        .await
        .expect(200);
    t.patch(&format!("/teams/pact/tasks/{third_id}"), json!({"owner": "tester", "status": "in_progress"}))
        .await
        .expect(200);

    // 6. An ALERT reaches the lead and blocks the given task, without halting.
    let alert = t
        .post(
            "/teams/pact/signals",
            json!({"level": "ALERT", "category": "SCOPE", "issue": "the tests need a fixture server",
                   "task_id": third_id}),
        )
        .await
        .expect(201)
        .json();
    assert!(alert["actions"].as_array().unwrap().iter().all(|a| a["type"] != "halt-scope"));
    let alerts: Vec<Value> =
        inbox(&l, "pact").await.into_iter().filter(|m| m["summary"] == "ALGEDONIC ALERT: SCOPE").collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(c.get("/teams/pact").await.expect(200).json()["halted"], false);
    let signals = l.get("/teams/pact/signals").await.expect(200).json();
    assert_eq!(signals["signals"].as_array().unwrap().len(), 2);
    assert_eq!(signals["signals"][1]["acknowledged"], false);

    // 7. A shutdown request and its response.
    let req = l
        .post("/teams/pact/messages", json!({"to": "coder", "type": "shutdown_request", "summary": "Done, shut down?"}))
        .await
        .expect(201)
        .json();
    let request_id = req["request_id"].as_str().unwrap().to_string();
    assert!(request_id.starts_with("req_"));
    let got = inbox(&c, "pact").await.into_iter().find(|m| m["type"] == "shutdown_request").unwrap();
    assert_eq!(got["request_id"], request_id.as_str());
    // Only the asked agent answers, and only to the asker.
    t.post(
        "/teams/pact/messages",
        json!({"to": "lead", "type": "shutdown_response", "request_id": request_id, "approve": true}),
    )
    .await
    .expect(422);
    c.post(
        "/teams/pact/messages",
        json!({"to": "tester", "type": "shutdown_response", "request_id": request_id, "approve": true}),
    )
    .await
    .expect(422);
    let resp = c
        .post(
            "/teams/pact/messages",
            json!({"to": "lead", "type": "shutdown_response", "request_id": request_id, "approve": true,
                   "summary": "Idle; approving"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(resp["request_id"], request_id.as_str());
    let answer = inbox(&l, "pact").await.into_iter().find(|m| m["type"] == "shutdown_response").unwrap();
    assert_eq!((answer["from"].as_str(), answer["approve"].as_bool()), (Some("coder"), Some(true)));

    // Every decision landed in the decision log: claims, HANDOFFs, escalations.
    let log = l.get("/teams/pact/decisions?limit=1000").await.expect(200).json();
    let seen: Vec<(String, String)> = log["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["policy"].as_str().unwrap().to_string(), d["hook"].as_str().unwrap().to_string()))
        .collect();
    for (policy, hook) in
        [("claim-approval", "claim"), ("handoff-validation", "handoff"), ("algedonic-escalation", "escalation")]
    {
        assert!(seen.contains(&(policy.into(), hook.into())), "no {policy} decision in {seen:?}");
    }
    let denials = log["decisions"].as_array().unwrap().iter().filter(|d| d["result"]["verdict"] == "deny").count();
    assert_eq!(denials, 1, "the refused claim on the blocked task is logged");
    c.get("/teams/pact/decisions").await.expect(403);
}

async fn fifty_concurrent_claims_leave_one_owner(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let mut agents = Vec::new();
    for i in 0..50 {
        agents.push(server.register(&format!("worker-{i}")).await);
    }
    team(&server, &lead, "race", &agents.iter().collect::<Vec<_>>()).await;
    server.as_agent(&lead).post("/teams/race/tasks", json!({"subject": "The one task"})).await.expect(201);
    let claims = agents.iter().map(|a| {
        let server = &server;
        async move {
            let r = server
                .as_agent(a)
                .patch("/teams/race/tasks/1", json!({"owner": a.name, "status": "in_progress"}))
                .await;
            (a.name.clone(), r.status.as_u16(), r.text)
        }
    });
    let results = futures_util::future::join_all(claims).await;
    let winners: Vec<&String> = results.iter().filter(|(_, s, _)| *s == 200).map(|(n, _, _)| n).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, status, text) in &results {
        assert!(*status == 200 || *status == 409, "{status}: {text}");
    }
    let task = server.as_agent(&lead).get("/teams/race/tasks/1").await.expect(200).json();
    assert_eq!(task["owner"].as_str(), Some(winners[0].as_str()));
    // Every one of the fifty claims was decided and logged.
    let log = server.as_agent(&lead).get("/teams/race/decisions?limit=1000").await.expect(200).json();
    let approvals = log["decisions"].as_array().unwrap().iter().filter(|d| d["result"]["verdict"] == "approve").count();
    assert_eq!(approvals, 1, "only the winning approval took effect and was committed");
    assert!(log["decisions"].as_array().unwrap().len() >= 50);
}

/// Forty agents, two tasks each, all at once: every claim is decided by the
/// bundled policy (which reads tasks through `task-read`) and lands. None is
/// refused for contention, none fails closed because the host is busy.
async fn eighty_claims_of_distinct_tasks_all_land(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let mut agents = Vec::new();
    for i in 0..40 {
        agents.push(server.register(&format!("worker-{i}")).await);
    }
    team(&server, &lead, "busy", &agents.iter().collect::<Vec<_>>()).await;
    let l = server.as_agent(&lead);
    for i in 0..80 {
        l.post("/teams/busy/tasks", json!({"subject": format!("task {i}")})).await.expect(201);
    }
    let claims = (0..80).map(|i| {
        let (server, a) = (&server, &agents[i % 40]);
        async move {
            let path = format!("/teams/busy/tasks/{}", i + 1);
            let r = server.as_agent(a).patch(&path, json!({"owner": a.name, "status": "in_progress"})).await;
            (i, a.name.clone(), r.status.as_u16(), r.text)
        }
    });
    let results = futures_util::future::join_all(claims).await;
    for (i, _, status, text) in &results {
        assert_eq!(*status, 200, "claim of task {}: {text}", i + 1);
    }
    let tasks = l.get("/teams/busy/tasks?limit=1000").await.expect(200).json();
    for (i, name, _, _) in &results {
        let t = &tasks["tasks"][*i];
        assert_eq!((t["owner"].as_str(), t["status"].as_str()), (Some(name.as_str()), Some("in_progress")), "{t}");
    }
    let log = l.get("/teams/busy/decisions?limit=1000").await.expect(200).json();
    let decisions = log["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 80);
    assert!(decisions.iter().all(|d| d["result"]["verdict"] == "approve" && d["error"].is_null()), "{log}");
}

async fn dependencies_stay_symmetric_and_acyclic(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    team(&server, &lead, "deps", &[]).await;
    let l = server.as_agent(&lead);
    for s in ["a", "b", "c"] {
        l.post("/teams/deps/tasks", json!({"subject": s})).await.expect(201);
    }
    // 2 waits for 1 (add_blocked_by), 3 waits for 2 (add_blocks on 2).
    l.patch("/teams/deps/tasks/2", json!({"add_blocked_by": [1]})).await.expect(200);
    let two = l.patch("/teams/deps/tasks/2", json!({"add_blocks": [3]})).await.expect(200).json();
    assert_eq!((two["blocked_by"].clone(), two["blocks"].clone()), (json!([1]), json!([3])));
    assert_eq!(l.get("/teams/deps/tasks/1").await.expect(200).json()["blocks"], json!([2]));
    assert_eq!(l.get("/teams/deps/tasks/3").await.expect(200).json()["blocked_by"], json!([2]));
    // 1 → 3 would close 1 → 3 → 2 → 1.
    let r = l.patch("/teams/deps/tasks/1", json!({"add_blocked_by": [3]})).await.expect(422);
    assert_eq!(r.code(), "dependency_cycle");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("#1 → #3 → #2 → #1"), "{}", r.text);
    l.patch("/teams/deps/tasks/3", json!({"add_blocks": [1]})).await.expect(422);
    l.patch("/teams/deps/tasks/1", json!({"add_blocked_by": [1]})).await.expect(422);
    // A refused update changes nothing, not even its other fields.
    let r = l.patch("/teams/deps/tasks/1", json!({"subject": "renamed", "add_blocked_by": [3]})).await;
    r.expect(422);
    assert_eq!(l.get("/teams/deps/tasks/1").await.expect(200).json()["subject"], "a");
    // Metadata merges key by key; null deletes.
    l.patch("/teams/deps/tasks/1", json!({"metadata": {"a": 1, "b": {"x": 1}}})).await.expect(200);
    let m = l.patch("/teams/deps/tasks/1", json!({"metadata": {"a": null, "c": 3}})).await.expect(200).json();
    assert_eq!(m["metadata"], json!({"b": {"x": 1}, "c": 3}));
    // Deleting a task drops its edges on both sides.
    l.patch("/teams/deps/tasks/2", json!({"status": "deleted"})).await.expect(200);
    l.get("/teams/deps/tasks/2").await.expect(404);
    assert_eq!(l.get("/teams/deps/tasks/3").await.expect(200).json()["blocked_by"], json!([]));
    assert_eq!(l.get("/teams/deps/tasks/1").await.expect(200).json()["blocks"], json!([]));
    // Ids are never reused.
    assert_eq!(l.post("/teams/deps/tasks", json!({"subject": "d"})).await.expect(201).json()["id"], 4);
}

async fn outsiders_get_404(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let member = server.register("member").await;
    let outsider = server.register("outsider").await;
    team(&server, &lead, "private", &[&member]).await;
    server.as_agent(&lead).post("/teams/private/tasks", json!({"subject": "secret"})).await.expect(201);
    let o = server.as_agent(&outsider);
    for path in [
        "/teams/private",
        "/teams/private/tasks",
        "/teams/private/tasks/1",
        "/teams/private/messages",
        "/teams/private/signals",
        "/teams/private/decisions",
        "/teams/nonexistent/tasks",
    ] {
        assert_eq!(o.get(path).await.expect(404).code(), "not_found", "{path}");
    }
    o.patch("/teams/private/tasks/1", json!({"owner": "outsider"})).await.expect(404);
    o.post("/teams/private/tasks", json!({"subject": "x"})).await.expect(404);
    o.post("/teams/private/messages", json!({"to": "lead", "message": "hi"})).await.expect(404);
    o.post("/teams/private/members", json!({"agent_name": "outsider"})).await.expect(404);
    o.post("/teams/private/signals", json!({"level": "HALT", "category": "X", "issue": "y"})).await.expect(404);
    // The same answer as for a team that does not exist: nothing leaks.
    let a = o.get("/teams/private").await.json();
    let b = o.get("/teams/absent").await.json();
    assert_eq!(a["error"]["code"], b["error"]["code"]);
    assert!(o.get("/teams").await.expect(200).json()["teams"].as_array().unwrap().is_empty());
    // A member is not the lead.
    let m = server.as_agent(&member);
    m.post("/teams/private/members", json!({"agent_name": "outsider"})).await.expect(403);
    assert_eq!(m.get("/teams").await.expect(200).json()["teams"][0]["name"], "private");
    // Admins see every team.
    server.as_agent(&server.admin()).get("/teams/private/tasks/1").await.expect(200);
}

async fn bad_input_gets_clear_errors(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let mate = server.register("mate").await;
    team(&server, &lead, "t", &[&mate]).await;
    let l = server.as_agent(&lead);
    let mt = server.as_agent(&mate);
    l.post("/teams", json!({"name": "t"})).await.expect(409);
    l.post("/teams", json!({"name": "bad name"})).await.expect(400);
    l.post("/teams", json!({"name": "r", "rules": {"complete": "whoever"}})).await.expect(400);
    l.post("/teams/t/members", json!({"agent_name": "ghost"})).await.expect(422);
    assert_eq!(l.post("/teams/t/members", json!({"agent_name": "mate"})).await.expect(409).code(), "already_member");
    l.post("/teams/t/tasks", json!({"subject": "  "})).await.expect(422);
    l.post("/teams/t/tasks", json!({"subject": "x", "blocked_by": [99]})).await.expect(422);
    l.post("/teams/t/tasks", json!({"subject": "x", "owner": "ghost"})).await.expect(422);
    l.post("/teams/t/tasks", json!({"subject": "x", "metadata": [1]})).await.expect(422);
    l.post("/teams/t/tasks", json!({"subject": "x", "colour": "red"})).await.expect(400);
    mt.post("/teams/t/tasks", json!({"subject": "x", "owner": "lead"})).await.expect(403);
    l.post("/teams/t/tasks", json!({"subject": "real"})).await.expect(201);
    l.patch("/teams/t/tasks/1", json!({"status": "finished"})).await.expect(400);
    l.patch("/teams/t/tasks/1", json!({"add_blocks": [42]})).await.expect(422);
    assert_eq!(l.patch("/teams/t/tasks/abc", json!({})).await.expect(400).code(), "invalid_path");
    l.patch("/teams/t/tasks/7", json!({"subject": "x"})).await.expect(404);
    mt.patch("/teams/t/tasks/1", json!({"owner": "lead"})).await.expect(403);
    l.post("/teams/t/messages", json!({"to": "nobody", "message": "hi"})).await.expect(422);
    l.post("/teams/t/messages", json!({"to": "mate"})).await.expect(422);
    l.post("/teams/t/messages", json!({"to": "mate", "message": "hi", "type": "memo"})).await.expect(400);
    l.post("/teams/t/messages", json!({"to": "mate", "message": "hi", "approve": true})).await.expect(422);
    mt.post("/teams/t/messages", json!({"to": "lead", "type": "shutdown_response", "approve": true})).await.expect(422);
    mt.post(
        "/teams/t/messages",
        json!({"to": "lead", "type": "shutdown_response", "request_id": "req_x", "approve": true}),
    )
    .await
    .expect(422);
    l.post("/teams/t/signals", json!({"level": "PANIC", "category": "X", "issue": "y"})).await.expect(400);
    l.post("/teams/t/signals", json!({"level": "HALT", "category": "", "issue": "y"})).await.expect(422);
    l.post("/teams/t/signals", json!({"level": "ALERT", "category": "X", "issue": "y", "task_id": 9}))
        .await
        .expect(422);
    l.post("/teams/t/signals/sig_nope/acknowledge", json!({})).await.expect(404);
    l.post("/signals/sig_nope/acknowledge", json!({})).await.expect(404);
    server.anonymous().get("/teams/t").await.expect(401);
    // A task not yet claimed cannot be completed by a teammate.
    let r = mt.patch("/teams/t/tasks/1", json!({"status": "completed"})).await.expect(403);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("claim it first"), "{}", r.text);
}

async fn a_team_policy_decides_and_is_logged(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let mate = server.register("mate").await;
    team(&server, &lead, "governed", &[&mate]).await;
    team(&server, &lead, "free", &[&mate]).await;
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    ad.upload_policy("no-claims", "claim", guests::wasm("deny-all")).await.expect(201);
    ad.send(ad.req(Method::PUT, "/policies/no-claims/settings").json(&json!({"scope": {"team": "governed"}})))
        .await
        .expect(200);
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    for t in ["governed", "free"] {
        l.post(&format!("/teams/{t}/tasks"), json!({"subject": "work"})).await.expect(201);
    }
    // The policy, bound to one team, decides there; the other keeps the built-in rule.
    let r = m.patch("/teams/governed/tasks/1", json!({"owner": "mate"})).await.expect(409);
    assert_eq!(r.code(), "claim_denied");
    m.patch("/teams/free/tasks/1", json!({"owner": "mate"})).await.expect(200);
    let log = l.get("/teams/governed/decisions").await.expect(200).json();
    let d = &log["decisions"][0];
    assert_eq!(
        (d["policy"].as_str(), d["hook"].as_str(), d["scope"].as_str()),
        (Some("no-claims"), Some("claim"), Some("team:governed"))
    );
    assert_eq!(d["input"]["target"], json!({"task": {"team": "governed", "id": 1}}));
    assert_eq!(d["input"]["request"], json!({"owner": "mate"}));
    assert_eq!(d["result"]["verdict"], "deny");
    // The same record is in the policy's own log.
    let own = ad.get("/policies/no-claims/decisions").await.expect(200).json();
    assert_eq!(own["decisions"][0]["decision_id"], d["decision_id"]);
}

/// A policy bound to a team that approves every team task leaves the
/// protocol's rules in force: the bundled claim-approval still decides
/// beside it, until a binding says it replaces it. Masks keep secrets out
/// of every record of a decision, the bundled policy's included.
async fn bundled_rules_stay_beside_a_bound_policy(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let (a, b) = (server.register("a").await, server.register("b").await);
    team(&server, &lead, "pact", &[&a, &b]).await;
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    ad.install_guest("lenient", "claim", "approve-all", json!({"scope": {"team": "pact"}})).await;
    let l = server.as_agent(&lead);
    l.post("/teams/pact/tasks", json!({"subject": "first"})).await.expect(201);
    l.post("/teams/pact/tasks", json!({"subject": "second", "blocked_by": [1]})).await.expect(201);
    let (ma, mb) = (server.as_agent(&a), server.as_agent(&b));
    ma.patch("/teams/pact/tasks/1", json!({"owner": "a", "status": "in_progress"})).await.expect(200);

    // Taking over a's task, and claiming a blocked one, are still refused,
    // and the refusal names the bundled policy's record.
    let taken = mb.patch("/teams/pact/tasks/1", json!({"owner": "b"})).await.expect(409).json();
    assert_eq!(taken["error"]["code"], "claim_denied", "{taken}");
    mb.patch("/teams/pact/tasks/2", json!({"owner": "b"})).await.expect(409);
    let log = l.get("/teams/pact/decisions").await.expect(200).json();
    let records = log["decisions"].as_array().unwrap();
    let named: Vec<&Value> = records.iter().filter(|d| d["decision_id"] == taken["error"]["decision_id"]).collect();
    assert_eq!((named.len(), named[0]["policy"].as_str()), (1, Some("claim-approval")), "{log}");
    // Each claim was decided by both, the bound policy first.
    let policies: Vec<&str> = records.iter().skip(2).map(|d| d["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["lenient", "claim-approval", "lenient", "claim-approval"], "{log}");
    let deciding = |list: Value| -> Value {
        list["deciding"].as_array().unwrap().iter().find(|d| d["scope"] == "team:pact").cloned().unwrap()
    };
    let shown = deciding(ad.get("/policies").await.expect(200).json());
    assert_eq!((&shown["bundled"], &shown["policies"]), (&json!("claim-approval"), &json!(["lenient"])));

    // Replaced: the bound policy alone decides in this team.
    ad.set_policy("lenient", json!({"scope": {"team": "pact"}, "replaces_bundled": true})).await;
    assert_eq!(deciding(ad.get("/policies").await.expect(200).json())["bundled"], Value::Null);
    mb.patch("/teams/pact/tasks/1", json!({"owner": "b"})).await.expect(200);

    // A HANDOFF's secrets are masked in the log of the bound policy and of
    // the bundled one.
    let mask = json!({"scope": {"team": "pact"}, "mask": ["/metadata/handoff", "/handoff"]});
    ad.install_guest("careful", "handoff", "handoff-basic", mask).await;
    let mut handoff = support::handoff();
    handoff["integration"] = json!(["token sk_live_secret"]);
    let done = json!({"status": "completed", "metadata": {"handoff": handoff}});
    mb.patch("/teams/pact/tasks/1", done).await.expect(200);
    let log = l.get("/teams/pact/decisions").await.expect(200);
    assert!(!log.text.contains("sk_live_secret"), "{}", log.text);
    let checks: Vec<Value> =
        log.json()["decisions"].as_array().unwrap().iter().filter(|d| d["hook"] == "handoff").cloned().collect();
    let by: Vec<&str> = checks.iter().map(|d| d["policy"].as_str().unwrap()).collect();
    assert_eq!(by, ["careful", "handoff-validation"]);
    for d in &checks {
        assert_eq!(d["input"]["metadata"]["handoff"], "[masked]", "{d}");
        assert_eq!(d["result"], json!({"violations": []}), "{d}");
    }
}

/// The team's stream carries a `task` entry, written by the host in the
/// same commit, for every task created, claimed, updated, completed or
/// deleted, signal tasks included; no agent may write that label there.
async fn the_team_stream_tells_what_happens_to_tasks(backend: Backend) {
    // No periodic recheck: only the commit's announcement wakes a follower.
    let Some(server) = Server::start_with(backend, &["--sse-recheck", "3600"]).await else { return };
    let lead = server.register("lead").await;
    let mate = server.register("mate").await;
    team(&server, &lead, "feed", &[&mate]).await;
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    let stream = l.get("/teams/feed").await.expect(200).json()["stream_id"].as_str().unwrap().to_string();
    // A live follower hears of a new task before anything else is written.
    let follow = l.req(Method::GET, &format!("/stream/{stream}/events?label=task")).send().await.expect("follow");
    let mut live = SseReader::new(follow);
    l.post("/teams/feed/tasks", json!({"subject": "parse"})).await.expect(201);
    let first = live.next_within(Duration::from_secs(10)).await.expect("the created task, live");
    assert_eq!((&first.data["data"]["event"], &first.data["data"]["task"]["id"]), (&json!("created"), &json!(1)));
    l.post("/teams/feed/tasks", json!({"subject": "lint", "blocked_by": [1]})).await.expect(201);
    m.patch("/teams/feed/tasks/1", json!({"status": "in_progress", "owner": "mate", "active_form": "Parsing"}))
        .await
        .expect(200);
    m.patch("/teams/feed/tasks/1", json!({"status": "completed", "metadata": {"handoff": support::handoff()}}))
        .await
        .expect(200);
    // The lead assigning a task is no claim.
    l.patch("/teams/feed/tasks/2", json!({"owner": "mate"})).await.expect(200);
    l.patch("/teams/feed/tasks/2", json!({"status": "deleted"})).await.expect(200);
    let raised = m.post("/teams/feed/signals", json!({"level": "ALERT", "category": "QUALITY", "issue": "flaky"}));
    let signal = raised.await.expect(201).json();
    l.post(&format!("/teams/feed/signals/{}/acknowledge", signal["signal_id"].as_str().unwrap()), json!({}))
        .await
        .expect(200);

    let read = m.get(&format!("/stream/{stream}?label=task")).await.expect(200).json();
    let entries = read["entries"].as_array().unwrap();
    let seen: Vec<(&str, i64, &str)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["agent"], "cairn", "{e}");
            (
                e["data"]["event"].as_str().unwrap(),
                e["data"]["task"]["id"].as_i64().unwrap(),
                e["data"]["by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("created", 1, "lead"),
            ("created", 2, "lead"),
            ("claimed", 1, "mate"),
            ("completed", 1, "mate"),
            ("updated", 2, "lead"),
            ("deleted", 2, "lead"),
            ("created", 3, "mate"),
            ("completed", 3, "lead"),
        ],
        "{read}"
    );
    assert_eq!(entries[1]["data"]["task"]["blocked_by"], json!([1]));
    assert_eq!(
        (&entries[2]["data"]["task"]["owner"], &entries[2]["data"]["task"]["active_form"]),
        (&json!("mate"), &json!("Parsing"))
    );
    assert_eq!(entries[3]["data"]["task"]["status"], "completed");
    let path = format!("/stream/{stream}");
    let forged = m.post(&path, json!({"label": "task", "data": {"event": "deleted"}})).await;
    assert_eq!(forged.expect(403).code(), "reserved_label");
}

async fn a_policy_reads_tasks_and_escalates_to_the_lead(backend: Backend) {
    reads_tasks_and_escalates(backend, "task-reader").await;
}

/// A component built against `cairn:coord@0.1.0` still loads, reads and
/// decides on a host that speaks 0.2.0.
async fn a_0_1_policy_still_reads_tasks_and_decides(backend: Backend) {
    reads_tasks_and_escalates(backend, "v0-1-task-reader").await;
}

async fn reads_tasks_and_escalates(backend: Backend, guest: &str) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let mate = server.register("mate").await;
    team(&server, &lead, "reviewed", &[&mate]).await;
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    ad.upload_policy("task-gate", "claim", guests::wasm(guest)).await.expect(201);
    // It replaces the bundled rules, so what is decided here is its own.
    let settings = json!({"scope": {"team": "reviewed"}, "replaces_bundled": true});
    ad.send(ad.req(Method::PUT, "/policies/task-gate/settings").json(&settings)).await.expect(200);
    let (l, m) = (server.as_agent(&lead), server.as_agent(&mate));
    l.post("/teams/reviewed/tasks", json!({"subject": "design"})).await.expect(201);
    l.post("/teams/reviewed/tasks", json!({"subject": "build", "blocked_by": [1]})).await.expect(201);
    l.post("/teams/reviewed/tasks", json!({"subject": "deploy", "metadata": {"needs_approval": true}}))
        .await
        .expect(201);
    // The policy sees the blocker through task-read and denies.
    let r = m.patch("/teams/reviewed/tasks/2", json!({"owner": "mate"})).await.expect(409);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("still blocked by [1]"), "{}", r.text);
    // It escalates the task that asks for approval: the lead is asked.
    let r = m.patch("/teams/reviewed/tasks/3", json!({"owner": "mate"})).await.expect(409);
    assert_eq!(r.code(), "claim_escalated");
    let asked = inbox(&l, "reviewed").await;
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["from"], "cairn");
    assert!(asked[0]["message"].as_str().unwrap().contains("lead's approval"), "{}", asked[0]);
    assert!(m.get("/teams/reviewed/tasks/3").await.expect(200).json()["owner"].is_null());
    // The lead grants it by assigning; that is not a claim.
    l.patch("/teams/reviewed/tasks/3", json!({"owner": "mate"})).await.expect(200);
    m.patch("/teams/reviewed/tasks/1", json!({"owner": "mate"})).await.expect(200);
    // Each decision is logged with what the guest logged.
    let log = l.get("/teams/reviewed/decisions").await.expect(200).json();
    let verdicts: Vec<&str> =
        log["decisions"].as_array().unwrap().iter().map(|d| d["result"]["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["deny", "escalate", "approve"]);
    assert!(log["decisions"][0]["logs"][0]["message"].as_str().unwrap().contains("of 3 tasks"), "{log}");
}

async fn inbox_is_live_over_sse(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let lead = server.register("lead").await;
    let a = server.register("a").await;
    let b = server.register("b").await;
    team(&server, &lead, "live", &[&a, &b]).await;
    let l = server.as_agent(&lead);
    l.post("/teams/live/messages", json!({"to": "all", "message": "first"})).await.expect(201);
    let r = server.request(Method::GET, "/teams/live/messages/events", Some(&a.key)).send().await.unwrap();
    let mut sse = SseReader::new(r);
    let first = sse.next_within(Duration::from_secs(5)).await.expect("backlog");
    assert_eq!((first.event.as_deref(), first.data["message"].as_str()), (Some("message"), Some("first")));
    l.post("/teams/live/messages", json!({"to": "b", "message": "not for a"})).await.expect(201);
    let sent = l.post("/teams/live/messages", json!({"to": "a", "message": "second"})).await.expect(201).json();
    let second = sse.next_within(Duration::from_secs(5)).await.expect("live message");
    assert_eq!(second.id, Some(sent["id"].to_string()));
    assert_eq!(second.data["message"], "second");
    // A reconnect with Last-Event-ID resumes after that message: only what
    // came since, for this reader.
    drop(sse);
    l.post("/teams/live/messages", json!({"to": "a", "message": "while away"})).await.expect(201);
    let resumed = server
        .request(Method::GET, "/teams/live/messages/events", Some(&a.key))
        .header("Last-Event-ID", sent["id"].to_string())
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resumed);
    let next = sse.next_within(Duration::from_secs(30)).await.expect("the message sent while away");
    assert_eq!(next.data["message"], "while away", "{:?}", next.data);
    let bad = server.request(Method::GET, "/teams/live/messages/events", Some(&a.key)).header("Last-Event-ID", "soon");
    assert_eq!(bad.send().await.unwrap().status(), 400);
    // Paging: `after` resumes where the reader left off.
    let page =
        server.as_agent(&a).get(&format!("/teams/live/messages?after={}", first.id.unwrap())).await.expect(200).json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    // A broadcast reaches everyone but the sender.
    assert!(
        server.as_agent(&lead).get("/teams/live/messages").await.expect(200).json()["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// `PATCH /teams/{team}` changes the rules the next write is decided by:
/// who may complete (`owner_or_lead`, `lead_only`, `anyone`; a refusal is
/// 403 `not_allowed`) and whether a HANDOFF needs its reasoning chain.
async fn rules_change_who_completes_and_what_a_handoff_needs(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let (lead, mate, other) =
        (server.register("lead").await, server.register("mate").await, server.register("other").await);
    team(&server, &lead, "r", &[&mate, &other]).await;
    let (l, m, o) = (server.as_agent(&lead), server.as_agent(&mate), server.as_agent(&other));
    for _ in 0..3 {
        l.post("/teams/r/tasks", json!({"subject": "work"})).await.expect(201);
    }
    m.patch("/teams/r/tasks/1", json!({"owner": "mate"})).await.expect(200);
    let complete = |h: Value| json!({"status": "completed", "metadata": {"handoff": h}});
    let status = |t: Value| t["status"].as_str().unwrap_or_default().to_string();

    // The default: the owner or the lead; another member is refused.
    let r = o.patch("/teams/r/tasks/1", complete(support::handoff())).await.expect(403);
    assert_eq!(r.code(), "not_allowed", "{}", r.text);
    // Only the lead changes the rules, and unknown values are refused.
    assert_eq!(m.patch("/teams/r", json!({"rules": {"complete": "anyone"}})).await.expect(403).code(), "forbidden");
    l.patch("/teams/r", json!({"rules": {"complete": "whoever"}})).await.expect(400);

    let strict = json!({"complete": "lead_only", "require_reasoning_chain": true});
    let t = l.patch("/teams/r", json!({"rules": strict})).await.expect(200).json();
    assert_eq!(t["rules"], strict, "{t}");
    assert_eq!(m.get("/teams/r").await.expect(200).json()["rules"], strict);
    // Now the owner is refused too.
    let r = m.patch("/teams/r/tasks/1", complete(support::handoff())).await.expect(403);
    assert_eq!(r.code(), "not_allowed", "{}", r.text);
    assert!(r.json()["error"]["message"].as_str().unwrap_or_default().contains("only the lead"), "{}", r.text);
    // And a HANDOFF without its reasoning chain is rejected, by pointer.
    let mut unreasoned = support::handoff();
    unreasoned.as_object_mut().unwrap().remove("reasoning_chain");
    let r = l.patch("/teams/r/tasks/1", complete(unreasoned.clone())).await.expect(422);
    assert_eq!(r.code(), "handoff_rejected", "{}", r.text);
    let paths: Vec<String> =
        r.json()["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].to_string()).collect();
    assert_eq!(paths, ["\"/metadata/handoff/reasoning_chain\""], "{}", r.text);
    assert_eq!(status(l.get("/teams/r/tasks/1").await.expect(200).json()), "pending");
    assert_eq!(status(l.patch("/teams/r/tasks/1", complete(support::handoff())).await.expect(200).json()), "completed");

    // `anyone`, without the chain requirement: any member completes anyone's
    // task, and a HANDOFF without the chain passes.
    l.patch("/teams/r", json!({"rules": {"complete": "anyone"}})).await.expect(200);
    m.patch("/teams/r/tasks/2", json!({"owner": "mate"})).await.expect(200);
    assert_eq!(status(o.patch("/teams/r/tasks/2", complete(unreasoned)).await.expect(200).json()), "completed");
    // Back to the default (an empty rules object): the other member is refused again.
    let t = l.patch("/teams/r", json!({"rules": {}})).await.expect(200).json();
    assert_eq!(t["rules"], json!({"complete": "owner_or_lead", "require_reasoning_chain": false}));
    m.patch("/teams/r/tasks/3", json!({"owner": "mate"})).await.expect(200);
    assert_eq!(o.patch("/teams/r/tasks/3", complete(support::handoff())).await.expect(403).code(), "not_allowed");
}
