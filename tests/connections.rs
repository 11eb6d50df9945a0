//! The listener against hostile and heavy clients: requests that never
//! finish, more connections than the host can hold, heads hyper cannot
//! parse, and the loads the host must carry while that goes on. Each
//! test fails without the listener's limits (axum's own `serve` has none).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::raw::{Ended, authority, closed_with, exchange, parse_answer};
use crate::support::{Backend, Server, SseReader};

on_both_backends!(two_thousand_subscribers_each_receive_every_entry, memory_stays_bounded_under_hostile_bodies);

/// hyper answers heads it cannot parse by itself, with an empty body.
/// Those answers carry the JSON error body like every other.
#[tokio::test]
async fn unparseable_requests_get_json_errors() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let many: String = (0..150).map(|i| format!("X-Extra-{i}: y\r\n")).collect();
    let cases = [
        (
            "a 1 MB header",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)).into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "150 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes(),
            431,
            "headers_too_large",
        ),
        ("invalid UTF-8 in the path", b"GET /stash/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "bad_request"),
        (
            "a 70 KB path",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            "a bad Content-Length",
            b"PUT /stash/x HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
    ];
    for (what, request, status, code) in cases {
        let (got, body) = closed_with(what, exchange(&server, request, Duration::from_secs(30)).await);
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
    // The router's own errors are untouched.
    let (status, body) = closed_with(
        "an unknown route",
        exchange(
            &server,
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            Duration::from_secs(30),
        )
        .await,
    );
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
}

/// Headers that never finish close the connection; a body that never
/// finishes gets 408 `request_timeout`, and nothing is written.
#[tokio::test]
async fn half_sent_requests_are_cut_off() {
    let args = ["--header-read-timeout", "1", "--body-read-timeout", "1"];
    let Some(server) = Server::start_with(Backend::Sqlite, &args).await else { return };
    let agent = server.register("staller").await;

    let wait = Duration::from_secs(30);
    match exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec(), wait).await {
        Ended::Closed(answer) => assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer)),
        Ended::Open(_) => panic!("a connection whose headers never finish stayed open"),
    }
    let stalled = format!(
        "PUT /stash/stalled HTTP/1.1\r\nHost: x\r\nX-API-KEY: {}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nabc",
        agent.key
    );
    let (status, body) = closed_with("a stalled body", exchange(&server, stalled.into_bytes(), wait).await);
    assert_eq!((status, body["error"]["code"].as_str()), (408, Some("request_timeout")), "{body}");
    server.as_agent(&agent).get("/stash/stalled").await.expect(404);
    // The half-sent head, and any kept-alive connection left idle.
    assert!(server.metric("cairn_http_connections_cut_total{reason=\"header_timeout\"}").await >= 1.0);
}

/// On a host with a low open-file limit, idle half-sent requests took every
/// descriptor and locked all clients out. The connection cap now fits under
/// the limit, and each newcomer closes the connection idle longest.
#[tokio::test]
async fn half_sent_requests_cannot_lock_clients_out() {
    // 512 descriptors: the cap becomes 256 (the rest is kept for the host).
    let Some(server) = Server::start_with_open_files(Backend::Sqlite, 512, &["--header-read-timeout", "600"]).await
    else {
        return;
    };
    let mut held = Vec::new();
    for _ in 0..600 {
        let mut tcp = TcpStream::connect(authority(&server)).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("send");
        held.push(tcp);
    }
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    for _ in 0..5 {
        let answer = tokio::time::timeout(Duration::from_secs(30), fresh.get(format!("{}/healthz", server.url)).send())
            .await
            .expect("/healthz did not answer with 600 half-sent requests open")
            .expect("/healthz");
        assert_eq!(answer.status(), 200);
    }
    // The oldest were closed to make room.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), held[0].read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the oldest idle connection is still open: {read:?}");
    let evicted = server.metric("cairn_http_connections_cut_total{reason=\"evicted\"}").await;
    assert!(evicted >= 600.0 - 256.0, "{evicted} connections evicted");
    let open = server.metric("cairn_http_connections").await;
    assert!(open <= 256.0, "{open} connections open over a cap of 256");
}

