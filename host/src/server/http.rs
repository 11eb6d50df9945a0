//! The HTTP/1 listener. axum's `serve` has no read timeouts and no cap on
//! connections, so one slow or half-sent request per file descriptor can
//! lock every client out. This accept loop drives hyper itself:
//!
//! - request headers must arrive within the header timeout, which also
//!   bounds how long a kept-alive connection may idle;
//! - a request body must arrive within the body timeout once reading starts
//!   (a late body is a 408 from the extractor that reads it);
//! - at most `max_connections` are open. At the cap a newcomer closes the
//!   connection idle longest (no request in progress: a slow header sender
//!   or a kept-alive idler), so `/healthz` still answers; when every
//!   connection is busy the newcomer gets a JSON 503;
//! - hyper answers unparseable heads itself, with an empty body; those
//!   answers are rewritten to the JSON error body (see [`JsonHeadErrors`]).
//!
//! On shutdown it stops accepting, lets each connection finish the request
//! it is serving, and returns once every connection has closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::error::{BodyTimedOut, Error};
use crate::ops::{Cut, Metrics};

/// What one client may hold of the host.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

/// Refusals still being written at once; past this a refused connection is
/// closed without an answer, so refusing never costs more descriptors.
const MAX_REFUSING: usize = 64;

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
/// `stopping` is the app's stop signal, sent when draining starts so live
/// (SSE) responses end.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    stop: watch::Sender<bool>,
) {
    let conns = Arc::new(Conns::new(limits.max_connections, metrics.clone()));
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let stopping = stop.subscribe();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(conn) = conns.admit() else {
            metrics.cut(Cut::Refused);
            refuse(tcp, &refusing);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (conns, http, router, stopping) = (conns.clone(), http.clone(), router.clone(), stopping.clone());
        tokio::spawn(async move { run(tcp, conn, &conns, http, router, limits, stopping).await });
    }
    drop(listener);
    tracing::info!(connections = conns.len(), "shutting down: finishing in-flight requests");
    let _ = stop.send(true);
    conns.closed().await;
}

