//! The operations surface served beside the triggers: the dashboard at `/` (assets embedded in
//! the binary), `GET /metrics`, `GET /events`, and the admin token that guards them together
//! with `/workflows` and `/runs*` (see [`AdminToken`]).

pub(crate) mod assets;
mod auth;
pub(crate) use auth::with_peer;

pub use crate::config::AdminToken;

/// The admin surface's own state: browser sessions and the wrong-credential throttle.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    pub(crate) sessions: auth::Sessions,
    pub(crate) throttle: auth::Throttle,
}

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::error::Error;
use crate::ingress::reply::error_response;
use crate::ingress::App;
use crate::trigger::TriggerDef;

/// Whether `/` shows the dashboard (no workflow serves `GET /`); it is always at `/ui`.
pub(crate) fn dashboard_at_root(app: &App) -> bool {
    !app.workflows.values().any(|wf| {
        wf.graph().triggers.iter().any(|t| {
            matches!(
                t,
                TriggerDef::Http {
                    method: "GET",
                    path: "/"
                }
            )
        })
    })
}

/// Refuses a trigger that would shadow an operations route.
fn check_routes(app: &App) -> Result<(), Error> {
    for wf in app.workflows.values() {
        for t in &wf.graph().triggers {
            let TriggerDef::Http { method, path } = t else {
                continue;
            };
            if crate::rules::reserved_route(path).is_some() {
                return Err(Error::Config(format!(
                    "workflow `{}`: the route `{method} {path}` is reserved for the runner's dashboard and API",
                    wf.graph().name
                )));
            }
        }
    }
    Ok(())
}

/// `routes` behind the admin token when one is set (for routes that live outside the operations
/// surface but must not be open, such as `POST /queues/{subject}`).
pub(crate) fn guarded(app: &Arc<App>, routes: Router) -> Router {
    routes.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        auth::require_token,
    ))
}

