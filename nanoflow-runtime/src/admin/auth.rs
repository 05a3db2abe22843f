//! The admin token: `Authorization: Bearer <token>` for programs, a login page that sets an
//! `HttpOnly; SameSite=Strict` cookie for browsers. Tokens are compared in constant time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use crate::error::Error;
use crate::runner::serve::App;
use crate::triggers::http::error_response;

/// The cookie the login page sets.
pub(crate) const COOKIE: &str = "nanoflow_admin";

/// How long a browser login lasts.
const COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;

/// The token that guards the operations surface (dashboard, `/runs*`, `/metrics`, `/events`,
/// `/workflows`). Its `Debug` form never shows it.
///
/// ```
/// let token = nanoflow_runtime::AdminToken::new("correct-horse-battery-staple").unwrap();
/// assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
/// assert!(nanoflow_runtime::AdminToken::new("has space").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token: 1 to 512 visible ASCII characters, none of `"`, `,`, `;` or `\` (it travels
    /// in a header and a cookie).
    pub fn new(token: impl Into<String>) -> Result<Self, Error> {
        let token = token.into();
        let bad = |b: u8| !b.is_ascii_graphic() || matches!(b, b'"' | b',' | b';' | b'\\');
        if token.is_empty() || token.len() > 512 || token.bytes().any(bad) {
            return Err(Error::Config(
                "the admin token must be 1 to 512 visible ASCII characters without `\"`, `,`, `;` or `\\` \
                 (e.g. the output of `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        Ok(Self(token.into()))
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

/// Compares in time that depends only on the lengths, never on the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// How a request proved it may use the operations surface.
#[derive(Debug, PartialEq, Eq)]
enum Proof {
    Bearer,
    Cookie,
    /// A credential was sent and is wrong.
    Wrong,
    Missing,
}

fn proof(token: &AdminToken, headers: &HeaderMap) -> Proof {
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
        Some(value) if token.matches(value) => Proof::Cookie,
        Some(_) => Proof::Wrong,
        None => Proof::Missing,
    }
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
    match proof(token, req.headers()) {
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
        // Slows down guessing; the comparison itself leaks nothing.
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{}",
        token.0,
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

/// `POST /logout`: forgets the cookie.
pub(crate) async fn logout() -> Response {
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
        (k == name).then(|| crate::triggers::http::percent_decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn reads_credentials() {
        let token = AdminToken::new("s3cret").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(proof(&token, &h), Proof::Missing);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; nanoflow_admin=s3cret"),
        );
        assert_eq!(proof(&token, &h), Proof::Cookie);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(proof(&token, &h), Proof::Bearer);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer nope"),
        );
        assert_eq!(proof(&token, &h), Proof::Wrong);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic czNjcmV0"),
        );
        assert_eq!(proof(&token, &h), Proof::Wrong);
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_field(b"a=1", "token"), None);
    }
}
