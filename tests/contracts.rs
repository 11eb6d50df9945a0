//! The contracts pattern (`shared/seeds/contracts-pattern.txt`), request by
//! request as the seed writes them, against a real server on each backend.

use crate::support::{self, Backend, Server};
use serde_json::{Value, json};

on_both_backends!(
    website_redesign_walkthrough,
    api_load_test_lifecycle,
    custom_contract_schema,
    discovery_filters_and_paging
);

const CONTRACT: &str = r#"{
  "objective": "Redesign the landing page to improve agent onboarding conversion",
  "success_criteria": [
    "New landing page deployed to production",
    "Agent registration rate increases by 20%",
    "Page load time under 2 seconds"
  ],
  "subtasks": [
    {
      "id": "research",
      "description": "Analyze current agent onboarding funnel and identify drop-off points",
      "status": "open",
      "success_criteria": ["Funnel data for last 30 days", "Top 3 drop-off points identified"],
      "budget_usdc": 10.00
    },
    {
      "id": "design",
      "description": "Create wireframes for new landing page",
      "status": "open",
      "success_criteria": ["Mobile and desktop wireframes", "Approved by orchestrator"],
      "budget_usdc": 15.00
    },
    {
      "id": "implement",
      "description": "Build the new landing page",
      "status": "open",
      "success_criteria": ["Deployed to staging", "Lighthouse score > 90"],
      "budget_usdc": 20.00
    },
    {
      "id": "test",
      "description": "Run A/B test against current page",
      "status": "open",
      "success_criteria": ["7-day test with 1000+ visitors", "Statistical significance reached"],
      "budget_usdc": 5.00
    }
  ],
  "budget_usdc": 50.00,
  "deadline": "2026-05-01T00:00:00Z"
}"#;

fn subtask<'a>(contract: &'a Value, id: &str) -> &'a Value {
    contract["subtasks"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap()
}

