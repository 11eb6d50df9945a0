//! Sandboxed agents against a real server: a component of the `agent`
//! world answers the entries of a stream it follows, as the agent its
//! binding names, each entry's writes landing exactly once.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, Agent, Backend, Call, Server};

on_both_backends!(
    an_agent_handles_each_entry_once,
    a_killed_host_loses_and_doubles_nothing,
    writes_are_checked_as_over_http,
    an_agent_claims_a_subtask_through_the_contract,
    hostile_agents_are_contained_and_a_neighbour_keeps_up,
    agents_answering_each_other_stop_after_eight_hops,
    an_agent_over_its_quota_waits_and_slows_no_other,
    a_new_version_takes_over_without_losing_or_doubling
);

/// Every grant the agent world offers: the test guest imports them all.
fn grants() -> Value {
    json!(["stash-read", "stash-write", "stream-read", "stream-write", "task-read", "contract-read", "log"])
}

async fn status(admin: &Call<'_>, name: &str) -> Value {
    admin.get(&format!("/policies/{name}")).await.expect(200).json()["agent"].clone()
}

async fn entries(call: &Call<'_>, stream: &str, label: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page =
            call.get(&format!("/stream/{stream}?label={label}&after={after}&limit=1000")).await.expect(200).json();
        let got = page["entries"].as_array().unwrap().clone();
        if got.is_empty() {
            return all;
        }
        after = got.last().unwrap()["seq"].as_i64().unwrap();
        all.extend(got);
    }
}

/// An admin, an asker with a stream named `questions`, and `answer-bot`
/// registered to answer there.
async fn questions(server: &Server) -> (Agent, Agent, Agent, String) {
    let admin = server.admin();
    let asker = server.register("asker").await;
    let bot = server.register("answer-bot").await;
    let created = server.as_agent(&asker).post("/stream", json!({"name": "questions"})).await.expect(201).json();
    (admin, asker, bot, created["stream_id"].as_str().unwrap().to_string())
}

/// Asks questions `q<i>` for each `i` of `which`, and returns their seqs.
async fn ask(call: &Call<'_>, stream: &str, which: std::ops::Range<usize>) -> Vec<i64> {
    let mut seqs = Vec::with_capacity(which.len());
    for i in which {
        let q = json!({"label": "question", "data": {"text": format!("q{i}")}});
        let posted = call.post(&format!("/stream/{stream}"), q).await.expect(201).json();
        seqs.push(posted["seq"].as_i64().unwrap());
    }
    seqs
}

