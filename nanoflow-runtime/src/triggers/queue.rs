//! Queue triggers on NATS JetStream: `#[trigger(queue = "orders.created")]`, and
//! [`publish`] for nodes and the runner's `POST /queues/{subject}`.
//!
//! Each queue-triggered workflow has a durable pull consumer, `nanoflow_<workflow>`, on the
//! stream that stores its subject (created as `NANOFLOW_<subject>` when there is none). A
//! message is acknowledged only once its run is recorded in the journal under an idempotency
//! key taken from the message (its `Nats-Msg-Id` header, else its stream and sequence), so a
//! redelivery or a duplicate never starts a second run. The key is claimed with the run's
//! first record (one commit per message fewer than a claim of its own), after the pull
//! batch's keys were looked up in one read: only a copy that comes while that first record is
//! not durable yet runs the first node too, and is dropped when its claim finds the key taken
//! (docs/triggers.md). A payload that does not fit the
//! workflow's input is published to `nanoflow.dlq.<workflow>` with the error, then
//! acknowledged. Connection loss is retried forever with a capped exponential backoff.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_nats::{HeaderMap, HeaderValue};
use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::error::Error;
use crate::ingress::reply::{error_response, json_response};
use crate::ingress::{Admitted, App, Claimed, Record, Refused, Submission};
use crate::run::RunId;
use crate::triggers::{reconnect_delay, TriggerDef};
use crate::workflow::{DynWorkflow, InputError, InputErrorKind};

/// How long JetStream waits for an acknowledgement before redelivering a message (to this or
/// another runner). Runs are acknowledged as soon as their first record (holding the key) is
/// durable, not when they end.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How long a stream created by nanoflow keeps messages (consumed or not).
const MESSAGE_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long the dead-letter stream keeps messages.
const DEAD_LETTER_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Messages pulled in one request.
const BATCH: usize = 256;

/// Where a queue trigger's undeliverable messages go: `nanoflow.dlq.<workflow>`.
pub fn dead_letter_subject(workflow: &str) -> String {
    format!("nanoflow.dlq.{workflow}")
}

/// The stream nanoflow creates for the dead-letter subjects (`nanoflow.dlq.>`).
pub const DEAD_LETTER_STREAM: &str = "NANOFLOW_DLQ";

/// Where a message was stored, from [`publish`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The JetStream stream that stored it.
    pub stream: String,
    /// Its sequence number in that stream.
    pub sequence: u64,
    /// Whether the stream had already stored a message with the same id (and kept only that one).
    pub duplicate: bool,
}

/// How long the runner's start waits for its first connection to NATS (it goes on connecting
/// in the background after that).
const INITIAL_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// How long `POST /queues/{subject}` waits for the runner to finish creating the subject's
/// stream (right after start) before it answers `503 queue_starting`.
const STREAM_WAIT: Duration = Duration::from_secs(5);

/// The queue-trigger subjects whose stream this runner has found or created: until then a
/// publish to them waits (briefly) instead of failing with a missing stream.
#[derive(Debug, Default)]
pub(crate) struct StreamsReady {
    ready: Mutex<HashSet<&'static str>>,
    changed: tokio::sync::Notify,
}

impl StreamsReady {
    fn set(&self, subject: &'static str) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(subject);
        self.changed.notify_waiters();
    }

    fn unset(&self, subject: &'static str) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(subject);
    }

    fn all(&self, subjects: &[&'static str]) -> bool {
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        subjects.iter().all(|s| ready.contains(s))
    }

    /// Waits until the streams of `subjects` exist, at most `limit`; whether they do.
    async fn wait(&self, subjects: &[&'static str], limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.all(subjects) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.all(subjects);
            }
        }
    }
}

/// Whether this runner's queue triggers are able to take messages: connected to NATS, with
/// every trigger's stream in place. `None` when the runner has no NATS server configured.
pub(crate) fn readiness(app: &App) -> Option<Result<(), String>> {
    let nats = app.services.nats.get()?;
    if !nats.connected() {
        return Some(Err(format!("not connected to NATS at {}", nats.url)));
    }
    let subjects = declared_subjects(app);
    if !app.services.streams.all(&subjects) {
        return Some(Err(
            "the streams of the queue triggers are being set up".into()
        ));
    }
    Some(Ok(()))
}

/// A connection to NATS, shared by the triggers, `publish` and `POST /queues/{subject}`.
#[derive(Clone)]
pub(crate) struct Nats {
    js: jetstream::Context,
    client: async_nats::Client,
    url: Arc<str>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats").field("url", &self.url).finish()
    }
}

/// The connection `publish` uses: the runner's, or one made from `NANOFLOW_NATS_URL`.
static PUBLISHER: RwLock<Option<Nats>> = RwLock::new(None);

