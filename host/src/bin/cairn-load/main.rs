//! `cairn-load`: a load generator for a live Cairn host.
//!
//! Each connection is one HTTP/1.1 keep-alive socket driven by one task, so
//! the generator costs little next to the server it measures. It registers
//! its own agent, sets up a stream and stashes, then runs each scenario for
//! `--duration` after a `--warmup`, and prints a Markdown table: requests per
//! second and latency percentiles, for docs/benchmarks.md.
//!
//! The claim scenarios (`team-claim`, `contract-claim`) are different: each
//! connection is its own agent, and each round every agent claims its share
//! of `--tasks` distinct tasks (or contract subtasks) once, through the
//! bundled claim policy; the round's claims are what is measured. Between
//! rounds the work is reset (released, or the contract rewritten), unmeasured.
//! The first round's tail is also printed apart from the others': it holds
//! the host's warm-up (a bound policy's first decisions use memory slots for
//! the first time), which the percentiles over all rounds mix in.
//!
//! `sse-fanout`, `slow-clients`, `schema-heavy` and `hostile-mix` (in
//! `hostile.rs`) measure
//! how the host serves ordinary requests while part of the load is hostile.
//!
//! The `mcp-*` scenarios make the same calls as `task-get` and
//! `stream-append` as MCP tool calls (`POST /mcp`, JSON-RPC), so the two
//! protocols' round trips can be compared on one host.
//!
//! Start the host with rate limiting off (the default) and run, e.g.:
//!
//! ```text
//! cargo run --release -- serve --database sqlite:///tmp/bench.db &
//! cargo run --release --bin cairn-load -- --url http://127.0.0.1:8080 --connections 64
//! cargo run --release --bin cairn-load -- --scenarios team-claim --tasks 1000 --rounds 5
//! ```

mod agents;
mod hostile;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

#[derive(Parser, Clone)]
#[command(about = "Load generator for a live Cairn host")]
struct Args {
    /// The host to load.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds each scenario is measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds each scenario runs before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Scenarios to run (comma-separated): stream-append, stream-read, stash-write, stash-read,
    /// task-get, mcp-stream-append, mcp-task-get, mcp-unknown-tool, team-claim, contract-claim,
    /// sse-fanout, slow-clients, schema-heavy, hostile-mix, agent.
    #[arg(long, default_value = "stream-append,stream-read,stash-write,stash-read", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Bytes in each stash body.
    #[arg(long, default_value_t = 256)]
    stash_bytes: usize,
    /// Tasks in the team (team-claim) or subtasks in the contract (contract-claim).
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Rounds of the claim scenarios: every task is claimed once per round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// SSE readers in `sse-fanout`.
    #[arg(long, default_value_t = 2000)]
    subscribers: usize,
    /// Entries appended in `sse-fanout`.
    #[arg(long, default_value_t = 100)]
    appends: usize,
    /// Connections that never finish their headers, in `slow-clients`.
    #[arg(long, default_value_t = 500)]
    slow: usize,
    /// Connections that stop halfway through a body, in `slow-clients`.
    #[arg(long, default_value_t = 50)]
    stalled: usize,
    /// Requests in `hostile-mix`.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// The host's process id, for `hostile-mix` to report its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The agent component for `agent`: it must append one entry per entry
    /// to the stream its config's `answer_to` names (the answer-agent guest does).
    #[arg(long)]
    agent_wasm: Option<std::path::PathBuf>,
    /// An admin key, for `agent` to upload the agent with.
    #[arg(long, env = "CAIRN_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Entries the agent works through from a backlog, in `agent`.
    #[arg(long, default_value_t = 20_000)]
    entries: usize,
    /// A claim policy component to bind to the team in `team-claim` (with
    /// `--admin-key`), deciding beside the bundled one: the same scenario
    /// with a Rust, Python or JS policy on the decision path.
    #[arg(long)]
    claim_policy: Option<std::path::PathBuf>,
    /// The agent's `isolation` in `agent`: `fresh` (an instance per entry) or `reuse`.
    #[arg(long, default_value = "fresh")]
    agent_isolation: String,
    /// Entries per second offered while `agent` measures delivery lag.
    #[arg(long, default_value_t = 1000)]
    offered: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let authority = args.url.trim_start_matches("http://").trim_end_matches('/').to_string();
    if args.url.starts_with("https://") {
        bail!("cairn-load speaks plain HTTP; point it at the host directly");
    }
    let mut setup = Conn::open(&authority).await?;
    let agent = format!("load-{}", std::process::id());
    let reg = setup.call(Method::POST, "/register/agent", None, Some(json!({"agent_name": agent}).to_string())).await?;
    let key = reg.1["api_key"].as_str().context("registration failed; is registration open?")?.to_string();
    let stream = setup
        .call(
            Method::POST,
            "/stream",
            Some(&key),
            Some(json!({"name": "bench", "create_if_missing": true}).to_string()),
        )
        .await?;
    let stream_id = stream.1["stream_id"].as_str().context("creating the bench stream failed")?.to_string();
    let body = "x".repeat(args.stash_bytes);
    setup.put("/stash/bench-read?persistent=true", &key, &body).await?;
    for n in 0..200 {
        setup
            .call(
                Method::POST,
                &format!("/stream/{stream_id}"),
                Some(&key),
                Some(json!({"data": {"n": n}, "label": "seed"}).to_string()),
            )
            .await?;
    }