/// Waits until the agent has handled `processed` entries and failed
/// `failed`, and passed every entry after them (its own answers included).
async fn settled(admin: &Call<'_>, name: &str, processed: i64, failed: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let s = status(admin, name).await;
        let sub = &s["subscriptions"][0];
        if sub["processed"].as_i64() == Some(processed)
            && sub["failed"].as_i64() == Some(failed)
            && sub["lag"].as_i64() == Some(0)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {name} to handle {processed} entries, fail {failed} and catch up; it is at {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn an_agent_handles_each_entry_once(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let (admin, asker, _, stream) = questions(&server).await;
    let ad = server.as_agent(&admin);
    let a = server.as_agent(&asker);

    // A binding names a registered agent and what it follows.
    let wasm = support::guests::wasm("answer-agent");
    let upload = |settings: Value| {
        let (ad, wasm) = (&ad, wasm.clone());
        async move { ad.upload_with("answers", "agent", wasm, &settings).await }
    };
    let subscribe = json!([{"stream": stream, "labels": ["question"]}]);
    let nobody = upload(json!({"run_as": "nobody", "subscribe": subscribe, "grants": grants()})).await;
    assert_eq!(nobody.expect(422).code(), "unknown_agent");
    let nothing = upload(json!({"run_as": "answer-bot", "grants": grants()})).await.expect(422).json();
    assert_eq!(nothing["error"]["details"][0]["path"], "/subscribe", "{nothing}");
    let settings = json!({"run_as": "answer-bot", "subscribe": subscribe, "grants": grants(), "max_attempts": 2});
    upload(settings).await.expect(201);

    // Questions, two that fail (an err after appending, a trap), and an
    // entry of another label.
    let texts = ["a", "b", "fail", "c", "d", "trap", "e", "f"];
    let mut seqs = Vec::new();
    for text in texts {
        let e = a.post(&format!("/stream/{stream}"), json!({"label": "question", "data": {"text": text}})).await;
        seqs.push(e.expect(201).json()["seq"].as_i64().unwrap());
    }
    a.post(&format!("/stream/{stream}"), json!({"label": "note", "data": {"text": "x"}})).await.expect(201);
    settled(&ad, "answers", 6, 2).await;

    // One answer per question that succeeded, by answer-bot, in order; the
    // failed calls wrote nothing, though each appended before failing.
    let answers = entries(&a, &stream, "answer").await;
    let answered: Vec<i64> = answers.iter().map(|e| e["data"]["question"].as_i64().unwrap()).collect();
    let expected: Vec<i64> =
        texts.iter().zip(&seqs).filter(|(t, _)| !["fail", "trap"].contains(t)).map(|(_, s)| *s).collect();
    assert_eq!(answered, expected);
    assert!(answers.iter().all(|e| e["agent"] == "answer-bot"), "{answers:?}");
    assert_eq!(answers[0]["data"]["answer"], "A");
    let shown = status(&ad, "answers").await;
    let sub = &shown["subscriptions"][0];
    assert_eq!((sub["stream_id"].as_str(), sub["lag"].as_i64()), (Some(stream.as_str()), Some(0)), "{shown}");
    assert_eq!(shown["dead_letters"], 2);
    let letters = ad.get("/policies/answers/dead-letters").await.expect(200).json();
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.iter().map(|d| d["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [seqs[2], seqs[5]]);
    assert!(letters[0]["error"].as_str().unwrap().contains("refusing question"), "{letters:?}");
    assert!(letters[1]["error"].as_str().unwrap().contains("panic or uncaught exception"), "{letters:?}");
    assert_eq!(letters[0]["attempts"], 2);
    // Each call is in the decision log.
    let log = ad.get("/policies/answers/decisions").await.expect(200).json();
    let calls = log["decisions"].as_array().unwrap();
    assert!(calls.iter().all(|d| d["hook"] == "agent" && d["agent"] == "answer-bot"), "{log}");
    assert_eq!(calls.iter().filter(|d| d["error"].is_null()).count(), 6);

    // A dead letter retried once the agent forgives: handled, its answer
    // lands and the letter goes; the trap fails again and stays.
    let forgiving = json!({"run_as": "answer-bot", "subscribe": subscribe, "grants": grants(), "max_attempts": 2,
                           "config": {"forgive": 1}});
    ad.set_policy("answers", forgiving).await;
    let retry = |id: &str| {
        let path = format!("/policies/answers/dead-letters/{id}/retry");
        let ad = &ad;
        async move { ad.post_empty(&path).await }
    };
    let done = retry(letters[0]["id"].as_str().unwrap()).await.expect(200).json();
    assert_eq!(done, json!({"handled": true, "error": null}));
    let again = retry(letters[1]["id"].as_str().unwrap()).await.expect(200).json();
    assert_eq!(again["handled"], false);
    assert!(again["error"].as_str().unwrap().contains("panic or uncaught exception"), "{again}");
    retry("dl_nothing").await.expect(404);
    let left = ad.get("/policies/answers/dead-letters").await.expect(200).json();
    assert_eq!(left["dead_letters"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left["dead_letters"][0]["attempts"], 3);
    let answers = entries(&a, &stream, "answer").await;
    assert_eq!(answers.last().unwrap()["data"]["question"].as_i64(), Some(seqs[2]));
    settled(&ad, "answers", 7, 1).await;

    // After a restart it goes on from where it was: nothing twice.
    let server = server.restart(&[]);
    let a = server.as_agent(&asker);
    a.post(&format!("/stream/{stream}"), json!({"label": "question", "data": {"text": "g"}})).await.expect(201);
    let ad = server.as_agent(&admin);
    settled(&ad, "answers", 8, 1).await;
    assert_eq!(entries(&a, &stream, "answer").await.len(), 8);
}

/// An agent that follows every label never hears its own answers; a host
/// killed while it works, and started again, leaves exactly one answer per
/// question, and a stash the agent counts them in that says so.
async fn a_killed_host_loses_and_doubles_nothing(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let (admin, asker, bot, stream) = questions(&server).await;
    let a = server.as_agent(&asker);
    // Each call takes 20 ms, so the kill finds it half way.
    let settings = json!({"run_as": "answer-bot", "subscribe": [{"stream": stream}], "grants": grants(),
                          "config": {"spin_ms": 20, "tally": "answered"}, "limits": {"timeout_ms": 1000}});
    let ad = server.as_agent(&admin);
    // Asked before the agent starts, so however slowly a busy machine takes
    // the questions, the agent finds all 60 waiting (1.2 s of calls).
    let total = 60;
    let asked = ask(&a, &stream, 0..total as usize).await;
    // The grants must come with the bytes: the default ones do not write.
    ad.upload_with("answers", "agent", support::guests::wasm("answer-agent"), &settings).await.expect(201);
    // Kill it once it is under way.
    support::wait_for("some answers", Duration::from_secs(60), || async {
        status(&ad, "answers").await["subscriptions"][0]["processed"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let before = status(&ad, "answers").await["subscriptions"][0]["processed"].as_i64().unwrap();
    assert!(before < total, "the agent was done before the kill");
    let server = server.kill_and_restart();
    let ad = server.as_agent(&admin);
    let a = server.as_agent(&asker);
    // Its own answers are skipped as it passes them, not answered.
    support::wait_for("every question answered, and every answer passed", Duration::from_secs(90), || async {
        let sub = &status(&ad, "answers").await["subscriptions"][0];
        sub["processed"].as_i64() == Some(total) && sub["skipped"].as_i64() == Some(total)
    })
    .await;
    let answers = entries(&a, &stream, "answer").await;
    let mut answered: Vec<i64> = answers.iter().map(|e| e["data"]["question"].as_i64().unwrap()).collect();
    answered.sort_unstable();
    assert_eq!(answered, asked, "one answer per question");
    // The count committed with each answer: exactly one per question.
    let tally = server.as_agent(&bot).get("/stash/answered").await.expect(200);
    let version = tally.header("x-stash-version").map(str::to_string);
    assert_eq!((tally.json()["count"].as_i64(), version), (Some(total), Some(total.to_string())));
}

/// Writes are checked as the same requests over HTTP from `run_as` would
/// be: an entry that does not fit its stream's schema, or a stash that
/// another agent owns, fails the call, which writes nothing and ends as a
/// dead letter saying why; a fitting entry and the agent's own stash land.
async fn writes_are_checked_as_over_http(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let asker = server.register("asker").await;
    let bot = server.register("answer-bot").await;
    let a = server.as_agent(&asker);
    // Answers must say what they answer; questions need not.
    let definition = json!({"type": "object", "properties": {"answer": {"type": "string", "maxLength": 3}}});
    a.post("/schema", json!({"name": "answer", "definition": definition, "visibility": "public"})).await.expect(201);
    let created = a.post("/stream", json!({"name": "strict", "schema_id": "answer"})).await.expect(201).json();
    let stream = created["stream_id"].as_str().unwrap().to_string();
    // A shared stash of the asker's holds the name `taken` for everyone.
    a.put_text("/stash/taken?shared=true", "{\"count\": 100}").await.expect(201);
    let ad = server.as_agent(&admin);
    let settings = json!({"run_as": "answer-bot", "subscribe": [{"stream": stream, "labels": ["question"]}],
                          "grants": grants(), "max_attempts": 1, "config": {"tally": "mine"}});
    ad.upload_with("answers", "agent", support::guests::wasm("answer-agent"), &settings).await.expect(201);
    for text in ["ok", "much too long"] {
        a.post(&format!("/stream/{stream}"), json!({"label": "question", "data": {"text": text}})).await.expect(201);
    }
    settled(&ad, "answers", 1, 1).await;
    let answers = entries(&a, &stream, "answer").await;
    assert_eq!(answers.iter().map(|e| e["data"]["answer"].as_str().unwrap()).collect::<Vec<_>>(), ["OK"]);
    // The refused call's count did not land either.
    let mine = server.as_agent(&bot).get("/stash/mine").await.expect(200).json();
    assert_eq!(mine["count"], 1, "{mine}");
    let letters = ad.get("/policies/answers/dead-letters").await.expect(200).json();
    let error = letters["dead_letters"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("schema_violation") && error.contains("/answer"), "{error}");
    let sub = &status(&ad, "answers").await["subscriptions"][0];
    assert_eq!(sub["last_error"].as_str(), Some(error.as_str()), "{sub}");

    // Counting in the asker's stash: refused, and the answer with it.
    let plain =
        a.post("/stream", json!({"name": "plain"})).await.expect(201).json()["stream_id"].as_str().unwrap().to_string();
    let squatter = json!({"run_as": "answer-bot", "subscribe": [{"stream": plain}], "grants": grants(),
                          "max_attempts": 1, "config": {"tally": "taken"}});
    ad.upload_with("squatter", "agent", support::guests::wasm("answer-agent"), &squatter).await.expect(201);
    a.post(&format!("/stream/{plain}"), json!({"label": "question", "data": {"text": "hm"}})).await.expect(201);
    settled(&ad, "squatter", 0, 1).await;
    let letters = ad.get("/policies/squatter/dead-letters").await.expect(200).json();
    let error = letters["dead_letters"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("belongs to asker"), "{error}");
    assert!(entries(&a, &plain, "answer").await.is_empty());
    assert_eq!(a.get("/stash/taken").await.expect(200).json()["count"], 100);
}

/// An agent claims a contract's subtask by appending a `claim` entry, as an
/// agent over HTTP would: the contract's hook decides it once the call
/// commits, and the subtask is the agent's. A claim in another agent's
/// name is refused, and nothing of that call is written.
async fn an_agent_claims_a_subtask_through_the_contract(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let creator = server.register("orchestrator").await;
    server.register("research-bot").await;
    server.register("late-bot").await;
    let c = server.as_agent(&creator);
    c.put_text("/stash/site?persistent=true&schema=agent-contract", CONTRACT).await.expect(201);
    let disc = c.post("/stream", json!({"name": "site-discussion"})).await.expect(201).json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ad = server.as_agent(&admin);
    for (name, run_as, label) in [("claimer", "research-bot", "question"), ("forger", "late-bot", "forge")] {
        let settings = json!({"run_as": run_as, "subscribe": [{"stream": disc, "labels": [label]}],
                              "grants": grants(), "max_attempts": 1, "config": {"claim_as": "research-bot"}});
        ad.upload_with(name, "agent", support::guests::wasm("answer-agent"), &settings).await.expect(201);
    }
    let ask = |label: &str, subtask: &str| json!({"label": label, "data": {"text": "who?", "subtask": subtask}});
    c.post(&format!("/stream/{disc}"), ask("question", "research")).await.expect(201);
    c.post(&format!("/stream/{disc}"), ask("forge", "implement")).await.expect(201);
    settled(&ad, "claimer", 1, 0).await;
    settled(&ad, "forger", 0, 1).await;
    support::wait_for("the claim to be decided", Duration::from_secs(30), || async {
        !entries(&c, &disc, "claim-decision").await.is_empty()
    })
    .await;
    let doc = c.get("/stash/site?persistent=true").await.expect(200).json();
    let subtask = |id: &str| doc["subtasks"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone();
    let research = subtask("research");
    assert_eq!(
        (research["status"].as_str(), research["assigned_agent"].as_str()),
        (Some("claimed"), Some("research-bot"))
    );
    assert_eq!(subtask("implement")["status"], "open");
    let claims = entries(&c, &disc, "claim").await;
    assert_eq!(claims.iter().map(|e| e["agent"].as_str().unwrap()).collect::<Vec<_>>(), ["research-bot"]);
    let decisions = entries(&c, &disc, "claim-decision").await;
    assert_eq!((decisions.len(), decisions[0]["data"]["claim_seq"].as_i64()), (1, claims[0]["seq"].as_i64()));
    let letters = ad.get("/policies/forger/dead-letters").await.expect(200).json();
    let error = letters["dead_letters"][0]["error"].as_str().unwrap();
    assert!(error.contains("\"claim\" entry was refused"), "{error}");
}

/// Hostile agents beside a well-behaved one: a spinner past its deadline,
/// a memory hog, one that traps on every entry, a flood past its quota,
/// one writing to a stream that does not exist, one answering itself, and
/// two answering each other. Each is contained as its limits say, and the
/// well-behaved agent answers every question within a second of it.
async fn hostile_agents_are_contained_and_a_neighbour_keeps_up(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let asker = server.register("asker").await;
    let a = server.as_agent(&asker);
    let ad = server.as_agent(&admin);
    let mut streams = std::collections::HashMap::new();
    for name in ["good", "bad", "echo", "chatter"] {
        let created = a.post("/stream", json!({"name": name})).await.expect(201).json();
        streams.insert(name, created["stream_id"].as_str().unwrap().to_string());
    }
    let questions = |s: &str| json!([{"stream": streams[s], "labels": ["question"]}]);
    let everything = |s: &str| json!([{"stream": streams[s]}]);
    let bots = [
        ("good-bot", questions("good"), json!({}), json!({}), json!({})),
        ("spinner", questions("bad"), json!({"spin_ms": 60_000}), json!({"timeout_ms": 200}), json!({})),
        ("hog", questions("bad"), json!({"hog_mb": 512}), json!({"memory_bytes": 16 << 20}), json!({})),
        ("trapper", questions("bad"), json!({"trap": 1}), json!({}), json!({})),
        ("flooder", questions("bad"), json!({}), json!({}), json!({"writes_per_minute": 1})),
        ("stray", questions("bad"), json!({"answer_to": "st_nowhere"}), json!({}), json!({})),
        ("echo", everything("echo"), json!({}), json!({}), json!({"receive_own": true})),
        ("feeder-a", everything("chatter"), json!({}), json!({}), json!({})),
        ("feeder-b", everything("chatter"), json!({}), json!({}), json!({})),
    ];
    for (bot, subscribe, config, limits, extra) in &bots {
        server.register(bot).await;
        let mut settings = json!({"run_as": bot, "subscribe": subscribe, "grants": grants(), "max_attempts": 2,
                                  "config": config, "limits": limits});
        if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        ad.upload_with(bot, "agent", support::guests::wasm("answer-agent"), &settings).await.expect(201);
    }
    ask(&a, &streams["bad"], 0..5).await;
    ask(&a, &streams["echo"], 0..1).await;
    ask(&a, &streams["chatter"], 0..1).await;
    // The well-behaved agent's questions come while the others misbehave.
    for i in 0..20 {
        ask(&a, &streams["good"], i..i + 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settled(&ad, "good-bot", 20, 0).await;
    let asked = entries(&a, &streams["good"], "question").await;
    let answered = entries(&a, &streams["good"], "answer").await;
    assert_eq!(answered.len(), 20);
    let at = |e: &Value| humantime::parse_rfc3339(e["created_at"].as_str().unwrap()).unwrap();
    for (q, r) in asked.iter().zip(&answered) {
        assert_eq!(r["data"]["question"], q["seq"]);
        let lag = at(r).duration_since(at(q)).unwrap_or_default();
        assert!(lag < Duration::from_secs(1), "question #{} was answered {lag:?} after it came", q["seq"]);
    }

    // Each hostile one, contained: every question a dead letter saying why.
    for (bot, why) in [
        ("spinner", "timed out after 200 ms"),
        ("hog", "memory"),
        ("trapper", "panic or uncaught exception"),
        ("stray", "no stream \"st_nowhere\""),
    ] {
        settled(&ad, bot, 0, 5).await;
        let letters = ad.get(&format!("/policies/{bot}/dead-letters")).await.expect(200).json();
        let letters = letters["dead_letters"].as_array().unwrap().clone();
        assert_eq!(letters.len(), 5, "{bot}");
        assert!(letters.iter().all(|l| l["error"].as_str().unwrap().contains(why)), "{bot}: {letters:?}");
    }
    assert!(entries(&a, &streams["bad"], "answer").await.iter().all(|e| e["agent"] == "flooder"));
    // The flood: one write, and the rest waiting their turn.
    support::wait_for("the flooder's first answer", Duration::from_secs(60), || async {
        status(&ad, "flooder").await["subscriptions"][0]["processed"].as_i64() == Some(1)
    })
    .await;
    let flood = &status(&ad, "flooder").await["subscriptions"][0];
    assert_eq!((flood["processed"].as_i64(), flood["failed"].as_i64()), (Some(1), Some(0)), "{flood}");
    assert!(flood["lag"].as_i64().unwrap_or(0) >= 1, "{flood}");
    // Answering itself, and each other: stopped at eight hops.
    for bot in ["echo", "feeder-a", "feeder-b"] {
        support::wait_for(&format!("{bot} to stop at the hop limit"), Duration::from_secs(60), || async {
            status(&ad, bot).await["subscriptions"][0]["looped"].as_i64() == Some(1)
        })
        .await;
    }
    assert_eq!(entries(&a, &streams["echo"], "answer").await.len(), 8);
    assert_eq!(entries(&a, &streams["chatter"], "answer").await.len(), 16);
}

/// A contract of three open subtasks.
const CONTRACT: &str = r#"{
  "objective": "Redesign the landing page",
  "subtasks": [
    {"id": "research", "description": "Analyse the funnel", "status": "open", "budget_usdc": 10.0},
    {"id": "design", "description": "Wireframes", "status": "open", "budget_usdc": 15.0},
    {"id": "implement", "description": "Build it", "status": "open", "budget_usdc": 20.0}
  ],
  "budget_usdc": 45.0,
  "deadline": "2999-01-01T00:00:00Z"
}"#;

/// Two agents that answer every entry but their own answer each other's
/// answers; an entry eight agent calls down the chain is not delivered,
/// so the exchange ends, and each counts the entry it did not get.
async fn agents_answering_each_other_stop_after_eight_hops(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let asker = server.register("asker").await;
    let a = server.as_agent(&asker);
    let stream = a.post("/stream", json!({"name": "chatter"})).await.expect(201).json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ad = server.as_agent(&admin);
    for bot in ["bot-a", "bot-b"] {
        server.register(bot).await;
        let settings = json!({"run_as": bot, "subscribe": [{"stream": stream}], "grants": grants()});
        ad.upload_with(bot, "agent", support::guests::wasm("answer-agent"), &settings).await.expect(201);
    }
    a.post(&format!("/stream/{stream}"), json!({"label": "question", "data": {"text": "hello"}})).await.expect(201);
    for bot in ["bot-a", "bot-b"] {
        support::wait_for(&format!("{bot} to stop at the hop limit"), Duration::from_secs(60), || async {
            status(&ad, bot).await["subscriptions"][0]["looped"].as_i64() == Some(1)
        })
        .await;
        let sub = &status(&ad, bot).await["subscriptions"][0];
        // The question, and the other's answers one to seven calls down.
        assert_eq!(sub["processed"].as_i64(), Some(8), "{bot}: {sub}");
    }
    // Two answers at each of the eight levels, and nothing more.
    assert_eq!(entries(&a, &stream, "answer").await.len(), 16);
}

/// An agent over its `writes_per_minute` waits with its next entries (its
/// lag shows them), while another agent on the same host goes on.
async fn an_agent_over_its_quota_waits_and_slows_no_other(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let admin = server.admin();
    let asker = server.register("asker").await;
    let a = server.as_agent(&asker);
    let ad = server.as_agent(&admin);
    let mut streams = Vec::new();
    for (bot, per_minute) in [("slow-bot", 1), ("fast-bot", 600)] {
        server.register(bot).await;
        let created = a.post("/stream", json!({"name": format!("for-{bot}")})).await.expect(201).json();
        let stream = created["stream_id"].as_str().unwrap().to_string();
        let settings = json!({"run_as": bot, "subscribe": [{"stream": stream, "labels": ["question"]}],
                              "grants": grants(), "writes_per_minute": per_minute});
        ad.upload_with(bot, "agent", support::guests::wasm("answer-agent"), &settings).await.expect(201);
        streams.push(stream);
    }
    for stream in &streams {
        for i in 0..8 {
            let q = json!({"label": "question", "data": {"text": format!("q{i}")}});
            a.post(&format!("/stream/{stream}"), q).await.expect(201);
        }
    }
    settled(&ad, "fast-bot", 8, 0).await;
    // One append a minute: the first goes at once, the next waits a minute.
    support::wait_for("slow-bot's first answer", Duration::from_secs(60), || async {
        status(&ad, "slow-bot").await["subscriptions"][0]["processed"].as_i64() == Some(1)
    })
    .await;
    let slow = &status(&ad, "slow-bot").await["subscriptions"][0];
    assert_eq!(slow["processed"].as_i64(), Some(1), "{slow}");
    assert!(slow["lag"].as_i64().unwrap_or(0) >= 7, "{slow}");
    assert_eq!(entries(&a, &streams[0], "answer").await.len(), 1);
}

/// Two hosts on one PostgreSQL: one runs the agent at a time (the lease
/// names it), the answers land once, and when that host is killed the
/// other takes over and answers what came after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_runs_an_agent_and_another_takes_over() {
    let Some(db) = support::fresh_database(Backend::Postgres).await else { return };
    let hosts = [Server::start_on(&db, &[]), Server::start_on(&db, &[])];
    let admin = hosts[0].admin();
    let asker = hosts[0].register("asker").await;
    hosts[0].register("answer-bot").await;
    let a = hosts[0].as_agent(&asker);
    let stream = a.post("/stream", json!({"name": "shared"})).await.expect(201).json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    let settings = json!({"run_as": "answer-bot", "subscribe": [{"stream": stream, "labels": ["question"]}],
                          "grants": grants()});
    let ad = hosts[0].as_agent(&admin);
    ad.upload_with("answers", "agent", support::guests::wasm("answer-agent"), &settings).await.expect(201);
    ask(&hosts[1].as_agent(&asker), &stream, 0..10).await;
    settled(&ad, "answers", 10, 0).await;
    // The other host loads the policy when it hears of it, which a busy
    // machine can take seconds to compile; until then it cannot take over.
    for host in &hosts {
        let ad = host.as_agent(&admin);
        support::wait_for("both hosts serve the agent", Duration::from_secs(60), || async {
            ad.get("/policies/answers").await.status.is_success()
        })
        .await;
    }
    let holder = status(&ad, "answers").await["lease"]["holder"].as_str().unwrap().to_string();
    let running = hosts.iter().position(|h| holder.starts_with(&format!("pid{}-", h.pid())));
    let running = running.unwrap_or_else(|| panic!("the lease holder {holder} is neither host"));
    let mut hosts = Vec::from(hosts);
    let killed = hosts.remove(running);
    assert!(!killed.stop_with("KILL").success());
    let other = &hosts[0];
    ask(&other.as_agent(&asker), &stream, 10..15).await;
    // The lease runs out within 8 s, and the survivor looks every 2 s.
    let ad = other.as_agent(&admin);
    settled(&ad, "answers", 15, 0).await;
    let now = status(&ad, "answers").await["lease"]["holder"].as_str().unwrap().to_string();
    assert!(now.starts_with(&format!("pid{}-", other.pid())), "{now}");
    let answers = entries(&other.as_agent(&asker), &stream, "answer").await;
    let mut answered: Vec<i64> = answers.iter().map(|e| e["data"]["question"].as_i64().unwrap()).collect();
    answered.sort_unstable();
    answered.dedup();
    assert_eq!((answers.len(), answered.len()), (15, 15), "one answer per question");
}

/// A new version uploaded while the agent works through a backlog takes
/// over at an entry boundary: every question is answered exactly once, the
/// later ones by the new version.
async fn a_new_version_takes_over_without_losing_or_doubling(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let (admin, asker, _, stream) = questions(&server).await;
    let a = server.as_agent(&asker);
    let ad = server.as_agent(&admin);
    let settings = |spin: u64| {
        json!({"run_as": "answer-bot", "subscribe": [{"stream": stream, "labels": ["question"]}], "grants": grants(),
               "config": {"spin_ms": spin}, "limits": {"timeout_ms": 1000}})
    };
    // 50 ms a call, 20 questions a second. The backlog keeps growing faster
    // than that while version 2 uploads, however long a busy machine takes
    // to compile it, so the swap lands in the backlog.
    ad.upload_with("answers", "agent", support::guests::wasm("answer-agent"), &settings(50)).await.expect(201);
    let mut asked = ask(&a, &stream, 0..40).await;
    support::wait_for("some answers", Duration::from_secs(60), || async {
        status(&ad, "answers").await["subscriptions"][0]["processed"].as_i64().unwrap_or(0) > 0
    })
    .await;
    // Version 2: the triage example, a different component, under the same name.
    let triage = std::fs::read(support::guests::example_path("triage")).expect("the triage example is built");
    let v2 = settings(0);
    let upload = ad.upload_with("answers", "agent", triage, &v2);
    tokio::pin!(upload);
    let swapped = loop {
        tokio::select! {
            reply = &mut upload => break reply,
            _ = tokio::time::sleep(Duration::from_millis(100)), if asked.len() < 600 => {
                let next = asked.len();
                asked.extend(ask(&a, &stream, next..next + 3).await);
            }
        }
    };
    assert_eq!(swapped.expect(200).json()["version"], 2);
    let total = asked.len();
    settled(&ad, "answers", total as i64, 0).await;
    // Each question has exactly one reply: an answer from version 1 or a
    // triage entry from version 2, never both and never none.
    let answers = entries(&a, &stream, "answer").await;
    let triaged = entries(&a, &stream, "triage").await;
    let mut replied: Vec<i64> = answers
        .iter()
        .map(|e| e["data"]["question"].as_i64().unwrap())
        .chain(triaged.iter().map(|e| e["data"]["question"].as_i64().unwrap()))
        .collect();
    replied.sort_unstable();
    assert_eq!(replied, asked, "one reply per question");
    assert!(!answers.is_empty(), "version 1 replied to no question");
    assert!(!triaged.is_empty(), "version 2 replied to no question: the backlog was done before the swap");
}
