//! The HTTP side of the runner: one route per `#[trigger(http = "...")]`, plus `/healthz`,
//! `/workflows` and `/runs/{id}`. Bad input gets a specific JSON error and creates no run.

// Handlers return early with a ready `Response` as the error: it is built once, on the error
// path, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawPathParams, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::graph::BoxFuture;
use crate::ingress::flow::Settled;
use crate::ingress::reply::{error_response, json_bytes, json_response, percent_decode};
use crate::ingress::{Admitted, App, Record, Refused, Submission};
use crate::journal::RunFilter;
use crate::observability::TraceParent;
use crate::run::RunId;
use crate::runs::{RunError, RunStatus};
use crate::triggers::TriggerDef;
use crate::workflow::{DynWorkflow, InputError, InputErrorKind};

/// An HTTP trigger: its method, its path and its workflow.
type HttpTrigger = (Method, &'static str, Arc<dyn DynWorkflow>);

/// Every HTTP trigger of `app`'s workflows.
fn http_triggers(app: &App) -> Result<Vec<HttpTrigger>, Error> {
    let mut triggers = Vec::new();
    for wf in app.workflows.values() {
        for trigger in &wf.graph().triggers {
            let TriggerDef::Http { method, path } = trigger else {
                continue;
            };
            let method: Method = method.parse().map_err(|_| {
                Error::Config(format!(
                    "invalid HTTP method `{method}` on workflow `{}`",
                    wf.graph().name
                ))
            })?;
            triggers.push((method, *path, wf.clone()));
        }
    }
    Ok(triggers)
}

/// Builds the router of every HTTP trigger of `app`'s workflows with `/healthz` and `/readyz`,
/// and, apart, the run API (`/workflows`, `/runs*`) that the runner puts behind the admin token.
pub(crate) fn router(app: &Arc<App>) -> Result<(Router, Router), Error> {
    let mut by_path: BTreeMap<&'static str, MethodRouter> = BTreeMap::new();
    for (method, path, wf) in http_triggers(app)? {
        let filter = MethodFilter::try_from(method.clone())
            .map_err(|_| Error::Config(format!("unsupported HTTP method `{method}`")))?;
        let handler = {
            let app = app.clone();
            // Boxed once, here: the handler's future is moved by value through axum's
            // layers (its boxing, its mapping into a response), and a run's whole future
            // is some kilobytes (issue 16).
            move |params: RawPathParams, req: Request| {
                Box::pin(trigger_run(app, wf, Some(params), req))
            }
        };
        let routes = by_path.remove(path).unwrap_or_default();
        by_path.insert(path, routes.on(filter, handler));
    }
    let mut router = Router::new();
    for (path, routes) in by_path {
        router = router.route(path, routes);
    }
    let status_app = app.clone();
    let list_app = app.clone();
    let runs_app = app.clone();
    let retry_app = app.clone();
    let cancel_app = app.clone();
    let signal_app = app.clone();
    let replay_app = app.clone();
    let fork_app = app.clone();
    // The operations routes, behind the admin token when one is set (see `admin`).
    let operations =
        Router::new()
            .route(
                "/workflows",
                get(move || async move { workflows(&list_app) }),
            )
            .route(
                "/runs/{id}",
                get(
                    move |Path(id): Path<String>| async move { run_status(&status_app, &id).await },
                ),
            )
            .route(
                "/runs",
                get(
                    move |query: Result<Query<ListQuery>, QueryRejection>| async move {
                        match query {
                            Ok(Query(q)) => list_runs(&runs_app, q).await,
                            Err(e) => invalid_query(&e),
                        }
                    },
                ),
            )
            .route(
                "/runs/{id}/retry",
                post(
                    move |Path(id): Path<String>,
                          query: Result<Query<RetryQuery>, QueryRejection>| async move {
                        match query {
                            Ok(Query(q)) => {
                                super::deploys::retry(
                                    &retry_app,
                                    &id,
                                    q.from_start.unwrap_or(false),
                                )
                                .await
                            }
                            Err(e) => invalid_query(&e),
                        }
                    },
                ),
            )
            .route(
                "/runs/{id}/replay",
                post(
                    move |Path(id): Path<String>,
                          query: Result<Query<ReplayQuery>, QueryRejection>| async move {
                        match query {
                            Ok(Query(q)) => super::deploys::replay(&replay_app, &id, q.stub).await,
                            Err(e) => invalid_query(&e),
                        }
                    },
                ),
            )
            .route(
                "/runs/{id}/fork",
                post(
                    move |Path(id): Path<String>,
                          query: Result<Query<ForkQuery>, QueryRejection>| async move {
                        match query {
                            Ok(Query(q)) => super::deploys::fork(&fork_app, &id, &q.from).await,
                            Err(e) => invalid_query(&e),
                        }
                    },
                ),
            )
            .route(
                "/runs/{id}/cancel",
                post(move |Path(id): Path<String>| async move {
                    super::deploys::cancel(&cancel_app, &id).await
                }),
            )
            .route(
                "/runs/{id}/signals/{name}",
                post(
                    move |Path((id, name)): Path<(String, String)>, body: Bytes| async move {
                        super::deploys::signal(&signal_app, &id, &name, body).await
                    },
                ),
            );
    let ready_app = app.clone();
    let router = router
        .route(
            "/healthz",
            get(|| async { json_response(StatusCode::OK, &json!({"status": "ok"})) }),
        )
        .route("/readyz", get(move || async move { readiness(&ready_app) }))
        .route("/openapi.json", {
            // Describes the routes open to clients anyway (the triggers) and the run API's
            // shape, none of its data: open, like the trigger routes.
            let document = super::openapi::document(
                &super::openapi::service_name(),
                app.workflows.values().map(|wf| wf.as_ref()),
            );
            get(move || async move { json_response(StatusCode::OK, &document) })
        });
    Ok((router, operations))
}

/// The trigger routes without path parameters, served straight from the connection rather than
/// through the router (issue 16): matching the method and the exact path is all the router
/// would do for them, and its way (a route table walk, a map of URL parameters in each
/// request's extensions, a boxed service cloned per request, a response future mapped twice)
/// costs more than a trigger's own checks. Any other request, including one to such a path
/// with another method (405), goes to the router, which serves these routes too.
pub(crate) struct Direct {
    app: Arc<App>,
    routes: Vec<HttpTrigger>,
}

impl Direct {
    pub(crate) fn new(app: &Arc<App>) -> Result<Self, Error> {
        let mut routes = http_triggers(app)?;
        routes.retain(|(_, path, _)| !path.contains('{'));
        Ok(Direct {
            app: app.clone(),
            routes,
        })
    }

    /// The trigger of `method` on exactly `path`, if it is one of these routes.
    pub(crate) fn route(&self, method: &Method, path: &str) -> Option<DirectRoute<'_>> {
        self.routes
            .iter()
            .find(|(m, p, _)| p.len() == path.len() && m == method && *p == path)
            .map(|(_, _, wf)| DirectRoute { direct: self, wf })
    }
}

