//! Scenarios in which part of the load is hostile, and what is measured is
//! how the rest is served:
//!
//! - `sse-fanout`: `--subscribers` SSE readers on one stream while
//!   `--appends` entries are appended one after another; measures
//!   `/healthz` (every 10 ms, on its own connection) meanwhile, and reports
//!   when every reader had every entry.
//! - `slow-clients`: `--slow` connections that send headers a line at a
//!   time and never finish, and `--stalled` that send part of a body and
//!   stop (each reconnecting when the host cuts it off), while
//!   `--connections` normal clients write and read stashes.
//! - `schema-heavy`: `--connections` clients writing 750 KB documents of
//!   30,000 strings that a pattern under `anyOf` checks, as fast as they
//!   are answered; measures `/healthz` meanwhile, as `sse-fanout` does.
//! - `hostile-mix`: `--requests` requests on `--connections`, three in ten
//!   oversized or amplifying; with `--server-pid`, the host's resident
//!   memory after them and at its peak.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Args, Conn, Fixture, Report, expect};

pub const SCENARIOS: &[&str] = &["sse-fanout", "slow-clients", "schema-heavy", "hostile-mix"];

pub async fn run(args: &Args, authority: &str, scenario: &str, fixture: &Fixture) -> anyhow::Result<Report> {
    match scenario {
        "sse-fanout" => fanout(args, authority, fixture).await,
        "slow-clients" => slow_clients(args, authority, fixture).await,
        "hostile-mix" => mix(args, authority, fixture).await,
        "schema-heavy" => schema_heavy(args, authority, fixture).await,
        other => anyhow::bail!("unknown scenario {other:?}"),
    }
}

