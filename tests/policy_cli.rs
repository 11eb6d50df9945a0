//! `cairn policy test`: the offline case runner, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, guests, text};

fn cases(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases").join(name)
}

fn policy_test(guest: &str, hook: &str, case_file: &Path, extra: &[&str]) -> Output {
    support::policy_test(&guests::path(guest), hook, case_file, extra)
}

#[test]
fn good_cases_pass() {
    let out = policy_test("stash-reader", "claim", &cases("stash-reader.json"), &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("PASS  ")).count(), 4, "{stdout}");
    assert!(stdout.contains("approves a claim on an open subtask"));
    assert!(stdout.ends_with("4 passed, 0 failed\n"), "{stdout}");
}

/// Each bundled policy, exported from the binary as a user would, passes
/// the case file that ships beside its source.
#[test]
fn bundled_policies_export_and_pass_their_cases() {
    let scratch = support::scratch();
    let dir = scratch.path();
    for (name, hook, n) in [
        ("claim-approval", "claim", 11),
        ("handoff-validation", "handoff", 7),
        ("algedonic-escalation", "escalation", 5),
    ] {
        let wasm = dir.join(format!("{name}.wasm"));
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["policy", "export", name, "--out"])
            .arg(&wasm)
            .output()
            .unwrap();
        assert!(out.status.success(), "{:?}", text(&out));
        assert!(std::fs::read(&wasm).unwrap().starts_with(b"\0asm"));
        let case_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins").join(name).join("cases.json");
        let out = support::policy_test(&wasm, hook, &case_file, &[]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}: {stdout}{stderr}");
        assert!(stdout.ends_with(&format!("{n} passed, 0 failed\n")), "{name}: {stdout}");
        let schema = dir.join(format!("{name}.schema.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["policy", "export", name, "--schema", "--out"])
            .arg(&schema)
            .output()
            .unwrap();
        assert!(out.status.success());
        let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(&schema).unwrap()).unwrap();
        assert_eq!(schema["additionalProperties"], false);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["policy", "export", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("there are: claim-approval, handoff-validation, algedonic-escalation"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn wrong_expectations_fail_with_expected_and_actual() {
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cases("stash-reader.json")).unwrap()).unwrap();
    file["cases"][0]["expect"] = serde_json::json!({"verdict": "deny"});
    file["cases"][1]["expect"] = serde_json::json!({"verdict": "deny", "reason_contains": "over budget"});
    let scratch = support::scratch();
    let path = scratch.path().join("cases.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let out = policy_test("stash-reader", "claim", &path, &[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("FAIL  approves a claim on an open subtask"), "{stdout}");
    assert!(first.ends_with(r#"expected verdict deny, got {"verdict":"approve"}"#), "{stdout}");
    assert!(stdout.contains(r#"expected a reason containing "over budget", got {"reason":"subtask research is not open","verdict":"deny"}"#), "{stdout}");
    assert!(stdout.ends_with("2 passed, 2 failed\n"), "{stdout}");
}

#[test]
fn failing_decisions_are_reported_and_can_be_expected() {
    let scratch = support::scratch();
    let path = scratch.path().join("cases.json");
    std::fs::write(
        &path,
        r#"{"cases": [
            {"name": "times out", "limits": {"timeout_ms": 20},
             "input": {"claimant": "a", "target": {"task": {"team": "t", "id": 1}}},
             "expect": {"error_contains": "timed out after 20 ms"}},
            {"name": "expects a verdict", "limits": {"timeout_ms": 20},
             "input": {"claimant": "a", "target": {"task": {"team": "t", "id": 1}}},
             "expect": {"verdict": "approve"}},
            {"name": "bad input", "input": {"claimant": "a"}, "expect": {"verdict": "approve"}}
        ]}"#,
    )
    .unwrap();
    let out = policy_test("infinite-loop", "claim", &path, &[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("PASS  times out"), "{stdout}");
    assert!(stdout.contains("FAIL  expects a verdict  the decision failed: timed out after 20 ms"), "{stdout}");
    assert!(stdout.contains("FAIL  bad input          bad input: missing field `target`"), "{stdout}");
}

/// Guests that print, panic or write past the caps are run as the server
/// runs them: each case is reported, a panic can be expected, and the
/// compiled component is cached where `--policy-cache` says.
#[test]
fn guests_that_print_and_panic_are_reported() {
    let scratch = support::scratch();
    let path = scratch.path().join("cases.json");
    let input = r#"{"claimant": "a", "target": {"task": {"team": "t", "id": 1}}}"#;
    std::fs::write(
        &path,
        format!(
            r#"{{"cases": [
            {{"name": "chatty", "config": {{"lines": 120, "line_bytes": 10, "stdout_bytes": 30000, "stderr_bytes": 3000}},
             "input": {input}, "expect": {{"verdict": "approve"}}}}
        ]}}"#
        ),
    )
    .unwrap();
    let cache = scratch.path().join("compiled");
    let cache_arg = cache.to_str().unwrap();
    let out = policy_test("chatty", "claim", &path, &["--policy-cache", cache_arg]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("PASS  chatty") && stdout.ends_with("1 passed, 0 failed\n"), "{stdout}");
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached, 1, "the compiled component is in {}", cache.display());
    std::fs::write(
        &path,
        format!(
            r#"{{"cases": [
            {{"name": "panics", "input": {input}, "expect": {{"error_contains": "a panic or uncaught exception"}}}},
            {{"name": "says why", "input": {input}, "expect": {{"error_contains": "the guest wrote: "}}}}
        ]}}"#
        ),
    )
    .unwrap();
    let out = policy_test("panic", "claim", &path, &["--policy-cache", cache_arg]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("PASS  panics") && stdout.contains("PASS  says why"), "{stdout}");
}