/// A request's trigger, found by [`Direct::route`].
pub(crate) struct DirectRoute<'a> {
    direct: &'a Direct,
    wf: &'a Arc<dyn DynWorkflow>,
}

impl DirectRoute<'_> {
    /// Answers `req`: the same as its route in the router.
    pub(crate) fn call(self, req: Request) -> BoxFuture<'static, Response> {
        Box::pin(trigger_run(
            self.direct.app.clone(),
            self.wf.clone(),
            None,
            req,
        ))
    }
}

/// JSON answers for a path no route serves (404) and a method a route does not take (405).
pub(crate) fn with_fallbacks(router: Router) -> Router {
    router
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {method} {}", uri.path()),
                |_| {},
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{method} is not allowed on {}", uri.path()),
                |_| {},
            )
        })
}

fn overloaded(max: usize) -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        &format!("the runner is at its limit of {max} runs in flight; retry shortly"),
        |_| {},
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn input_error(error: &InputError) -> Response {
    if error.message.starts_with(crate::workflow::TOO_DEEP) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "too_deep",
            &format!(
                "the input's {} (at line {} column {})",
                error.message, error.line, error.column
            ),
            |e| {
                e.insert("limit".into(), crate::workflow::MAX_JSON_DEPTH.into());
                e.insert("line".into(), error.line.into());
                e.insert("column".into(), error.column.into());
            },
        );
    }
    match error.kind {
        InputErrorKind::Syntax => error_response(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            &error.to_string(),
            |e| {
                e.insert("line".into(), error.line.into());
                e.insert("column".into(), error.column.into());
            },
        ),
        InputErrorKind::Data => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            &error.to_string(),
            |e| {
                e.insert("path".into(), Value::from(error.path.clone()));
            },
        ),
    }
}

