//! Bounds on Redfish connections, below HTTP so they hold for HTTP/1.1 keep-alive, HTTP/2
//! and TLS handshakes alike: at most `max` open at once (one more is closed at accept), and a
//! connection with no bytes in either direction for `idle` while no request is being handled
//! is closed. hyper has no idle timeout for a kept-alive HTTP/1.1 connection between
//! requests nor for an HTTP/2 connection (its keep-alive pings only detect dead peers), so
//! without this every client could keep sockets open for ever.
//!
//! The accepted stream also hands the peer address to the service (as axum's
//! `ConnectInfo`), which the failed-login throttle keys on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The acceptor: counts connections and wraps each one.
#[derive(Clone)]
pub struct Guard {
    permits: Arc<Semaphore>,
    idle: Duration,
    refused: Arc<AtomicU64>,
}

impl Guard {
    pub fn new(max: usize, idle: Duration) -> Guard {
        Guard {
            permits: Arc::new(Semaphore::new(max)),
            idle,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S> axum_server::accept::Accept<TcpStream, S> for Guard {
    type Stream = Tracked;
    type Service = Counted<S>;
    type Future = std::future::Ready<io::Result<(Tracked, Counted<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // Logged once per 1000 so a flood cannot fill the log.
            let refused = self.refused.fetch_add(1, Ordering::Relaxed);
            if refused.is_multiple_of(1000) {
                tracing::warn!(
                    refused = refused + 1,
                    "Redfish connection limit reached; new connections are closed"
                );
            }
            return std::future::ready(Err(io::Error::other("connection limit reached")));
        };
        let peer = stream.peer_addr().ok();
        let activity = Arc::new(Activity::new());
        let tracked = Tracked {
            inner: stream,
            activity: activity.clone(),
            idle: self.idle,
            timer: Box::pin(tokio::time::sleep(self.idle)),
            _permit: permit,
        };
        std::future::ready(Ok((
            tracked,
            Counted {
                inner: service,
                activity,
                peer,
            },
        )))
    }
}

/// When a connection last moved bytes, and how many of its requests are being handled.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A TCP stream that fails its reads once it has been idle too long.
pub struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Tracked {
    /// Pending while the connection may stay; an error once it has been idle for `idle`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let quiet = self.activity.quiet_for();
            let busy = self.activity.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && quiet >= self.idle {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle Redfish connection closed",
                ));
            }
            let wait = if busy { self.idle } else { self.idle - quiet };
            self.timer.as_mut().reset(Instant::now() + wait);
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            if buf.filled().len() > before {
                this.activity.touch();
            }
            return Poll::Ready(result);
        }
        this.poll_idle(cx).map(Err)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The connection's service: marks requests in flight (a slow machine call is not idleness)
/// and tells handlers the peer's address.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: Option<SocketAddr>,
}

/// Decrements the in-flight count however the request ends (answered or cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.activity.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(guard);
            response
        })
    }
}
