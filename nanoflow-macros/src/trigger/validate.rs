//! Compile-time checks of trigger values: HTTP routes, cron expressions, time zones, queue
//! subjects, database tables and operations.

use super::ast::{Trigger, TriggerKind};
use crate::ctxt::Ctxt;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

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
        TriggerKind::Queue { lit } => {
            if let Err(e) = check_subject(&lit.value()) {
                cx.error_spanned_by(lit, e);
            }
        }
        TriggerKind::Postgres { lit, on } => {
            if let Err(e) = check_table(&lit.value()) {
                cx.error_spanned_by(lit, e);
            }
            if let Some(on) = on {
                if let Err(e) = check_operations(&on.value()) {
                    cx.error_spanned_by(on, e);
                }
            }
        }
        // Checked by the compiler (the upstream's output type) and, for cycles, by `workflow!`.
        TriggerKind::After { .. } => {}
    }
}

/// Checks a NATS subject to consume: dot-separated tokens, `*` a whole token, `>` the last one.
pub(crate) fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("invalid queue subject: it is empty; write e.g. \"orders.created\"".into());
    }
    if let Some(c) = subject
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "invalid queue subject `{subject}`: it contains {c:?}; subjects hold no spaces"
        ));
    }
    if subject.starts_with('$') {
        return Err(format!("invalid queue subject `{subject}`: subjects starting with `$` belong to the NATS server"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("invalid queue subject `{subject}`: empty token (`..`, or a leading or trailing `.`)"));
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "invalid queue subject `{subject}`: the wildcards `*` and `>` must be whole tokens, as in `orders.*`"
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!("invalid queue subject `{subject}`: `>` may only be the last token, as in `orders.>`"));
        }
    }
    Ok(())
}

/// Checks `schema.table` (or `table`, in `public`): plain SQL identifiers.
pub(crate) fn check_table(table: &str) -> Result<(), String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 {
        return Err(format!(
            "invalid table `{table}`: write `schema.table` or `table`, as in \"public.orders\""
        ));
    }
    for part in &parts {
        let ok = part
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && part.len() <= 63;
        if !ok {
            return Err(format!(
                "invalid table `{table}`: `{part}` is not a plain SQL identifier (letters, digits and `_`, at most 63, not starting with a digit)"
            ));
        }
    }
    Ok(())
}

/// Checks `on = "insert|update|delete"`.
pub(crate) fn check_operations(on: &str) -> Result<(), String> {
    let mut seen: Vec<String> = Vec::new();
    for op in on.split('|').map(|op| op.trim().to_ascii_lowercase()) {
        if !matches!(op.as_str(), "insert" | "update" | "delete") {
            return Err(format!(
                "unknown database operation `{op}` in `{on}`; expected `insert`, `update` or `delete`, joined by `|`"
            ));
        }
        if seen.contains(&op) {
            return Err(format!(
                "database operation `{op}` is listed twice in `{on}`"
            ));
        }
        seen.push(op);
    }
    Ok(())
}