/// [`input_error`], with what the workflow's input schema expects where the input went wrong.
fn input_error_in(wf: &dyn DynWorkflow, error: &InputError) -> Response {
    let mut response = input_error(error);
    if error.kind == InputErrorKind::Data {
        if let Some(expected) = wf
            .schemas()
            .0
            .and_then(|schema| crate::schema::expected_at(&schema, &error.path))
        {
            response = error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                &format!("{error} (the input's schema expects {expected} there)"),
                |e| {
                    e.insert("path".into(), Value::from(error.path.clone()));
                    e.insert("expected".into(), Value::from(expected));
                },
            );
        }
    }
    response
}

/// Maps a failed run to a status and a body that never leaks internals.
pub(crate) fn run_error(error: &Error) -> (StatusCode, RunError) {
    let (status, body) = RunError::from_error(error);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

/// Whether a `Content-Type` value names JSON: `application/json` or `application/*+json`, in
/// any case, with or without parameters.
pub(crate) fn is_json_type(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let value = value.as_bytes();
    // What nearly every client sends, compared at once.
    if value.eq_ignore_ascii_case(b"application/json") {
        return true;
    }
    let mime = value
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let ends_with = |suffix: &[u8]| {
        mime.len() >= suffix.len() && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    let starts_with = |prefix: &[u8]| {
        mime.len() >= prefix.len() && mime[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    mime.eq_ignore_ascii_case(b"application/json")
        || (starts_with(b"application/") && ends_with(b"+json"))
}

/// Request headers the trigger reads, named once (a name given as text is parsed at every
/// lookup).
static IDEMPOTENCY_KEY: header::HeaderName = header::HeaderName::from_static("idempotency-key");
static PREFER: header::HeaderName = header::HeaderName::from_static("prefer");

/// The headers a trigger reads, found in one pass over the request's few headers rather than
/// by one hashed lookup each (issue 16). Each is the first value of its name, as
/// `HeaderMap::get` gives it; `Prefer` is read in all its values.
#[derive(Default)]
struct TriggerHeaders<'h> {
    content_type: Option<&'h HeaderValue>,
    content_length: Option<&'h HeaderValue>,
    idempotency_key: Option<&'h HeaderValue>,
    traceparent: Option<&'h HeaderValue>,
    respond_async: bool,
}

impl<'h> TriggerHeaders<'h> {
    fn of(headers: &'h HeaderMap) -> Self {
        let mut found = TriggerHeaders::default();
        for (name, value) in headers {
            if name == header::CONTENT_TYPE {
                found.content_type.get_or_insert(value);
            } else if name == header::CONTENT_LENGTH {
                found.content_length.get_or_insert(value);
            } else if name == IDEMPOTENCY_KEY {
                found.idempotency_key.get_or_insert(value);
            } else if name == crate::observability::trace::TRACEPARENT {
                found.traceparent.get_or_insert(value);
            } else if name == PREFER {
                found.respond_async |= prefers_async(value);
            }
        }
        found
    }
}

/// Whether a `Prefer` value asks for `respond-async`.
fn prefers_async(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
    })
}

/// A path or query value as JSON: numbers and booleans as such, anything else as a string.
fn param_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(raw.to_owned()),
    }
}

/// A request's declared `Content-Length`, if it has a valid one.
pub(crate) fn content_length(value: Option<&HeaderValue>) -> Option<usize> {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Reads a request body within `--max-body` and `--body-timeout`, giving up when the runner
/// stops (a half-sent body must not hold a shutdown for its grace period). `declared`: its
/// `Content-Length`, if it has one.
pub(crate) async fn read_body(
    app: &App,
    body: Body,
    declared: Option<usize>,
) -> Result<Bytes, Response> {
    let limit = app.config.max_body;
    if declared.is_some_and(|n| n > limit) {
        return Err(body_too_large(limit));
    }
    let mut read = std::pin::pin!(read_body_within(body, limit));
    // Most bodies arrive with their headers: read them at once, without arming a timer or
    // watching for shutdown (both cost a registration per request on the hot path).
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(read.as_mut(), cx))
    })
    .await;
    match first {
        std::task::Poll::Ready(result) => result,
        // Boxed: its timer and watch must not weigh on every run's future.
        std::task::Poll::Pending => Box::pin(read_body_slowly(app, read)).await,
    }
}