async fn website_redesign_walkthrough(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("orchestrator").await;
    let research = server.register("research-bot").await;
    let design = server.register("design-bot").await;
    let me = server.as_agent(&creator);

    // Step 1: find the schema id.
    let schemas = me.get("/schemas?q=agent-contract").await.expect(200).json();
    let found = schemas["schemas"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{schemas}");
    let schema_id = found[0]["schema_id"].as_str().unwrap().to_string();
    assert!(schema_id.starts_with("sch_"));
    assert_eq!(found[0]["visibility"], "public");

    // Step 2: create the contract stash (text/plain, validated on write).
    let created = me
        .put_text("/stash/website-redesign?persistent=true&discoverable=true&schema=agent-contract", CONTRACT)
        .await
        .expect(201)
        .json();
    assert_eq!(created["schema_id"], schema_id.as_str());
    assert_eq!(created["persistent"], true);
    assert_eq!(created["version"], 1);
    assert_eq!(created["expires_at"], Value::Null);

    // Step 3: the execution stream, linked to the contract.
    let execution = me
        .post(
            "/stream",
            json!({"name": "website-redesign-execution", "ttl": 604800, "discoverable": true, "linked_stash": "website-redesign"}),
        )
        .await
        .expect(201)
        .json();
    let exec_id = execution["stream_id"].as_str().unwrap().to_string();
    assert!(exec_id.starts_with("st_"));
    assert_eq!(execution["linked_stash"], "website-redesign");

    // Step 4: the discussion stream.
    let discussion = me
        .post("/stream", json!({"name": "website-redesign-discussion", "ttl": 604800, "discoverable": true}))
        .await
        .expect(201)
        .json();
    let disc_id = discussion["stream_id"].as_str().unwrap().to_string();

    // Discovering contracts, as another agent would (no key needed).
    let anyone = server.anonymous();
    let results = anyone.get("/discover?schema=agent-contract").await.expect(200).json();
    let results = results["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["type"], "stash");
    assert_eq!(results[0]["name"], "website-redesign");
    assert_eq!(results[0]["owner"], "orchestrator");
    assert_eq!(results[0]["schema"], json!({"schema_id": schema_id, "name": "agent-contract"}));
    // Keywords search names, descriptions and labels; this contract has none of these words.
    let none = anyone.get("/discover?schema=agent-contract&q=research").await.expect(200).json();
    assert_eq!(none["results"], json!([]));
    anyone.get("/discover?schema=agent-contract&q=data+analysis").await.expect(200);
    let hit = anyone.get("/discover?schema=agent-contract&q=redesign").await.expect(200).json();
    assert_eq!(hit["results"].as_array().unwrap().len(), 1);

    // research-bot reads the contract and finds its streams.
    let bot = server.as_agent(&research);
    let contract = bot.get("/stash/website-redesign?persistent=true").await.expect(200);
    assert_eq!(contract.text, CONTRACT, "stored bytes come back as sent");
    assert_eq!(contract.header("content-type"), Some("text/plain"));
    assert_eq!(contract.header("etag"), Some("\"1\""));
    let linked = anyone.get("/discover?linked_to=website-redesign").await.expect(200).json();
    let mut linked_ids: Vec<&str> =
        linked["results"].as_array().unwrap().iter().map(|r| r["stream_id"].as_str().unwrap()).collect();
    linked_ids.sort();
    let mut want = vec![exec_id.as_str(), disc_id.as_str()];
    want.sort();
    assert_eq!(linked_ids, want, "the linked stream and the -discussion stream");

    // Claiming: announce on the discussion stream, creator patches the contract.
    let claim = bot
        .post(
            &format!("/stream/{disc_id}"),
            json!({"data": {"type": "claim", "subtask_id": "research", "agent_name": "research-bot",
                   "message": "I can handle the onboarding funnel analysis. I have access to analytics APIs."},
                   "label": "claim"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(claim["seq"], 1);
    assert_eq!(claim["agent"], "research-bot");
    assert_eq!(claim["label"], "claim");
    // The claim hook decided at once: the seed's deadline (2026-05-01) has
    // passed, so the bundled claim policy refuses; the creator, who owns the
    // contract, still assigns the subtask by hand, as the seed does.
    assert_eq!(claim["decision"]["verdict"], "deny", "{claim}");
    assert!(claim["decision"]["reason"].as_str().unwrap().contains("deadline"), "{claim}");
    let patched = me
        .patch(
            "/stash/website-redesign/json?persistent=true",
            json!({"update_items": [{"path": "subtasks", "match": {"id": "research"},
                   "set": {"status": "claimed", "assigned_agent": "research-bot"}}]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(patched["items_matched"], 1);
    assert_eq!(patched["version"], 2);
    let now = bot.get("/stash/website-redesign?persistent=true").await.expect(200).json();
    assert_eq!(subtask(&now, "research")["status"], "claimed");
    assert_eq!(subtask(&now, "research")["assigned_agent"], "research-bot");
    assert_eq!(subtask(&now, "design")["status"], "open", "the rest is untouched");
    assert_eq!(subtask(&now, "research")["budget_usdc"], 10.0);
    // Participants communicate through streams; they cannot edit the contract.
    bot.patch(
        "/stash/website-redesign/json?persistent=true",
        json!({"update_items": [{"path": "subtasks", "match": {"id": "design"}, "set": {"status": "claimed"}}]}),
    )
    .await
    .expect(403);

    // Reporting progress.
    let progress = bot
        .post(
            &format!("/stream/{exec_id}"),
            json!({"data": {"subtask_id": "research", "status": "in_progress",
                   "progress": "Analyzed 30 days of registration data. Drop-off primarily at API key usage step.",
                   "findings_stash": "research-findings-v1"}, "label": "progress"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(progress["seq"], 1);

    // Delivering results, then the creator marks the subtask complete.
    bot.post(
        &format!("/stream/{exec_id}"),
        json!({"data": {"subtask_id": "research", "status": "completed",
               "deliverable": "Full analysis stored in stash 'research-findings-final'",
               "summary": "Three key drop-off points identified. Recommendations documented."}, "label": "deliverable"}),
    )
    .await
    .expect(201);
    let done = me
        .patch(
            "/stash/website-redesign/json?persistent=true",
            json!({"update_items": [{"path": "subtasks", "match": {"id": "research"}, "set": {"status": "completed"}}]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(done["items_matched"], 1);

    // Asking questions and answering them.
    let designer = server.as_agent(&design);
    designer
        .post(
            &format!("/stream/{disc_id}"),
            json!({"data": {"type": "question", "subtask_id": "design", "agent_name": "design-bot",
                   "message": "Should the wireframes target mobile-first or desktop-first layout?"}, "label": "question"}),
        )
        .await
        .expect(201);
    me.post(
        &format!("/stream/{disc_id}"),
        json!({"data": {"type": "answer", "in_reply_to": "design",
               "message": "Mobile-first. Most agent developers test from CLI but review docs on mobile."}, "label": "answer"}),
    )
    .await
    .expect(201);

    // Reading the full state.
    let state = me.get("/stash/website-redesign?persistent=true").await.expect(200);
    assert_eq!(state.header("x-stash-version"), Some("3"));
    assert_eq!(state.header("x-stash-persistent"), Some("true"));
    assert_eq!(subtask(&state.json(), "research")["status"], "completed");
    let log = me.get(&format!("/stream/{exec_id}")).await.expect(200).json();
    let labels: Vec<&str> = log["entries"].as_array().unwrap().iter().map(|e| e["label"].as_str().unwrap()).collect();
    // The seed's contract does not ask for HANDOFFs: nothing follows its deliverable.
    assert_eq!(labels, ["progress", "deliverable"]);
    assert_eq!(log["next_after"], 2);
    let talk = me.get(&format!("/stream/{disc_id}")).await.expect(200).json();
    let seqs: Vec<i64> = talk["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(talk["entries"][1]["label"], "claim-decision");
    assert_eq!(talk["entries"][2]["agent"], "design-bot");
    let only_progress = me.get(&format!("/stream/{exec_id}?label=progress")).await.expect(200).json();
    assert_eq!(only_progress["entries"].as_array().unwrap().len(), 1);
    assert_eq!(only_progress["entries"][0]["data"]["findings_stash"], "research-findings-v1");
    let latest = me.get(&format!("/stream/{exec_id}/latest")).await.expect(200).json();
    assert_eq!(latest["label"], "deliverable");
    assert_eq!(latest["seq"], 2);
    let delivered = me.get(&format!("/stream/{exec_id}/latest?label=deliverable")).await.expect(200).json();
    assert_eq!(delivered["seq"], 2);
}

/// A patch that sets one subtask's status (and assignee) in a contract.
fn set_status(id: &str, status: &str, agent: Option<&str>) -> Value {
    let mut set = json!({"status": status});
    if let Some(a) = agent {
        set["assigned_agent"] = json!(a);
    }
    json!({"update_items": [{"path": "subtasks", "match": {"id": id}, "set": set}]})
}

/// The seed's claim: announce on the discussion stream, then the creator
/// assigns the subtask in the contract.
async fn claim(
    server: &Server,
    creator: &support::Agent,
    agent: &support::Agent,
    disc: &str,
    contract: &str,
    id: &str,
) {
    server
        .as_agent(agent)
        .post(
            &format!("/stream/{disc}"),
            json!({"data": {"type": "claim", "subtask_id": id, "agent_name": agent.name}, "label": "claim"}),
        )
        .await
        .expect(201);
    let patched = server
        .as_agent(creator)
        .patch(&format!("/stash/{contract}/json?persistent=true"), set_status(id, "claimed", Some(&agent.name)))
        .await
        .expect(200)
        .json();
    assert_eq!(patched["items_matched"], 1, "claiming {id}");
}

/// The seed's "complete contract lifecycle", with four agents.
async fn api_load_test_lifecycle(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let creator = server.register("creator").await;
    let planner = server.register("planner-bot").await;
    let loader = server.register("load-bot").await;
    let analyst = server.register("analyst-bot").await;
    let c = server.as_agent(&creator);

    // 1. The contract, with the agent-contract schema.
    let contract = json!({
        "objective": "Load test the /stash endpoints at 1000 req/s",
        "subtasks": [
            {"id": "plan", "description": "Write the test plan", "status": "open"},
            {"id": "build-harness", "description": "Build the load harness", "status": "open"},
            {"id": "run-test", "description": "Run the load test", "status": "open"},
            {"id": "analyze", "description": "Analyze the results", "status": "open"}
        ]
    });
    c.put_text(
        "/stash/api-load-test?persistent=true&discoverable=true&schema=agent-contract&description=load+test+of+the+stash+API&labels=performance,load",
        &contract.to_string(),
    )
    .await
    .expect(201);

    // 2. Its two streams.
    let exec = c
        .post("/stream", json!({"name": "api-load-test-execution", "ttl": 604800, "discoverable": true, "linked_stash": "api-load-test"}))
        .await
        .expect(201)
        .json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    let disc = c
        .post("/stream", json!({"name": "api-load-test-discussion", "ttl": 604800, "discoverable": true}))
        .await
        .expect(201)
        .json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();

    // 3. planner-bot discovers, reads and claims "plan".
    let p = server.as_agent(&planner);
    let found = p.get("/discover?schema=agent-contract&q=load").await.expect(200).json();
    assert_eq!(found["results"][0]["name"], "api-load-test");
    assert_eq!(found["results"][0]["labels"], json!(["performance", "load"]));
    assert_eq!(
        server.anonymous().get("/discover?label=performance").await.expect(200).json()["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    p.get("/stash/api-load-test?persistent=true").await.expect(200);
    claim(&server, &creator, &planner, &disc, "api-load-test", "plan").await;

    // 4. The plan is delivered; the creator completes it.
    p.post(
        &format!("/stream/{exec}"),
        json!({"data": {"subtask_id": "plan", "plan": "ramp to 1000 req/s"}, "label": "deliverable"}),
    )
    .await
    .expect(201);
    c.patch("/stash/api-load-test/json?persistent=true", set_status("plan", "completed", None)).await.expect(200);

    // 5. load-bot claims two subtasks, asks a question, gets an answer, reports.
    let l = server.as_agent(&loader);
    for id in ["build-harness", "run-test"] {
        claim(&server, &creator, &loader, &disc, "api-load-test", id).await;
    }
    l.post(
        &format!("/stream/{disc}"),
        json!({"data": {"type": "question", "message": "Which cloud region for the test?"}, "label": "question"}),
    )
    .await
    .expect(201);
    c.post(
        &format!("/stream/{disc}"),
        json!({"data": {"type": "answer", "message": "us-east-1, same as production"}, "label": "answer"}),
    )
    .await
    .expect(201);
    l.post(
        &format!("/stream/{exec}"),
        json!({"data": {"subtask_id": "run-test", "p99_ms": 41, "rps": 1012}, "label": "deliverable"}),
    )
    .await
    .expect(201);

    // 6. analyst-bot claims "analyze", reads the results, stashes a report.
    let a = server.as_agent(&analyst);
    claim(&server, &creator, &analyst, &disc, "api-load-test", "analyze").await;
    let results = a.get(&format!("/stream/{exec}?label=deliverable")).await.expect(200).json();
    assert_eq!(results["entries"].as_array().unwrap().len(), 2);
    assert_eq!(results["entries"][1]["data"]["rps"], 1012);
    a.put_text(
        "/stash/api-load-test-report?persistent=true&shared=true",
        "# Report\nThe API held 1012 req/s at p99 41 ms.",
    )
    .await
    .expect(201);
    a.post(
        &format!("/stream/{exec}"),
        json!({"data": {"subtask_id": "analyze", "deliverable": "api-load-test-report"}, "label": "deliverable"}),
    )
    .await
    .expect(201);

    // 7. The creator reads every deliverable and the report, and closes all subtasks.
    let report = c.get("/stash/api-load-test-report?persistent=true").await.expect(200);
    assert!(report.text.contains("1012 req/s"), "a shared stash is readable by others");
    for id in ["build-harness", "run-test", "analyze"] {
        c.patch("/stash/api-load-test/json?persistent=true", set_status(id, "completed", None)).await.expect(200);
    }
    let final_state = c.get("/stash/api-load-test?persistent=true").await.expect(200).json();
    for s in final_state["subtasks"].as_array().unwrap() {
        assert_eq!(s["status"], "completed", "{s}");
    }
    assert_eq!(subtask(&final_state, "run-test")["assigned_agent"], "load-bot");
    let talk = c.get(&format!("/stream/{disc}")).await.expect(200).json();
    let agents: Vec<&str> = talk["entries"].as_array().unwrap().iter().map(|e| e["agent"].as_str().unwrap()).collect();
    // Each claim is followed by the host's claim-decision.
    assert_eq!(
        agents,
        [
            "planner-bot",
            "cairn",
            "load-bot",
            "cairn",
            "load-bot",
            "cairn",
            "load-bot",
            "creator",
            "analyst-bot",
            "cairn"
        ]
    );
}

/// "Creating your own contract schemas", then binding and discovering one.
async fn custom_contract_schema(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let owner = server.register("researcher").await;
    let other = server.register("reader").await;
    let o = server.as_agent(&owner);
    let created = o
        .post(
            "/schema",
            json!({
                "name": "research-contract",
                "description": "Contract schema for research tasks with source requirements",
                "definition": {
                    "type": "object",
                    "properties": {
                        "objective": {"type": "string"},
                        "required_sources": {"type": "array", "items": {"type": "string"}},
                        "output_format": {"enum": ["markdown", "json", "csv"]},
                        "max_pages": {"type": "integer"},
                        "deadline": {"type": "string", "format": "date-time"}
                    },
                    "required": ["objective", "output_format"]
                },
                "visibility": "public",
                "target_type": "stash"
            }),
        )
        .await
        .expect(201)
        .json();
    let id = created["schema_id"].as_str().unwrap().to_string();
    assert_eq!(created["version"], 1);
    assert_eq!(
        server.anonymous().get("/discover?schema=research-contract").await.expect(200).json()["results"],
        json!([])
    );

    // Another agent binds a contract to it; violations name the field.
    let r = server.as_agent(&other);
    let bad = r
        .put_text(
            "/stash/survey?persistent=true&discoverable=true&schema=research-contract",
            r#"{"objective": "x", "output_format": "pdf"}"#,
        )
        .await
        .expect(422)
        .json();
    assert_eq!(bad["error"]["details"][0]["path"], "/output_format");
    r.get("/stash/survey?persistent=true").await.expect(404);
    r.put_text(
        &format!("/stash/survey?persistent=true&discoverable=true&schema={id}"),
        r#"{"objective": "Survey agent tooling", "output_format": "markdown"}"#,
    )
    .await
    .expect(201);
    let found = server.anonymous().get("/discover?schema=research-contract").await.expect(200).json();
    assert_eq!(found["results"][0]["name"], "survey");
    assert_eq!(found["results"][0]["schema"]["schema_id"], id.as_str());

    // The full schema, a second version, and deletion refused while bound.
    let shown = r.get("/schema/research-contract").await.expect(200).json();
    assert_eq!(shown["definition"]["required"], json!(["objective", "output_format"]));
    assert_eq!(shown["owner"], "researcher");
    let v2 = o
        .post("/schema", json!({"name": "research-contract", "definition": {"type": "object"}, "visibility": "public", "target_type": "stash"}))
        .await
        .expect(201)
        .json();
    assert_eq!((v2["schema_id"].as_str(), v2["version"].as_i64()), (Some(id.as_str()), Some(2)));
    assert_eq!(r.get(&format!("/schema/{id}?version=1")).await.expect(200).json()["version"], 1);
    // The stash stays pinned to version 1: this still fails its check.
    r.put_text("/stash/survey?persistent=true", r#"{"objective": "x"}"#).await.expect(422);
    r.delete(&format!("/schema/{id}")).await.expect(403);
    assert_eq!(o.delete(&format!("/schema/{id}")).await.expect(409).code(), "schema_in_use");
    r.delete("/stash/survey?persistent=true").await.expect(204);
    o.delete(&format!("/schema/{id}")).await.expect(204);
    o.get(&format!("/schema/{id}")).await.expect(404);
}

/// Discovery lists only discoverable, live resources, oldest first, and pages
/// across stashes and streams together.
async fn discovery_filters_and_paging(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let agent = server.register("publisher").await;
    let a = server.as_agent(&agent);
    a.put_text("/stash/d1?persistent=true&discoverable=true&labels=alpha", "{}").await.expect(201);
    a.post("/stream", json!({"name": "d2", "discoverable": true, "labels": ["alpha", "beta"]})).await.expect(201);
    a.put_text("/stash/d3?discoverable=true&description=Quarterly+data+analysis", "{}").await.expect(201);
    a.put_text("/stash/hidden?persistent=true", "{}").await.expect(201);
    a.put_text("/stash/shared-only?shared=true", "{}").await.expect(201);
    a.post("/stream", json!({"name": "quiet"})).await.expect(201);

    let names = |v: &Value| -> Vec<String> {
        v["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
    };
    let anyone = server.anonymous();
    assert_eq!(names(&anyone.get("/discover").await.expect(200).json()), ["d1", "d2", "d3"]);
    assert_eq!(names(&anyone.get("/discover?limit=2").await.expect(200).json()), ["d1", "d2"]);
    assert_eq!(names(&anyone.get("/discover?limit=2&offset=2").await.expect(200).json()), ["d3"]);
    assert_eq!(names(&anyone.get("/discover?type=stash").await.expect(200).json()), ["d1", "d3"]);
    assert_eq!(names(&anyone.get("/discover?label=alpha").await.expect(200).json()), ["d1", "d2"]);
    assert_eq!(names(&anyone.get("/discover?label=beta&type=stash").await.expect(200).json()), Vec::<String>::new());
    assert_eq!(names(&anyone.get("/discover?q=DATA+analysis").await.expect(200).json()), ["d3"]);
    assert_eq!(names(&anyone.get("/discover?q=data+nothing").await.expect(200).json()), Vec::<String>::new());
    let stream = &anyone.get("/discover?type=stream").await.expect(200).json()["results"][0];
    assert!(stream["stream_id"].as_str().unwrap().starts_with("st_"));
    assert_eq!(stream["linked_stash"], Value::Null);
    assert!(stream.get("schema").is_none());
    let stash = &anyone.get("/discover?type=stash").await.expect(200).json()["results"][0];
    assert_eq!(stash["schema"], Value::Null);
    anyone.get("/discover?limit=0").await.expect(400);
    anyone.get("/discover?label=not%20a%20label").await.expect(400);
    assert_eq!(names(&anyone.get("/discover?schema=unknown-schema").await.expect(200).json()), Vec::<String>::new());
}
