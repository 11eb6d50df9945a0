//! `agent`: a sandboxed agent that appends one entry per entry it is handed
//! (`--agent-wasm`, e.g. the `answer-agent` test guest, told where to answer
//! with `{"answer_to": STREAM}`). Two measurements:
//!
//! - throughput: `--entries` questions are appended first, then the agent is
//!   bound from the start; entries handled per second from its first answer
//!   to its last (and, as a second figure, from the upload);
//! - delivery lag: a second agent bound from now, while questions come at
//!   `--offered` per second for `--duration` seconds; per question, the time
//!   from its append to the commit of its answer (both `created_at`, ms).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use serde_json::{Value, json};

use crate::{Args, Conn, Report, expect};

pub async fn run(args: &Args, authority: &str, setup: &mut Conn) -> anyhow::Result<Report> {
    let wasm_path = args.agent_wasm.as_ref().context("the agent scenario needs --agent-wasm PATH")?;
    let wasm = std::fs::read(wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let admin = args.admin_key.as_deref().context("the agent scenario needs --admin-key (or CAIRN_ADMIN_KEY)")?;
    let tag = format!("{}", std::process::id());
    let asker = crate::agents(setup, &format!("agent-bench-{tag}-asker"), 1).await?.remove(0);

    // Throughput: a backlog, then the agent from the start.
    let (bot, _) = crate::agents(setup, &format!("agent-bench-{tag}-backlog"), 1).await?.remove(0);
    let (input, output) = streams(setup, &asker.1, &format!("{tag}-backlog")).await?;
    fill(args, authority, &asker.1, &input, args.entries).await?;
    let policy = format!("bench-backlog-{tag}");
    let started = Instant::now();
    bind(setup, admin, &policy, &bot, &input, &output, &wasm, &args.agent_isolation).await?;
    let (processed, failed) = caught_up(setup, admin, &policy, args.entries as i64).await?;
    let took = started.elapsed();
    // The rate while it works: first answer's commit to the last's. From
    // the upload, it also counts the host noticing the binding (up to 1 s).
    let answered = entries(setup, &asker.1, &output, "answer").await?;
    let (first, last) = (answered.first().map_or(0, ms), answered.last().map_or(0, ms));
    let working = Duration::from_millis((last - first).max(1) as u64);
    let throughput = answered.len().saturating_sub(1) as f64 / working.as_secs_f64();

    // Lag: entries offered at a steady rate, the agent bound from now.
    let (bot, _) = crate::agents(setup, &format!("agent-bench-{tag}-live"), 1).await?.remove(0);
    let (input, output) = streams(setup, &asker.1, &format!("{tag}-live")).await?;
    let policy = format!("bench-live-{tag}");
    bind(setup, admin, &policy, &bot, &input, &output, &wasm, &args.agent_isolation).await?;
    // The binding is seen within a second; wait until its cursor exists.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let offered = offer(args, authority, &asker.1, &input).await?;
    // The host closes connections idle that long: a fresh one.
    *setup = Conn::open(authority).await?;
    caught_up(setup, admin, &policy, offered as i64).await?;
    let questions = entries(setup, &asker.1, &input, "question").await?;
    let answers = entries(setup, &asker.1, &output, "answer").await?;
    let asked: std::collections::HashMap<i64, i64> =
        questions.iter().map(|q| (q["seq"].as_i64().unwrap_or(0), ms(q))).collect();
    let mut micros: Vec<u32> = answers
        .iter()
        .filter_map(|a| Some(((ms(a) - asked.get(&a["data"]["question"].as_i64()?)?).max(0) * 1000) as u32))
        .collect();
    micros.sort_unstable();
    let mut report = Report { rate: throughput, micros, ..Report::default() };
    report.connections = Some(1);
    report.notes.push(format!(
        "throughput: {processed} entries handled ({failed} failed) from a backlog: {throughput:.0} entries/s \
         from first answer to last ({:.2} s); {:.0} entries/s counting from the upload ({:.2} s)",
        working.as_secs_f64(),
        processed as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    ));
    report.notes.push(format!(
        "lag: {} answers to {offered} entries offered at {}/s for {} s; the percentiles are append-to-answer-commit",
        report.micros.len(),
        args.offered,
        args.duration
    ));
    Ok(report)
}

/// An input and an output stream, owned by the asker.
async fn streams(setup: &mut Conn, key: &str, tag: &str) -> anyhow::Result<(String, String)> {
    let mut ids = Vec::new();
    for side in ["in", "out"] {
        let body = json!({"name": format!("agent-{side}-{tag}")}).to_string();
        let made = expect("stream", 201, setup.call(Method::POST, "/stream", Some(key), Some(body)).await?)?;
        ids.push(made["stream_id"].as_str().context("no stream_id")?.to_string());
    }
    Ok((ids.remove(0), ids.remove(0)))
}

/// Uploads the agent as `policy`, acting as `bot`, answering `input` on `output`.
#[allow(clippy::too_many_arguments)]
async fn bind(
    setup: &mut Conn,
    admin: &str,
    policy: &str,
    bot: &str,
    input: &str,
    output: &str,
    wasm: &[u8],
    isolation: &str,
) -> anyhow::Result<()> {
    let settings = json!({"run_as": bot, "subscribe": [{"stream": input, "labels": ["question"]}],
        "grants": ["stash-read", "stash-write", "stream-read", "stream-write", "task-read", "contract-read", "log"],
        "writes_per_minute": 1_000_000, "isolation": isolation,
        "config": {"answer_to": output}});
    let (status, body) = setup.upload(&format!("/policies/{policy}?hook=agent"), admin, wasm, &settings).await?;
    if status != 201 {
        bail!("uploading the agent: {status} {body}");
    }
    Ok(())
}

/// Appends `n` questions to `stream` over every connection at once.
async fn fill(args: &Args, authority: &str, key: &str, stream: &str, n: usize) -> anyhow::Result<()> {
    let conns = args.connections.clamp(1, 64);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (mut conn, key, path) = (Conn::open(authority).await?, key.to_string(), format!("/stream/{stream}"));
        let mine = (c..n).step_by(conns).count();
        tasks.push(tokio::spawn(async move {
            for i in 0..mine {
                let body = json!({"label": "question", "data": {"text": format!("q{c}-{i}")}}).to_string();
                expect("append", 201, conn.call(Method::POST, &path, Some(&key), Some(body)).await?)?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Appends questions at `--offered` per second for `--duration` seconds, on
/// four connections each keeping its own schedule; how many it appended.
async fn offer(args: &Args, authority: &str, key: &str, stream: &str) -> anyhow::Result<usize> {
    const CONNS: usize = 4;
    let total = (args.offered * args.duration) as usize;
    let gap = Duration::from_secs_f64(CONNS as f64 / args.offered as f64);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (mut conn, key, path) = (Conn::open(authority).await?, key.to_string(), format!("/stream/{stream}"));
        let mine = (c..total).step_by(CONNS).count();
        let first = start + gap.mul_f64(c as f64 / CONNS as f64);
        tasks.push(tokio::spawn(async move {
            for i in 0..mine {
                tokio::time::sleep_until((first + gap * i as u32).into()).await;
                let body = json!({"label": "question", "data": {"text": "q"}}).to_string();
                expect("append", 201, conn.call(Method::POST, &path, Some(&key), Some(body)).await?)?;
            }
            anyhow::Ok(mine)
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    Ok(n)
}

/// Polls the agent's status until it has handled or failed `n` entries and
/// has no lag: (processed, failed).
async fn caught_up(setup: &mut Conn, admin: &str, policy: &str, n: i64) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, shown) = setup.call(Method::GET, &format!("/policies/{policy}"), Some(admin), None).await?;
        let sub = &shown["agent"]["subscriptions"][0];
        let (processed, failed) = (sub["processed"].as_i64().unwrap_or(0), sub["failed"].as_i64().unwrap_or(0));
        if processed + failed >= n && sub["lag"].as_i64() == Some(0) {
            return Ok((processed, failed));
        }
        if Instant::now() > deadline {
            bail!("the agent did not catch up in 10 minutes: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every entry of `stream` with `label`.
async fn entries(setup: &mut Conn, key: &str, stream: &str, label: &str) -> anyhow::Result<Vec<Value>> {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let path = format!("/stream/{stream}?label={label}&after={after}&limit=1000");
        let page = expect("entries", 200, setup.call(Method::GET, &path, Some(key), None).await?)?;
        let got = page["entries"].as_array().cloned().unwrap_or_default();
        let Some(last) = got.last() else { return Ok(all) };
        after = last["seq"].as_i64().unwrap_or(i64::MAX);
        all.extend(got);
    }
}

/// An entry's `created_at`, in ms since the epoch.
fn ms(e: &Value) -> i64 {
    e["created_at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}