/// The rest of a body that did not come with its headers: within `--body-timeout`, and given
/// up when the runner stops.
async fn read_body_slowly(
    app: &App,
    read: std::pin::Pin<&mut (impl std::future::Future<Output = Result<Bytes, Response>> + ?Sized)>,
) -> Result<Bytes, Response> {
    let timeout = app.config.body_timeout;
    let mut stop = app.stop.subscribe();
    tokio::select! {
        read = tokio::time::timeout(timeout, read) => match read {
            Ok(result) => result,
            Err(_) => Err(error_response(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!(
                    "the request body did not arrive within {} ms (`--body-timeout`)",
                    timeout.as_millis()
                ),
                |_| {},
            )),
        },
        _ = stop.wait_for(|stopped| *stopped) => {
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the runner is shutting down; the request was not started, retry on another runner or later",
                |_| {},
            );
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

fn body_too_large(limit: usize) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is larger than the limit of {limit} bytes"),
        |e| {
            e.insert("limit".into(), limit.into());
        },
    )
}

/// The body's data frames, at most `limit` bytes in all. A body that comes in one frame (most
/// do: hyper hands over what one read brought) is that frame's bytes, neither copied nor
/// gathered in a list first (issue 16).
async fn read_body_within(mut body: Body, limit: usize) -> Result<Bytes, Response> {
    use axum::body::HttpBody as _;
    let mut whole: Option<Bytes> = None;
    let mut gathered: Option<Vec<u8>> = None;
    let mut len = 0usize;
    while !body.is_end_stream() {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                return Err(error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("could not read the request body: {e}"),
                    |_| {},
                ))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers carry no input.
                Err(_) => continue,
            },
        };
        len += data.len();
        if len > limit {
            return Err(body_too_large(limit));
        }
        match (&mut gathered, whole.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => whole = Some(data),
            (None, Some(first)) => {
                let mut all = Vec::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                gathered = Some(all);
            }
        }
    }
    Ok(match gathered {
        Some(all) => Bytes::from(all),
        None => whole.unwrap_or_default(),
    })
}

/// The fields a trigger adds to its input: path parameters, and (for a request without a
/// body) query parameters, a path parameter first when both have a name.
fn fields(params: Option<&RawPathParams>, query: Option<&str>) -> Vec<(String, Value)> {
    let mut fields: Vec<(String, Value)> = params
        .into_iter()
        .flat_map(RawPathParams::iter)
        .map(|(k, v)| (k.to_owned(), param_value(v)))
        .collect();
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            if !fields.iter().any(|(name, _)| *name == k) {
                fields.push((k, param_value(&percent_decode(v))));
            }
        }
    }
    fields
}

/// Builds the input document: the JSON body (for methods with a body) with `fields` (see
/// [`fields`]) merged in.
#[allow(clippy::result_large_err)] // an error response, built once per bad request
fn input_document(
    body: Bytes,
    has_body: bool,
    fields: Vec<(String, Value)>,
) -> Result<Bytes, Response> {
    if fields.is_empty() {
        // The body itself, shared rather than copied.
        return Ok(if has_body {
            body
        } else {
            Bytes::from_static(b"null")
        });
    }
    let mut object = if has_body && !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    "the body must be a JSON object on a route with parameters",
                    |e| {
                        e.insert("path".into(), Value::from("."));
                    },
                ))
            }
            Err(e) => {
                return Err(input_error(&InputError {
                    kind: InputErrorKind::Syntax,
                    message: e.to_string(),
                    path: ".".into(),
                    line: e.line(),
                    column: e.column(),
                }))
            }
        }
    } else {
        Map::new()
    };
    for (k, v) in fields {
        object.insert(k, v);
    }
    Ok(Bytes::from(
        serde_json::to_vec(&Value::Object(object)).unwrap_or_default(),
    ))
}