impl Nats {
    /// Connects in the background: the client retries (and later reconnects) forever, with a
    /// capped exponential backoff, so a NATS server that starts after the runner is fine.
    pub(crate) async fn connect(url: &str) -> Result<Self, Error> {
        let client = async_nats::ConnectOptions::new()
            .name("nanoflow")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| reconnect_delay(attempt as u32))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            .connect(url)
            .await
            .map_err(|e| {
                Error::Config(format!(
                    "invalid NATS URL `{url}` (`--nats-url`, `NANOFLOW_NATS_URL`): {e}"
                ))
            })?;
        // The first connection usually takes milliseconds: wait for it (briefly), so that the
        // runner starts ready; an unreachable server does not hold the start longer.
        let deadline = tokio::time::Instant::now() + INITIAL_CONNECT_WAIT;
        while client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self {
            js: jetstream::new(client.clone()),
            client,
            url: url.into(),
        })
    }

    /// Whether the client holds a live connection to the server right now.
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes `payload` to `subject` and waits for JetStream to store it.
    pub(crate) async fn publish(
        &self,
        subject: &str,
        id: Option<&str>,
        payload: Bytes,
    ) -> Result<Published, Error> {
        self.try_publish(subject, id, payload)
            .await
            .map_err(|(_, e)| e)
    }

    /// Like `publish`; the flag says the client itself is gone (its connection task ended with
    /// the runtime that started it), as opposed to the server being unreachable.
    async fn try_publish(
        &self,
        subject: &str,
        id: Option<&str>,
        payload: Bytes,
    ) -> Result<Published, (bool, Error)> {
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, header_value(id));
        }
        let fail = |e: &dyn std::fmt::Display| {
            Error::Queue(format!("publishing to `{subject}` on {}: {e}", self.url))
        };
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            // Sending fails only when the client's connection task is gone.
            .map_err(|e| (true, fail(&e)))?
            .await
            .map_err(|e| (e.kind() == jetstream::context::PublishErrorKind::BrokenPipe, match e.kind() {
                jetstream::context::PublishErrorKind::StreamNotFound => Error::NoStream(format!(
                    "publishing to `{subject}`: no JetStream stream stores this subject; a runner with a queue trigger on \
                     it creates one when it starts, or create one yourself (`nats stream add`)"
                )),
                _ => fail(&e),
            }))?;
        Ok(Published {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// The stream that stores `subject`, created (as `name`, by default `NANOFLOW_<subject>`)
    /// when there is none, keeping messages for `max_age`; and whether it was created now.
    ///
    /// Limits retention: a message is kept whether or not a consumer exists yet (with interest
    /// retention, one published between the creation of the stream and of the consumer would
    /// be dropped), and several workflows may consume one subject.
    async fn stream_for(
        &self,
        subject: &str,
        name: Option<&str>,
        max_age: Duration,
    ) -> Result<(stream::Stream, bool), String> {
        match self.js.stream_by_subject(subject).await {
            Ok(name) => self
                .js
                .get_stream(&name)
                .await
                .map(|s| (s, false))
                .map_err(|e| format!("reading stream `{name}`: {e}")),
            Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {
                let name = name.map_or_else(|| stream_name(subject), str::to_owned);
                let config = stream::Config {
                    name: name.clone(),
                    subjects: vec![subject.to_owned()],
                    retention: stream::RetentionPolicy::Limits,
                    storage: stream::StorageType::File,
                    max_age,
                    ..Default::default()
                };
                self.js
                    .get_or_create_stream(config)
                    .await
                    .map(|s| (s, true))
                    .map_err(|e| format!("creating stream `{name}` for `{subject}`: {e}"))
            }
            Err(e) => Err(format!("finding the stream of `{subject}`: {e}")),
        }
    }
}

/// `orders.created` -> `NANOFLOW_orders_created` (stream names hold no `.`, `*` or `>`).
fn stream_name(subject: &str) -> String {
    let mut name = String::from("NANOFLOW_");
    for c in subject.chars() {
        match c {
            '.' => name.push('_'),
            '*' => name.push_str("STAR"),
            '>' => name.push_str("ALL"),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => name.push(c),
            c => name.push_str(&format!("x{:x}", c as u32)),
        }
    }
    name
}

/// A header value on one line (NATS headers are line-based).
fn header_value(text: &str) -> HeaderValue {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeaderValue::from(line.as_str())
}

/// Publishes `value` as JSON to `subject` on NATS JetStream and waits until it is stored.
///
/// The message gets a unique `Nats-Msg-Id` (`nanoflow-<id>`), so that JetStream stores it once
/// even if the publish is retried after a lost connection.
///
/// Inside a runner started with a NATS URL (`--nats-url`, `NANOFLOW_NATS_URL`), the runner's
/// connection is used; elsewhere, one is made from `NANOFLOW_NATS_URL`. A stream must store the
/// subject: a runner creates one for each of its queue triggers when it starts.
///
/// ```no_run
/// # async fn f() -> Result<(), nanoflow_runtime::Error> {
/// // In a node: `nanoflow::publish(...).await?` (its error converts into a `NodeError`).
/// let stored = nanoflow_runtime::publish("orders.created", &serde_json::json!({"id": "o-1", "qty": 2})).await?;
/// println!("stored as {} #{}", stored.stream, stored.sequence);
/// # Ok(())
/// # }
/// ```
pub async fn publish<T: serde::Serialize + ?Sized>(
    subject: &str,
    value: &T,
) -> Result<Published, Error> {
    publish_message(subject, None, value).await
}

/// Like [`publish`], with a message id (the `Nats-Msg-Id` header): JetStream stores a message
/// with an id it has seen in the last two minutes only once, and a queue trigger never starts
/// two runs for one id. Use it where a node may run again (a retry, a resumed run) to publish
/// exactly once.
pub async fn publish_with_id<T: serde::Serialize + ?Sized>(
    subject: &str,
    id: &str,
    value: &T,
) -> Result<Published, Error> {
    publish_message(subject, Some(id), value).await
}

async fn publish_message<T: serde::Serialize + ?Sized>(
    subject: &str,
    id: Option<&str>,
    value: &T,
) -> Result<Published, Error> {
    check_publish_subject(subject).map_err(Error::Queue)?;
    let payload = serde_json::to_vec(value).map_err(|e| {
        Error::Queue(format!(
            "publishing to `{subject}`: the value does not serialize to JSON: {e}"
        ))
    })?;
    let payload = Bytes::from(payload);
    // Always with an id, so that the one retry below can never store the message twice.
    let id = id.map_or_else(|| format!("nanoflow-{}", RunId::new()), str::to_owned);
    let id = Some(id.as_str());
    let nats = publisher().await?;
    match nats.try_publish(subject, id, payload.clone()).await {
        Ok(p) => Ok(p),
        // The shared client died with the runtime that made it (a runner in another runtime,
        // now stopped): connect again here, and keep the new client for the next ones.
        Err((true, _)) => {
            let fresh = Nats::connect(&nats.url).await?;
            *PUBLISHER.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
            fresh.publish(subject, id, payload).await
        }
        Err((false, e)) => Err(e),
    }
}

async fn publisher() -> Result<Nats, Error> {
    if let Some(nats) = PUBLISHER.read().unwrap_or_else(|p| p.into_inner()).clone() {
        return Ok(nats);
    }
    let Some(url) = std::env::var("NANOFLOW_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return Err(Error::Queue(
            "`nanoflow::publish` needs a NATS server: set `NANOFLOW_NATS_URL` (or serve with `--nats-url`)".into(),
        ));
    };
    let nats = Nats::connect(&url).await?;
    let mut slot = PUBLISHER.write().unwrap_or_else(|p| p.into_inner());
    Ok(slot.get_or_insert(nats).clone())
}

