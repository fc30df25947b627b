//! One connection's life: hyper's HTTP/1.1 over any stream, with two clocks
//! hyper does not offer separately and a graceful end.
//!
//! - **Request timeout**: from the first byte of a request to its answer; a
//!   client that trickles headers or a body (slowloris) is cut off.
//! - **Idle timeout**: a keep-alive connection with no request in progress.
//!   It is longer than client-go's 90 s `IdleConnTimeout`, so kube-apiserver
//!   closes its idle connections before staticpin does and never writes a
//!   request into a connection the server is closing.
//! - **Drain**: on shutdown, hyper's `graceful_shutdown` answers the request
//!   in progress, then closes; an idle connection closes at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// The two clocks of a connection (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From a request's first byte to its answer.
    pub request: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle: Duration,
}

/// When the connection last moved, and since when a request has been coming in.
struct Clock {
    base: Instant,
    /// Milliseconds since `base` of the last read or write.
    last: AtomicU64,
    /// Milliseconds since `base` (plus one, so 0 means none) when the first
    /// byte of the current request arrived.
    busy_since: AtomicU64,
}

impl Clock {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The stream, noting reads and writes on the [`Clock`].
struct Watched<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.clock.now();
            self.clock.last.store(now, Ordering::Relaxed);
            let _ = self.clock.busy_since.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            // An answer is going out: the request it answers is complete.
            self.clock.last.store(self.clock.now(), Ordering::Relaxed);
            self.clock.busy_since.store(0, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.last.store(self.clock.now(), Ordering::Relaxed);
            self.clock.busy_since.store(0, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves HTTP/1.1 on `stream` until the client leaves, a clock runs out, or
/// a drain (`shutdown` turning true) has let the request in progress finish.
pub async fn serve<T, F, Fut, B>(
    stream: T,
    handler: F,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let clock = Arc::new(Clock {
        base: Instant::now(),
        last: AtomicU64::new(0),
        busy_since: AtomicU64::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        clock: clock.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our own clocks above replace hyper's header timer, which would also
    // close idle keep-alive connections after the same short time.
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service_fn(handler));
    tokio::pin!(conn);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let tick = Duration::from_millis(250)
        .min(timeouts.request / 4)
        .max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
                return;
            }
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = ticker.tick() => {
                let now = clock.now();
                let busy = clock.busy_since.load(Ordering::Relaxed);
                if busy != 0 && now.saturating_sub(busy - 1) > millis(timeouts.request) {
                    tracing::info!(
                        "closing the connection from {peer}: no complete request within {:?}",
                        timeouts.request
                    );
                    return;
                }
                if busy == 0 && now.saturating_sub(clock.last.load(Ordering::Relaxed)) > millis(timeouts.idle) {
                    tracing::debug!("closing the idle connection from {peer}");
                    return;
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