/// Answers a request to a trigger: reads its head at once, so that the run's future holds what
/// it needs of the request rather than the request (issue 16), and returns the rest of the
/// work, which reads the body and runs the workflow.
fn trigger_run(
    app: Arc<App>,
    wf: Arc<dyn DynWorkflow>,
    params: Option<RawPathParams>,
    req: Request,
) -> impl std::future::Future<Output = Response> + Send + 'static {
    let (parts, body) = req.into_parts();
    let headers = TriggerHeaders::of(&parts.headers);
    let has_body = !matches!(parts.method, Method::GET | Method::DELETE | Method::HEAD);
    let head = Head {
        has_body,
        json: is_json_type(headers.content_type)
            || headers.content_length.is_some_and(|v| v == "0"),
        content_length: content_length(headers.content_length),
        fields: fields(
            params.as_ref(),
            (!has_body).then(|| parts.uri.query()).flatten(),
        ),
        idempotency_key: match headers.idempotency_key.map(|v| v.to_str()) {
            None => Ok(None),
            Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_owned())),
            Some(_) => Err(()),
        },
        asynchronous: headers.respond_async,
        trace_parent: headers.traceparent.and_then(TraceParent::from_header),
    };
    run_request(app, wf, head, body)
}

/// What a trigger needs of a request's head.
struct Head {
    has_body: bool,
    /// Whether the body is JSON, or declared empty.
    json: bool,
    /// The declared `Content-Length`.
    content_length: Option<usize>,
    /// Path parameters, and query parameters of a request without a body.
    fields: Vec<(String, Value)>,
    /// `Idempotency-Key`; `Err`: not 1 to 255 visible ASCII characters.
    idempotency_key: Result<Option<String>, ()>,
    /// `Prefer: respond-async`.
    asynchronous: bool,
    trace_parent: Option<TraceParent>,
}

/// The work of a trigger's request once its head is read. A function that returns a block
/// rather than an `async fn`, which would keep its arguments twice in its future (issue 16).
#[allow(clippy::manual_async_fn)] // an `async fn` holds its arguments twice
fn run_request(
    app: Arc<App>,
    wf: Arc<dyn DynWorkflow>,
    head: Head,
    body: Body,
) -> impl std::future::Future<Output = Response> + Send + 'static {
    async move {
        let bytes = if head.has_body {
            if !head.json {
                return error_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the input as JSON with `Content-Type: application/json`",
                    |_| {},
                );
            }
            match read_body(&app, body, head.content_length).await {
                Ok(b) => b,
                Err(response) => return response,
            }
        } else {
            drop(body);
            Bytes::new()
        };
        let document = match input_document(bytes, head.has_body, head.fields) {
            Ok(d) => d,
            Err(response) => return response,
        };
        // While the journal cannot write, a run would execute steps it cannot record: refuse it
        // before any step runs, so that "not started" is true.
        if let Err(why) = app.journal.health() {
            // Not logged per request: the journal logs its failures (at a falling rate).
            tracing::debug!(error = %why, "journal unavailable; refusing a run");
            return journal_refusal();
        }
        // A run slot only once the whole request is here: clients that send slowly (or never
        // finish) must not hold the slots that complete requests need.
        let Ok(permit) = app.limiter.clone().try_acquire_owned() else {
            return overloaded(app.config.max_in_flight);
        };
        let run_id = RunId::new();
        let Ok(idempotency_key) = head.idempotency_key else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
                |_| {},
            );
        };
        let asynchronous = head.asynchronous;
        let submission = Submission {
            workflow: wf.clone(),
            input: document,
            run_id,
            key: idempotency_key,
            trace_parent: head.trace_parent,
            // 202 promises the run survives a crash: recorded before answering.
            record: if asynchronous {
                Record::Now
            } else {
                Record::WithFirstStep
            },
        };
        let run = match app.submit(submission).await {
            Ok(Admitted::New(run)) => run,
            Ok(Admitted::Existing(original)) => return existing_run(&app, original).await,
            Err(Refused::Input(e)) => return input_error_in(wf.as_ref(), &e),
            Err(Refused::Journal(e)) => return journal_unavailable(&e),
        };
        if asynchronous {
            let queued = run.is_queued();
            drop(run.spawn(&app, permit));
            return if queued {
                accepted_as(run_id, "queued")
            } else {
                accepted(run_id)
            };
        }
        if run.is_queued() {
            // A limited workflow: answered when the run ends, or stops to wait.
            drop(permit);
            return match Box::pin(run.settled(&app)).await {
                Settled::Output(output) => json_bytes(StatusCode::OK, output),
                Settled::Waiting => accepted_as(run_id, "waiting"),
                Settled::Failed(status, error) => run_error_response(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &error,
                    run_id,
                ),
            };
        }
        match run.drive(&app, permit).await {
            Ok(output) => json_bytes(StatusCode::OK, output),
            Err(Error::Waiting { .. }) => accepted_as(run_id, "waiting"),
            Err(error @ Error::Journal(_)) => {
                Box::pin(journal_failed_during(&app, &error, run_id)).await
            }
            Err(error) => failed_run(&error, run_id),
        }
    }
}