/// A subject to publish to: like a trigger's, without wildcards, and never one of the server's
/// own (`$JS.API...`, `$SYS...`: a `$` token is the NATS system namespace).
fn check_publish_subject(subject: &str) -> Result<(), String> {
    let bad = subject.is_empty()
        || subject
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>']) || t.starts_with('$'))
        || subject.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!(
            "invalid subject `{subject}`: write dot-separated tokens without spaces, wildcards or a leading `$`, e.g. `orders.created`"
        ));
    }
    Ok(())
}

/// Whether `subject` (no wildcards) is one that the trigger subject `pattern` consumes: `*`
/// stands for one token, a final `>` for one or more.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// The subjects of this runner's queue triggers.
fn declared_subjects(app: &App) -> Vec<&'static str> {
    let mut subjects: Vec<&'static str> = app
        .workflows
        .values()
        .flat_map(|wf| wf.graph().triggers.iter())
        .filter_map(|t| match t {
            TriggerDef::Queue { subject } => Some(*subject),
            _ => None,
        })
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    subjects
}

/// Connects to NATS and starts one consumer per queue-triggered workflow.
pub(crate) async fn start(
    app: &Arc<App>,
    url: &str,
    shutdown: &watch::Sender<bool>,
) -> Result<(), Error> {
    let nats = Nats::connect(url).await?;
    *PUBLISHER.write().unwrap_or_else(|p| p.into_inner()) = Some(nats.clone());
    let _ = app.services.nats.set(nats.clone());
    // One handle for every consumer and each message's task: a clone of `Nats` copies a
    // `String` and three handles.
    let shared = Arc::new(nats);
    let acks = Acks::start(shared.client.clone());
    let _ = app.services.acks.set(acks.clone());
    for wf in app.workflows.values() {
        for trigger in &wf.graph().triggers {
            if let TriggerDef::Queue { subject } = trigger {
                tokio::spawn(consume(
                    app.clone(),
                    shared.clone(),
                    acks.clone(),
                    wf.clone(),
                    subject,
                    shutdown.subscribe(),
                ));
            }
        }
    }
    Ok(())
}