/// Checks `METHOD /path/{param}`.
pub(crate) fn check_route(method: &str, path: &str) -> Result<(), String> {
    if !METHODS.contains(&method) {
        let upper = method.to_ascii_uppercase();
        if METHODS.contains(&upper.as_str()) {
            return Err(format!(
                "invalid HTTP method `{method}`: write it in upper case, `{upper}`"
            ));
        }
        return Err(format!(
            "invalid HTTP method `{method}`; expected `GET`, `POST`, `PUT`, `PATCH` or `DELETE`"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "invalid HTTP route `{path}`: the path must start with `/`, as in `/{path}`"
        ));
    }
    // The runtime refuses the same routes when it starts (`nanoflow-rules`).
    if let Some(reserved) = nanoflow_rules::reserved_route(path) {
        return Err(format!(
            "invalid HTTP route `{path}`: paths under `{reserved}` are reserved for the runner's own API"
        ));
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

/// What each field of a cron expression holds, for 6 fields; 5 fields drop the first.
const CRON_FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT"),
];

/// Checks a cron expression the way the runtime will read it, and names the faulty field.
pub(crate) fn check_cron(expr: &str) -> Result<(), String> {
    let parse = |e: &str| {
        croner::Cron::new(e)
            .with_seconds_optional()
            .parse()
            .map(|_| ())
    };
    let Err(error) = parse(expr) else {
        return Ok(());
    };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names = match fields.len() {
        6 => &CRON_FIELDS[..],
        5 => &CRON_FIELDS[1..],
        n => {
            return Err(format!(
                "invalid cron expression `{expr}`: it has {n} field{}; expected 6 (second minute hour day month weekday) or 5 (minute hour day month weekday)",
                if n == 1 { "" } else { "s" }
            ))
        }
    };
    // Find the faulty field: the first that fails with every other field set to `*`.
    for (i, (field, (what, range))) in fields.iter().zip(names).enumerate() {
        let probe: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { *field } else { "*" })
            .collect();
        if parse(&probe.join(" ")).is_err() {
            return Err(format!("invalid cron expression `{expr}`: the {what} field `{field}` is not valid (expected {range})"));
        }
    }
    let reason = error.to_string();
    let reason = reason.trim_end_matches('.');
    let mut chars = reason.chars();
    let reason: String = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default();
    Err(format!("invalid cron expression `{expr}`: {reason}"))
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
            .contains("invalid HTTP method `FETCH`"));
        assert!(check_route("post", "/x")
            .unwrap_err()
            .contains("upper case, `POST`"));
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
        for path in ["/events", "/login", "/ui/app.js", "/openapi.json"] {
            assert!(check_route("POST", path).unwrap_err().contains("reserved"));
        }
        assert!(check_route("POST", "/").is_ok());
    }

    #[test]
    fn subjects() {
        assert!(check_subject("orders.created").is_ok());
        assert!(check_subject("orders.*.eu").is_ok());
        assert!(check_subject("orders.>").is_ok());
        assert!(check_subject("").unwrap_err().contains("empty"));
        assert!(check_subject("orders created")
            .unwrap_err()
            .contains("no spaces"));
        assert!(check_subject("orders..created")
            .unwrap_err()
            .contains("empty token"));
        assert!(check_subject("orders.>.x")
            .unwrap_err()
            .contains("last token"));
        assert!(check_subject("orders.cre*")
            .unwrap_err()
            .contains("whole tokens"));
        assert!(check_subject("$JS.API")
            .unwrap_err()
            .contains("NATS server"));
    }

    #[test]
    fn tables_and_operations() {
        assert!(check_table("public.orders").is_ok());
        assert!(check_table("orders").is_ok());
        assert!(check_table("a.b.c").unwrap_err().contains("schema.table"));
        assert!(check_table("public.order-lines")
            .unwrap_err()
            .contains("`order-lines` is not a plain SQL identifier"));
        assert!(check_table("").is_err());
        assert!(check_operations("insert|update|delete").is_ok());
        assert!(check_operations("insert | DELETE").is_ok());
        assert!(check_operations("insert|upsert")
            .unwrap_err()
            .contains("unknown database operation `upsert`"));
        assert!(check_operations("insert|insert")
            .unwrap_err()
            .contains("listed twice"));
        assert!(check_operations("").is_err());
    }

    #[test]
    fn crons() {
        assert!(check_cron("0 */5 * * * *").is_ok());
        assert!(check_cron("*/5 * * * *").is_ok());
        assert!(check_cron("0 61 * * * *").is_err());
        assert!(check_cron("every tuesday")
            .unwrap_err()
            .contains("it has 2 fields"));
        assert!(check_cron("0 61 * * * *")
            .unwrap_err()
            .contains("the minute field `61` is not valid (expected 0-59)"));
        assert!(check_cron("61 * * * *")
            .unwrap_err()
            .contains("the minute field `61`"));
        assert!(check_cron("0 0 25 * * *")
            .unwrap_err()
            .contains("the hour field `25`"));
        assert!(check_cron("0 0 0 * FOO *")
            .unwrap_err()
            .contains("the month field `FOO`"));
    }
}
