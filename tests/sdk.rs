//! Plugin authors' path, for real: the examples built from source in Rust,
//! Python and JavaScript agree case for case; `cairn policy new` projects
//! build and pass their own cases; Python and JS builds uploaded over HTTP
//! decide contract claims, and their log lines reach the decision log and
//! the server's tracing output.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::sdk::{self, build_python, run};
use crate::support::{self, Backend, Server, guests};

fn policy_test(wasm: &Path, hook: &str, cases: &Path) -> (bool, String) {
    let out = support::policy_test(wasm, hook, cases, &[]);
    (out.status.success(), support::text(&out).0)
}

/// One case file per hook, run against each language's build: every case
/// passes, and the decisions (verdicts, reasons, violations, actions) are
/// the same text in all three.
#[test]
fn examples_in_three_languages_agree_case_for_case() {
    let Some(built) = sdk::examples() else { return };
    for (hook, [rust, python, js]) in built {
        let cases = sdk::examples_dir().join("cases").join(format!("{hook}.json"));
        let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cases).unwrap()).unwrap();
        let count = file["cases"].as_array().map_or(0, Vec::len);
        assert!(count >= 3, "{} holds {count} cases; the examples need their cases", cases.display());
        let (ok, from_rust) = policy_test(rust, hook, &cases);
        assert!(ok, "Rust {hook} example:\n{from_rust}");
        assert!(from_rust.ends_with(&format!("{count} passed, 0 failed\n")), "{from_rust}");
        for (lang, wasm) in [("Python", python), ("JS", js)] {
            let (ok, out) = policy_test(wasm, hook, &cases);
            assert!(ok, "{lang} {hook} example:\n{out}");
            assert_eq!(out, from_rust, "{lang} and Rust disagree on the {hook} cases");
        }
    }
}

/// `cairn policy new` in each language (a different hook each, so every
/// world is covered), built by its README's commands, passes its cases.
#[test]
fn scaffolded_projects_build_and_pass_their_own_cases() {
    let Some(tools) = sdk::toolchains() else { return };
    let scratch = crate::support::scratch();
    let new = |name: &str, lang: &str, hook: &str| {
        let dir = scratch.path().join(name);
        run(Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["policy", "new", name, "--lang", lang, "--hook", hook, "--dir"])
            .arg(&dir));
        dir
    };

    // Rust: its own workspace; the shared target dir keeps wit-bindgen built.
    let dir = new("rs-handoff", "rust", "handoff");
    let target = guests::target_dir().join("scaffolded");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(&dir).env("CARGO_TARGET_DIR", &target).args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "wasm32-wasip2",
    ]));
    let wasm = target.join("wasm32-wasip2/release/rs_handoff.wasm");
    let (ok, out) = policy_test(&wasm, "handoff", &dir.join("cases.json"));
    assert!(ok && out.ends_with("5 passed, 0 failed\n"), "{out}");

    // Python: the README's componentize-py command, with the pinned tool.
    let dir = new("py-escalation", "python", "escalation");
    build_python(tools, &dir, "app", "escalation", &dir.join("py-escalation.wasm"));
    let (ok, out) = policy_test(&dir.join("py-escalation.wasm"), "escalation", &dir.join("cases.json"));
    assert!(ok && out.ends_with("5 passed, 0 failed\n"), "{out}");

    // An agent project, in Python: its settings.json binding and its cases.
    let dir = new("py-agent", "python", "agent");
    build_python(tools, &dir, "app", "agent", &dir.join("py-agent.wasm"));
    let (ok, out) = policy_test(&dir.join("py-agent.wasm"), "agent", &dir.join("cases.json"));
    assert!(ok && out.ends_with("8 passed, 0 failed\n"), "{out}");
    let binding: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("settings.json")).unwrap()).unwrap();
    assert_eq!(binding["subscribe"][0]["labels"], json!(["question", "answer"]));

    // JS: npm install from its lockfile (the cache .ci/toolchains filled), npm run build.
    let dir = new("js-claim", "js", "claim");
    run(Command::new("npm").current_dir(&dir).args(["install", "--prefer-offline", "--no-audit", "--no-fund"]));
    run(Command::new("npm").current_dir(&dir).args(["run", "--silent", "build"]));
    let (ok, out) = policy_test(&dir.join("js-claim.wasm"), "claim", &dir.join("cases.json"));
    assert!(ok && out.ends_with("7 passed, 0 failed\n"), "{out}");
}