/// Wraps the runner's operations routes (`/workflows`, `/runs*`, ...) with the dashboard, the
/// metrics and the event stream, all behind the admin token when one is set; adds the login
/// routes, which are open.
pub(crate) fn routes(app: &Arc<App>, operations: Router) -> Result<Router, Error> {
    check_routes(app)?;
    let metrics_app = app.clone();
    let events_app = app.clone();
    let config_app = app.clone();
    let index = || get(|| async { html(StatusCode::OK, assets::INDEX_HTML) });
    let mut protected = operations.route("/ui", index()).route("/ui/", index());
    // The dashboard is also at `/`, unless a workflow's trigger is `GET /`: that one wins.
    if dashboard_at_root(app) {
        protected = protected.route("/", index());
    }
    let protected = protected
        .route(
            "/ui/config.json",
            get(move || async move { ui_config(&config_app) }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let shared = shared_metrics(&metrics_app).await;
                metrics(&metrics_app, &shared)
            }),
        )
        .route(
            "/events",
            get(move || async move { events_app.observe.events.stream() }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ));
    // The login page and the static files it and the dashboard load hold no data: open.
    let open = Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .with_state(app.clone())
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", assets::APP_JS) }),
        )
        .route(
            "/ui/graph.js",
            get(|| async { asset("text/javascript; charset=utf-8", assets::GRAPH_JS) }),
        )
        .route(
            "/ui/form.js",
            get(|| async { asset("text/javascript; charset=utf-8", assets::FORM_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", assets::STYLE_CSS) }),
        )
        .route(
            "/ui/favicon.svg",
            get(|| async { asset("image/svg+xml", assets::FAVICON_SVG) }),
        );
    Ok(protected.merge(open))
}

/// The backlog of a journal shared by several runners (`GET /metrics`): what no runner
/// executes now, how old its oldest run is, and how many runs this runner took over.
async fn shared_metrics(app: &App) -> String {
    use std::fmt::Write as _;
    let journal = &app.journal;
    if !journal.store().shared() {
        return String::new();
    }
    let backlog = match journal.store().backlog().await {
        Ok(Some(b)) => b,
        // Unreachable or not shared: the readiness probe and the commit metrics say it.
        _ => return String::new(),
    };
    let mut out = String::new();
    out.push_str("# HELP nanoflow_shared_backlog_runs Running runs of the shared journal whose runner's lease lapsed: waiting for a runner to take them over.\n");
    out.push_str("# TYPE nanoflow_shared_backlog_runs gauge\n");
    let _ = writeln!(out, "nanoflow_shared_backlog_runs {}", backlog.unclaimed);
    out.push_str("# HELP nanoflow_shared_backlog_oldest_seconds Age of the oldest run waiting for a runner.\n");
    out.push_str("# TYPE nanoflow_shared_backlog_oldest_seconds gauge\n");
    let _ = writeln!(
        out,
        "nanoflow_shared_backlog_oldest_seconds {:.3}",
        backlog.oldest_age.as_secs_f64()
    );
    out.push_str("# HELP nanoflow_takeovers_total Runs this runner took over from runners whose lease lapsed.\n");
    out.push_str("# TYPE nanoflow_takeovers_total counter\n");
    let _ = writeln!(out, "nanoflow_takeovers_total {}", backlog.takeovers);
    out
}

fn metrics(app: &App, shared: &str) -> Response {
    let Some(metrics) = &app.observe.metrics else {
        return error_response(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "metrics are off; start the runner without `--metrics off`",
            |_| {},
        );
    };
    let max = app.config.max_in_flight;
    let free = app.limiter.available_permits().min(max);
    #[allow(unused_mut)]
    let mut text = metrics.render(
        app.durable()
            .and_then(|j| j.metrics().map(|m| (m, j.transactions(), j.syncs()))),
        app.observe.events.listeners(),
        (max - free, free),
    );
    if let Some(containers) = &app.containers {
        text.push_str(&container_metrics(containers.as_ref()));
    }
    text.push_str(shared);
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The container pools: live containers and cold starts, by node.
fn container_metrics(containers: &dyn crate::run::NodeHost) -> String {
    use std::fmt::Write as _;
    let stats = containers.stats();
    let mut out = String::new();
    out.push_str("# HELP nanoflow_container_pool_size Live containers in a node's warm pool.\n");
    out.push_str("# TYPE nanoflow_container_pool_size gauge\n");
    for (node, size, _) in &stats {
        let _ = writeln!(
            out,
            "nanoflow_container_pool_size{{node=\"{node}\"}} {size}"
        );
    }
    out.push_str("# HELP nanoflow_container_cold_starts_total Containers started because a node's pool was empty or full.\n");
    out.push_str("# TYPE nanoflow_container_cold_starts_total counter\n");
    for (node, _, cold) in &stats {
        let _ = writeln!(
            out,
            "nanoflow_container_cold_starts_total{{node=\"{node}\"}} {cold}"
        );
    }
    out
}

/// Headers of every page: scripts and styles only from this origin (no inline code, no eval),
/// never framed, no referrer.
fn secure(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

pub(crate) fn html(status: StatusCode, page: &str) -> Response {
    let mut response = Response::new(Body::from(page.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(&mut response);
    response
}

/// What the dashboard needs to know about this runner.
fn ui_config(app: &App) -> Response {
    crate::ingress::reply::json_response(
        StatusCode::OK,
        &serde_json::json!({
            "auth": app.config.admin_token.is_some(),
            "journal": app.durable().is_some(),
            "metrics": app.observe.metrics.is_some(),
        }),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(&mut response);
    response
}

/// Refuses to serve the operations surface unauthenticated beyond this machine: a
/// non-loopback address needs an admin token, or an explicit `--insecure-admin`.
pub(crate) fn check_exposure(config: &crate::config::ServeConfig) -> Result<(), Error> {
    if config.addr.ip().is_loopback() || config.admin_token.is_some() || config.insecure_admin {
        return Ok(());
    }
    Err(Error::Config(format!(
        "refusing to listen on {}, which is not a loopback address, without an admin token: the dashboard, \
         /runs, /metrics and /events would be open to the network. Set NANOFLOW_ADMIN_TOKEN (or \
         `--admin-token`), or pass `--insecure-admin` if something in front of the runner guards them",
        config.addr
    )))
}
