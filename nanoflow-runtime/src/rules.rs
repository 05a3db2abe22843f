//! Rules for values written by users, in attributes and on the command line alike: one
//! definition (`nanoflow-rules`), compiled into the macros and the runtime.

use std::time::Duration;

pub(crate) use nanoflow_rules::{format_duration, reserved_route};

/// Parses `1048576`, `64KiB`, `1MiB`, `2MB` (as `--max-body` takes them).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let bytes = nanoflow_rules::parse_size(text)?;
    usize::try_from(bytes).map_err(|_| format!("size `{text}` is too large"))
}

/// Parses `30s`, `500ms`, `1.5m`, `12h`, `7d` (`30`: seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    nanoflow_rules::parse_duration(text)
}