/// Consumes `subject` for `wf` until shutdown, setting the consumer up again after any failure.
async fn consume(
    app: Arc<App>,
    nats: Arc<Nats>,
    acks: Acks,
    wf: Arc<dyn DynWorkflow>,
    subject: &'static str,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = wf.graph().name;
    let mut failures = 0u32;
    loop {
        let error = tokio::select! {
            e = consume_once(&app, &nats, &acks, &wf, subject, &mut failures) => e,
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        };
        failures = failures.saturating_add(1);
        let delay = reconnect_delay(failures);
        tracing::warn!(workflow = name, subject, error = %error, retry_in = ?delay, "queue trigger interrupted; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Sets the consumer up and hands each message to its own task; returns why it stopped.
async fn consume_once(
    app: &Arc<App>,
    nats: &Arc<Nats>,
    acks: &Acks,
    wf: &Arc<dyn DynWorkflow>,
    subject: &'static str,
    failures: &mut u32,
) -> String {
    let name = wf.graph().name;
    let setup = async {
        // The dead-letter stream first: a bad payload must have somewhere to go.
        nats.stream_for("nanoflow.dlq.>", Some(DEAD_LETTER_STREAM), DEAD_LETTER_AGE)
            .await?;
        let (stream, created) = nats.stream_for(subject, None, MESSAGE_AGE).await?;
        app.services.streams.set(subject);
        let info = stream.cached_info();
        // Sequences restart when a stream is recreated: its creation time keeps keys unique.
        let origin: Arc<str> = format!(
            "{}@{}",
            info.config.name,
            info.created.unix_timestamp_nanos()
        )
        .into();
        let durable = format!("nanoflow_{name}");
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    description: Some(format!("nanoflow workflow `{name}`")),
                    filter_subject: subject.to_owned(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    // A new workflow on an existing stream starts with the messages that come
                    // after it; on a stream created for it, with every message.
                    deliver_policy: if created {
                        consumer::DeliverPolicy::All
                    } else {
                        consumer::DeliverPolicy::New
                    },
                    ack_wait: ACK_WAIT,
                    // Messages held unacknowledged: about what the runner lets run at once.
                    max_ack_pending: app.config.max_in_flight.max(BATCH) as i64,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("creating consumer `{durable}`: {e}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| format!("pulling from consumer `{durable}`: {e}"))?;
        tracing::info!(workflow = name, subject, stream = %info.config.name, consumer = %durable, "queue trigger consuming");
        Ok::<_, String>((messages, origin))
    };
    let (messages, origin) = match setup.await {
        Ok(s) => s,
        Err(e) => {
            app.services.streams.unset(subject);
            return e;
        }
    };
    *failures = 0;
    // What the pull delivered at once, up to a batch: its keys are looked up in one read.
    let mut batches = messages.ready_chunks(BATCH);
    while let Some(batch) = batches.next().await {
        let mut pulled = Vec::with_capacity(batch.len());
        for next in batch {
            match next {
                Ok(m) => pulled.push(m),
                Err(e) if e.kind() == consumer::pull::MessagesErrorKind::MissingHeartbeat => {
                    tracing::debug!(
                        workflow = name,
                        "missed a JetStream heartbeat; the client pulls again"
                    );
                }
                Err(e) => return format!("receiving messages: {e}"),
            }
        }
        let pulled: Vec<Pulled> = pulled
            .into_iter()
            .map(|message| Pulled::new(message, &origin))
            .collect();
        let known = known_keys(app, name, &pulled).await;
        for pulled in pulled {
            if let Some(original) = known.get(&pulled.key) {
                // A redelivery or a duplicate of a message whose run is recorded: nothing runs.
                tracing::debug!(workflow = name, %original, key = pulled.key, "message already started a run; acknowledging the duplicate");
                acks.send(acks.owe(), &pulled.message, AckKind::Ack, name);
                continue;
            }
            let Ok(permit) = app.limiter.clone().acquire_owned().await else {
                return "the runner stopped".into();
            };
            let owed = acks.owe();
            // Boxed: a message's future is kilobytes, which spawning would copy several times
            // (into the task, and at each change of the task's stage).
            tokio::spawn(Box::pin(handle(
                app.clone(),
                nats.clone(),
                acks.clone(),
                wf.clone(),
                pulled,
                owed,
                permit,
            )));
        }
    }
    "the message stream ended".into()
}

/// A pulled message with what its reply subject tells, read once: the subject is parsed at
/// each `info()`, and three of them took 1.3 us of a journaled run's CPU.
struct Pulled {
    message: jetstream::Message,
    key: String,
    /// Its sequence in the stream (0 if its reply subject does not say).
    sequence: u64,
    /// Whether JetStream delivers it again (or cannot tell).
    redelivered: bool,
}

impl Pulled {
    fn new(message: jetstream::Message, origin: &str) -> Self {
        let (sequence, redelivered) = message
            .info()
            .map_or((0, true), |i| (i.stream_sequence, i.delivered > 1));
        let key = message_key(&message, origin, sequence);
        Self {
            message,
            key,
            sequence,
            redelivered,
        }
    }

    /// Whether its key may be held already: it is delivered again, or carries its own id.
    fn may_repeat(&self) -> bool {
        self.redelivered
            || self
                .message
                .headers
                .as_ref()
                .is_some_and(|h| h.get(async_nats::header::NATS_MESSAGE_ID).is_some())
    }
}

/// The idempotency key of a message: its `Nats-Msg-Id` header, else its stream (with the
/// stream's creation time: `origin`) and `sequence`.
fn message_key(message: &jetstream::Message, origin: &str, sequence: u64) -> String {
    match message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
    {
        Some(id) => format!("nats-msg-id:{}", id.as_str()),
        None => format!("nats:{origin}:{sequence}"),
    }
}

/// The messages of a pull batch whose key a recorded run holds, by key: one read for the
/// batch, so that a redelivered message whose run is recorded starts nothing. (A copy that
/// gets past it, its original's first record not durable yet, is stopped by the claim.)
async fn known_keys(
    app: &App,
    workflow: &'static str,
    pulled: &[Pulled],
) -> std::collections::HashMap<String, RunId> {
    let Some(journal) = app.durable() else {
        // Without a journal the key is claimed before the run starts.
        return Default::default();
    };
    // Only a message JetStream delivers again, or one with an id of its own (published again
    // past the stream's duplicate window), can find its key taken; a first delivery's stream
    // sequence is new (but for a consumer made again by hand: its messages' claims decide).
    let keys: Vec<String> = pulled
        .iter()
        .filter(|p| p.may_repeat())
        .map(|p| p.key.clone())
        .collect();
    if keys.is_empty() {
        return Default::default();
    }
    match journal.find_keys(workflow, keys).await {
        Ok(found) => found.into_iter().collect(),
        Err(e) => {
            tracing::debug!(workflow, error = %e, "cannot look the messages' keys up; their claims decide");
            Default::default()
        }
    }
}

/// Starts the run of one message (at most once per message key), then acknowledges it.
async fn handle(
    app: Arc<App>,
    nats: Arc<Nats>,
    acks: Acks,
    wf: Arc<dyn DynWorkflow>,
    pulled: Pulled,
    owed: Owed,
    permit: OwnedSemaphorePermit,
) {
    let name = wf.graph().name;
    let Pulled {
        message,
        key,
        sequence,
        ..
    } = pulled;
    let submission = Submission {
        workflow: wf.clone(),
        input: message.payload.clone(),
        run_id: RunId::new(),
        key: Some(key.clone()),
        trace_parent: None,
        // Claimed with the run's first record, in its commit; acknowledged once it is durable.
        record: Record::Claim,
    };
    let mut run = match app.submit(submission).await {
        Ok(Admitted::New(run)) => run,
        Ok(Admitted::Existing(original)) => {
            tracing::debug!(workflow = name, sequence, %original, "message already started a run; acknowledging the duplicate");
            acks.send(owed, &message, AckKind::Ack, name);
            return;
        }
        Err(Refused::Journal(e)) => {
            tracing::error!(workflow = name, sequence, error = %e, "cannot record the run; the message will be redelivered");
            acks.send(
                owed,
                &message,
                AckKind::Nak(Some(Duration::from_secs(5))),
                name,
            );
            return;
        }
        Err(Refused::Input(error)) => {
            tracing::warn!(workflow = name, subject = %message.subject, sequence, error = %error, "message does not fit the workflow's input; dead-lettering it");
            match dead_letter(&nats, name, &message, sequence, &key, &error).await {
                Ok(()) => acks.send(owed, &message, AckKind::Ack, name),
                Err(e) => {
                    tracing::error!(workflow = name, sequence, error = %e, "cannot dead-letter the message; it will be redelivered");
                    acks.send(
                        owed,
                        &message,
                        AckKind::Nak(Some(Duration::from_secs(5))),
                        name,
                    );
                }
            }
            return;
        }
    };
    if app.durable().is_some() {
        // The run's first node runs before its key is known to be new (a copy of a message
        // redelivered in that window runs it too, as a node in flight at a crash runs again);
        // the message goes once the first record is durable, and a copy whose key an earlier
        // run holds is dropped before anything of it is written.
        let claim = run.claim();
        let run_id = run.run_id();
        let answer = async {
            match claim.await {
                Claimed::Recorded => acks.send(owed, &message, AckKind::Ack, name),
                Claimed::Existing(original) => {
                    tracing::debug!(workflow = name, sequence, %original, dropped = %run_id, "message already started a run; acknowledging the duplicate");
                    acks.send(owed, &message, AckKind::Ack, name);
                }
                Claimed::Failed if *app.stop.borrow() => {
                    tracing::debug!(workflow = name, sequence, %run_id, "the runner stopped before the run was recorded; the message will be redelivered");
                }
                Claimed::Failed => {
                    tracing::error!(workflow = name, sequence, %run_id, "cannot record the run; the message will be redelivered");
                    acks.send(
                        owed,
                        &message,
                        AckKind::Nak(Some(Duration::from_secs(5))),
                        name,
                    );
                }
            }
        };
        if run.is_queued() {
            drop(run.spawn(&app, permit));
            answer.await;
        } else {
            // Driven in this task, beside the wait for its first record: no task of its own.
            let _ = tokio::join!(run.drive(&app, permit), answer);
        }
    } else {
        // Without a journal nothing survives a crash but the message: acknowledge at the end.
        // Driven in this task, the message's own: no task of its own either.
        let _ = run.drive(&app, permit).await;
        acks.send(owed, &message, AckKind::Ack, name);
    }
}

/// Acknowledgements (and negative ones) on their way to the NATS server, sent by one task in
/// batches. A commit of the journal answers the claims of many runs at once; each acknowledging
/// in its own task handed the client's connection one message at a time (the connection task
/// ran next, as the task just woken), so each went out in a write and a packet of its own, and
/// the server woke to read each. Queued here, they are written together. The queue holds at
/// most one acknowledgement per message pulled and not yet acknowledged, so the run slots and
/// the consumer's window bound it.
#[derive(Clone)]
pub(crate) struct Acks {
    queue: tokio::sync::mpsc::UnboundedSender<Ack>,
    debt: Arc<Debt>,
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acks")
            .field(
                "owed",
                &self.debt.owed.load(std::sync::atomic::Ordering::Relaxed),
            )
            .finish()
    }
}

/// The acknowledgements owed: one per message handed to a task, until it is given to the client
/// (or the task ends without one: a run the stopping runner could not record).
#[derive(Default)]
struct Debt {
    owed: std::sync::atomic::AtomicUsize,
    paid: tokio::sync::Notify,
}

/// One message's acknowledgement owed, paid when it is given to the client or dropped.
pub(crate) struct Owed(Arc<Debt>);

impl Drop for Owed {
    fn drop(&mut self) {
        if self
            .0
            .owed
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.paid.notify_waiters();
        }
    }
}

/// One acknowledgement: the message's reply subject and what to tell the server.
struct Ack {
    reply: async_nats::Subject,
    kind: AckKind,
    workflow: &'static str,
    _owed: Owed,
}

/// Most acknowledgements handed to the client at once.
const ACK_BATCH: usize = 1024;

impl Acks {
    /// Starts the task that sends them; it ends once every handle is dropped and the queue
    /// is empty.
    fn start(client: async_nats::Client) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(send_acks(client, rx));
        Self {
            queue: tx,
            debt: Arc::default(),
        }
    }

    /// One more acknowledgement owed (a message handed to a task).
    fn owe(&self) -> Owed {
        self.debt
            .owed
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Owed(self.debt.clone())
    }

    /// Returns once every acknowledgement owed is given to the client.
    pub(crate) async fn paid(&self) {
        loop {
            let paid = self.debt.paid.notified();
            tokio::pin!(paid);
            paid.as_mut().enable();
            if self.debt.owed.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            paid.await;
        }
    }

    /// Queues `kind` for `message`, paying `owed` once it is given to the client. A lost
    /// acknowledgement means a redelivery, which the idempotency key absorbs.
    fn send(
        &self,
        owed: Owed,
        message: &jetstream::Message,
        kind: AckKind,
        workflow: &'static str,
    ) {
        let Some(reply) = message.reply.clone() else {
            tracing::warn!(workflow, "a message without a reply subject cannot be acknowledged; it will be redelivered and deduplicated");
            return;
        };
        if self
            .queue
            .send(Ack {
                reply,
                kind,
                workflow,
                _owed: owed,
            })
            .is_err()
        {
            tracing::warn!(workflow, "the acknowledgement task has ended (the runtime is shutting down): a message is left unacknowledged; it will be redelivered and deduplicated");
        }
    }
}

/// At shutdown, once the runs are done: hands every acknowledgement still owed to the client,
/// then waits until the client has written what it holds. Without it, the acknowledgements of
/// the last runs could be lost with the process, and their messages delivered again.
/// Bounded (a server that is gone would hold the shutdown for its whole grace period).
pub(crate) async fn send_owed(app: &App) {
    if let Some(acks) = app.services.acks.get() {
        if tokio::time::timeout(SEND_OWED_WAIT, acks.paid())
            .await
            .is_err()
        {
            tracing::warn!("some acknowledgements were still owed at shutdown; their messages will be redelivered and deduplicated");
        }
    }
    if let Some(nats) = app.services.nats.get().filter(|n| n.connected()) {
        match tokio::time::timeout(SEND_OWED_WAIT, nats.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not flush the last acknowledgements to NATS; their messages will be redelivered and deduplicated"),
            Err(_) => tracing::warn!("flushing the last acknowledgements to NATS timed out; their messages will be redelivered and deduplicated"),
        }
    }
}

/// How long a shutdown waits for each of: the acknowledgements owed, the client's flush.
const SEND_OWED_WAIT: Duration = Duration::from_secs(2);

async fn send_acks(
    client: async_nats::Client,
    mut queued: tokio::sync::mpsc::UnboundedReceiver<Ack>,
) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while queued.recv_many(&mut batch, ACK_BATCH).await > 0 {
        // Woken by the first run of a commit: let the others it answered queue theirs.
        tokio::task::yield_now().await;
        while batch.len() < ACK_BATCH {
            match queued.try_recv() {
                Ok(ack) => batch.push(ack),
                Err(_) => break,
            }
        }
        for Ack {
            reply,
            kind,
            workflow,
            _owed: owed,
        } in batch.drain(..)
        {
            if let Err(e) = client.publish(reply, kind.into()).await {
                tracing::warn!(workflow, error = %e, "acknowledging a message failed; it will be redelivered and deduplicated");
            }
            // Given to the client (or lost): a shutdown flushes the client next.
            drop(owed);
        }
    }
}

/// Publishes an unusable message, unchanged, to `nanoflow.dlq.<workflow>`, with the error in
/// its headers; its id makes a redelivered one stored once.
async fn dead_letter(
    nats: &Nats,
    workflow: &str,
    message: &jetstream::Message,
    sequence: u64,
    key: &str,
    error: &InputError,
) -> Result<(), Error> {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        header_value(&format!("dlq:{workflow}:{key}")),
    );
    headers.insert("Nanoflow-Workflow", header_value(workflow));
    headers.insert("Nanoflow-Subject", header_value(message.subject.as_str()));
    headers.insert(
        "Nanoflow-Stream-Sequence",
        header_value(&sequence.to_string()),
    );
    let code = match error.kind {
        InputErrorKind::Syntax => "malformed_json",
        InputErrorKind::Data => "invalid_input",
    };
    headers.insert("Nanoflow-Error-Code", header_value(code));
    headers.insert(
        "Nanoflow-Error",
        header_value(&format!("invalid input for workflow `{workflow}`: {error}")),
    );
    let subject = dead_letter_subject(workflow);
    nats.js
        .publish_with_headers(subject.clone(), headers, message.payload.clone())
        .await
        .map_err(|e| Error::Queue(format!("dead-lettering to `{subject}`: {e}")))?
        .await
        .map_err(|e| Error::Queue(format!("dead-lettering to `{subject}`: {e}")))?;
    Ok(())
}

