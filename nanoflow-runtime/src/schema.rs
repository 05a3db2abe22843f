//! JSON Schemas of the types that flow in and out of workflows (cargo feature `schema`).
//!
//! A node type that implements `schemars::JsonSchema` gives its JSON Schema (draft 2020-12, the
//! dialect of OpenAPI 3.1); a type without it still flows and is reported as having no schema.
//! `workflow!` asks for the schemas of each workflow's input and output through a probe in the
//! macros' support module, which calls [`json_schema`] when the type has a schema and gives
//! `None` otherwise, without a trait bound the user would have to satisfy. `#[node(schema)]` turns the
//! missing derive into a compile error at the type ([`require_schema`]).
//!
//! The schemas serve `GET /workflows`, `GET /openapi.json` ([`crate::triggers::openapi`]), the dashboard's
//! start form, and the `expected` field of a `422 invalid_input` ([`expected_at`]).

use serde_json::Value;

/// Which side of serde a schema describes: what an input accepts (`deserialize`) can differ from
/// what an output writes (`serialize`), e.g. for `#[serde(default)]` fields or aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(hidden)]
pub enum Side {
    /// The schema of what deserializes into the type: a workflow's input.
    Input,
    /// The schema of what the type serializes to: a workflow's output.
    Output,
}

/// The JSON Schema of `T` (draft 2020-12) on `side`, with its definitions under `$defs`.
#[cfg(feature = "schema")]
pub fn json_schema<T: ?Sized + schemars::JsonSchema>(side: Side) -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12();
    let settings = match side {
        Side::Input => settings.for_deserialize(),
        Side::Output => settings.for_serialize(),
    };
    settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// What `#[node(schema)]` requires of the node's input and output types.
#[cfg(feature = "schema")]
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no JSON Schema, and `#[node(schema)]` requires one",
    label = "add `#[derive(schemars::JsonSchema)]` to `{Self}`",
    note = "`#[node(schema)]` asks for the node's input and output types to implement `schemars::JsonSchema`; remove `schema` to accept types without a schema"
)]
pub trait RequireSchema {}
#[cfg(feature = "schema")]
#[diagnostic::do_not_recommend]
impl<T: ?Sized + schemars::JsonSchema> RequireSchema for T {}

/// What `#[node(schema)]` requires when the `schema` feature is off: nothing can satisfy it.
#[cfg(not(feature = "schema"))]
#[diagnostic::on_unimplemented(
    message = "`#[node(schema)]` needs the `schema` feature of `nanoflow`",
    label = "`{Self}` cannot have its JSON Schema checked without the `schema` feature",
    note = "enable the feature (`nanoflow = {{ version = \"0.1\", features = [\"schema\"] }}`), or remove `schema` from `#[node(..)]`"
)]
pub trait RequireSchema {}

/// Checked by `#[node(schema)]` for the input and output types, spanned at each.
#[doc(hidden)]
pub const fn require_schema<T: ?Sized + RequireSchema>() {}

/// The schema at a JSON `path` (as in a `422`'s `path`: `items[2].qty`, `.` for the root) inside
/// `root` (unresolved: it may be a `$ref`), following `$ref`s into `$defs` and into the branches of `anyOf`/`oneOf`/`allOf` (an
/// `Option`, an enum) that describe the next step.
pub fn schema_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = root;
    for step in steps(path) {
        at = descend(root, at, &step, 0)?;
    }
    Some(at)
}

/// What the input's schema expects at `path`, in words (`integer (uint32)`, `one of "a", "b"`,
/// `object Order`), for the `expected` field of a `422 invalid_input`.
pub fn expected_at(root: &Value, path: &str) -> Option<String> {
    schema_at(root, path).map(|s| describe(root, s, 0))
}

/// One step of a path: an object key or an array index.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Splits `items[2].qty` into `items`, `2`, `qty`. serde_path_to_error writes `?` for a place it
/// could not name, which matches nothing, and `.` for the root, which is no step at all.
fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    let flush = |key: &mut String, out: &mut Vec<Step>| {
        if !key.is_empty() {
            out.push(Step::Key(std::mem::take(key)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '.' => flush(&mut key, &mut out),
            '[' => {
                flush(&mut key, &mut out);
                let mut digits = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    digits.push(d);
                }
                match digits.parse() {
                    Ok(i) => out.push(Step::Index(i)),
                    Err(_) => out.push(Step::Key(digits)),
                }
            }
            c => key.push(c),
        }
    }
    flush(&mut key, &mut out);
    out
}

/// Follows a local `$ref` (`#/$defs/Name`, `#/components/schemas/Name`), a few levels deep.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..8 {
        let Some(target) = schema.get("$ref").and_then(Value::as_str) else {
            break;
        };
        match target
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
        {
            Some(found) => schema = found,
            None => break,
        }
    }
    schema
}

/// The branches a value may take: `anyOf`, `oneOf` and `allOf` members.
fn branches(schema: &Value) -> impl Iterator<Item = &Value> {
    ["anyOf", "oneOf", "allOf"]
        .into_iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_array))
        .flatten()
}

