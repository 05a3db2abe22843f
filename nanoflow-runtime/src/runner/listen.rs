//! The HTTP server loop: accepts connections and serves each with hyper, under limits that keep
//! slow, idle or abandoned connections from taking the service down.
//!
//! - a client must send a request's headers within the header timeout, or is disconnected;
//! - a keep-alive connection with no request in flight is closed after the idle timeout, and
//!   at once under pressure (more open connections than three quarters of the limit, or the
//!   process out of file descriptors), so that new clients get in;
//! - the body timeout is applied where bodies are read (`triggers::http::read_body`);
//! - at shutdown, every connection is told to finish its current exchange and close.
//!
//! `axum::serve` has none of these limits, hence this loop. The header timeout is kept here
//! rather than by hyper's timer, which arms a timer for every request (about a microsecond
//! of a request's CPU, and a wake-up of the timer's thread; issue 16): each connection notes
//! when a request's first byte came, and its periodic check closes it once the headers are
//! late.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::graph::BoxFuture;
use crate::triggers::http::Direct;

/// The limits of the server loop (from [`super::ServeConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// What every connection task shares with the accept loop.
#[derive(Debug)]
struct Shared {
    open: AtomicUsize,
    /// Woken when connections must shed (pressure, or out of descriptors).
    shed: Notify,
    limits: Limits,
    epoch: Instant,
    /// Milliseconds since `epoch`, advanced every `CLOCK_TICK` by a task of `serve`: what
    /// connections stamp their activity with, without reading the clock at every read and
    /// write.
    now_ms: AtomicU64,
}

/// The resolution of [`Shared::now_ms`].
const CLOCK_TICK: Duration = Duration::from_millis(10);

impl Shared {
    fn under_pressure(&self) -> bool {
        self.open.load(Ordering::Relaxed) * 4 > self.limits.max_connections * 3
    }
}

/// One connection's activity: when it last read or wrote, its requests in flight, and since
/// when it has been reading a request's headers.
#[derive(Debug, Default)]
struct Activity {
    last_ms: AtomicU64,
    requests: AtomicUsize,
    /// 1 + [`Shared::now_ms`] when bytes came with no request in flight (a request's head
    /// begins); 0 once hyper hands the request over (its headers complete). Bytes left of a
    /// request whose handler did not read its body count as a next request's: such a
    /// connection is closed after the header timeout instead of the idle timeout.
    heading_since: AtomicU64,
}

