//! The dashboard at `/ui` in headless Chromium (Debian's, at
//! `/usr/bin/chromium` or `CAIRN_CHROMIUM`), driven by Playwright
//! (`playwright-core`, pinned in `tests/ui/`, which downloads no browser)
//! against a real server. `tests/ui/dashboard.mjs` runs one scenario per
//! call and acts through the API as agents would; these tests set the
//! scene and check the API afterwards.
//!
//! `.ci/run` installs Chromium and `.ci/toolchains` playwright-core; without
//! them a test prints why and passes, and under `CI=true` it fails.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::support::{self, Agent, Backend, Server, guests};

fn dir() -> PathBuf {
    guests::workspace().join("tests").join("ui")
}

/// Chromium's path, once node and playwright-core are found too.
fn chromium() -> Option<&'static PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let chromium =
            std::env::var_os("CAIRN_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        if !chromium.is_file() {
            return Err(format!("{} is not installed (apt-get install chromium; .ci/run does)", chromium.display()));
        }
        if !dir().join("node_modules/playwright-core/package.json").is_file() {
            return Err("playwright-core is not installed in tests/ui (run .ci/toolchains)".into());
        }
        if Command::new("node").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
            return Err("node is not on PATH".into());
        }
        Ok(chromium)
    });
    match found {
        Ok(path) => Some(path),
        Err(why) => {
            support::skip(why);
            None
        }
    }
}

/// Runs one scenario of `dashboard.mjs`; its result, or a panic with what
/// the browser side said.
async fn scenario(chromium: &PathBuf, server: &Server, name: &str, mut input: Value) -> Value {
    input["url"] = json!(server.url);
    let mut cmd = Command::new("node");
    cmd.current_dir(dir())
        .arg("dashboard.mjs")
        .arg(name)
        .env("CAIRN_UI_INPUT", input.to_string())
        .env("CAIRN_CHROMIUM", chromium);
    // Every wait in the scenario is bounded (Playwright's timeouts), so it ends.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the scenario's thread")
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the {name} scenario failed:\n{stderr}\n{stdout}");
    let line =
        stdout.lines().rev().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("no RESULT: {stdout}"));
    let result: Value = serde_json::from_str(line).expect("the scenario's result is JSON");
    assert_eq!(result["errors"].as_array().map_or(0, Vec::len), 0, "the page logged errors: {result}");
    eprintln!("{name}: {result}");
    result
}

/// A team of `lead` with `member` in it.
async fn team(server: &Server, name: &str, lead: &Agent, member: &Agent) {
    let l = server.as_agent(lead);
    l.post("/teams", json!({"name": name})).await.expect(201);
    l.post(&format!("/teams/{name}/members"), json!({"agent_name": member.name})).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let index = server.anonymous().get("/ui").await.expect(200);
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = index.header("content-security-policy").unwrap_or_default().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    let js = server.anonymous().get("/ui/app.js").await.expect(200);
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    let missing = server.anonymous().get("/ui/nothing.js").await.expect(404);
    assert!(missing.json()["error"]["message"].as_str().unwrap_or_default().contains("the dashboard starts at /ui"));
}

/// A HALT raised through the API is a banner on the lead's board; the lead
/// acknowledges it in the page with a note, and claims work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_shows_and_the_lead_acknowledges_it_in_the_page() {
    let Some(chromium) = chromium() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let (lead, member) = (server.register("lead").await, server.register("bob").await);
    team(&server, "core", &lead, &member).await;
    let b = server.as_agent(&member);
    let task = b.post("/teams/core/tasks", json!({"subject": "Ship it"})).await.expect(201).json();
    let input = json!({"lead_key": lead.key, "member_key": member.key, "team": "core"});
    let result = scenario(chromium, &server, "halt", input).await;

    let signals = b.get("/teams/core/signals").await.expect(200).json();
    let signal = signals["signals"].as_array().unwrap().iter().find(|s| s["signal_id"] == result["signal_id"]).cloned();
    let signal = signal.expect("the signal raised in the scenario");
    assert_eq!((signal["acknowledged"].as_bool(), signal["acknowledged_by"].as_str()), (Some(true), Some("lead")));
    assert_eq!(signal["note"], "Key rotated; log purged");
    let path = format!("/teams/core/tasks/{}", task["id"]);
    b.patch(&path, json!({"status": "in_progress", "owner": "bob"})).await.expect(200);
}

/// A claim and a completion made through the API move the cards live, the
/// HANDOFF shows as its sections, and the board fits a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_completions_move_the_cards_live() {
    let Some(chromium) = chromium() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let (lead, member) = (server.register("lead").await, server.register("bob").await);
    team(&server, "core", &lead, &member).await;
    let (l, b) = (server.as_agent(&lead), server.as_agent(&member));
    l.post("/teams/core/tasks", json!({"subject": "Draft the API notes"})).await.expect(201);
    let bench = l.post("/teams/core/tasks", json!({"subject": "Benchmark the board"})).await.expect(201).json();
    let claim = json!({"status": "in_progress", "owner": "bob", "active_form": "Timing the first render"});
    b.patch(&format!("/teams/core/tasks/{}", bench["id"]), claim).await.expect(200);
    let mut input = json!({"lead_key": lead.key, "member_key": member.key, "member": "bob", "team": "core",
        "handoff": support::handoff()});
    if let Some(path) = std::env::var_os("CAIRN_UI_SCREENSHOT") {
        input["screenshot"] = json!(path.to_string_lossy());
    }
    scenario(chromium, &server, "board", input).await;
    let done = l.get("/teams/core/tasks?status=completed").await.expect(200).json();
    assert_eq!(done["tasks"].as_array().map(Vec::len), Some(1), "{done}");
}