fn descend<'a>(root: &'a Value, schema: &'a Value, step: &Step, depth: u8) -> Option<&'a Value> {
    if depth > 8 {
        return None;
    }
    let schema = resolve(root, schema);
    let direct = match step {
        Step::Key(k) => schema.get("properties").and_then(|p| p.get(k)).or_else(|| {
            match schema.get("additionalProperties") {
                Some(v @ Value::Object(_)) => Some(v),
                _ => None,
            }
        }),
        Step::Index(i) => schema
            .get("prefixItems")
            .and_then(|p| p.get(*i))
            .or_else(|| schema.get("items").filter(|v| v.is_object())),
    };
    if let Some(found) = direct {
        return Some(found);
    }
    branches(schema).find_map(|b| descend(root, b, step, depth + 1))
}

/// A schema in a few words.
fn describe(root: &Value, schema: &Value, depth: u8) -> String {
    let name = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next());
    let schema = resolve(root, schema);
    if depth > 3 {
        return name.unwrap_or("a value").to_owned();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let listed: Vec<String> = values.iter().map(Value::to_string).collect();
        return format!("one of {}", listed.join(", "));
    }
    if let Some(value) = schema.get("const") {
        return value.to_string();
    }
    let alternatives: Vec<String> = ["anyOf", "oneOf"]
        .into_iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_array))
        .flatten()
        .map(|b| describe(root, b, depth + 1))
        .collect();
    if !alternatives.is_empty() {
        return alternatives.join(" or ");
    }
    let mut text = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any JSON value".to_owned(),
    };
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        text = format!("{text} ({format})");
    }
    match (
        name.or_else(|| schema.get("title").and_then(Value::as_str)),
        schema.get("type"),
    ) {
        (Some(name), Some(Value::String(t))) if t == "object" => format!("object `{name}`"),
        _ => text,
    }
}

/// A JSON object, for the hand-written schemas below.
#[cfg(feature = "schema")]
fn object(entries: Value) -> schemars::Schema {
    match entries {
        Value::Object(map) => schemars::Schema::from(map),
        _ => schemars::Schema::default(),
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for crate::trigger::Tick {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Tick".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        object(serde_json::json!({
            "type": "object",
            "description": "What a cron trigger delivers: when the tick was due and when it fired, in milliseconds since the Unix epoch.",
            "properties": {
                "scheduled_ms": { "type": "integer", "format": "int64" },
                "fired_ms": { "type": "integer", "format": "int64" },
            },
            "required": ["scheduled_ms", "fired_ms"],
        }))
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for crate::trigger::DbOp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DbOp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<Value> = [
            crate::trigger::DbOp::Insert,
            crate::trigger::DbOp::Update,
            crate::trigger::DbOp::Delete,
        ]
        .iter()
        .filter_map(|op| serde_json::to_value(op).ok())
        .collect();
        object(serde_json::json!({
            "type": "string",
            "description": "The change that made a database event.",
            "enum": names,
        }))
    }
}

#[cfg(feature = "schema")]
impl<Row: schemars::JsonSchema> schemars::JsonSchema for crate::trigger::DbEvent<Row> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("DbEvent_for_{}", Row::schema_name()).into()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        format!("nanoflow::DbEvent<{}>", Row::schema_id()).into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let operation = generator.subschema_for::<crate::trigger::DbOp>();
        let row = generator.subschema_for::<Option<Row>>();
        object(serde_json::json!({
            "type": "object",
            "description": "One change to a watched table: the row before (`old`: update, delete) and after (`new`: insert, update).",
            "properties": {
                "id": { "type": "integer", "format": "int64", "description": "The outbox id, increasing." },
                "table": { "type": "string", "description": "`schema.table`." },
                "operation": operation,
                "old": row.clone(),
                "new": row,
                "at_ms": { "type": "integer", "format": "int64", "description": "When the change was written, by the database's clock." },
            },
            "required": ["id", "table", "operation", "old", "new", "at_ms"],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_split_into_keys_and_indexes() {
        assert_eq!(steps("."), vec![]);
        assert_eq!(
            steps("items[2].qty"),
            vec![
                Step::Key("items".into()),
                Step::Index(2),
                Step::Key("qty".into())
            ]
        );
        assert_eq!(steps("[0]"), vec![Step::Index(0)]);
    }

    #[test]
    fn finds_the_schema_through_refs_options_and_arrays() {
        let root = json!({
            "$ref": "#/$defs/Order",
            "$defs": {
                "Order": {
                    "type": "object",
                    "properties": {
                        "items": { "type": "array", "items": { "$ref": "#/$defs/Line" } },
                        "note": { "anyOf": [{ "$ref": "#/$defs/Note" }, { "type": "null" }] },
                        "kind": { "type": "string", "enum": ["retail", "wholesale"] },
                    },
                },
                "Line": { "type": "object", "properties": { "qty": { "type": "integer", "format": "uint32", "minimum": 0 } } },
                "Note": { "type": "object", "properties": { "text": { "type": "string" } } },
            },
        });
        assert_eq!(
            expected_at(&root, "items[3].qty").unwrap(),
            "integer (uint32)"
        );
        assert_eq!(expected_at(&root, "note.text").unwrap(), "string");
        assert_eq!(expected_at(&root, "note").unwrap(), "object `Note` or null");
        assert_eq!(
            expected_at(&root, "kind").unwrap(),
            "one of \"retail\", \"wholesale\""
        );
        assert_eq!(expected_at(&root, "items[0]").unwrap(), "object `Line`");
        assert_eq!(expected_at(&root, ".").unwrap(), "object `Order`");
        assert!(expected_at(&root, "nothing.here").is_none());
    }
}
