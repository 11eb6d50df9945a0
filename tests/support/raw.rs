//! Raw HTTP/1.1 exchanges, for what a client library would hide: answers
//! given before the request was sent whole, and connections the server
//! closes.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Server;

/// How one raw exchange ended.
#[derive(Debug)]
pub enum Ended {
    /// The server closed the connection, after sending these bytes.
    Closed(Vec<u8>),
    /// Still open when the test stopped waiting.
    Open(Vec<u8>),
}

/// Sends `request` on a new connection and reads until the server closes
/// it or `wait` passes. The request is written alongside the read, since
/// the server may answer (and close) before it has read it all.
pub async fn exchange(server: &Server, request: Vec<u8>, wait: Duration) -> Ended {
    let tcp = TcpStream::connect(authority(server)).await.expect("connect");
    let (mut rx, mut tx) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let _ = tx.write_all(&request).await;
        // Keep the write half open: a client that stops sending is the case.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(tx);
    });
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 16 * 1024];
    let ended = loop {
        match tokio::time::timeout_at(deadline, rx.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Ended::Closed(answer),
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => break Ended::Open(answer),
        }
    };
    writer.abort();
    ended
}

pub fn authority(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// The status and JSON body of a raw HTTP/1.1 answer.
pub fn parse_answer(what: &str, answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no complete answer: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{what}: {head}"));
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{what}: not JSON: {head}");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {body:?}"));
    (status, body)
}

/// The status and body of an answer after which the server closed.
pub fn closed_with(what: &str, ended: Ended) -> (u16, Value) {
    match ended {
        Ended::Closed(answer) => parse_answer(what, &answer),
        Ended::Open(answer) => panic!("{what}: still open, having sent {:?}", String::from_utf8_lossy(&answer)),
    }
}

/// Sends only the head of `method path` with `key`, declaring a body of
/// `length` bytes that never comes, and gives the status and JSON body the
/// server answered with before closing.
pub async fn declared_only(
    server: &Server,
    method_path: &str,
    key: &str,
    content_type: &str,
    length: u64,
) -> (u16, Value) {
    let head = format!(
        "{method_path} HTTP/1.1\r\nHost: x\r\nX-API-KEY: {key}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    );
    closed_with(method_path, exchange(server, head.into_bytes(), Duration::from_secs(30)).await)
}