/// The answer for a run that started and then could not be recorded (the journal failed while
/// it ran). It tells what is true, from what the journal holds:
/// - the run is in the journal: it was accepted, and continues from its last recorded step
///   once the journal writes again (202, like an asynchronous run, with its location);
/// - it is not: it stopped and nothing will resume it, but the steps it ran may have had
///   effects, which a retry would repeat (503, with the run id and `recorded: false`).
async fn journal_failed_during(app: &App, error: &Error, run_id: RunId) -> Response {
    let recorded = match app.durable() {
        Some(journal) => journal.get_run(run_id).await.ok().flatten().is_some(),
        None => false,
    };
    tracing::error!(%run_id, recorded, error = %error, "the journal failed during a run");
    if recorded {
        let location = format!("/runs/{run_id}");
        let mut response = json_response(
            StatusCode::ACCEPTED,
            &json!({
                "run_id": run_id,
                "status": "running",
                "location": location,
                "message": "the run is recorded, but the journal failed while it ran; it continues from its last recorded step once the journal writes again",
            }),
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        return response;
    }
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal_unavailable",
        &format!(
            "run `{run_id}` started, but the journal could not record it, so it stopped and will not resume; \
             steps that ran before the failure may have taken effect, and a retry runs them again"
        ),
        |e| {
            e.insert("run_id".into(), Value::from(run_id.to_string()));
            e.insert("recorded".into(), Value::from(false));
        },
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// `GET /readyz`: 200 when every service the triggers depend on is in place, else 503 naming
/// what is not (`/healthz` only says the process serves HTTP).
fn readiness(app: &App) -> Response {
    let mut checks = Map::new();
    let mut ready = true;
    let mut check = |name: &str, result: Option<Result<(), String>>| {
        if let Some(result) = result {
            ready &= result.is_ok();
            checks.insert(
                name.into(),
                match result {
                    Ok(()) => json!({"ready": true}),
                    Err(why) => json!({"ready": false, "reason": why}),
                },
            );
        }
    };
    if *app.stop.borrow() {
        check("runner", Some(Err("shutting down".into())));
    }
    check(
        "journal",
        app.durable().map(crate::journal::Journal::health),
    );
    #[cfg(feature = "nats")]
    check("queue", crate::triggers::queue::readiness(app));
    #[cfg(feature = "postgres")]
    check("database", crate::triggers::postgres::readiness(app));
    check(
        "containers",
        app.containers.as_ref().map(|host| host.ready()),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = json_response(
        status,
        &json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks}),
    );
    if !ready {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

pub(crate) fn accepted(run_id: RunId) -> Response {
    accepted_as(run_id, "running")
}

/// `202` with the run's location and where it stands (`running`, `queued`, `waiting`).
pub(crate) fn accepted_as(run_id: RunId, status: &str) -> Response {
    let location = format!("/runs/{run_id}");
    let mut response = json_response(
        StatusCode::ACCEPTED,
        &json!({"run_id": run_id, "status": status, "location": location}),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

pub(crate) fn journal_unavailable(e: &Error) -> Response {
    tracing::error!(error = %e, "journal unavailable; refusing the run");
    journal_refusal()
}

/// `503 journal_unavailable`: nothing of the run ran, and nothing will.
fn journal_refusal() -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal_unavailable",
        "the run could not be recorded durably, so it was not started; retry later",
        |_| {},
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn failed_run(error: &Error, run_id: RunId) -> Response {
    if let Error::Journal(_) = error {
        return journal_unavailable(error);
    }
    let (status, body) = run_error(error);
    let mut response = run_error_response(status, &body, run_id);
    // A 503 is a runtime fault that passes (the container engine is away, a pool is full).
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn run_error_response(status: StatusCode, body: &RunError, run_id: RunId) -> Response {
    error_response(status, &body.code, &body.message, |e| {
        if let Some(node) = &body.node {
            e.insert("node".into(), Value::from(node.clone()));
        }
        e.insert("run_id".into(), Value::from(run_id.to_string()));
    })
}

/// The answer for a repeated idempotency key: the original run's output or error when it has
/// finished, or 202 with its location while it runs.
async fn existing_run(app: &App, run_id: RunId) -> Response {
    let (status, output, error) = match app.journal.get_run(run_id).await {
        Ok(Some(r)) => (
            r.status,
            r.output,
            r.error
                .and_then(|e| serde_json::from_value::<RunError>(e).ok()),
        ),
        Ok(None) => return accepted(run_id),
        Err(e) => return journal_unavailable(&e),
    };
    match (status, output, error) {
        (RunStatus::Succeeded, Some(output), _) => json_bytes(StatusCode::OK, output),
        (RunStatus::Blocked, _, Some(error)) => {
            run_error_response(StatusCode::CONFLICT, &error, run_id)
        }
        (RunStatus::Failed, _, Some(error)) => {
            let code = if error.code == "node_timeout" {
                504
            } else {
                500
            };
            run_error_response(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &error,
                run_id,
            )
        }
        _ => accepted(run_id),
    }
}

#[allow(clippy::result_large_err)] // an error response, built once per bad request
pub(crate) fn parse_run_id(id: &str) -> Result<RunId, Response> {
    id.parse::<RunId>().map_err(|_| {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_run_id",
            &format!("`{id}` is not a run id (32 hex digits)"),
            |_| {},
        )
    })
}

pub(crate) fn run_not_found(id: RunId) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "run_not_found",
        &format!("no run with id `{id}`"),
        |_| {},
    )
}

async fn run_status(app: &App, id: &str) -> Response {
    let run_id = match parse_run_id(id) {
        Ok(r) => r,
        Err(response) => return response,
    };
    match app.journal.get_run(run_id).await {
        Ok(Some(record)) => json_response(StatusCode::OK, &RunView::from(&record)),
        Ok(None) => run_not_found(run_id),
        Err(e) => journal_unavailable(&e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
    q: Option<String>,
}

/// `GET /runs?workflow=&status=&q=&before=&limit=`: newest first; `before` is the last run id
/// of the previous page; `q` searches run ids (a prefix), idempotency keys, inputs and errors.
async fn list_runs(app: &App, query: ListQuery) -> Response {
    let journal = &app.journal;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) if RunStatus::parse(text).is_some() => RunStatus::parse(text),
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_status",
                &format!(
                    "unknown status `{other}`; expected running, queued, waiting, succeeded, failed, cancelled or blocked"
                ),
                |_| {},
            )
        }
    };
    let before = match query
        .before
        .as_deref()
        .filter(|b| !b.is_empty())
        .map(parse_run_id)
        .transpose()
    {
        Ok(b) => b,
        Err(response) => return response,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let filter = RunFilter {
        workflow: query.workflow.filter(|w| !w.is_empty()),
        status,
        before,
        limit,
        search: query
            .q
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty()),
    };
    match journal.list_runs(filter).await {
        Ok(runs) => {
            let next = if runs.len() == limit {
                runs.last().map(|r| r.run_id.to_string())
            } else {
                None
            };
            // Serialized straight to bytes, never through `serde_json::Value`: stored inputs
            // and outputs pass through as they are, however deeply they nest.
            #[derive(serde::Serialize)]
            struct Page<'a> {
                runs: Vec<RunView<'a>>,
                next_before: Option<String>,
            }
            json_response(
                StatusCode::OK,
                &Page {
                    runs: runs.iter().map(RunView::from).collect(),
                    next_before: next,
                },
            )
        }
        Err(e) => journal_unavailable(&e),
    }
}