    // One team with one task, for task-get and mcp-task-get.
    let team = format!("bench-{}", std::process::id());
    expect(
        "team",
        201,
        setup.call(Method::POST, "/teams", Some(&key), Some(json!({"name": team}).to_string())).await?,
    )?;
    let task = json!({"subject": "the task every task-get reads"}).to_string();
    expect("task", 201, setup.call(Method::POST, &format!("/teams/{team}/tasks"), Some(&key), Some(task)).await?)?;
    let fixture = Fixture { key, stream_id, body, team };

    println!("| scenario | connections | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for scenario in &args.scenarios {
        let report = match scenario.as_str() {
            "team-claim" | "contract-claim" => claims(&args, &authority, scenario, &mut setup).await?,
            "agent" => agents::run(&args, &authority, &mut setup).await?,
            s if hostile::SCENARIOS.contains(&s) => hostile::run(&args, &authority, s, &fixture).await?,
            _ => run(&args, &authority, scenario, &fixture).await?,
        };
        println!(
            "| {scenario} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            report.connections.unwrap_or(args.connections),
            report.rate,
            report.pct(50.0),
            report.pct(90.0),
            report.pct(99.0),
            report.pct(99.9),
            report.errors
        );
        for (what, n) in &report.refused {
            println!("|   refused: {what} | | {n} | | | | | |");
        }
        for note in &report.notes {
            println!("|   {note} | | | | | | | |");
        }
    }
    Ok(())
}

#[derive(Default)]
struct Report {
    rate: f64,
    micros: Vec<u32>,
    errors: u64,
    /// Answers other than success, by status, code and message, with counts.
    refused: std::collections::BTreeMap<String, u64>,
    /// What else the scenario observed, one line each.
    notes: Vec<String>,
    /// Connections measured, when not `--connections`.
    connections: Option<usize>,
}