const CONTRACT: &str = r#"{
  "objective": "Redesign the landing page",
  "subtasks": [
    {"id": "research", "description": "Analyse the funnel", "status": "open", "budget_usdc": 10},
    {"id": "design", "description": "Wireframes", "status": "open", "budget_usdc": 15},
    {"id": "copy", "description": "Headlines", "status": "open", "budget_usdc": 5}
  ],
  "budget_usdc": 30,
  "deadline": "2999-01-01T00:00:00Z"
}"#;

/// The Python and JS claim examples, uploaded over HTTP and each bound to
/// its own contract, decide that contract's claims; their log lines are in
/// the decision log and in the server's tracing output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_policies_decide_contract_claims() {
    let Some(built) = sdk::examples() else { return };
    let [_, python, js] = &built[0].1;
    let Some(server) = Server::start_traced(Backend::Sqlite, "warn,cairn::policy::guest=info").await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let creator = server.register("orchestrator").await;
    let bot = server.register("design-bot").await;
    for (lang, wasm) in [("py", python), ("js", js)] {
        let policy = format!("{lang}-gate");
        let contract = format!("site-{lang}");
        let bytes = std::fs::read(wasm).expect("read the built example");
        let created = ad.upload_policy(&policy, "claim", bytes).await.expect(201).json();
        assert_eq!(created["world"], "claim-policy");
        // Bound to the contract, which must exist first.
        let c = server.as_agent(&creator);
        c.put_text(&format!("/stash/{contract}?persistent=true&schema=agent-contract"), CONTRACT).await.expect(201);
        ad.set_policy(
            &policy,
            json!({
                "scope": {"stash": contract}, "config": {"max_budget_usdc": 12, "max_open_claims": 1}
            }),
        )
        .await;
        let stream = c.post("/stream", json!({"name": format!("{contract}-discussion")})).await.expect(201).json();
        let stream = stream["stream_id"].as_str().unwrap().to_string();
        let claim = |subtask: &str| {
            let data = json!({"type": "claim", "subtask_id": subtask, "agent_name": "design-bot"});
            let (b, path) = (server.as_agent(&bot), format!("/stream/{stream}"));
            async move { b.post(&path, json!({"data": data, "label": "claim"})).await }
        };

        // Over the ceiling: only this policy escalates with this reason.
        let r = claim("design").await.expect(201).json();
        assert_eq!(r["decision"]["verdict"], "escalate", "{lang}: {r}");
        assert!(r["decision"]["reason"].as_str().unwrap_or_default().contains("15 USDC is over 12"), "{lang}: {r}");
        // Under it: approved and applied; a second one is over max_open_claims.
        let r = claim("research").await.expect(201).json();
        assert_eq!(r["decision"]["verdict"], "approve", "{lang}: {r}");
        let doc = c.get(&format!("/stash/{contract}?persistent=true")).await.expect(200).json();
        assert_eq!(doc["subtasks"][0]["assigned_agent"], "design-bot", "{lang}: {doc}");
        let r = claim("copy").await.expect(201).json();
        assert_eq!(r["decision"]["verdict"], "deny", "{lang}: {r}");
        let reason = r["decision"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("design-bot already holds 1 subtasks; the limit is 1"), "{lang}: {r}");
        let doc = c.get(&format!("/stash/{contract}?persistent=true")).await.expect(200).json();
        assert_eq!(
            (doc["subtasks"][2]["status"].as_str(), doc["subtasks"][2]["assigned_agent"].as_str()),
            (Some("open"), None),
            "{lang}: {doc}"
        );

        let log = ad.get(&format!("/policies/{policy}/decisions")).await.expect(200).json();
        let decisions = log["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), 3, "{lang}: {log}");
        let line = decisions[0]["logs"][0]["message"].as_str().unwrap_or_default();
        assert_eq!(line, "design-bot wants design (15 USDC) and holds 0", "{lang}: {log}");
        assert_eq!(decisions[0]["scope"], format!("stash:{contract}"));
    }
    // The same lines, in the server's tracing output, named by policy.
    let traced = server.stderr.as_ref().unwrap().lock().unwrap().clone();
    for policy in ["py-gate", "js-gate"] {
        assert!(
            traced.lines().any(|l| l.contains("design-bot wants design (15 USDC) and holds 0")
                && l.contains(&format!("policy={policy}"))),
            "{policy} not in the tracing output:\n{traced}"
        );
    }
}