/// `?from=step` of `POST /runs/{id}/fork`.
#[derive(Debug, serde::Deserialize)]
struct ForkQuery {
    from: String,
}

/// `?stub=a,b` of `POST /runs/{id}/replay`.
#[derive(Debug, serde::Deserialize)]
struct ReplayQuery {
    stub: Option<String>,
}

/// `?from_start=true` of `POST /runs/{id}/retry`.
#[derive(Debug, serde::Deserialize)]
struct RetryQuery {
    from_start: Option<bool>,
}

fn workflows(app: &App) -> Response {
    let list: Vec<Value> = app
        .workflows
        .values()
        .map(|wf| {
            let g = wf.graph();
            let (input_schema, output_schema) = wf.schemas();
            json!({
                "name": g.name,
                "doc": g.doc,
                "input_type": g.input_type,
                "output_type": g.output_type,
                "input_schema": input_schema,
                "output_schema": output_schema,
                "triggers": g.triggers.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "steps": g.steps.iter().map(|s| json!({
                    "name": s.name, "node": s.node, "input_type": s.input_type, "output_type": s.output_type,
                    "retries": s.options.retries,
                    "timeout_ms": s.options.timeout.map(|t| t.as_millis() as u64),
                    "kind": s.kind.as_str(),
                    "signal": match s.kind {
                        crate::graph::StepKind::Signal { timeout, signal } => json!({
                            "type": crate::graph::short_type(signal.type_name),
                            "schema": (signal.schema)(),
                            "timeout_ms": timeout.map(|t| t.as_millis() as u64),
                        }),
                        _ => Value::Null,
                    },
                })).collect::<Vec<_>>(),
                "limits": g.limits.limits.iter().map(|l| match l {
                    crate::graph::Limit::Concurrency(n) => json!({"concurrency": n}),
                    crate::graph::Limit::Rate { count, per } => json!({"rate": count, "per_ms": per.as_millis() as u64}),
                    crate::graph::Limit::Debounce(d) => json!({"debounce_ms": d.as_millis() as u64}),
                }).collect::<Vec<_>>(),
                "limit_key": g.limits.key.map(|k| k.join(".")),
                "timeout_ms": g.timeout.map(|t| t.as_millis() as u64),
                "edges": g.edges_text(),
                "links": g.edges.iter().map(|(from, to)| [endpoint(g, *from), endpoint(g, *to)]).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "workflows": list }))
}

/// An edge end for `/workflows`: `"input"`, `"output"`, or the step's name.
fn endpoint(g: &crate::graph::Graph, end: crate::graph::Endpoint) -> &'static str {
    match end {
        crate::graph::Endpoint::Input => "input",
        crate::graph::Endpoint::Output => "output",
        crate::graph::Endpoint::Step(i) => g.steps.get(i).map_or("?", |s| s.name),
    }
}