/// `POST /queues/{subject}`: publishes the JSON body (for testing and scripts). A `Nats-Msg-Id`
/// or `Idempotency-Key` header becomes the message id.
///
/// Trust model: the route is an ingress like an HTTP trigger, not a NATS console. It publishes
/// only to subjects this runner's queue triggers consume (404 otherwise), never to a `$` subject
/// (JetStream's API, the system account) or with wildcards (400), and it sits behind the admin
/// token when one is set.
pub(crate) fn routes(app: &Arc<App>) -> Router {
    let app = app.clone();
    Router::new().route(
        "/queues/{subject}",
        post(
            move |Path(subject): Path<String>, req: Request| async move {
                publish_route(&app, &subject, req).await
            },
        ),
    )
}

async fn publish_route(app: &App, subject: &str, req: Request) -> Response {
    if let Err(message) = check_publish_subject(subject) {
        return error_response(StatusCode::BAD_REQUEST, "invalid_subject", &message, |_| {});
    }
    let consumers: Vec<&'static str> = declared_subjects(app)
        .into_iter()
        .filter(|pattern| subject_matches(pattern, subject))
        .collect();
    if consumers.is_empty() {
        return error_response(
            StatusCode::NOT_FOUND,
            "unknown_subject",
            &format!(
                "no queue trigger of this runner consumes `{subject}`; this route publishes only to the subjects of `#[trigger(queue = ...)]`"
            ),
            |_| {},
        );
    }
    let Some(nats) = app.services.nats.get() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            "this runner has no NATS server; start it with `--nats-url` or `NANOFLOW_NATS_URL`",
            |_| {},
        );
    };
    let (parts, body) = req.into_parts();
    let is_json = crate::triggers::http::is_json_type(parts.headers.get(header::CONTENT_TYPE));
    if !is_json {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the message as JSON with `Content-Type: application/json`",
            |_| {},
        );
    }
    let bytes = match crate::triggers::http::read_body(
        app,
        body,
        crate::triggers::http::content_length(parts.headers.get(header::CONTENT_LENGTH)),
    )
    .await
    {
        Ok(b) => b,
        Err(response) => return response,
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            &format!("malformed JSON: {e}"),
            |err| {
                err.insert("line".into(), e.line().into());
                err.insert("column".into(), e.column().into());
            },
        );
    }
    let id = ["nats-msg-id", "idempotency-key"]
        .iter()
        .find_map(|h| parts.headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::to_owned);
    // Fail fast while the server is away: publishing would wait for its full request timeout.
    if !nats.connected() {
        return unavailable(
            "queue_unavailable",
            &format!(
                "not connected to NATS at {}; the runner is reconnecting",
                nats.url
            ),
        );
    }
    // Right after start the runner may still be creating the stream: that is not the user's
    // missing stream, so wait for it (briefly) rather than answer 404.
    if !app.services.streams.wait(&consumers, STREAM_WAIT).await {
        return unavailable(
            "queue_starting",
            &format!("the stream of `{subject}` is being set up by this runner; retry shortly"),
        );
    }
    match nats.publish(subject, id.as_deref(), bytes).await {
        Ok(p) => json_response(
            StatusCode::ACCEPTED,
            &json!({"subject": subject, "stream": p.stream, "sequence": p.sequence, "duplicate": p.duplicate}),
        ),
        // The trigger's stream was there and is gone (deleted by hand): its consumer sets it up
        // again, so this is the runner's transient state, not the client's mistake.
        Err(Error::NoStream(_)) => unavailable(
            "queue_starting",
            &format!("the stream of `{subject}` is missing and being set up again; retry shortly"),
        ),
        Err(e) => {
            tracing::warn!(subject, error = %e, "publishing failed");
            unavailable("queue_unavailable", &e.to_string())
        }
    }
}