/// The triage agent in each language, uploaded with its binding, triages
/// and routes the questions on a contract's discussion stream on a running
/// server, as its agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_triage_agent_runs_in_three_languages() {
    let Some(built) = sdk::examples() else { return };
    let Some((_, wasms)) = built.iter().find(|(hook, _)| hook == "agent") else {
        panic!("the agent example is not among the built examples");
    };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let creator = server.register("orchestrator").await;
    let c = server.as_agent(&creator);
    let designer = server.register("design-bot").await;
    let d = server.as_agent(&designer);
    for (lang, wasm) in ["rust", "python", "js"].iter().zip(wasms) {
        // A contract whose design subtask design-bot holds, and its discussion.
        let contract = format!("site-{lang}");
        let mut doc: Value = serde_json::from_str(CONTRACT).unwrap();
        doc["subtasks"][1]["status"] = json!("claimed");
        doc["subtasks"][1]["assigned_agent"] = json!("design-bot");
        c.put_text(
            &format!("/stash/{contract}?persistent=true&discoverable=true&schema=agent-contract"),
            &doc.to_string(),
        )
        .await
        .expect(201);
        let stream = json!({"name": format!("{contract}-discussion"), "discoverable": true});
        let stream = c.post("/stream", stream).await.expect(201).json()["stream_id"].as_str().unwrap().to_string();

        let bot = format!("triage-{lang}");
        let bot_agent = server.register(&bot).await;
        let settings = json!({"run_as": bot, "subscribe": [{"stream": stream, "labels": ["question", "answer"]}],
            "grants": ["stash-read", "stash-write", "stream-read", "stream-write", "task-read", "contract-read", "log"],
            "config": {"urgent": ["outage"], "contract": contract}});
        let bytes = std::fs::read(wasm).expect("read the built example");
        ad.upload_with(&bot, "agent", bytes, &settings).await.expect(201);
        // Asked as the contracts pattern asks: about an open subtask, then a claimed one.
        for (subtask, message) in [("copy", "Is the outage over?"), ("design", "Mobile-first or desktop-first?")] {
            let data =
                json!({"type": "question", "subtask_id": subtask, "agent_name": "design-bot", "message": message});
            d.post(&format!("/stream/{stream}"), json!({"label": "question", "data": data})).await.expect(201);
        }
        let path = format!("/stream/{stream}?label=triage");
        support::wait_for(&format!("{lang}'s triage"), std::time::Duration::from_secs(60), || async {
            d.get(&path).await.expect(200).json()["entries"].as_array().is_some_and(|e| e.len() == 2)
        })
        .await;
        let entries = d.get(&path).await.expect(200).json()["entries"].as_array().unwrap().clone();
        let seen: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|e| {
                let data = &e["data"];
                (e["agent"].as_str().unwrap(), data["priority"].as_str().unwrap(), data["route_to"].as_str().unwrap())
            })
            .collect();
        // The open subtask's question goes to the creator, the claimed one's to its agent.
        assert_eq!(seen, [(bot.as_str(), "urgent", "orchestrator"), (bot.as_str(), "normal", "design-bot")], "{lang}");
        assert_eq!(entries[0]["data"]["matched"], json!(["outage"]), "{lang}");
        // Its open-questions stash lists both, written in the same commits.
        let open = server.as_agent(&bot_agent).get("/stash/open-questions?persistent=true").await.expect(200).json();
        let listed: Vec<(i64, &str, &str)> = open["open"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                (q["question"].as_i64().unwrap(), q["priority"].as_str().unwrap(), q["route_to"].as_str().unwrap())
            })
            .collect();
        let seqs: Vec<i64> = entries.iter().map(|e| e["data"]["question"].as_i64().unwrap()).collect();
        assert_eq!(listed, [(seqs[0], "urgent", "orchestrator"), (seqs[1], "normal", "design-bot")], "{lang}: {open}");
        // The creator's answer takes its question off.
        let answer = json!({"label": "answer", "data": {"type": "answer", "question": seqs[0], "message": "yes"}});
        c.post(&format!("/stream/{stream}"), answer).await.expect(201);
        let bot_call = server.as_agent(&bot_agent);
        support::wait_for(
            &format!("{lang}'s stash to drop the answered question"),
            std::time::Duration::from_secs(60),
            || async {
                let open = bot_call.get("/stash/open-questions?persistent=true").await.expect(200).json();
                open["open"].as_array().is_some_and(|o| o.len() == 1 && o[0]["question"] == seqs[1])
            },
        )
        .await;
    }
}