impl IntoResponse for crate::runs::RunSummary {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self)
    }
}

/// A run as `GET /runs/{id}` and `GET /runs` serve it, whatever the store: the record, and
/// `started_ms` (the same instant as `created_ms`), which runners without a journal served
/// before they kept runs in a memory store.
#[derive(serde::Serialize)]
struct RunView<'a> {
    #[serde(flatten)]
    record: &'a crate::journal::RunRecord,
    started_ms: u64,
}

impl<'a> From<&'a crate::journal::RunRecord> for RunView<'a> {
    fn from(record: &'a crate::journal::RunRecord) -> Self {
        Self {
            record,
            started_ms: record.created_ms,
        }
    }
}

/// `400 invalid_query`: the query string does not fit the route's parameters.
fn invalid_query(e: &QueryRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        &e.body_text(),
        |_| {},
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_in_any_case_with_parameters() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(value),
            );
            is_json_type(headers.get(header::CONTENT_TYPE))
        };
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;q=1",
            "application/problem+json",
            "APPLICATION/VND.API+JSON",
        ] {
            assert!(with(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/jsonx",
            "text/json",
            "application/+jso",
            "json",
        ] {
            assert!(!with(no), "{no}");
        }
        assert!(!is_json_type(None));
    }

    #[test]
    fn params_become_typed_values() {
        assert_eq!(param_value("12"), json!(12));
        assert_eq!(param_value("true"), json!(true));
        assert_eq!(param_value("007"), json!("007"));
        assert_eq!(param_value("abc"), json!("abc"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