/// The same in Python and JS: a guest that prints keeps its decision, and
/// an uncaught exception fails the decision with the exception's message,
/// which a case can expect; nothing aborts the tester.
#[test]
fn python_and_js_guests_that_print_and_raise_are_reported() {
    let Some(built) = support::sdk::misbehaving() else { return };
    let scratch = support::scratch();
    let path = scratch.path().join("cases.json");
    let input = r#"{"claimant": "a", "target": {"task": {"team": "t", "id": 1}}}"#;
    std::fs::write(
        &path,
        format!(
            r#"{{"cases": [
            {{"name": "prints", "config": {{"do": "print"}}, "input": {input}, "expect": {{"verdict": "approve"}}}},
            {{"name": "raises", "config": {{"do": "raise"}}, "input": {input},
              "expect": {{"error_contains": "misbehaving on purpose"}}}},
            {{"name": "unexpected", "config": {{"do": "raise"}}, "input": {input}, "expect": {{"verdict": "approve"}}}}
        ]}}"#
        ),
    )
    .unwrap();
    let cache = scratch.path().join("compiled");
    for wasm in built {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["policy", "test"])
            .arg(wasm)
            .args(["--hook", "claim", "--cases"])
            .arg(&path)
            .arg("--policy-cache")
            .arg(&cache)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        let which = wasm.display();
        // Exit 1 for the one case that did not expect the exception, not a crash.
        assert_eq!(out.status.code(), Some(1), "{which}: {stdout}{stderr}");
        assert!(stdout.contains("PASS  prints"), "{which}: {stdout}");
        assert!(stdout.contains("PASS  raises"), "{which}: {stdout}");
        assert!(
            stdout.contains("FAIL  unexpected  the decision failed: ") && stdout.contains("misbehaving on purpose"),
            "{which}: {stdout}"
        );
        assert!(stdout.ends_with("2 passed, 1 failed\n"), "{which}: {stdout}");
    }
}

