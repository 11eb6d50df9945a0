//! `cairn policy test`: the offline case runner, as a user runs it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::guests;

fn cases(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases").join(name)
}

fn policy_test(guest: &str, hook: &str, case_file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["policy", "test"])
        .arg(guests::path(guest))
        .args(["--hook", hook, "--cases"])
        .arg(case_file)
        .args(extra)
        .output()
        .expect("run cairn policy test")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
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

#[test]
fn wrong_expectations_fail_with_expected_and_actual() {
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cases("stash-reader.json")).unwrap()).unwrap();
    file["cases"][0]["expect"] = serde_json::json!({"verdict": "deny"});
    file["cases"][1]["expect"] = serde_json::json!({"verdict": "deny", "reason_contains": "over budget"});
    let path = std::env::temp_dir().join(format!("cairn-bad-cases-{}.json", std::process::id()));
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
    let path = std::env::temp_dir().join(format!("cairn-loop-cases-{}.json", std::process::id()));
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
    let not_cases = std::env::temp_dir().join(format!("cairn-not-cases-{}.json", std::process::id()));
    std::fs::write(&not_cases, r#"{"tests": []}"#).unwrap();
    let out = policy_test("approve-all", "claim", &not_cases, &[]);
    assert!(text(&out).1.contains("is not a case file: unknown field `tests`"), "{}", text(&out).1);
}
