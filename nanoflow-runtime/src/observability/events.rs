//! The live event stream behind `GET /events` (server-sent events): the runner publishes
//! `run_started`, `step_finished` and `run_finished` on a tokio broadcast channel, each
//! rendered once as an SSE frame and shared by every listener.
//!
//! With no listener connected, publishing is one atomic load: nothing is built or sent.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::sync::{broadcast, watch};

/// Events kept for a slow listener before it is told it missed some (`event: lagged`).
const CAPACITY: usize = 1024;

/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The runner's event hub.
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<Bytes>,
    listeners: Arc<AtomicUsize>,
    closed: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            listeners: Arc::new(AtomicUsize::new(0)),
            closed: watch::channel(false).0,
        }
    }
}

impl Events {
    /// Whether anyone listens: callers skip building an event when not.
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Publishes `data` as an event of `kind` to every listener.
    pub(crate) fn publish(&self, kind: &str, data: &serde_json::Value) {
        if !self.active() {
            return;
        }
        let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        let _ = self
            .tx
            .send(Bytes::from(format!("event: {kind}\ndata: {json}\n\n")));
    }

    /// Ends every stream (on shutdown: a graceful shutdown waits for open responses).
    pub(crate) fn close(&self) {
        let _ = self.closed.send(true);
    }

    /// The `text/event-stream` response for one listener.
    pub(crate) fn stream(&self) -> Response {
        let listener = Listener {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            count: self.listeners.clone(),
            greeted: false,
        };
        self.listeners.fetch_add(1, Ordering::Relaxed);
        let stream = futures_util::stream::unfold(listener, |mut l| async move {
            let frame = l.next().await?;
            Some((Ok::<_, Infallible>(frame), l))
        });
        let mut response = Response::new(Body::from_stream(stream));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

/// One connected listener; counted while it exists.
struct Listener {
    rx: broadcast::Receiver<Bytes>,
    closed: watch::Receiver<bool>,
    count: Arc<AtomicUsize>,
    greeted: bool,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Listener {
    /// The next frame to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        if !self.greeted {
            self.greeted = true;
            // Tells the client the subscription is live: events from now on are delivered.
            return Some(Bytes::from_static(
                b"retry: 2000\nevent: ready\ndata: {}\n\n",
            ));
        }
        if *self.closed.borrow() {
            return None;
        }
        tokio::select! {
            received = self.rx.recv() => match received {
                Ok(frame) => Some(frame),
                Err(broadcast::error::RecvError::Lagged(missed)) => Some(Bytes::from(format!(
                    "event: lagged\ndata: {{\"missed\":{missed}}}\n\n"
                ))),
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = self.closed.changed() => None,
            () = tokio::time::sleep(KEEP_ALIVE) => Some(Bytes::from_static(b": keep-alive\n\n")),
        }
    }
}
