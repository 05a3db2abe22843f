//! The admin token: `Authorization: Bearer <token>` for programs, a login page that sets an
//! `HttpOnly; SameSite=Strict` session cookie for browsers (a random id, revoked by logout,
//! never the token itself). Tokens are compared in constant time, and a client that keeps
//! sending wrong credentials is made to wait (see [`Throttle`]).

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use crate::config::AdminToken;
use crate::error::Error;
use crate::ingress::reply::error_response;
use crate::ingress::App;

/// The cookie the login page sets.
pub(crate) const COOKIE: &str = "nanoflow_admin";

/// How long a browser login lasts.
const COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;

/// Wrong credentials a client may send before it must wait.
const FREE_FAILURES: u32 = 10;

/// A client's failures are forgotten this long after its last one.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// The longest a client is made to wait.
const MAX_BLOCK: Duration = Duration::from_secs(300);

/// Clients remembered at most (a flood of addresses cannot grow the table without bound).
const MAX_CLIENTS: usize = 65_536;

/// How a request proved it may use the operations surface.
#[derive(Debug, PartialEq, Eq)]
enum Proof {
    Bearer,
    Cookie,
    /// A credential was sent and is wrong.
    Wrong,
    Missing,
}

fn proof(token: &AdminToken, sessions: &Sessions, headers: &HeaderMap) -> Proof {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let value = auth.as_bytes();
        let bearer = value
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "));
        return if bearer && token.matches(value[7..].trim_ascii()) {
            Proof::Bearer
        } else {
            Proof::Wrong
        };
    }
    match cookie(headers, COOKIE) {
        Some(value) if sessions.valid(value) => Proof::Cookie,
        Some(_) => Proof::Wrong,
        None => Proof::Missing,
    }
}

/// Browser sessions: random ids handed out by the login, valid until they expire, the runner
/// restarts, or the browser logs out.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session id: 256 random bits from the operating system, in hex.
    fn open(&self) -> Result<String, Error> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| Error::io("reading /dev/urandom for a session id", e))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, expires| *expires > now);
        live.insert(id.clone(), now + Duration::from_secs(COOKIE_MAX_AGE_SECS));
        Ok(id)
    }

    fn valid(&self, id: &[u8]) -> bool {
        let Ok(id) = std::str::from_utf8(id) else {
            return false;
        };
        self.lock()
            .get(id)
            .is_some_and(|expires| *expires > Instant::now())
    }

    fn close(&self, id: &[u8]) {
        if let Ok(id) = std::str::from_utf8(id) {
            self.lock().remove(id);
        }
    }
}

/// What the runner remembers of a client that sent wrong credentials.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Slows down guessing: after [`FREE_FAILURES`] wrong tokens, cookies or logins from one
/// address, every credential from it is refused with `429` (without being checked) for 1 s,
/// then 2 s, 4 s, ... up to [`MAX_BLOCK`]; a success or [`FAILURE_MEMORY`] without failures
/// forgets it. Checked before the credential, so that a guess made while blocked tells nothing.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    clients: Mutex<HashMap<IpAddr, Strikes>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Strikes>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `client` must still wait, if it must.
    fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let until = self.lock().get(&client)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    fn failed(&self, client: IpAddr) {
        let now = Instant::now();
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, s| now.duration_since(s.last) < FAILURE_MEMORY);
            if clients.len() >= MAX_CLIENTS {
                clients.clear();
            }
        }
        let strikes = clients.entry(client).or_insert(Strikes {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if now.duration_since(strikes.last) >= FAILURE_MEMORY {
            strikes.failures = 0;
        }
        strikes.failures = strikes.failures.saturating_add(1);
        strikes.last = now;
        if strikes.failures >= FREE_FAILURES {
            let doublings = (strikes.failures - FREE_FAILURES).min(16);
            let wait = Duration::from_secs(1u64 << doublings).min(MAX_BLOCK);
            strikes.blocked_until = Some(now + wait);
            tracing::warn!(%client, failures = strikes.failures, wait_s = wait.as_secs(), "wrong admin credentials; client throttled");
        }
    }

    fn succeeded(&self, client: IpAddr) {
        self.lock().remove(&client);
    }
}