/// `503` with `Retry-After: 1`.
fn unavailable(code: &str, message: &str) -> Response {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, code, message, |_| {});
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_hold_no_subject_syntax() {
        assert_eq!(stream_name("orders.created"), "NANOFLOW_orders_created");
        assert_eq!(stream_name("orders.*.eu"), "NANOFLOW_orders_STAR_eu");
        assert_eq!(stream_name("orders.>"), "NANOFLOW_orders_ALL");
        assert_eq!(dead_letter_subject("checkout"), "nanoflow.dlq.checkout");
    }

    #[test]
    fn publish_subjects() {
        assert!(check_publish_subject("orders.created").is_ok());
        assert!(check_publish_subject("orders.*").is_err());
        assert!(check_publish_subject("orders..x").is_err());
        assert!(check_publish_subject("a b").is_err());
        assert!(check_publish_subject("$JS.API.STREAM.PURGE.NANOFLOW_DLQ").is_err());
        assert!(check_publish_subject("orders.$x").is_err());
        assert!(check_publish_subject("").is_err());
    }

    #[test]
    fn trigger_subjects_match_like_nats() {
        assert!(subject_matches("orders.created", "orders.created"));
        assert!(!subject_matches("orders.created", "orders.created.eu"));
        assert!(subject_matches("orders.*", "orders.created"));
        assert!(!subject_matches("orders.*", "orders.created.eu"));
        assert!(!subject_matches("orders.*", "orders"));
        assert!(subject_matches("orders.>", "orders.created.eu"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(!subject_matches("orders.created", "orders"));
    }
}
