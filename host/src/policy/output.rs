//! A guest's stdout and stderr, kept up to a cap per decision.
//!
//! Bytes past the cap are counted and dropped, never refused: a refused
//! write fails the guest's own `print` (a Rust panic, a Python exception),
//! and a policy that logs too much would then deny every claim.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Always reported as free room, so a guest never waits to write.
const ROOM: usize = 64 * 1024;

#[derive(Clone)]
pub struct CappedPipe {
    capacity: usize,
    captured: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

impl CappedPipe {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, captured: Arc::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Captured) -> T) -> T {
        f(&mut self.captured.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn push(&self, bytes: &[u8]) {
        let capacity = self.capacity;
        self.with(|c| {
            let keep = bytes.len().min(capacity.saturating_sub(c.kept.len()));
            c.kept.extend_from_slice(&bytes[..keep]);
            c.dropped += bytes.len() - keep;
        });
    }

    /// Bytes kept so far.
    pub fn len(&self) -> usize {
        self.with(|c| c.kept.len())
    }

    /// What was written from byte `from` on, as text; when bytes were
    /// dropped, a last line says how many.
    pub fn text_from(&self, from: usize) -> String {
        self.with(|c| {
            let mut text = String::from_utf8_lossy(c.kept.get(from..).unwrap_or_default()).into_owned();
            if c.dropped > 0 {
                text.push_str(&format!("\n[cairn: {} more bytes were written and not kept]\n", c.dropped));
            }
            text
        })
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(ROOM)
    }
}

// By hand what `#[async_trait]` would write: always ready.
impl Pollable for CappedPipe {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl AsyncWrite for CappedPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let mut pipe = CappedPipe::new(10);
        assert_eq!(pipe.check_write().ok(), Some(ROOM));
        pipe.write(Bytes::from_static(b"hello ")).unwrap();
        pipe.write(Bytes::from_static(b"world, again")).unwrap();
        assert_eq!(pipe.len(), 10);
        assert_eq!(pipe.text_from(0), "hello worl\n[cairn: 8 more bytes were written and not kept]\n");
        assert_eq!(pipe.check_write().ok(), Some(ROOM), "a full pipe still takes writes");
    }
}