impl Report {
    fn pct(&self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
}

/// Whether an MCP answer is a tool result that is not an error.
fn succeeded((status, answer): (u16, Value)) -> bool {
    status == 200 && answer["result"]["isError"] == false
}

/// What the plain scenarios work on.
#[derive(Clone)]
struct Fixture {
    key: String,
    stream_id: String,
    body: String,
    team: String,
}

async fn run(args: &Args, authority: &str, scenario: &str, fixture: &Fixture) -> anyhow::Result<Report> {
    let warmup = Duration::from_secs(args.warmup);
    let measure = Duration::from_secs(args.duration);
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for conn in 0..args.connections {
        let mut c = Conn::open(authority).await?;
        let Fixture { key, stream_id, body, team } = fixture.clone();
        let scenario = scenario.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut micros, mut errors) = (Vec::with_capacity(1 << 16), 0u64);
            tokio::time::sleep_until(start.into()).await;
            let (measure_from, stop) = (start + warmup, start + warmup + measure);
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let t = Instant::now();
                let ok = match scenario.as_str() {
                    "stream-append" => c
                        .call(
                            Method::POST,
                            &format!("/stream/{stream_id}"),
                            Some(&key),
                            Some(format!(r#"{{"data":{{"conn":{conn},"n":{n}}},"label":"bench"}}"#)),
                        )
                        .await
                        .is_ok_and(|r| r.0 == 201),
                    "stream-read" => c
                        .call(Method::GET, &format!("/stream/{stream_id}?limit=10"), Some(&key), None)
                        .await
                        .is_ok_and(|r| r.0 == 200),
                    "stash-write" => {
                        c.put(&format!("/stash/bench-{conn}"), &key, &body).await.is_ok_and(|s| s == 200 || s == 201)
                    }
                    "stash-read" => c.get_raw("/stash/bench-read?persistent=true", &key).await.is_ok_and(|s| s == 200),
                    "task-get" => c
                        .call(Method::GET, &format!("/teams/{team}/tasks/1"), Some(&key), None)
                        .await
                        .is_ok_and(|r| r.0 == 200),
                    "mcp-task-get" => {
                        c.mcp(&key, "task_get", json!({"team": team, "id": 1})).await.is_ok_and(succeeded)
                    }
                    // The MCP layer's own cost: a call that reaches no route.
                    "mcp-unknown-tool" => c
                        .mcp(&key, "no_such_tool", json!({}))
                        .await
                        .is_ok_and(|(status, answer)| status == 200 && answer["error"]["code"].is_i64()),
                    "mcp-stream-append" => c
                        .mcp(
                            &key,
                            "stream_append",
                            json!({"stream_id": stream_id, "data": {"conn": conn, "n": n}, "label": "bench"}),
                        )
                        .await
                        .is_ok_and(succeeded),
                    other => return Err(anyhow::anyhow!("unknown scenario {other:?}")),
                };
                if t >= measure_from {
                    if ok {
                        micros.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            Ok((micros, errors))
        }));
    }
    let (mut micros, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (m, e) = t.await??;
        micros.extend(m);
        errors += e;
    }
    micros.sort_unstable();
    Ok(Report { rate: micros.len() as f64 / measure.as_secs_f64(), micros, errors, ..Report::default() })
}

/// Registers `n` agents for one claim scenario: (name, key).
async fn agents(setup: &mut Conn, prefix: &str, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let reg =
            setup.call(Method::POST, "/register/agent", None, Some(json!({"agent_name": name}).to_string())).await?;
        let key = reg.1["api_key"].as_str().with_context(|| format!("registering {name}: {}", reg.1))?;
        out.push((name, key.to_string()));
    }
    Ok(out)
}

/// Fails unless the answer is the one expected.
fn expect(what: &str, want: u16, got: (u16, Value)) -> anyhow::Result<Value> {
    if got.0 != want {
        bail!("{what}: expected {want}, got {} {}", got.0, got.1);
    }
    Ok(got.1)
}

/// What a claim scenario's agents do in one round.
#[derive(Clone)]
enum Target {
    /// Team `team`: PATCH each task.
    Team { team: String },
    /// The contract's discussion stream: append `claim` entries.
    Contract { stream_id: String },
}

