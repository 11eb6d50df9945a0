//! README.md's walkthroughs, run as written, in order, in one shell,
//! against a fresh server: every request must succeed except the refusals
//! the walkthroughs show on purpose, so the README cannot rot.

use crate::support::{self, Backend, Server};

/// The `sh` blocks of the sections headed "Walkthrough:", in order.
fn walkthroughs(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut in_walkthrough = false;
    let mut block: Option<String> = None;
    for line in readme.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_walkthrough = heading.starts_with("Walkthrough:");
        }
        match &mut block {
            Some(b) if line.starts_with("```") => {
                blocks.push(std::mem::take(b));
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None if in_walkthrough && line == "```sh" => block = Some(String::new()),
            None => {}
        }
    }
    blocks
}

/// Wraps curl so that each request's status (and curl's exit code) is
/// logged, while its body goes where the README sends it.
const PRELUDE: &str = r#"
curl() {
  local out rc=0
  out=$(command curl -w '\n%{http_code}' "$@") || rc=$?
  printf '%s\n' "${out%$'\n'*}"
  local args="$*"
  printf '%s %s %s\n' "${out##*$'\n'}" "$rc" "${args//$'\n'/ }" >> "$CAIRN_README_LOG"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthroughs_run_as_written() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let blocks = walkthroughs(&readme);
    assert_eq!(blocks.len(), 2, "README.md has two walkthroughs");
    let script = blocks.concat();
    let scratch = support::scratch();
    let log = scratch.path().join("statuses");
    // coreutils' timeout bounds the run; the server answers on this
    // runtime, so the shell runs off it.
    let mut run = std::process::Command::new("timeout");
    run.args(["120", "bash", "-c"])
        .arg(format!("{PRELUDE}\n{script}"))
        .env("CAIRN_URL", &server.url)
        .env("CAIRN_README_LOG", &log);
    let out = tokio::task::spawn_blocking(move || run.output()).await.unwrap().unwrap();
    let (stdout, stderr) = support::text(&out);
    let statuses = std::fs::read_to_string(&log).unwrap_or_default();
    let said = format!("stdout:\n{stdout}\nstderr:\n{stderr}\nrequests:\n{statuses}");
    assert!(out.status.success(), "{said}");

    // Every curl in the blocks ran once.
    let calls = script.matches("curl -s").count();
    let lines: Vec<(u16, i32, &str)> = statuses
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let rc = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
            (status, rc, parts.next().unwrap_or(""))
        })
        .collect();
    assert_eq!(lines.len(), calls, "{said}");
    for (status, rc, args) in &lines {
        // 28 is curl's timeout, which the live-events command asks for.
        let ended = *rc == 0 || (*rc == 28 && args.contains("--max-time"));
        assert!(ended && *status != 0, "curl {args} ended with {rc}\n{said}");
    }
    // The refusals the walkthroughs show, and no other.
    let refused: Vec<u16> = lines.iter().map(|l| l.0).filter(|s| !(200..300).contains(s)).collect();
    assert_eq!(refused, [422, 409, 422, 423], "{said}");
    // What the steps claim, in the state they leave.
    assert!(stdout.contains(r#""verdict":"approve""#), "the claim was approved: {said}");
    assert!(stdout.contains(r#""status":"completed""#), "{said}");
}