thread_local! {
    /// The peer of the connection whose request is being polled: the server loop sets it
    /// around each poll of a request's future ([`with_peer`]). Only the throttle of the admin
    /// routes reads it, so a request does not carry it in its extensions (an allocation and a
    /// map per request; issue 16).
    static PEER: std::cell::Cell<Option<SocketAddr>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a poll of a request's future) with `peer` as the request's peer for
/// [`client`], and puts back what was there before, also if `f` panics.
pub(crate) fn with_peer<R>(peer: SocketAddr, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<SocketAddr>);
    impl Drop for Restore {
        fn drop(&mut self) {
            PEER.set(self.0);
        }
    }
    let _restore = Restore(PEER.replace(Some(peer)));
    f()
}

/// The address the request came from (the connection's peer): `ConnectInfo` when a server
/// put it in the request, else the server loop's peer (see [`with_peer`]).
fn client(req_extensions: &axum::http::Extensions) -> IpAddr {
    req_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| PEER.get())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip())
}

fn too_many_attempts(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        &format!("too many wrong admin credentials from this address; retry in {seconds} s"),
        |e| {
            e.insert("retry_after_s".into(), seconds.into());
        },
    );
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The value of cookie `name`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// Whether a request is a browser navigation (it would rather see the login page than JSON).
fn wants_html(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// A cookie-authenticated request that changes something must come from our own pages: the
/// cookie is `SameSite=Strict`, and an `Origin` naming another host is refused as well.
fn same_origin(req: &Request) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn unauthorized(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message, |_| {});
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"nanoflow\""),
    );
    response
}

/// Middleware on the operations routes: lets a request through with the right token (when one
/// is configured), answers 401 JSON otherwise, or sends a browser to the login page.
pub(crate) async fn require_token(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.config.admin_token else {
        return next.run(req).await;
    };
    let client = client(req.extensions());
    let sent = req.headers().contains_key(header::AUTHORIZATION)
        || cookie(req.headers(), COOKIE).is_some();
    if sent {
        if let Some(wait) = app.admin.throttle.blocked(client) {
            return too_many_attempts(wait);
        }
    }
    let proof = proof(token, &app.admin.sessions, req.headers());
    match proof {
        Proof::Wrong => app.admin.throttle.failed(client),
        Proof::Bearer | Proof::Cookie => app.admin.throttle.succeeded(client),
        Proof::Missing => {}
    }
    match proof {
        Proof::Bearer => next.run(req).await,
        Proof::Cookie if same_origin(&req) => next.run(req).await,
        Proof::Cookie => error_response(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "this request comes from another site; use the dashboard itself or a bearer token",
            |_| {},
        ),
        _ if wants_html(&req) => redirect("/login"),
        Proof::Wrong => unauthorized("the admin token is not right"),
        Proof::Missing => unauthorized(
            "this endpoint needs the admin token: send `Authorization: Bearer <token>`, or log in at /login",
        ),
    }
}

/// Where the dashboard is.
fn home(app: &App) -> &'static str {
    if super::dashboard_at_root(app) {
        "/"
    } else {
        "/ui"
    }
}