/// One connection, until it closes, is evicted, or the host stops.
async fn run(
    tcp: TcpStream,
    conn: Arc<Conn>,
    conns: &Conns,
    http: hyper::server::conn::http1::Builder,
    router: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let io = TokioIo::new(JsonHeadErrors::new(tcp, conn.clone()));
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = Busy::enter(&conn);
            let req = req.map(|body| Body::new(Deadline::new(body, limits.body_read_timeout)));
            let router = router.clone();
            async move {
                let res = router.oneshot(req).await;
                res.map(|res| res.map(|body| Body::new(Guarded { inner: body, _busy: busy })))
            }
        })
    };
    let served = http.serve_connection(io, service);
    tokio::pin!(served);
    let mut draining = false;
    let result = loop {
        tokio::select! {
            result = served.as_mut() => break result,
            () = conn.evicted.notified(), if !draining => {
                // Checked on this task, between polls of the connection, so
                // no request can have started since.
                if conn.busy.load(Ordering::Acquire) == 0 {
                    break Ok(());
                }
                served.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = stopping.wait_for(|stop| *stop), if !draining => {
                served.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            conns.metrics.cut(Cut::HeaderTimeout);
        }
        tracing::debug!("connection ended: {e}");
    }
    conns.remove(conn.id);
}

/// Answers a connection over the cap with 503 and closes it. The answer
/// waits for the request's head (clients treat bytes that come before their
/// request as a broken connection), and the rest is drained briefly after
/// it: closing a socket with unread input resets it, which could discard
/// the answer before the client reads it.
fn refuse(mut tcp: TcpStream, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let error =
            Error::unavailable("the host is at its connection limit and every connection is busy; retry shortly", 1);
        let answer = raw_response(&error);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match tcp.read(&mut chunk).await? {
                    0 => break,
                    n => head.extend_from_slice(&chunk[..n]),
                }
            }
            tcp.write_all(&answer).await?;
            tcp.shutdown().await?;
            let mut left: usize = 64 * 1024;
            while left > 0 {
                match tcp.read(&mut chunk).await? {
                    0 => break,
                    n => left = left.saturating_sub(n),
                }
            }
            io::Result::Ok(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Accept errors are about one connection (reset before accept) or about
/// the process (out of descriptors). Neither ends the server; the second
/// gets a pause so the loop does not spin while nothing can be accepted.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    tracing::warn!("cannot accept connections: {e}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A whole HTTP/1.1 response carrying `error`'s JSON body, closing the
/// connection.
fn raw_response(error: &Error) -> Vec<u8> {
    let body = error.body().to_string();
    let status = error.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(seconds) = error.retry_after() {
        head.push_str(&format!("retry-after: {seconds}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The open connections.
struct Conns {
    max: usize,
    metrics: Arc<Metrics>,
    open: Mutex<Open>,
    next_id: AtomicU64,
    epoch: Instant,
    empty: Notify,
}

#[derive(Default)]
struct Open {
    conns: HashMap<u64, Arc<Conn>>,
    /// Of `conns`, those told to close that have not closed yet; they no
    /// longer count toward the cap.
    evicting: usize,
}

struct Conn {
    id: u64,
    /// Requests being served, counting a response until its body is done.
    busy: AtomicUsize,
    /// When `busy` last fell to zero, in milliseconds since `Conns::epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
    evicting: std::sync::atomic::AtomicBool,
    evicted: Notify,
}

impl Conns {
    fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max: max.max(1),
            metrics,
            open: Mutex::new(Open::default()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            empty: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// A slot for a new connection, evicting the connection idle longest
    /// when at the cap; `None` when every connection is busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut open = self.lock();
        if open.conns.len() - open.evicting >= self.max {
            let idlest = open
                .conns
                .values()
                .filter(|c| !c.evicting.load(Ordering::Acquire) && c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.idle_since.load(Ordering::Acquire))?
                .clone();
            idlest.evicting.store(true, Ordering::Release);
            open.evicting += 1;
            self.metrics.cut(Cut::Evicted);
            // A stored permit: the connection's task sees it even if it is
            // not waiting right now.
            idlest.evicted.notify_one();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(millis_since(self.epoch)),
            epoch: self.epoch,
            evicting: std::sync::atomic::AtomicBool::new(false),
            evicted: Notify::new(),
        });
        open.conns.insert(id, conn.clone());
        self.metrics.connections(1);
        Some(conn)
    }

    fn remove(&self, id: u64) {
        let mut open = self.lock();
        if let Some(conn) = open.conns.remove(&id) {
            self.metrics.connections(-1);
            if conn.evicting.load(Ordering::Acquire) {
                open.evicting -= 1;
            }
        }
        if open.conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    async fn closed(&self) {
        loop {
            let notified = self.empty.notified();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Marks its connection busy while a request is served and its response
/// body is being sent.
struct Busy(Arc<Conn>);

impl Busy {
    fn enter(conn: &Arc<Conn>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Self(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(millis_since(self.0.epoch), Ordering::Release);
        }
    }
}

/// A response body that keeps its connection marked busy until it is done.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must arrive within `after` of the first read.
struct Deadline {
    inner: Incoming,
    after: Duration,
    started: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    fn new(inner: Incoming, after: Duration) -> Self {
        Self { inner, after, started: None, timer: None }
    }
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        // The timer is made only for bodies that make us wait.
        let after = this.after;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until((started + after).into())));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut { after }))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, rewriting hyper's own answers to heads it
/// cannot parse (400, 414, 431, sent with an empty body) into the JSON
/// error body. Those answers are recognised as what they are: an error
/// status with `content-length: 0` written while no request is being
/// served; every answer the router gives has a body. (hyper 1.12 offers no
/// hook for them: hyperium/hyper#3911.)
struct JsonHeadErrors {
    inner: TcpStream,
    conn: Arc<Conn>,
    /// A rewritten answer not yet fully written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl JsonHeadErrors {
    fn new(inner: TcpStream, conn: Arc<Conn>) -> Self {
        Self { inner, conn, pending: None }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// The JSON answer replacing `head`, if `head` is one of hyper's own.
    fn rewrite(&self, head: &[u8]) -> Option<Vec<u8>> {
        if self.conn.busy.load(Ordering::Acquire) != 0 {
            return None;
        }
        let rest = head.strip_prefix(b"HTTP/1.1 ")?;
        let status = std::str::from_utf8(rest.get(..3)?).ok()?;
        let error = match status {
            "400" => Error::bad_request(
                "the request line or a header could not be parsed: send an HTTP/1.1 request whose path is \
                 ASCII (percent-encode anything else) and whose headers are well formed",
            ),
            "414" => Error::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                "the request's path and query are too long; send large inputs in the body",
            ),
            "431" => Error::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request's headers are too many (over 100) or too large (over ~400 KB); send fewer, smaller ones",
            ),
            _ => return None,
        };
        let bodiless = head.windows(21).any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
        bodiless.then(|| raw_response(&error))
    }
}

impl AsyncRead for JsonHeadErrors {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonHeadErrors {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = self.rewrite(buf) {
            self.pending = Some((answer, 0));
            // The rest is written by the flush hyper sends next.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(answer) = self.rewrite(first)
        {
            let len = first.len();
            self.pending = Some((answer, 0));
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(len));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft open-file limit toward what `max_connections` needs and
/// returns the cap that fits under it (some descriptors are kept for the
/// database, the policy cache and logs).
pub fn fit_connections(max_connections: usize) -> usize {
    const RESERVED: u64 = 256;
    let wanted = max_connections as u64 + RESERVED;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return max_connections;
    };
    let mut soft = soft;
    if soft < wanted {
        let raised = hard.map_or(wanted, |hard| hard.min(wanted));
        let new = rustix::process::Rlimit { current: Some(raised), maximum: hard };
        if rustix::process::setrlimit(rustix::process::Resource::Nofile, new).is_ok() {
            soft = raised;
        }
    }
    let fits = usize::try_from(soft.saturating_sub(RESERVED).max(1)).unwrap_or(usize::MAX);
    if fits < max_connections {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            "lowering --max-connections to {fits} to fit the open file limit; raise `ulimit -n` to allow more"
        );
    }
    fits.min(max_connections)
}
