//! Compile-time checks of trigger values: HTTP routes, cron expressions, time zones.

use super::ast::{Trigger, TriggerKind};
use crate::ctxt::Ctxt;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const RESERVED: [&str; 5] = ["/healthz", "/workflows", "/runs", "/metrics", "/queues"];

pub(crate) fn validate(cx: &mut Ctxt, trigger: &Trigger) {
    match &trigger.kind {
        TriggerKind::Http { lit, method, path } => {
            if let Err(e) = check_route(method, path) {
                cx.error_spanned_by(lit, e);
            }
        }
        TriggerKind::Cron { lit, tz, overlap } => {
            if let Err(e) = check_cron(&lit.value()) {
                cx.error_spanned_by(lit, e);
            }
            if let Some(tz) = tz {
                if tz.value().parse::<chrono_tz::Tz>().is_err() {
                    cx.error_spanned_by(
                        tz,
                        format!("unknown time zone `{}`; use an IANA name such as \"Europe/Paris\" or \"UTC\"", tz.value()),
                    );
                }
            }
            if let Some(o) = overlap {
                if !matches!(o.value().as_str(), "skip" | "queue" | "concurrent") {
                    cx.error_spanned_by(
                        o,
                        format!("unknown overlap policy `{}`; expected \"skip\", \"queue\" or \"concurrent\"", o.value()),
                    );
                }
            }
        }
    }
}

/// Checks `METHOD /path/{param}`.
pub(crate) fn check_route(method: &str, path: &str) -> Result<(), String> {
    if !METHODS.contains(&method) {
        return Err(format!(
            "invalid HTTP route: unknown method `{method}`; expected one of GET, POST, PUT, PATCH, DELETE (upper case)"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "invalid HTTP route `{path}`: the path must start with `/`"
        ));
    }
    for reserved in RESERVED {
        if path == reserved || path.starts_with(&format!("{reserved}/")) {
            return Err(format!(
                "invalid HTTP route `{path}`: `{reserved}` is reserved by the runner"
            ));
        }
    }
    let mut params: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            if i + 1 == segments.len() && segments.len() == 1 {
                continue; // "/" itself
            }
            return Err(format!(
                "invalid HTTP route `{path}`: empty segment (`//` or a trailing `/`)"
            ));
        }
        if let Some(inner) = seg.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                return Err(format!(
                    "invalid HTTP route `{path}`: `{seg}` must be a whole segment like `{{id}}`"
                ));
            };
            let ident_ok = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident_ok {
                return Err(format!(
                    "invalid HTTP route `{path}`: parameter `{{{name}}}` must be a field name"
                ));
            }
            if params.contains(&name) {
                return Err(format!(
                    "invalid HTTP route `{path}`: parameter `{{{name}}}` appears twice"
                ));
            }
            params.push(name);
        } else if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
        {
            return Err(format!(
                "invalid HTTP route `{path}`: segment `{seg}` may only hold letters, digits, `-`, `.`, `_`, `~` or be a `{{param}}`"
            ));
        }
    }
    Ok(())
}

/// Checks a cron expression the way the runtime will read it.
pub(crate) fn check_cron(expr: &str) -> Result<(), String> {
    croner::Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map(|_| ())
        .map_err(|e| format!("invalid cron expression `{expr}`: {e}; expected 6 fields (sec min hour day month weekday) or 5 (min hour day month weekday)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(check_route("POST", "/orders").is_ok());
        assert!(check_route("GET", "/orders/{id}").is_ok());
        assert!(check_route("GET", "/").is_ok());
        assert!(check_route("FETCH", "/x")
            .unwrap_err()
            .contains("unknown method `FETCH`"));
        assert!(check_route("POST", "orders")
            .unwrap_err()
            .contains("must start with `/`"));
        assert!(check_route("POST", "/a//b")
            .unwrap_err()
            .contains("empty segment"));
        assert!(check_route("POST", "/a/{id}/{id}")
            .unwrap_err()
            .contains("appears twice"));
        assert!(check_route("POST", "/a/x{id}")
            .unwrap_err()
            .contains("may only hold"));
        assert!(check_route("POST", "/runs/x")
            .unwrap_err()
            .contains("reserved"));
    }

    #[test]
    fn crons() {
        assert!(check_cron("0 */5 * * * *").is_ok());
        assert!(check_cron("*/5 * * * *").is_ok());
        assert!(check_cron("0 61 * * * *").is_err());
        assert!(check_cron("every tuesday").is_err());
    }
}
