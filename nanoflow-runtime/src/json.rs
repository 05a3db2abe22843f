//! Parsing JSON documents into typed values with the path of what does not fit: inputs,
//! signals, recorded values.

use crate::error::{InputError, InputErrorKind};
use crate::node::Data;

/// How deeply arrays and objects may nest in an input: serde_json's own limit, so that every
/// accepted input can also be read back and served (`GET /runs`) as JSON.
pub const MAX_JSON_DEPTH: usize = 128;

/// The start of the message of an input refused for nesting deeper than [`MAX_JSON_DEPTH`].
pub(crate) const TOO_DEEP: &str = "arrays and objects nest deeper than";

/// Where `bytes` first nests deeper than `limit` (the byte offset), skipping strings. Invalid
/// JSON is left to the parser.
fn too_deep(bytes: &[u8], limit: usize) -> Option<usize> {
    // Nesting deeper than `limit` takes more than `limit` opening brackets. Most inputs have
    // far fewer, which one branch-free pass (vectorized) tells; brackets inside strings only
    // make it look further.
    let openings: usize = bytes
        .iter()
        .map(|&b| usize::from(b == b'[' || b == b'{'))
        .sum();
    if openings <= limit {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Parses a JSON document into `T`, reporting the path of a value that does not fit.
///
/// Input nesting deeper than [`MAX_JSON_DEPTH`] is refused even where the type would ignore
/// it (an unknown field): it could be stored but never read back as JSON.
pub fn parse_json<T: Data>(bytes: &[u8]) -> Result<T, InputError> {
    if let Some(at) = too_deep(bytes, MAX_JSON_DEPTH) {
        let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        let column = at
            - bytes[..at]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1)
            + 1;
        return Err(InputError {
            kind: InputErrorKind::Syntax,
            message: format!("{TOO_DEEP} {MAX_JSON_DEPTH} levels"),
            path: ".".into(),
            line,
            column,
        });
    }
    // Fast path without path tracking; a failure is parsed again to say where it failed.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let result = T::deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
        .and_then(|value| de.end().map(|()| value));
    result.map_err(|e| {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Data => InputErrorKind::Data,
            Category::Syntax | Category::Eof | Category::Io => InputErrorKind::Syntax,
        };
        let path = track.path().to_string();
        let message = strip_position(&e.to_string());
        InputError {
            kind,
            message,
            path,
            line: e.line(),
            column: e.column(),
        }
    })
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(too_deep(b"[[1]]", 2), None);
        assert_eq!(too_deep(b"[[[1]]]", 2), Some(2));
        assert_eq!(too_deep(br#"{"a":"[[[[\"[["}"#, 1), None);
        assert_eq!(too_deep(br#"{"a":{"b":[]}}"#, 2), Some(10));
        // Past the count of brackets, strings are skipped: brackets in them do not nest.
        assert_eq!(too_deep(br#"{"a":"[[[["}"#, 2), None);
        assert_eq!(too_deep(br#"["[[",["x"]]"#, 2), None);
        assert_eq!(too_deep(br#"["[[",[["x"]]]"#, 2), Some(7));
    }

    #[test]
    fn too_deep_input_is_refused_even_when_ignored() {
        #[derive(Debug, serde::Deserialize, serde::Serialize)]
        struct Small {
            id: u32,
        }
        let deep = format!(
            r#"{{"id":1,"junk":{}1{}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        let e = parse_json::<Small>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.kind, InputErrorKind::Syntax);
        assert!(e.message.starts_with(TOO_DEEP), "{e}");
        assert_eq!((e.line, e.column), (1, 15 + MAX_JSON_DEPTH));
        let fine = format!(
            r#"{{"id":1,"junk":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse_json::<Small>(fine.as_bytes()).unwrap().id, 1);
    }
}