/// A key that is not a member of a private team finds no trace of it: not
/// in its overview, not by the team's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_team_leaves_no_trace_for_an_outsider() {
    let Some(chromium) = chromium() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let (lead, member, outsider) =
        (server.register("lead").await, server.register("bob").await, server.register("eve").await);
    team(&server, "skunkworks", &lead, &member).await;
    let l = server.as_agent(&lead);
    l.post("/teams/skunkworks/tasks", json!({"subject": "Project Nightjar"})).await.expect(201);
    server.as_agent(&outsider).post("/teams", json!({"name": "eves-own"})).await.expect(201);
    let input = json!({"outsider_key": outsider.key, "team": "skunkworks",
        "secrets": ["skunkworks", "Project Nightjar", "bob"], "own_team": "eves-own"});
    scenario(chromium, &server, "private", input).await;
}

/// The decision log, filtered to failed decisions, shows those of the one
/// policy chosen and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_filters_to_one_policys_failures() {
    let Some(chromium) = chromium() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    // `slow` works for the config's ms, so a config over its 100 ms deadline fails it.
    ad.install_guest("gate", "claim", "slow", json!({"scope": "global", "limits": {"timeout_ms": 100}})).await;
    ad.install_guest("other", "claim", "slow", json!({"scope": "global", "limits": {"timeout_ms": 100}})).await;
    let claim = json!({"claimant": "bob", "target": {"subtask": {"contract": "site", "subtask_id": "design"}}});
    let mut failed = Vec::new();
    for (policy, ms) in [("gate", 0), ("gate", 1000), ("other", 1000), ("gate", 0), ("gate", 1000)] {
        let r = ad.post(&format!("/policies/{policy}/evaluate"), json!({"input": claim, "config": {"ms": ms}})).await;
        let r = r.expect(200).json();
        if policy == "gate" && ms > 0 {
            assert!(r["error"].is_string(), "{r}");
            failed.push(r["decision_id"].as_str().unwrap().to_string());
        }
    }
    let result = scenario(chromium, &server, "decisions", json!({"admin_key": admin.key, "policy": "gate"})).await;
    let mut shown: Vec<String> =
        result["shown"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    shown.sort();
    failed.sort();
    assert_eq!(shown, failed, "{result}");
    let url = result["url"].as_str().unwrap_or_default();
    assert!(url.ends_with("#/policies?policy=gate&failed=1"), "the filters are not in the URL: {url}");
    // The host's own filter agrees.
    let log = ad.get("/policies/gate/decisions?failed=true&latest=true").await.expect(200).json();
    let mut ids: Vec<String> =
        log["decisions"].as_array().unwrap().iter().map(|d| d["decision_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    assert_eq!(ids, failed, "{log}");
}

/// A `claim` entry on a contract's discussion stream changes its subtask on
/// screen, a timeline filters by label, and a HALT on the contract is a
/// banner its creator acknowledges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_subtask_changes_on_screen() {
    let Some(chromium) = chromium() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let (creator, bot) = (server.register("orchestrator").await, server.register("design-bot").await);
    let c = server.as_agent(&creator);
    let contract = json!({"objective": "Redesign the site", "subtasks": [
        {"id": "design", "description": "Wireframes", "status": "open", "budget_usdc": 10},
        {"id": "copy", "description": "Headlines", "status": "open", "budget_usdc": 5}], "budget_usdc": 15});
    c.put_text("/stash/site?persistent=true&discoverable=true&schema=agent-contract", &contract.to_string())
        .await
        .expect(201);
    let stream = c.post("/stream", json!({"name": "site-discussion", "discoverable": true})).await.expect(201).json();
    let input = json!({"creator_key": creator.key, "bot_key": bot.key, "bot": "design-bot", "contract": "site",
        "subtask": "design", "second": "copy", "stream_id": stream["stream_id"]});
    let result = scenario(chromium, &server, "contract", input).await;
    let doc = c.get("/stash/site?persistent=true").await.expect(200).json();
    assert_eq!(doc["subtasks"][0]["assigned_agent"], "design-bot", "{doc}");
    // The HALT acknowledged in the page is acknowledged, and claims work again.
    let signal = result["signal_id"].as_str().expect("the scenario's signal");
    let acknowledged = c.post(&format!("/signals/{signal}/acknowledge"), json!({"note": "again"})).await;
    assert_eq!(acknowledged.expect(409).code(), "already_acknowledged");
    let claim = json!({"label": "claim", "data": {"type": "claim", "subtask_id": "copy", "agent_name": "design-bot"}});
    server.as_agent(&bot).post(&format!("/stream/{}", stream["stream_id"].as_str().unwrap()), claim).await.expect(201);
}

/// A board of 1,001 tasks (past one page of the task list) renders whole.
/// The scenario prints the first-render times that `docs/benchmarks.md`
/// records; this test checks only that every card is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_of_a_thousand_tasks_renders_whole() {
    let Some(chromium) = chromium() else { return };
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let (lead, member) = (server.register("lead").await, server.register("bob").await);
    team(&server, "big", &lead, &member).await;
    let l = server.as_agent(&lead);
    const TASKS: u64 = 1001;
    for i in 1..=TASKS {
        // Every tenth task waits on the one before it.
        let blocked_by: Vec<u64> = if i % 10 == 0 { vec![i - 1] } else { vec![] };
        let task =
            json!({"subject": format!("Task number {i}"), "description": "d".repeat(200), "blocked_by": blocked_by});
        l.post("/teams/big/tasks", task).await.expect(201);
    }
    let result =
        scenario(chromium, &server, "large", json!({"lead_key": lead.key, "team": "big", "tasks": TASKS})).await;
    assert_eq!(result["first_render_ms"].as_array().map(Vec::len), Some(5), "{result}");
}
