//! Durations written as `"50ms"`, `"2s"`, `"1.5m"`, validated at compile time by the rule the
//! runtime applies on its command line (`nanoflow-rules`).

/// Parses `<number><unit>` (see [`nanoflow_rules::parse_duration`]); returns nanoseconds.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    let d = nanoflow_rules::parse_duration(text)?;
    u64::try_from(d.as_nanos()).map_err(|_| format!("invalid duration `{text}`: too long"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_units() {
        assert_eq!(parse("50ms"), Ok(50_000_000));
        assert_eq!(parse("1.5m"), Ok(90_000_000_000));
        assert!(parse("2 parsecs")
            .unwrap_err()
            .contains("unknown unit `parsecs`"));
    }
}