/// `team-claim` and `contract-claim`: rounds in which every agent claims
/// its own share of the tasks once, all agents at the same time.
async fn claims(args: &Args, authority: &str, scenario: &str, setup: &mut Conn) -> anyhow::Result<Report> {
    let tag = format!("{}-{}", std::process::id(), scenario);
    let owner = agents(setup, &format!("{tag}-lead"), 1).await?.remove(0);
    let crew = agents(setup, &format!("{tag}-agent"), args.connections).await?;
    let n = args.tasks;
    let target = if scenario == "team-claim" {
        let team = format!("t{}", std::process::id());
        let key = Some(owner.1.as_str());
        expect("team", 201, setup.call(Method::POST, "/teams", key, Some(json!({"name": team}).to_string())).await?)?;
        for (name, _) in &crew {
            let body = json!({"agent_name": name}).to_string();
            expect("member", 201, setup.call(Method::POST, &format!("/teams/{team}/members"), key, Some(body)).await?)?;
        }
        // Tasks are made by all connections at once: 10,000 one by one is slow.
        let mut makers = Vec::new();
        for c in 0..args.connections.min(n) {
            let (mut conn, team, key) = (Conn::open(authority).await?, team.clone(), owner.1.clone());
            let per = args.connections.min(n);
            makers.push(tokio::spawn(async move {
                for i in (c..n).step_by(per) {
                    let body = json!({"subject": format!("task {i}")}).to_string();
                    expect(
                        "task",
                        201,
                        conn.call(Method::POST, &format!("/teams/{team}/tasks"), Some(&key), Some(body)).await?,
                    )?;
                }
                anyhow::Ok(())
            }));
        }
        for m in makers {
            m.await??;
        }
        if let Some(path) = &args.claim_policy {
            let admin = args.admin_key.as_deref().context("--claim-policy needs --admin-key")?;
            let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let settings = json!({"scope": {"team": team}});
            let policy = format!("{team}-claims");
            let (status, body) =
                setup.upload(&format!("/policies/{policy}?hook=claim"), admin, &wasm, &settings).await?;
            if status != 201 {
                bail!("uploading the claim policy: {status} {body}");
            }
        }
        Target::Team { team }
    } else {
        let contract = format!("c{}", std::process::id());
        put_contract(setup, &owner.1, &contract, n).await?;
        let body = json!({"name": format!("{contract}-discussion")}).to_string();
        let s = expect("stream", 201, setup.call(Method::POST, "/stream", Some(&owner.1), Some(body)).await?)?;
        Target::Contract { stream_id: s["stream_id"].as_str().context("no stream id")?.to_string() }
    };

    let mut conns = Vec::with_capacity(crew.len());
    for _ in &crew {
        conns.push(Conn::open(authority).await?);
    }
    let mut report = Report::default();
    // Each round's latencies, to report the warm-up round apart.
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut measured = Duration::ZERO;
    for round in 0..args.rounds {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, (mut conn, (name, key))) in conns.drain(..).zip(crew.iter().cloned()).enumerate() {
            let (target, per) = (target.clone(), args.connections);
            tasks.push(tokio::spawn(async move {
                let mut seen = (Vec::new(), std::collections::BTreeMap::<String, u64>::new());
                for t in (i..n).step_by(per) {
                    let t0 = Instant::now();
                    let (path, body, want) = match &target {
                        Target::Team { team } => (
                            format!("/teams/{team}/tasks/{}", t + 1),
                            json!({"owner": name, "status": "in_progress"}),
                            200,
                        ),
                        Target::Contract { stream_id } => (
                            format!("/stream/{stream_id}"),
                            json!({"label": "claim", "data": {"type": "claim", "subtask_id": format!("s{t}"), "agent_name": name}}),
                            201,
                        ),
                    };
                    let method = if matches!(target, Target::Team { .. }) { Method::PATCH } else { Method::POST };
                    let (status, answer) = conn.call(method, &path, Some(&key), Some(body.to_string())).await?;
                    let applied = matches!(target, Target::Team { .. }) || answer["decision"]["applied"] == true;
                    if status == want && applied {
                        seen.0.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        let why = if status == want {
                            format!("{status} not applied: {}", answer["decision"]["reason"])
                        } else {
                            format!("{status} {}: {}", answer["error"]["code"], answer["error"]["message"])
                        };
                        *seen.1.entry(why).or_default() += 1;
                    }
                }
                anyhow::Ok((conn, seen))
            }));
        }
        let mut round_micros = Vec::new();
        for t in tasks {
            let (conn, (micros, refused)) = t.await??;
            conns.push(conn);
            round_micros.extend(micros);
            for (why, k) in refused {
                report.errors += k;
                *report.refused.entry(why).or_default() += k;
            }
        }
        measured += started.elapsed();
        rounds.push(round_micros);
        if round + 1 < args.rounds {
            reset(&target, setup, authority, &owner, &crew, n, args.connections).await?;
        }
    }
    let sorted = |micros: Vec<u32>| {
        let mut r = Report { micros, ..Report::default() };
        r.micros.sort_unstable();
        r
    };
    if rounds.len() > 1 {
        let first = sorted(rounds[0].clone());
        let rest = sorted(rounds[1..].concat());
        report.notes.push(format!(
            "round 1: p99 {:.2} ms, slowest {:.2} ms; rounds 2-{}: p99 {:.2} ms, slowest {:.2} ms",
            first.pct(99.0),
            first.pct(100.0),
            args.rounds,
            rest.pct(99.0),
            rest.pct(100.0)
        ));
    }
    report.micros = rounds.concat();
    report.micros.sort_unstable();
    report.rate = report.micros.len() as f64 / measured.as_secs_f64();
    Ok(report)
}