impl Activity {
    fn touch(&self, shared: &Shared) {
        self.last_ms
            .store(shared.now_ms.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Bytes were read.
    fn read(&self, shared: &Shared) {
        let now = shared.now_ms.load(Ordering::Relaxed);
        self.last_ms.store(now, Ordering::Relaxed);
        if self.requests.load(Ordering::Relaxed) == 0
            && self.heading_since.load(Ordering::Relaxed) == 0
        {
            self.heading_since.store(now + 1, Ordering::Relaxed);
        }
    }

    /// Whether a request's headers have been arriving for longer than `limit`.
    fn headers_late(&self, epoch: Instant, limit: Duration) -> bool {
        match self.heading_since.load(Ordering::Relaxed) {
            0 => false,
            since => {
                let now = epoch.elapsed().as_millis() as u64;
                now.saturating_sub(since - 1) >= limit.as_millis() as u64
            }
        }
    }

    fn idle_for(&self, epoch: Instant) -> Duration {
        let now = epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Serves `router` on `listener` until `stop` turns true; returns once every connection closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    direct: Arc<Direct>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    // Every handler made into its route once (as `axum::serve` does), not at every request:
    // a router called as it was built converts the matched handler anew each time (two
    // allocations and a boxed clone per request; issue 16).
    let router: Router = router.with_state(());
    let shared = Arc::new(Shared {
        open: AtomicUsize::new(0),
        shed: Notify::new(),
        limits,
        epoch: Instant::now(),
        now_ms: AtomicU64::new(0),
    });
    // The connections' coarse clock; ends with the server.
    let clock = Arc::downgrade(&shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLOCK_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = clock.upgrade() else { break };
            let now = shared.epoch.elapsed().as_millis() as u64;
            shared.now_ms.store(now, Ordering::Relaxed);
        }
    });
    let mut out_of_files_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors: close idle connections to make room, and wait a
                // moment rather than spin on a listener that cannot accept.
                let out_of_files = matches!(e.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
                if out_of_files {
                    shared.shed.notify_waiters();
                    let quiet =
                        out_of_files_logged.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
                    if !quiet {
                        tracing::warn!(error = %e, open = shared.open.load(Ordering::Relaxed), "cannot accept connections: out of file descriptors; closing idle ones");
                        out_of_files_logged = Some(Instant::now());
                    }
                }
                tokio::time::sleep(Duration::from_millis(if out_of_files { 50 } else { 5 })).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared.open.fetch_add(1, Ordering::Relaxed);
        if shared.under_pressure() {
            shared.shed.notify_waiters();
        }
        tokio::spawn(connection(
            stream,
            peer,
            (router.clone(), direct.clone()),
            shared.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    // Every connection task holds a reference: wait for them to close.
    while shared.open.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a connection's task watches besides its I/O.
enum Event {
    /// The runner stops.
    Stop,
    /// Connections must shed.
    Shed,
    /// The periodic check of the header and idle timeouts.
    Tick,
}

/// Tells a connection's task that what it watches besides its I/O woke it: the watcher is
/// polled with this as its waker, and only when it fired.
#[derive(Default)]
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Serves one connection until it closes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    (router, direct): (Router, Arc<Direct>),
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    struct Open(Arc<Shared>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let open = Open(shared.clone());
    let activity = Arc::new(Activity::default());
    activity.touch(&shared);
    // A new connection owes its first request's headers within the header timeout.
    activity
        .heading_since
        .store(shared.now_ms.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        shared: shared.clone(),
    });
    let service = Service {
        router: RefCell::new(router),
        direct,
        activity: activity.clone(),
        peer,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timeout is this loop's (see the module's documentation).
    builder.header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (shared.limits.idle_timeout.min(shared.limits.header_timeout) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut closing = false;
    // The connection's own I/O wakes its task at every request; the runner's stop, shedding
    // and the periodic check wake it seldom. Those are polled only when one of them woke the
    // task (`Gate`), not at every request: polling a `Notify` or a `watch` takes a lock shared
    // by every connection (issue 16).
    let gate = Arc::new(Gate::default());
    let gate_waker = Waker::from(gate.clone());
    loop {
        let watching = !closing;
        let watched = async {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped), if watching => Event::Stop,
                () = shared.shed.notified(), if watching => Event::Shed,
                () = tokio::time::sleep(tick) => Event::Tick,
            }
        };
        tokio::pin!(watched);
        // A new watcher is polled once, which registers its wakers.
        gate.woken.store(true, Ordering::Release);
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Err(result));
            }
            gate.task.register(cx.waker());
            if gate.woken.swap(false, Ordering::AcqRel) {
                let mut watch_cx = Context::from_waker(&gate_waker);
                if let Poll::Ready(event) = watched.as_mut().poll(&mut watch_cx) {
                    return Poll::Ready(Ok(event));
                }
            }
            Poll::Pending
        })
        .await;
        match outcome {
            Err(result) => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            Ok(Event::Stop) => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            Ok(Event::Shed) => {
                if idle(&activity, &shared, Duration::from_millis(100)) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            Ok(Event::Tick) => {
                if activity.headers_late(shared.epoch, shared.limits.header_timeout) {
                    // As hyper does: no answer, the connection is closed.
                    tracing::debug!(%peer, "request headers not received within the header timeout; closing the connection");
                    break;
                }
                if closing {
                    continue;
                }
                let limit = if shared.under_pressure() {
                    Duration::from_millis(250)
                } else {
                    shared.limits.idle_timeout
                };
                if idle(&activity, &shared, limit) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    drop(open);
}

/// Whether a connection has no request in flight and has been quiet for `limit`.
fn idle(activity: &Activity, shared: &Shared, limit: Duration) -> bool {
    activity.requests.load(Ordering::Relaxed) == 0 && activity.idle_for(shared.epoch) >= limit
}

/// The router as a hyper service: counts requests in flight on the connection, and gives the
/// admin routes' throttle the connection's peer while a request's future is polled.
struct Service {
    /// The router's `call` takes `&mut`, hyper's `&self`: borrowed for the call only (the
    /// future it returns does not borrow it), rather than cloned for every request.
    router: RefCell<Router>,
    /// The trigger routes served without the router.
    direct: Arc<Direct>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Served;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        // The request's headers are complete.
        self.activity.heading_since.store(0, Ordering::Relaxed);
        let in_flight = InFlight::new(self.activity.clone());
        let future = match self.direct.route(req.method(), req.uri().path()) {
            Some(route) => Routed::Trigger(route.call(req.map(Body::new))),
            None => Routed::Router(Box::new(tower_service::Service::call(
                &mut *self.router.borrow_mut(),
                req.map(Body::new),
            ))),
        };
        Served {
            future,
            peer: self.peer,
            _in_flight: in_flight,
        }
    }
}

/// A request being served: its future, and the request counted in flight until it is
/// answered.
struct Served {
    future: Routed,
    peer: SocketAddr,
    _in_flight: InFlight,
}

/// Who answers a request. Both boxed, so that hyper moves a pointer, not the router's future
/// of some hundred bytes.
enum Routed {
    /// A trigger route served without the router (`triggers::http::Direct`).
    Trigger(BoxFuture<'static, Response>),
    Router(Box<RouteFuture<Infallible>>),
}

impl Future for Served {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let peer = self.peer;
        crate::admin::with_peer(peer, || match &mut self.future {
            Routed::Trigger(future) => future.as_mut().poll(cx).map(Ok),
            Routed::Router(future) => Pin::new(&mut **future).poll(cx),
        })
    }
}

/// Counts one request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that notes when it last moved bytes.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read(&self.shared);
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(&self.shared);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(&self.shared);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open files to the hard limit (a soft limit of 1,024 is a common
/// default, far below what a server's connections need); returns the limit now in force.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let soft = limit.current?;
    let Some(hard) = limit.maximum else {
        // Unlimited hard limit: raise to a generous fixed value.
        limit.current = Some(soft.max(1 << 20));
        return setrlimit(Resource::Nofile, limit)
            .ok()
            .map(|()| soft.max(1 << 20));
    };
    if soft >= hard {
        return Some(soft);
    }
    limit.current = Some(hard);
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => {
            tracing::debug!(from = soft, to = hard, "raised the open files limit");
            Some(hard)
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit");
            Some(soft)
        }
    }
}