async fn fanout(args: &Args, authority: &str, fixture: &Fixture) -> anyhow::Result<Report> {
    let mut setup = Conn::open(authority).await?;
    let body = json!({"name": format!("fanout-{}", std::process::id()), "create_if_missing": true}).to_string();
    let stream = expect("stream", 201, setup.call(Method::POST, "/stream", Some(&fixture.key), Some(body)).await?)?;
    let stream_id = stream["stream_id"].as_str().context("creating the fan-out stream failed")?.to_string();

    let appends = args.appends as i64;
    let mut readers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let mut tcp = TcpStream::connect(authority).await.context("connecting a subscriber")?;
        let request = format!(
            "GET /stream/{stream_id}/events HTTP/1.1\r\nHost: {authority}\r\nX-API-KEY: {}\r\n\r\n",
            fixture.key
        );
        tcp.write_all(request.as_bytes()).await?;
        readers.push(tokio::spawn(async move {
            // The highest `id:` seen; entries arrive in order.
            let (mut buf, mut last, mut chunk) = (Vec::new(), 0i64, vec![0u8; 16 * 1024]);
            while last < appends {
                let n = tcp.read(&mut chunk).await?;
                if n == 0 {
                    anyhow::bail!("a subscriber was cut off at entry {last}");
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    if let Some(id) = line.strip_prefix(b"id: ") {
                        last = std::str::from_utf8(id)?.trim().parse()?;
                    }
                }
            }
            anyhow::Ok(Instant::now())
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let probe = probe_health(authority, stop.clone()).await?;
    let started = Instant::now();
    for n in 1..=appends {
        let body = json!({"data": {"n": n}}).to_string();
        expect(
            "append",
            201,
            setup.call(Method::POST, &format!("/stream/{stream_id}"), Some(&fixture.key), Some(body)).await?,
        )?;
    }
    let mut last_delivery = started;
    let mut failed = 0u64;
    for r in readers {
        match r.await? {
            Ok(at) => last_delivery = last_delivery.max(at),
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    stop.store(true, Ordering::Release);
    let mut report = probe.await??;
    report.errors += failed;
    // The one `/healthz` connection is what the latencies are of.
    report.connections = Some(1);
    report.notes.push(format!(
        "{} subscribers had all {appends} entries {:.2} s after the first append ({failed} cut off)",
        args.subscribers - failed as usize,
        (last_delivery - started).as_secs_f64()
    ));
    Ok(report)
}

/// `/healthz` every 10 ms on one connection until `stop`.
async fn probe_health(
    authority: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Report>>> {
    let mut conn = Conn::open(authority).await?;
    Ok(tokio::spawn(async move {
        let (mut micros, mut errors, started) = (Vec::new(), 0, Instant::now());
        while !stop.load(Ordering::Acquire) {
            let t = Instant::now();
            match conn.call(Method::GET, "/healthz", None, None).await {
                Ok((200, _)) => micros.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                _ => errors += 1,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        micros.sort_unstable();
        let rate = micros.len() as f64 / started.elapsed().as_secs_f64();
        Ok(Report { rate, micros, errors, ..Report::default() })
    }))
}

async fn schema_heavy(args: &Args, authority: &str, fixture: &Fixture) -> anyhow::Result<Report> {
    let mut setup = Conn::open(authority).await?;
    let schema = format!("heavy-{}", std::process::id());
    let strings = json!({"anyOf": [{"type": "string", "pattern": "^(a|aa)*b$"}, {"type": "number"}]});
    let definition = json!({"type": "object", "properties": {"items": {"type": "array", "items": strings}}});
    let body = json!({"name": schema, "target_type": "stash", "definition": definition}).to_string();
    expect("schema", 201, setup.call(Method::POST, "/schema", Some(&fixture.key), Some(body)).await?)?;
    let items: Vec<String> = (0..30_000).map(|_| format!("{}b", "a".repeat(24))).collect();
    let doc = Arc::new(json!({"items": items}).to_string());

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..args.connections {
        let (authority, key, schema, doc, stop) =
            (authority.to_string(), fixture.key.clone(), schema.clone(), doc.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = Conn::open(&authority).await?;
            let (mut written, mut refused) = (0u64, 0u64);
            while !stop.load(Ordering::Acquire) {
                match conn.put(&format!("/stash/heavy-{w}?schema={schema}"), &key, &doc).await? {
                    200 | 201 => written += 1,
                    _ => refused += 1,
                }
            }
            anyhow::Ok((written, refused))
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let probe = probe_health(authority, stop.clone()).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Release);
    let mut report = probe.await??;
    let (mut written, mut refused) = (0, 0);
    for w in writers {
        let (ok, no) = w.await??;
        written += ok;
        refused += no;
    }
    report.connections = Some(1);
    report.notes.push(format!(
        "{} writers validated {written} documents of 30,000 patterned strings ({:.1}/s), {refused} refused",
        args.connections,
        written as f64 / started.elapsed().as_secs_f64()
    ));
    Ok(report)
}

async fn slow_clients(args: &Args, authority: &str, fixture: &Fixture) -> anyhow::Result<Report> {
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicU64::new(0));
    let mut hostile = Vec::new();
    for i in 0..args.slow + args.stalled {
        let (authority, key, stop, cut) = (authority.to_string(), fixture.key.clone(), stop.clone(), cut.clone());
        let stalls_body = i >= args.slow;
        hostile.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let Ok(mut tcp) = TcpStream::connect(&authority).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let head = if stalls_body {
                    format!(
                        "PUT /stash/stalled-{i} HTTP/1.1\r\nHost: {authority}\r\nX-API-KEY: {key}\r\n\
                         Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\npart of a body"
                    )
                } else {
                    format!("GET /healthz HTTP/1.1\r\nHost: {authority}\r\n")
                };
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                let mut sink = [0u8; 4096];
                loop {
                    tokio::select! {
                        read = tcp.read(&mut sink) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        },
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            if stop.load(Ordering::Acquire) {
                                return;
                            }
                            // The slow ones trickle a header line a second.
                            if !stalls_body && tcp.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                cut.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let the hostile connections pile up before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut report = crate::run(args, authority, "stash-write", fixture).await?;
    stop.store(true, Ordering::Release);
    for h in hostile {
        h.abort();
    }
    report.notes.push(format!(
        "{} slow header senders and {} stalled bodies, reconnecting when cut off: cut off {} times",
        args.slow,
        args.stalled,
        cut.load(Ordering::Relaxed)
    ));
    Ok(report)
}

async fn mix(args: &Args, authority: &str, fixture: &Fixture) -> anyhow::Result<Report> {
    let mut setup = Conn::open(authority).await?;
    let key = fixture.key.clone();
    expect_ok("text", setup.put("/stash/mix-text", &key, &"a".repeat(500_000)).await?)?;
    let items: Vec<_> = (0..10_000).map(|_| json!({})).collect();
    expect_ok("doc", setup.put("/stash/mix-doc", &key, &json!({"items": items}).to_string()).await?)?;
    let oversized = Arc::new("x".repeat((1 << 20) + 1024));
    let started = Instant::now();
    let mut workers = Vec::new();
    let per = args.connections.max(1);
    for w in 0..per {
        let (authority, key, stream_id, oversized) =
            (authority.to_string(), key.clone(), fixture.stream_id.clone(), oversized.clone());
        let requests = args.requests;
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open(&authority).await?;
            let (mut micros, mut errors) = (Vec::new(), 0u64);
            for i in (w..requests).step_by(per) {
                let t = Instant::now();
                let kind = i % 10;
                let status = match kind {
                    // Over the ephemeral stash limit.
                    0 => conn.put(&format!("/stash/mix-over-{w}"), &key, &oversized).await,
                    // A replace whose result would be 1 GB.
                    1 => {
                        let body = json!({"old": "a", "new": "b".repeat(2_000)}).to_string();
                        conn.call(Method::PATCH, "/stash/mix-text/replace?all=true", Some(&key), Some(body))
                            .await
                            .map(|r| r.0)
                    }
                    // A `set` matched by 10,000 items.
                    2 => {
                        let body =
                            json!({"update_items": [{"path": "items", "set": {"x": "y".repeat(100_000)}}]}).to_string();
                        conn.call(Method::PATCH, "/stash/mix-doc/json", Some(&key), Some(body)).await.map(|r| r.0)
                    }
                    3 => {
                        let body = json!({"data": {"i": i, "pad": "p".repeat(4_000)}}).to_string();
                        conn.call(Method::POST, &format!("/stream/{stream_id}"), Some(&key), Some(body))
                            .await
                            .map(|r| r.0)
                    }
                    4 | 5 => conn.put(&format!("/stash/mix-{w}"), &key, &i.to_string()).await,
                    6 => conn.get_raw(&format!("/stream/{stream_id}?limit=100"), &key).await,
                    _ => conn.get_raw(&format!("/stash/mix-{w}"), &key).await,
                };
                let expected: &[u16] = match kind {
                    0..=2 => &[413],
                    3 => &[201],
                    4 | 5 => &[200, 201],
                    _ => &[200, 404],
                };
                match status {
                    Ok(status) if expected.contains(&status) => {
                        micros.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Ok(_) => errors += 1,
                    // An oversized body refused before it is read can close
                    // the connection under the client's feet.
                    Err(_) => {
                        errors += 1;
                        conn = Conn::open(&authority).await?;
                    }
                }
            }
            anyhow::Ok((micros, errors))
        }));
    }
    let mut report = Report::default();
    for w in workers {
        let (micros, errors) = w.await??;
        report.micros.extend(micros);
        report.errors += errors;
    }
    report.micros.sort_unstable();
    report.rate = report.micros.len() as f64 / started.elapsed().as_secs_f64();
    if let Some(pid) = args.server_pid {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading the host's /proc status")?;
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        report.notes.push(format!(
            "host memory after {} requests: {} resident, {} at peak",
            args.requests,
            field("VmRSS:"),
            field("VmHWM:")
        ));
    }
    Ok(report)
}

fn expect_ok(what: &str, status: u16) -> anyhow::Result<()> {
    anyhow::ensure!(status == 200 || status == 201, "{what}: {status}");
    Ok(())
}