/// A contract of `n` open subtasks, `s0`, `s1`, ...
async fn put_contract(setup: &mut Conn, key: &str, contract: &str, n: usize) -> anyhow::Result<()> {
    let subtasks: Vec<Value> =
        (0..n).map(|i| json!({"id": format!("s{i}"), "description": format!("part {i}"), "status": "open"})).collect();
    let doc = json!({"objective": "load", "subtasks": subtasks}).to_string();
    let status = setup.put(&format!("/stash/{contract}?persistent=true&schema=agent-contract"), key, &doc).await?;
    if status != 200 && status != 201 {
        bail!("writing the contract: {status}");
    }
    Ok(())
}

/// Puts the work back as it was before the round, unmeasured.
async fn reset(
    target: &Target,
    setup: &mut Conn,
    authority: &str,
    owner: &(String, String),
    crew: &[(String, String)],
    n: usize,
    per: usize,
) -> anyhow::Result<()> {
    match target {
        Target::Contract { .. } => {
            let contract = format!("c{}", std::process::id());
            put_contract(setup, &owner.1, &contract, n).await
        }
        Target::Team { team } => {
            let mut tasks = Vec::new();
            for (i, (_, key)) in crew.iter().enumerate() {
                let (mut conn, team, key) = (Conn::open(authority).await?, team.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    for t in (i..n).step_by(per) {
                        let body = json!({"owner": null, "status": "pending"}).to_string();
                        let path = format!("/teams/{team}/tasks/{}", t + 1);
                        expect("release", 200, conn.call(Method::PATCH, &path, Some(&key), Some(body)).await?)?;
                    }
                    anyhow::Ok(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            Ok(())
        }
    }
}

struct Conn {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(authority: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(authority).await.with_context(|| format!("cannot connect to {authority}"))?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Self { authority: authority.to_string(), sender })
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    fn request(&self, method: Method, path: &str, key: Option<&str>) -> hyper::http::request::Builder {
        let mut b = Request::builder().method(method).uri(path).header("host", &self.authority);
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        b
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        key: Option<&str>,
        json: Option<String>,
    ) -> anyhow::Result<(u16, Value)> {
        let req = self
            .request(method, path, key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json.unwrap_or_default())))?;
        let (status, body) = self.send(req).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn put(&mut self, path: &str, key: &str, body: &str) -> anyhow::Result<u16> {
        let req = self
            .request(Method::PUT, path, Some(key))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body.to_string())))?;
        Ok(self.send(req).await?.0)
    }

    /// One MCP tool call, stateless, as a 2025-11-25 client sends it.
    async fn mcp(&mut self, key: &str, tool: &str, arguments: Value) -> anyhow::Result<(u16, Value)> {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": arguments}});
        let req = self
            .request(Method::POST, "/mcp", Some(key))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(Full::new(Bytes::from(call.to_string())))?;
        let (status, body) = self.send(req).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// Uploads a component with its settings (`Cairn-Settings`).
    async fn upload(&mut self, path: &str, key: &str, wasm: &[u8], settings: &Value) -> anyhow::Result<(u16, Value)> {
        let req = self
            .request(Method::PUT, path, Some(key))
            .header("content-type", "application/wasm")
            .header("cairn-settings", settings.to_string())
            .body(Full::new(Bytes::from(wasm.to_vec())))?;
        let (status, body) = self.send(req).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn get_raw(&mut self, path: &str, key: &str) -> anyhow::Result<u16> {
        let req = self.request(Method::GET, path, Some(key)).body(Full::new(Bytes::new()))?;
        Ok(self.send(req).await?.0)
    }
}
