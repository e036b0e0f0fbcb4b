//! Accept loop shared by the HTTP and HTTPS listeners. It bounds what a client can hold: the
//! number of connections, how long a connection may sit idle or dribble its first request,
//! how long a request may take, and HTTP/2 streams per connection. On cancel the listener
//! closes, open connections finish their in-flight requests within `shutdown_timeout`, then
//! the loop returns.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::settings::Limits;
use crate::metrics::Metrics;
use crate::rate::ClientAddr;

/// How often a connection's watchdog looks at it.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);
/// How long a connection told to shut down gracefully may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// At most one "accept failed" line per this interval; the rest are counted into it.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What one listener serves, and within which bounds.
#[derive(Clone)]
pub struct Listener {
    pub tls: Option<TlsAcceptor>,
    pub limits: Limits,
    /// Shared by the listeners of one server: `limits.max_connections` is a process total.
    pub slots: Arc<Semaphore>,
    pub metrics: Option<Arc<Metrics>>,
}

impl Listener {
    /// A listener with its own connection slots and no metrics (tests, helper servers).
    pub fn plain(tls: Option<TlsAcceptor>, limits: Limits) -> Self {
        Self {
            tls,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            metrics: None,
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    how: Listener,
    router: Router,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let mut accept_errors = AcceptErrors::default();
    loop {
        // A free slot first: at the cap, new connections wait in the kernel's backlog while
        // the idle and header timeouts free slots held by clients that send nothing.
        let slot = tokio::select! {
            slot = how.slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    accept_errors.note(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, shutdown, how) = (router.clone(), shutdown.clone(), how.clone());
        connections.spawn(async move {
            let _slot = slot;
            let _open = how.metrics.as_ref().map(|m| m.connection_opened());
            let activity = Arc::new(Activity::new());
            let io = Watched::new(stream, activity.clone());
            let client = ClientAddr(peer.ip());
            let closed = match &how.tls {
                None => serve_connection(io, activity, client, router, &how.limits, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(how.limits.header_read_timeout, acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(io)) => {
                            serve_connection(io, activity, client, router, &how.limits, shutdown)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            None
                        }
                        Err(_) => Some(Closed::HeaderTimeout),
                    }
                }
            };
            if let (Some(reason), Some(metrics)) = (closed, &how.metrics) {
                metrics.observe_connection_closed(reason.label());
            }
        });
    }
    drop(listener);
    connections.close();
    let drain = how.limits.shutdown_timeout;
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

/// Rate-limited logging of accept failures: a flood of them (out of descriptors) must not
/// become a flood of log lines.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn note(&mut self, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < ACCEPT_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
        self.last_logged = Some(now);
        self.suppressed = 0;
    }
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// No complete request in time (a new connection's first, or hyper's per-request check).
    HeaderTimeout,
    /// Nothing in flight and no bytes moving for `limits.idle_timeout`.
    Idle,
}

impl Closed {
    /// The metrics label.
    fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
        }
    }
}

/// When a connection last moved bytes, and how many of its requests are being answered.
struct Activity {
    born: Instant,
    /// Milliseconds after `born`.
    last: AtomicU64,
    in_flight: AtomicUsize,
    /// Whether any request has started: until one has, the connection is still "reading its
    /// first header", however slowly it dribbles bytes.
    started: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Why the connection should be closed now, if it should.
    fn verdict(&self, limits: &Limits) -> Option<Closed> {
        let age = self.born.elapsed();
        if !self.started.load(Ordering::Relaxed) && age > limits.header_read_timeout {
            return Some(Closed::HeaderTimeout);
        }
        let idle = age.saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)));
        (self.in_flight.load(Ordering::Relaxed) == 0 && idle > limits.idle_timeout)
            .then_some(Closed::Idle)
    }
}

/// The connection's IO, noting activity on every read and write that moves bytes.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Self {
        activity.touch();
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight from when it is handed to the router until its response
/// head is ready (the body then moves bytes, which counts as activity).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.started.store(true, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Serves one connection; returns why the server closed it, unless the client did or the
/// server is shutting down.
async fn serve_connection<I>(
    io: I,
    activity: Arc<Activity>,
    client: ClientAddr,
    router: Router,
    limits: &Limits,
    shutdown: CancellationToken,
) -> Option<Closed>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(MAX_HEADER_LIST);
    let request_timeout = limits.request_timeout;
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (router, activity) = (router.clone(), activity.clone());
            async move {
                let _in_flight = InFlight::start(&activity);
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(client);
                let answer = tokio::time::timeout(request_timeout, router.oneshot(req));
                Ok::<_, Infallible>(match answer.await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => timed_out(request_timeout),
                })
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
    let why = loop {
        tokio::select! {
            result = conn.as_mut() => {
                let Err(e) = result else { return None };
                tracing::debug!(error = %e, "connection ended with an error");
                // hyper's own header timeout, which the watchdog may not have seen first.
                return activity.verdict(limits).filter(|&why| why == Closed::HeaderTimeout);
            }
            () = shutdown.cancelled() => break None,
            _ = watchdog.tick() => {
                if let Some(why) = activity.verdict(limits) {
                    break Some(why);
                }
            }
        }
    };
    tracing::debug!(reason = ?why, "closing connection");
    conn.as_mut().graceful_shutdown();
    // In-flight requests finish (each is bounded by the request timeout) when shutting down;
    // a connection closed by the watchdog has none, so the grace is all it gets.
    let bound = if why.is_none() {
        limits.shutdown_timeout
    } else {
        CLOSE_GRACE
    };
    let _ = tokio::time::timeout(bound, conn).await;
    why
}

/// Largest HTTP/2 header block a client may send (HTTP/1 is bounded by hyper's buffer).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// The answer to a request that took longer than the request timeout: the client was too slow
/// sending it, or we were too slow answering; either way the client may retry.
fn timed_out(after: Duration) -> Response<Body> {
    let mut response = Response::new(Body::from(format!(
        "request not completed within {}s\n",
        after.as_secs()
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