/// When every connection at the cap is busy, a newcomer gets a JSON 503
/// with `Retry-After`; room comes back as busy connections end.
#[tokio::test]
async fn a_host_whose_connections_are_all_busy_answers_503() {
    let Some(server) = Server::start_with(Backend::Sqlite, &["--max-connections", "4"]).await else { return };
    let agent = server.register("lurker").await;
    let me = server.as_agent(&agent);
    let id =
        me.post("/stream", json!({"name": "busy"})).await.expect(201).json()["stream_id"].as_str().unwrap().to_string();
    let mut live = Vec::new();
    for _ in 0..4 {
        let r = me.req(reqwest::Method::GET, &format!("/stream/{id}/events")).send().await.expect("subscribe");
        live.push(SseReader::new(r));
    }
    let ended = exchange(
        &server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        Duration::from_secs(30),
    )
    .await;
    let Ended::Closed(answer) = ended else { panic!("a fifth connection was neither served nor refused: {ended:?}") };
    let (status, body) = parse_answer("a fifth connection", &answer);
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(String::from_utf8_lossy(&answer).to_ascii_lowercase().contains("retry-after: 1"));

    live.pop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    loop {
        let r = fresh.get(format!("{}/healthz", server.url)).send().await.expect("/healthz");
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no room came back after a subscriber left: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(live);
    assert!(server.metric("cairn_http_connections_cut_total{reason=\"refused\"}").await >= 1.0);
}

/// 2,000 subscribers on one stream each receive every entry of 100
/// appends, and `/healthz` keeps answering meanwhile.
async fn two_thousand_subscribers_each_receive_every_entry(backend: Backend) {
    const SUBSCRIBERS: usize = 2000;
    const APPENDS: i64 = 100;
    let Some(server) = Server::start(backend).await else { return };
    let agent = server.register("broadcaster").await;
    let me = server.as_agent(&agent);
    let id = me.post("/stream", json!({"name": "fanout"})).await.expect(201).json()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();

    let url = format!("{}/stream/{id}/events", server.url);
    let mut subscribing = tokio::task::JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let (http, url, key) = (server.http.clone(), url.clone(), agent.key.clone());
        subscribing.spawn(async move {
            SseReader::new(http.get(&url).header("X-API-KEY", key).send().await.expect("subscribe"))
        });
    }
    let mut readers = Vec::with_capacity(SUBSCRIBERS);
    while let Some(reader) = subscribing.join_next().await {
        readers.push(reader.expect("subscriber"));
    }

    let health = {
        let url = format!("{}/healthz", server.url);
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            let mut answered = 0usize;
            loop {
                let r = http.get(&url).send().await.expect("/healthz");
                assert_eq!(r.status(), 200, "/healthz during the fan-out");
                answered += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if answered == usize::MAX {
                    return answered;
                }
            }
        })
    };
    for i in 1..=APPENDS {
        me.post(&format!("/stream/{id}"), json!({"data": {"i": i}})).await.expect(201);
    }
    let mut receiving = tokio::task::JoinSet::new();
    for mut reader in readers {
        receiving.spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < APPENDS as usize {
                let Some(event) = reader.next_within(Duration::from_secs(120)).await else { break };
                seen.push(event.data["seq"].as_i64().unwrap_or(-1));
            }
            seen
        });
    }
    let expected: Vec<i64> = (1..=APPENDS).collect();
    while let Some(seen) = receiving.join_next().await {
        assert_eq!(seen.expect("subscriber"), expected, "a subscriber missed entries or saw them out of order");
    }
    assert!(!health.is_finished(), "/healthz failed during the fan-out");
    health.abort();
}

/// 500 slow header senders and 50 stalled bodies hold no slot for good:
/// 16 normal clients are served throughout, every slow header sender is
/// disconnected and every stalled body gets 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hold_the_host() {
    const SLOW: usize = 500;
    const STALLED: usize = 50;
    const NORMAL: usize = 16;
    const REQUESTS: usize = 25;
    let args = ["--header-read-timeout", "3", "--body-read-timeout", "3"];
    let Some(server) = Server::start_with(Backend::Sqlite, &args).await else { return };
    let agent = server.register("regular").await;

    let mut slow = tokio::task::JoinSet::new();
    for i in 0..SLOW {
        let addr = authority(&server);
        slow.spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("send");
            // A header byte now and then, never the end of the head.
            let mut byte = [0u8; 1];
            loop {
                tokio::select! {
                    read = tcp.read(&mut byte) => return matches!(read, Ok(0) | Err(_)),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if tcp.write_all(format!("X-{i}: y\r\n").as_bytes()).await.is_err() {
                            return true;
                        }
                    }
                }
            }
        });
    }
    let mut stalled = tokio::task::JoinSet::new();
    for i in 0..STALLED {
        let request = format!(
            "PUT /stash/stalled-{i} HTTP/1.1\r\nHost: x\r\nX-API-KEY: {}\r\nContent-Type: text/plain\r\n\
             Content-Length: 1000\r\n\r\nthe first few bytes",
            agent.key
        );
        let server_url = server.url.clone();
        stalled.spawn(async move {
            let tcp = TcpStream::connect(server_url.trim_start_matches("http://")).await.expect("connect");
            let (mut rx, mut tx) = tcp.into_split();
            tx.write_all(request.as_bytes()).await.expect("send");
            let mut answer = Vec::new();
            let _ = rx.read_to_end(&mut answer).await;
            drop(tx);
            answer
        });
    }

    let mut normal = tokio::task::JoinSet::new();
    for n in 0..NORMAL {
        let (http, url, key) = (reqwest::Client::new(), server.url.clone(), agent.key.clone());
        normal.spawn(async move {
            for i in 0..REQUESTS {
                let path = format!("{url}/stash/normal-{n}-{i}");
                let put = http.put(&path).header("X-API-KEY", &key).header("Content-Type", "text/plain").body("hi");
                assert_eq!(put.send().await.expect("put").status(), 201);
                let got = http.get(&path).header("X-API-KEY", &key).send().await.expect("get");
                assert_eq!(got.status(), 200);
            }
        });
    }
    while let Some(done) = normal.join_next().await {
        done.expect("a normal client failed while slow clients were connected");
    }

    let wait = Duration::from_secs(60);
    let slow_closed = tokio::time::timeout(wait, async {
        let mut closed = 0;
        while let Some(done) = slow.join_next().await {
            closed += usize::from(done.expect("slow client"));
        }
        closed
    })
    .await
    .expect("slow header senders were still connected a minute later");
    assert_eq!(slow_closed, SLOW);
    let answers = tokio::time::timeout(wait, async {
        let mut answers = Vec::new();
        while let Some(done) = stalled.join_next().await {
            answers.push(done.expect("stalled client"));
        }
        answers
    })
    .await
    .expect("stalled bodies were still connected a minute later");
    for answer in answers {
        let (status, body) = parse_answer("a stalled body", &answer);
        assert_eq!((status, body["error"]["code"].as_str()), (408, Some("request_timeout")), "{body}");
    }
}

