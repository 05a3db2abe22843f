//! The rules nanoflow's macros and runtime share, so that a value means the same in an
//! attribute (`#[node(timeout = "1.5m")]`, checked at compile time) and on the command line
//! (`--grace 1.5m`): durations, sizes, and the routes the runner keeps for itself.
//!
//! ```
//! use std::time::Duration;
//! assert_eq!(nanoflow_rules::parse_duration("1.5m"), Ok(Duration::from_secs(90)));
//! assert_eq!(nanoflow_rules::parse_size("1MiB"), Ok(1 << 20));
//! assert!(nanoflow_rules::reserved_route("/runs/x").is_some());
//! ```

use std::time::Duration;

/// What a duration looks like, for error messages.
const DURATION_HINT: &str = "expected a number followed by a unit (`ns`, `us`, `ms`, `s`, `m`, `h`, `d`), e.g. \"50ms\" or \"2s\"";

/// Parses `<number><unit>`: a whole or decimal number, and a unit among `ns`, `us` (`µs`),
/// `ms`, `s`, `m`, `h`, `d`. A number without a unit is seconds (`--grace 30`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!("invalid duration `{text}`: {DURATION_HINT}"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: {DURATION_HINT}"))?;
    let scale: f64 = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" | "sec" | "secs" => 1e9,
        "m" | "min" | "mins" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        "" => 1e9,
        other => {
            return Err(format!(
                "invalid duration `{text}`: unknown unit `{other}`; {DURATION_HINT}"
            ))
        }
    };
    let nanos = value * scale;
    if !(nanos.is_finite() && nanos < 1.8e19) {
        return Err(format!("invalid duration `{text}`: too long"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses a rate `<count>/<period>`: `100/s`, `5/m`, `30/h`, `10/2s` (a period without a number
/// is one of its unit). The count is at least 1 and the period longer than zero.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(nanoflow_rules::parse_rate("100/s"), Ok((100, Duration::from_secs(1))));
/// assert_eq!(nanoflow_rules::parse_rate("10/2s"), Ok((10, Duration::from_secs(2))));
/// assert!(nanoflow_rules::parse_rate("100").is_err());
/// ```
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let hint = "expected `<count>/<period>`, e.g. \"100/s\", \"5/m\" or \"10/2s\"";
    let Some((count, period)) = text.trim().split_once('/') else {
        return Err(format!("invalid rate `{text}`: {hint}"));
    };
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("invalid rate `{text}`: the count must be a whole number of at least 1; {hint}")
        })?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        parse_duration(period)
    } else {
        parse_duration(&format!("1{period}"))
    }
    .map_err(|e| format!("invalid rate `{text}`: {e}"))?;
    if period.is_zero() {
        return Err(format!(
            "invalid rate `{text}`: the period must be longer than zero"
        ));
    }
    Ok((count, period))
}

/// Writes a duration the way [`parse_duration`] reads it: `1h`, `10m`, `2s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, scale) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns >= scale && ns.is_multiple_of(scale) {
            return format!("{}{unit}", ns / scale);
        }
    }
    if ns >= 1_000_000_000 {
        return format!("{:.3}s", d.as_secs_f64());
    }
    format!("{ns}ns")
}

/// Parses a size in bytes: `65536`, `64KiB`, `512KB`, `1MiB`, `2MB`, `1GiB`, `1GB` (units in
/// any case; `K`, `M`, `G` alone are decimal).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let hint = "expected a size like \"65536\", \"512KiB\", \"128MiB\" or \"1GB\"";
    let n: u64 = n
        .parse()
        .map_err(|_| format!("invalid size `{text}`; {hint}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{other}`; {hint}"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// The paths of the runner's own API and dashboard: no trigger may serve them or anything
/// under them.
pub const RESERVED_ROUTES: [&str; 11] = [
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/workflows",
    "/runs",
    "/metrics",
    "/queues",
    "/events",
    "/login",
    "/logout",
    "/ui",
];

/// The reserved route `path` is or lies under, if any.
pub fn reserved_route(path: &str) -> Option<&'static str> {
    RESERVED_ROUTES.into_iter().find(|r| {
        path == *r
            || path
                .strip_prefix(r)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration(" 12h "), Ok(Duration::from_secs(12 * 3600)));
    }

    #[test]
    fn durations_refused_with_the_reason() {
        assert!(parse_duration("2 parsecs")
            .unwrap_err()
            .contains("unknown unit `parsecs`"));
        assert!(parse_duration("fast")
            .unwrap_err()
            .contains("invalid duration"));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_duration("99999999999d")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("128mib"), Ok(128 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("1 parsec").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn reserved_routes() {
        assert_eq!(reserved_route("/runs"), Some("/runs"));
        assert_eq!(reserved_route("/runs/1"), Some("/runs"));
        assert_eq!(reserved_route("/runsx"), None);
        assert_eq!(reserved_route("/queues/a.b"), Some("/queues"));
        assert_eq!(reserved_route("/orders"), None);
        assert_eq!(reserved_route("/openapi.json"), Some("/openapi.json"));
    }
}
