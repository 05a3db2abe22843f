//! Durations written as `"50ms"`, `"2s"`, `"1.5m"`, validated at compile time.

/// Parses `<number><unit>` with units ns, us, ms, s, m, h; returns nanoseconds.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let hint = "expected a number followed by a unit (`ns`, `us`, `ms`, `s`, `m`, `h`), e.g. \"50ms\" or \"2s\"";
    if number.is_empty() {
        return Err(format!("invalid duration `{text}`: {hint}"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: {hint}"))?;
    let scale: f64 = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" | "sec" | "secs" => 1e9,
        "m" | "min" | "mins" => 60e9,
        "h" => 3600e9,
        "" => return Err(format!("invalid duration `{text}`: missing unit; {hint}")),
        other => {
            return Err(format!(
                "invalid duration `{text}`: unknown unit `{other}`; {hint}"
            ))
        }
    };
    let nanos = value * scale;
    if !(nanos.is_finite() && nanos < 1e19) {
        return Err(format!("invalid duration `{text}`: too long"));
    }
    Ok(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_units() {
        assert_eq!(parse("50ms"), Ok(50_000_000));
        assert_eq!(parse("2s"), Ok(2_000_000_000));
        assert_eq!(parse("1.5m"), Ok(90_000_000_000));
        assert_eq!(parse("10us"), Ok(10_000));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse("2 parsecs")
            .unwrap_err()
            .contains("unknown unit `parsecs`"));
        assert!(parse("fast").unwrap_err().contains("invalid duration"));
        assert!(parse("20").unwrap_err().contains("missing unit"));
    }
}
