//! Tracing spans: one per run (`run`) and one per node attempt (`node`), with the run id,
//! workflow, node, attempt and outcome as fields, and W3C trace context (`traceparent`) from
//! the trigger.
//!
//! The spans go through `tracing`, so whatever subscriber the process installs sees them: the
//! log of `serve`, an OpenTelemetry exporter (feature `otel`), a test layer. They are at
//! `DEBUG` (target `nanoflow_runtime::observability::trace`), so the default `info` log does not
//! record them; the exporter does. With no subscriber interested, creating one is a check of a
//! cached callsite interest and entering it is a no-op, which keeps the run hot path as it was.

use std::fmt;

use axum::http::HeaderValue;
use tracing::field::{display, Empty};
use tracing::Span;

use crate::error::Error;
use crate::id::RunId;
use crate::node::{ErrorKind, NodeError};

/// W3C trace context from a `traceparent` header (`00-<trace id>-<parent id>-<flags>`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the caller's span belongs to (never zero).
    pub trace_id: u128,
    /// The caller's span (never zero): the parent of the run's span.
    pub parent_id: u64,
    /// The `sampled` flag.
    pub sampled: bool,
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

impl TraceParent {
    /// Parses a `traceparent` header value; `None` for anything the W3C Trace Context spec
    /// says to ignore (wrong lengths, upper-case hex, all-zero ids, version `ff`).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(parent, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let parent_id = u64::from_str_radix(parent, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && parent_id != 0).then_some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The trace context of an incoming request's `traceparent` header, if it is a valid one.
    pub(crate) fn from_header(value: &HeaderValue) -> Option<Self> {
        value.to_str().ok().and_then(Self::parse)
    }
}

/// The W3C trace context's request header.
pub(crate) static TRACEPARENT: axum::http::HeaderName =
    axum::http::HeaderName::from_static("traceparent");

/// The span of a run. Its parent is the trigger's trace context when there is one.
pub(crate) fn run_span(
    run_id: RunId,
    workflow: &'static str,
    parent: Option<&TraceParent>,
) -> Span {
    // DEBUG, like tower-http's request spans: `serve`'s default log (`info`) does not pay for
    // recording a span per run; OpenTelemetry export and `NANOFLOW_LOG=...=debug` do.
    let span = tracing::debug_span!(
        "run",
        %run_id,
        workflow,
        outcome = Empty,
        error_code = Empty,
        trace_id = Empty,
        parent_span_id = Empty,
        otel.name = Empty,
        otel.status_code = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    // The OpenTelemetry span's name; recorded only for the exporter (a log shows `run`).
    #[cfg(feature = "otel")]
    span.record("otel.name", display(format_args!("run {workflow}")));
    if let Some(p) = parent {
        span.record("trace_id", display(format_args!("{:032x}", p.trace_id)));
        span.record(
            "parent_span_id",
            display(format_args!("{:016x}", p.parent_id)),
        );
        #[cfg(feature = "otel")]
        super::otel::set_parent(&span, p);
    }
    span
}

/// Records how a run ended on its span.
pub(crate) fn record_run<T>(span: &Span, result: &Result<T, Error>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(_) => span.record("outcome", "succeeded"),
        Err(e) => {
            span.record("error_code", e.code());
            span.record("otel.status_code", "ERROR");
            span.record("outcome", "failed")
        }
    };
}

/// Whether anything listens to node spans (a subscriber at `DEBUG` for this module): when
/// nothing does, in-process steps take their fast path without a span.
#[inline]
pub(crate) fn node_spans_enabled() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// The span of one attempt of one step.
#[inline]
pub(crate) fn attempt_span(
    run_id: RunId,
    workflow: &'static str,
    node: &'static str,
    attempt: u32,
) -> Span {
    let span = tracing::debug_span!(
        "node",
        %run_id,
        workflow,
        node,
        attempt,
        outcome = Empty,
        error_kind = Empty,
        error = Empty,
        otel.name = Empty,
        otel.status_code = Empty,
    );
    #[cfg(feature = "otel")]
    if !span.is_disabled() {
        span.record("otel.name", display(format_args!("node {node}")));
    }
    span
}

/// Records how an attempt ended: `succeeded`, `retrying` (failed, will be tried again) or
/// `failed`, with the error's kind and message.
#[inline]
pub(crate) fn record_attempt(span: &Span, error: Option<&NodeError>, will_retry: bool) {
    if span.is_disabled() {
        return;
    }
    match error {
        None => {
            span.record("outcome", "succeeded");
        }
        Some(e) => {
            span.record("outcome", if will_retry { "retrying" } else { "failed" });
            span.record(
                "error_kind",
                match e.kind() {
                    ErrorKind::Permanent => "permanent",
                    ErrorKind::Retryable => "retryable",
                    ErrorKind::Timeout => "timeout",
                    ErrorKind::Panic => "panic",
                },
            );
            span.record("error", e.message());
            span.record("otel.status_code", "ERROR");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparent() {
        let p =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.parent_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        assert_eq!(
            p.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn refuses_invalid_traceparent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }
}