/// 10,000 requests, three in ten of them oversized or amplifying, keep the
/// server's resident memory under 256 MiB throughout.
async fn memory_stays_bounded_under_hostile_bodies(backend: Backend) {
    const REQUESTS: usize = 10_000;
    const WORKERS: usize = 8;
    let Some(server) = Server::start(backend).await else { return };
    let agent = server.register("heavy").await;
    let me = server.as_agent(&agent);
    me.put_text("/stash/text", &"a".repeat(500_000)).await.expect(201);
    let items: Vec<_> = (0..10_000).map(|_| json!({})).collect();
    me.put_text("/stash/doc", &json!({"items": items}).to_string()).await.expect(201);
    let stream =
        me.post("/stream", json!({"name": "big"})).await.expect(201).json()["stream_id"].as_str().unwrap().to_string();

    let oversized = std::sync::Arc::new("x".repeat((1 << 20) + 1024));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (http, url, key, stream, oversized) =
            (server.http.clone(), server.url.clone(), agent.key.clone(), stream.clone(), oversized.clone());
        workers.spawn(async move {
            for i in (w..REQUESTS).step_by(WORKERS) {
                let req = match i % 10 {
                    // Over the ephemeral stash limit.
                    0 => http
                        .put(format!("{url}/stash/over-{w}"))
                        .header("Content-Type", "text/plain")
                        .body((*oversized).clone()),
                    // A replace whose result would be 1 GB.
                    1 => http
                        .patch(format!("{url}/stash/text/replace?all=true"))
                        .json(&json!({"old": "a", "new": "b".repeat(2_000)})),
                    // A `set` matched by 10,000 items.
                    2 => http
                        .patch(format!("{url}/stash/doc/json"))
                        .json(&json!({"update_items": [{"path": "items", "set": {"x": "y".repeat(100_000)}}]})),
                    3 => http
                        .post(format!("{url}/stream/{stream}"))
                        .json(&json!({"data": {"i": i, "pad": "p".repeat(4_000)}})),
                    4 | 5 => http
                        .put(format!("{url}/stash/small-{w}"))
                        .header("Content-Type", "text/plain")
                        .body(format!("{i}")),
                    6 => http.get(format!("{url}/stream/{stream}?after=0&limit=100")),
                    _ => http.get(format!("{url}/stash/small-{w}")),
                };
                let status = match req.header("X-API-KEY", &key).send().await {
                    Ok(r) => r.status().as_u16(),
                    // A refused oversized body may reset the connection
                    // before the client has read the 413.
                    Err(e) if i % 10 == 0 => {
                        assert!(e.is_request() || e.is_body() || e.is_connect(), "{e}");
                        413
                    }
                    Err(e) => panic!("request {i}: {e}"),
                };
                let expected: &[u16] = match i % 10 {
                    0..=2 => &[413],
                    3 => &[201],
                    4 | 5 => &[200, 201],
                    _ => &[200, 404],
                };
                assert!(expected.contains(&status), "request {i} ({}) answered {status}", i % 10);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    let memory = server.memory_mib();
    eprintln!(
        "server memory after {REQUESTS} mixed requests: {} MiB resident, {} MiB at peak",
        memory.now, memory.peak
    );
    // The peak, not only what is left: the allocator gives a burst back.
    assert!(memory.peak < 256, "the server peaked at {} MiB during {REQUESTS} requests", memory.peak);
    assert!(memory.now < 256, "the server holds {} MiB after {REQUESTS} requests", memory.now);
}