fn redirect(to: &'static str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

/// `GET /login`: the login page (or the dashboard, when no token is configured).
pub(crate) async fn login_page(State(app): State<Arc<App>>) -> Response {
    if app.config.admin_token.is_none() {
        return redirect(home(&app));
    }
    super::html(StatusCode::OK, &super::assets::login_page(false))
}

/// `POST /login` with `token=...` (the form) or `{"token": "..."}` (JSON): sets the cookie.
pub(crate) async fn login(State(app): State<Arc<App>>, req: Request) -> Response {
    let Some(token) = &app.config.admin_token else {
        return error_response(
            StatusCode::NOT_FOUND,
            "auth_disabled",
            "no admin token is configured, so there is nothing to log in to",
            |_| {},
        );
    };
    let client = client(req.extensions());
    if let Some(wait) = app.admin.throttle.blocked(client) {
        return too_many_attempts(wait);
    }
    let (parts, body) = req.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let Ok(bytes) = axum::body::to_bytes(body, 4096).await else {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "a login is at most 4096 bytes",
            |_| {},
        );
    };
    let candidate: Option<String> = if json {
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_owned))
    } else {
        form_field(&bytes, "token")
    };
    let ok = candidate.is_some_and(|c| token.matches(c.trim().as_bytes()));
    if !ok {
        app.admin.throttle.failed(client);
        return if json {
            unauthorized("the admin token is not right")
        } else {
            super::html(StatusCode::UNAUTHORIZED, &super::assets::login_page(true))
        };
    }
    let secure = parts
        .headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    app.admin.throttle.succeeded(client);
    let session = match app.admin.sessions.open() {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a dashboard session");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "session_unavailable",
                "the runner could not create a session; use a bearer token",
                |_| {},
            );
        }
    };
    let cookie = format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = if json {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else {
        redirect(home(&app))
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `POST /logout`: ends the session (its cookie no longer works, even if kept) and forgets
/// the cookie.
pub(crate) async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        app.admin.sessions.close(id);
    }
    let mut response = redirect("/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("nanoflow_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// A field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| crate::ingress::reply::percent_decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_credentials() {
        let token = AdminToken::new("s3cret-s3cret-s3cret").unwrap();
        let sessions = Sessions::default();
        let session = sessions.open().unwrap();
        assert_eq!(session.len(), 64);
        let mut h = HeaderMap::new();
        assert_eq!(proof(&token, &sessions, &h), Proof::Missing);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; nanoflow_admin={session}")).unwrap(),
        );
        assert_eq!(proof(&token, &sessions, &h), Proof::Cookie);
        // The token itself is not a session.
        let mut t = HeaderMap::new();
        t.insert(
            header::COOKIE,
            HeaderValue::from_static("nanoflow_admin=s3cret-s3cret-s3cret"),
        );
        assert_eq!(proof(&token, &sessions, &t), Proof::Wrong);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret-s3cret-s3cret"),
        );
        assert_eq!(proof(&token, &sessions, &h), Proof::Bearer);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer nope"),
        );
        assert_eq!(proof(&token, &sessions, &h), Proof::Wrong);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic czNjcmV0"),
        );
        assert_eq!(proof(&token, &sessions, &h), Proof::Wrong);
        h.remove(header::AUTHORIZATION);
        sessions.close(session.as_bytes());
        assert_eq!(proof(&token, &sessions, &h), Proof::Wrong);
    }

    #[test]
    fn short_tokens_are_refused_with_the_reason() {
        let e = AdminToken::new("x").unwrap_err().to_string();
        assert!(e.contains("at least 16") && e.contains("guessed"), "{e}");
        assert!(AdminToken::new("0123456789abcdef").is_ok());
    }

    #[test]
    fn throttle_blocks_after_free_failures_and_doubles() {
        let t = Throttle::default();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(ip);
            assert_eq!(t.blocked(ip), None);
        }
        t.failed(ip);
        let first = t.blocked(ip).unwrap();
        assert!(first <= Duration::from_secs(1) && first > Duration::from_millis(900));
        t.failed(ip);
        assert!(t.blocked(ip).unwrap() > Duration::from_millis(1900));
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(t.blocked(other), None);
        t.succeeded(ip);
        assert_eq!(t.blocked(ip), None);
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_field(b"a=1", "token"), None);
    }

    #[test]
    fn the_peer_is_the_polled_request_s_and_only_while_it_is_polled() {
        let none = axum::http::Extensions::new();
        let peer: SocketAddr = "192.0.2.7:4321".parse().unwrap();
        let other: SocketAddr = "198.51.100.1:80".parse().unwrap();
        assert_eq!(client(&none), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let seen = with_peer(peer, || {
            // A request polled within another's poll sees its own peer, then the outer one's.
            let inner = with_peer(other, || client(&none));
            (inner, client(&none))
        });
        assert_eq!(seen, (other.ip(), peer.ip()));
        assert_eq!(client(&none), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        // Put back also when the poll panics.
        let _ = std::panic::catch_unwind(|| with_peer(peer, || panic!("a node panicked")));
        assert_eq!(client(&none), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        // `ConnectInfo`, when a server sets it, wins.
        let mut with_info = axum::http::Extensions::new();
        with_info.insert(ConnectInfo(other));
        assert_eq!(with_peer(peer, || client(&with_info)), other.ip());
    }
}