#[test]
fn unusable_files_are_explained() {
    let out = policy_test("approve-all", "handoff", &cases("stash-reader.json"), &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: cannot load") && stderr.contains("does not fit world `handoff-policy`"),
        "{stderr}"
    );
    let out = policy_test("approve-all", "claim", Path::new("/nonexistent/cases.json"), &[]);
    assert!(text(&out).1.starts_with("error: cannot read the cases /nonexistent/cases.json"));
    let scratch = support::scratch();
    let not_cases = scratch.path().join("cases.json");
    std::fs::write(&not_cases, r#"{"tests": []}"#).unwrap();
    let out = policy_test("approve-all", "claim", &not_cases, &[]);
    assert!(text(&out).1.contains("is not a case file: unknown field `tests`"), "{}", text(&out).1);
    // A file that could not fail is refused, not passed.
    std::fs::write(&not_cases, r#"{"cases": []}"#).unwrap();
    let out = policy_test("approve-all", "claim", &not_cases, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("cannot be used: it has no cases"), "{}", text(&out).1);
    let vacuous = r#"{"cases": [{"name": "anything goes", "input": {"claimant": "a", "target": {"task": {"team": "t", "id": 1}}}, "expect": {}}]}"#;
    std::fs::write(&not_cases, vacuous).unwrap();
    let out = policy_test("approve-all", "claim", &not_cases, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("case \"anything goes\" expects nothing"), "{}", text(&out).1);
}

fn cairn(args: &[&str], url: &str, key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_URL", url)
        .env("CAIRN_ADMIN_KEY", key)
        .output()
        .expect("run cairn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_list_and_eval_against_a_running_host() {
    let Some(server) = support::Server::start(support::Backend::Sqlite).await else { return };
    let scratch = support::scratch();
    let dir = scratch.path();
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"allow": ["research-bot"]}"#).unwrap();
    let input = dir.join("input.json");
    std::fs::write(&input, r#"{"claimant": "research-bot", "target": {"task": {"team": "t", "id": 1}}}"#).unwrap();
    let wasm = guests::path("config-driven");
    let (url, key) = (server.url.as_str(), support::ADMIN_KEY);
    // A new policy needs a scope, and the scope must exist.
    let wasm_arg = wasm.to_str().unwrap();
    let unscoped = cairn(&["policy", "add", "gate", wasm_arg, "--hook", "claim"], url, key);
    assert!(text(&unscoped).1.contains("is a new policy: say where it decides with --scope"), "{}", text(&unscoped).1);
    let nowhere = cairn(&["policy", "add", "gate", wasm_arg, "--hook", "claim", "--scope", "team:t"], url, key);
    assert!(text(&nowhere).1.contains("the team \"t\", which does not exist"), "{}", text(&nowhere).1);
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    ad.get("/policies/gate").await.expect(404);
    ad.post("/teams", serde_json::json!({"name": "t"})).await.expect(201);

    let add = cairn(
        &[
            "policy",
            "add",
            "gate",
            wasm.to_str().unwrap(),
            "--hook",
            "claim",
            "--config",
            config.to_str().unwrap(),
            "--scope",
            "team:t",
        ],
        url,
        key,
    );
    let (stdout, stderr) = text(&add);
    assert!(add.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("gate version 1 (claim-policy world, sha256 "), "{stdout}");
    assert!(
        stdout.contains("\nscope team:t, config {\"allow\":[\"research-bot\"]}; decides beside the bundled policy\n"),
        "{stdout}"
    );
    let shown = server.as_agent(&server.admin()).get("/policies/gate").await.expect(200).json();
    assert_eq!(shown["settings"]["config"], serde_json::json!({"allow": ["research-bot"]}));
    assert_eq!(shown["settings"]["scope"], serde_json::json!({"team": "t"}));

    let eval = cairn(&["policy", "eval", "gate", "--input", input.to_str().unwrap()], url, key);
    let (stdout, _) = text(&eval);
    assert!(eval.status.success(), "{stdout}");
    let decision: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decision["result"]["verdict"], "approve");

    let list = cairn(&["policy", "list"], url, key);
    let (stdout, _) = text(&list);
    let (head, line) = (stdout.lines().next().unwrap(), stdout.lines().nth(1).unwrap());
    assert!(head.starts_with("NAME"), "{stdout}");
    let row: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(row, ["gate", "claim", "1", "true", "team:t", "1", "0", "-"]);
    // Columns line up under their headings.
    assert_eq!(head.find("SCOPE"), line.find("team:t"), "{stdout}");
    assert_eq!(head.find("LAST ERROR"), line.rfind('-'), "{stdout}");
    // Then who decides where: the bundled baseline beside the bound policy.
    let deciding: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("HOOK"))
        .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    assert!(deciding.contains(&vec!["claim", "team:t", "claim-approval (bundled), gate"]), "{stdout}");
    assert!(deciding.contains(&vec!["claim", "global", "claim-approval (bundled)"]), "{stdout}");

    // Errors carry the API's message; a wrong key is refused.
    let bad = cairn(&["policy", "add", "p", wasm_arg, "--hook", "handoff", "--scope", "global"], url, key);
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr.contains("422") && stderr.contains("does not fit world `handoff-policy`"), "{stderr}");
    let denied = cairn(&["policy", "list"], url, "sk_wrong");
    assert!(text(&denied).1.contains("401"), "{}", text(&denied).1);
    let bad_scope =
        cairn(&["policy", "add", "p", wasm.to_str().unwrap(), "--hook", "claim", "--scope", "room:1"], url, key);
    assert!(text(&bad_scope).1.contains("--scope takes global, stash:NAME or team:NAME"));
    // A 422's details are printed, each with its JSON pointer.
    let fork = dir.join("fork.wasm");
    let export = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["policy", "export", "claim-approval", "--out"])
        .arg(&fork)
        .output()
        .unwrap();
    assert!(export.status.success());
    let bad_config = dir.join("bad.json");
    std::fs::write(&bad_config, r#"{"max_open_claims": "one"}"#).unwrap();
    let fork_arg = fork.to_str().unwrap();
    let refused = cairn(
        &[
            "policy",
            "add",
            "fork",
            fork_arg,
            "--hook",
            "claim",
            "--scope",
            "global",
            "--config",
            bad_config.to_str().unwrap(),
        ],
        url,
        key,
    );
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("422") && stderr.contains("\n  at /config/max_open_claims: "), "{stderr}");
    // Refused together: the bytes were not stored either.
    ad.get("/policies/fork").await.expect(404);
    // A config schema of the author's own is checked the same way, and the
    // other settings travel with it.
    let schema = dir.join("config.schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"allow": {"type": "array"}}, "additionalProperties": false}"#,
    )
    .unwrap();
    let typo = dir.join("typo.json");
    std::fs::write(&typo, r#"{"alow": ["a"]}"#).unwrap();
    let with_schema = |config: &Path| {
        let args = [
            "policy",
            "add",
            "own",
            wasm_arg,
            "--hook",
            "claim",
            "--scope",
            "global",
            "--config",
            config.to_str().unwrap(),
            "--config-schema",
            schema.to_str().unwrap(),
            "--replaces-bundled",
            "true",
            "--mask",
            "/request",
        ];
        cairn(&args, url, key)
    };
    let refused = with_schema(&typo);
    let (_, stderr) = text(&refused);
    assert!(stderr.contains("422") && stderr.contains("at /config: "), "{stderr}");
    ad.get("/policies/own").await.expect(404);
    let took = with_schema(&config);
    let (stdout, stderr) = text(&took);
    assert!(took.status.success() && stdout.contains("decides instead of the bundled policy"), "{stdout}{stderr}");
    let own = ad.get("/policies/own").await.expect(200).json();
    assert_eq!(own["settings"]["mask"], serde_json::json!(["/request"]));
    assert_eq!(own["settings"]["config_schema"]["additionalProperties"], false);
    // The stored schema keeps guarding later changes.
    let changed = ad.send(ad.req(reqwest::Method::PUT, "/policies/own/settings").json(&serde_json::json!({
        "scope": "global", "config": {"alow": []}, "config_schema": own["settings"]["config_schema"]
    })));
    assert_eq!(changed.await.expect(422).code(), "invalid_config");
    // Files are checked before anything is sent.
    let missing = cairn(
        &["policy", "add", "lost", fork_arg, "--hook", "claim", "--scope", "global", "--config", "/nonexistent.json"],
        url,
        key,
    );
    assert!(text(&missing).1.contains("cannot read /nonexistent.json"), "{}", text(&missing).1);
    ad.get("/policies/lost").await.expect(404);
    // An unreachable host says how to point at the right one.
    let away = cairn(&["policy", "list"], "http://127.0.0.1:9", key);
    assert!(text(&away).1.contains("pass --url or set CAIRN_URL"), "{}", text(&away).1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_declared_in_cairn_toml_are_installed_at_start() {
    let Some(db) = support::fresh_database(support::Backend::Sqlite).await else { return };
    let scratch = support::scratch();
    let dir = scratch.path();
    std::fs::copy(guests::path("config-driven"), dir.join("gate.wasm")).unwrap();
    let toml = dir.join("cairn.toml");
    std::fs::write(
        &toml,
        "[[policy]]\nname = \"gate\"\nfile = \"gate.wasm\"\nhook = \"claim\"\nconfig = { allow = [\"a\"] }\nscope = \"global\"\nlimits = { timeout_ms = 50 }\norder = 3\n",
    )
    .unwrap();
    let server = support::Server::start_on(&db, &["--config", toml.to_str().unwrap()]);
    let admin = server.admin();
    let ad = server.as_agent(&admin);
    let shown = ad.get("/policies/gate").await.expect(200).json();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["settings"]["config"], serde_json::json!({"allow": ["a"]}));
    assert_eq!(shown["settings"]["scope"], serde_json::json!("global"));
    assert_eq!(
        (shown["settings"]["limits"]["timeout_ms"].as_u64(), shown["settings"]["order"].as_i64()),
        (Some(50), Some(3))
    );
    // A restart with the same file changes nothing.
    assert!(server.terminate().success());
    let server = support::Server::start_on(&db, &["--config", toml.to_str().unwrap()]);
    assert_eq!(server.as_agent(&server.admin()).get("/policies/gate").await.expect(200).json()["version"], 1);
    drop(server);
    // A broken file stops the start with the reason: a missing component,
    // or a misspelt setting.
    let refused = |contents: &str| -> String {
        std::fs::write(&toml, contents).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db, "--config", toml.to_str().unwrap()])
            .env("CAIRN_ADMIN_KEY", support::ADMIN_KEY)
            .output()
            .unwrap();
        assert!(!out.status.success());
        text(&out).1
    };
    let err = refused("[[policy]]\nname = \"gate\"\nfile = \"missing.wasm\"\nhook = \"claim\"\n");
    assert!(err.contains("cannot read") && err.contains("missing.wasm"), "{err}");
    let err = refused("[[policy]]\nname = \"gate\"\nfile = \"gate.wasm\"\nhook = \"claim\"\ntimeout = 5\n");
    assert!(err.contains("bad settings for policy \"gate\"") && err.contains("unknown field `timeout`"), "{err}");
    // No scope is assumed, and the one given must exist.
    let err = refused("[[policy]]\nname = \"gate\"\nfile = \"gate.wasm\"\nhook = \"claim\"\n");
    assert!(err.contains("settings must name a scope"), "{err}");
    let err =
        refused("[[policy]]\nname = \"gate\"\nfile = \"gate.wasm\"\nhook = \"claim\"\nscope = { team = \"nobody\" }\n");
    assert!(err.contains("the team \"nobody\", which does not exist"), "{err}");
    // An entry whose settings the host refuses leaves nothing behind: not
    // the new policy, nor a new version of the old one.
    std::fs::copy(guests::path("approve-all"), dir.join("other.wasm")).unwrap();
    for name in ["fresh", "gate"] {
        let entry = format!(
            "[[policy]]\nname = \"{name}\"\nfile = \"other.wasm\"\nhook = \"claim\"\nlimits = {{ timeout_ms = 0 }}\n"
        );
        let err = refused(&entry);
        assert!(err.contains(&format!("policy \"{name}\"")) && err.contains("timeout_ms"), "{err}");
    }
    std::fs::write(&toml, "").unwrap();
    let server = support::Server::start_on(&db, &["--config", toml.to_str().unwrap()]);
    let ad = server.as_agent(&admin);
    ad.get("/policies/fresh").await.expect(404);
    let gate = ad.get("/policies/gate").await.expect(200).json();
    assert_eq!((gate["version"].as_i64(), gate["settings"]["order"].as_i64()), (Some(1), Some(3)));
}
