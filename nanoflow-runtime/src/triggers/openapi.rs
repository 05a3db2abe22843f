//! The OpenAPI 3.1 document of a runner: every HTTP trigger (its path and method, the input as
//! the request body or as query parameters, the output as the `200` body, `202` with `Location`
//! for `Prefer: respond-async`, the error body with its `error.code` values, the
//! `Idempotency-Key` and `Prefer` headers) and the run API (`/workflows`, `/runs`, `/runs/{id}`,
//! `/runs/{id}/retry`, `/runs/{id}/cancel`, `/runs/{id}/signals/{name}`, ...). Served at `GET /openapi.json` and printed by `<service> openapi`.
//!
//! The schemas are the workflows' JSON Schemas ([`crate::schema`]), draft 2020-12 as OpenAPI 3.1
//! uses them: each type's definitions move from its own `$defs` into `components/schemas`, where
//! two workflows sharing a type share one entry (a different type with the same name gets a
//! numbered name).

use serde_json::{json, Map, Value};

use crate::trigger::TriggerDef;
use crate::workflow::DynWorkflow;

/// The service's name, for the document's title: the program's file name.
pub fn service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "nanoflow".to_owned())
}

/// Every `error.code` a trigger route answers with, by HTTP status.
const TRIGGER_ERRORS: [(&str, &str, &[&str]); 8] = [
    (
        "400",
        "Malformed JSON (with `line` and `column`) or an invalid `Idempotency-Key`.",
        &["malformed_json", "invalid_idempotency_key"],
    ),
    (
        "413",
        "The body is larger than the runner's `--max-body`.",
        &["body_too_large"],
    ),
    (
        "415",
        "The body is not `application/json`.",
        &["unsupported_media_type"],
    ),
    (
        "422",
        "JSON that does not fit the input: `path` says where, `expected` what the schema wants there.",
        &["invalid_input"],
    ),
    (
        "500",
        "A node failed (a node may choose another status), panicked, or the runner failed.",
        &["node_failed", "node_panicked", "internal"],
    ),
    (
        "503",
        "Too many runs in flight, or the journal cannot record the run (with `Retry-After`).",
        &["overloaded", "journal_unavailable"],
    ),
    ("504", "A node timed out.", &["node_timeout"]),
    (
        "401",
        "Only on the run API: the admin token is missing or wrong.",
        &["unauthorized"],
    ),
];

/// Codes the run API answers with, besides the trigger routes' and `unauthorized`.
const RUN_API_CODES: [&str; 20] = [
    "invalid_stub",
    "invalid_step",
    "unknown_workflow",
    "invalid_query",
    "invalid_run_id",
    "invalid_status",
    "run_not_found",
    "run_not_failed",
    "graph_changed",
    "journal_disabled",
    "not_found",
    "method_not_allowed",
    "run_finished",
    "running_elsewhere",
    "not_waiting",
    "signal_delivered",
    "invalid_signal",
    "cancelled",
    "debounced",
    "workflow_timeout",
];

/// The OpenAPI 3.1 document of `workflows`, titled `title` (the service's name).
///
/// ```
/// use nanoflow_runtime::DynWorkflow;
/// let workflows: [&dyn DynWorkflow; 0] = [];
/// let doc = nanoflow_runtime::openapi::document("orders", workflows);
/// assert_eq!(doc["openapi"], "3.1.0");
/// assert!(doc["paths"]["/runs/{id}"]["get"].is_object());
/// ```
pub fn document<'a>(
    title: &str,
    workflows: impl IntoIterator<Item = &'a dyn DynWorkflow>,
) -> Value {
    let mut components = Components::default();
    let mut paths = Map::new();
    let mut workflow_names = Vec::new();
    for wf in workflows {
        let graph = wf.graph();
        workflow_names.push(Value::from(graph.name));
        let (input, output) = wf.schemas();
        let http: Vec<(&str, &str)> = graph
            .triggers
            .iter()
            .filter_map(|t| match t {
                TriggerDef::Http { method, path } => Some((*method, *path)),
                _ => None,
            })
            .collect();
        if http.is_empty() {
            continue;
        }
        let input = components.add(graph.name, "input", graph.input_type, input);
        let output = components.add(graph.name, "output", graph.output_type, output);
        for (i, (method, path)) in http.iter().enumerate() {
            let operation_id = if i == 0 {
                graph.name.to_owned()
            } else {
                format!("{}_{}", graph.name, i + 1)
            };
            let operation = trigger_operation(
                &operation_id,
                graph.doc,
                method,
                path,
                &input,
                &output,
                &components,
            );
            let item = paths
                .entry(path.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            item[method.to_ascii_lowercase()] = operation;
        }
    }
    run_api(&mut paths, &workflow_names);
    let mut schemas = components.schemas;
    schemas.insert("Error".into(), error_schema());
    schemas.insert("Accepted".into(), accepted_schema());
    schemas.insert("RunError".into(), run_error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": env!("CARGO_PKG_VERSION"),
            "description": "HTTP triggers and run API of a nanoflow service. Generated from the workflows' types.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses(),
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": false,
                    "description": "A repeated key (per workflow) starts no second run: it answers with the original run's output, error, or `202` while it runs.",
                    "schema": { "type": "string", "minLength": 1, "maxLength": 255 },
                },
                "Prefer": {
                    "name": "Prefer",
                    "in": "header",
                    "required": false,
                    "description": "`respond-async` answers `202` with the run's `Location` at once instead of waiting for its output.",
                    "schema": { "type": "string", "enum": ["respond-async"] },
                },
                "TraceParent": {
                    "name": "traceparent",
                    "in": "header",
                    "required": false,
                    "description": "W3C Trace Context: the run's span becomes a child of the caller's.",
                    "schema": { "type": "string" },
                },
                "RunId": {
                    "name": "id",
                    "in": "path",
                    "required": true,
                    "schema": { "type": "string" },
                },
            },
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`NANOFLOW_ADMIN_TOKEN`, when the runner has one; the run API is open without it.",
                },
            },
        },
    })
}

/// The schemas gathered so far, under `components/schemas`.
#[derive(Debug, Default)]
struct Components {
    schemas: Map<String, Value>,
}

impl Components {
    /// Adds a workflow's `side` schema with its definitions and returns the schema to use in an
    /// operation: a `$ref` to it, or, for a type without a schema, any JSON with a description.
    fn add(&mut self, workflow: &str, side: &str, type_name: &str, schema: Option<Value>) -> Value {
        let Some(Value::Object(mut root)) = schema else {
            return json!({
                "description": format!("`{type_name}` has no JSON Schema: derive `schemars::JsonSchema` for it to describe it here."),
            });
        };
        root.remove("$schema");
        let defs = match root.remove("$defs") {
            Some(Value::Object(defs)) => defs,
            _ => Map::new(),
        };
        // Where each definition goes: its own name, unless another type took it.
        let mut renames: Vec<(String, String)> = Vec::new();
        for (name, def) in &defs {
            let target = self.free_name(name, &rewrite(def.clone(), &[]));
            renames.push((name.clone(), target));
        }
        for (name, def) in defs {
            let target = renames
                .iter()
                .find(|(from, _)| *from == name)
                .map(|(_, to)| to.clone())
                .unwrap_or(name);
            let def = rewrite(def, &renames);
            self.schemas.insert(target, def);
        }
        let root = rewrite(Value::Object(root), &renames);
        // A named type (a struct, an enum) becomes a component; a `u64` or a `Vec<T>` stays
        // inline where it is used.
        let named = ["properties", "oneOf", "anyOf", "enum"]
            .iter()
            .any(|k| root.get(*k).is_some());
        if !named {
            return root;
        }
        // The root itself, under its title when that is free (`Order`), else the workflow's.
        let title = root
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{workflow}_{side}"));
        let name = self.free_name(&title, &root);
        self.schemas.insert(name.clone(), root);
        json!({ "$ref": format!("#/components/schemas/{}", pointer_escape(&name)) })
    }

    /// `name` when it is free or holds `schema` already, else `name_2`, `name_3`, ...
    fn free_name(&self, name: &str, schema: &Value) -> String {
        let mut candidate = name.to_owned();
        let mut n = 1;
        while let Some(existing) = self.schemas.get(&candidate) {
            if existing == schema {
                break;
            }
            n += 1;
            candidate = format!("{name}_{n}");
        }
        candidate
    }

    /// The schema behind a `$ref` made by [`Components::add`], or the schema itself.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .and_then(|name| {
                self.schemas
                    .get(&name.replace("~1", "/").replace("~0", "~"))
            })
            .unwrap_or(schema)
    }
}

/// Points every `#/$defs/Name` reference at `#/components/schemas/<renamed>`.
fn rewrite(value: Value, renames: &[(String, String)]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => {
                            Value::String(match r.strip_prefix("#/$defs/") {
                                Some(name) => {
                                    let name = name.replace("~1", "/").replace("~0", "~");
                                    let target = renames
                                        .iter()
                                        .find(|(from, _)| *from == name)
                                        .map_or(name.as_str(), |(_, to)| to.as_str());
                                    format!("#/components/schemas/{}", pointer_escape(target))
                                }
                                None => r,
                            })
                        }
                        (_, v) => rewrite(v, renames),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| rewrite(v, renames)).collect())
        }
        other => other,
    }
}

/// A name as one JSON Pointer token (RFC 6901).
fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The parameters in a route's path: `/items/{id}` has `id`.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|p| p.trim_start_matches('*'))
        .collect()
}

fn trigger_operation(
    operation_id: &str,
    doc: &str,
    method: &str,
    path: &str,
    input: &Value,
    output: &Value,
    components: &Components,
) -> Value {
    let has_body = !matches!(method, "GET" | "DELETE" | "HEAD");
    let input_schema = components.resolve(input);
    let properties = input_schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let property = |name: &str| {
        properties
            .and_then(|p| p.get(name))
            .cloned()
            .unwrap_or_else(|| json!({ "type": "string" }))
    };
    let params_in_path = path_params(path);
    let mut parameters: Vec<Value> = params_in_path
        .iter()
        .map(|name| {
            json!({
                "name": name, "in": "path", "required": true,
                "description": "Merged into the input as the field of this name (numbers and booleans typed as such).",
                "schema": property(name),
            })
        })
        .collect();
    if !has_body {
        // GET and DELETE take the input's fields from the query string.
        for (name, schema) in properties.into_iter().flatten() {
            if params_in_path.contains(&name.as_str()) {
                continue;
            }
            parameters.push(json!({
                "name": name, "in": "query", "required": required.contains(&name.as_str()),
                "schema": schema,
            }));
        }
    }
    for common in ["IdempotencyKey", "Prefer", "TraceParent"] {
        parameters.push(json!({ "$ref": format!("#/components/parameters/{common}") }));
    }
    let summary = doc.lines().next().unwrap_or("").trim();
    let mut operation = json!({
        "operationId": operation_id,
        "tags": ["triggers"],
        "summary": if summary.is_empty() { format!("Runs workflow `{operation_id}`") } else { summary.to_owned() },
        "description": doc,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "The run succeeded: the workflow's output.",
                "content": { "application/json": { "schema": output } },
            },
            "202": { "$ref": "#/components/responses/Accepted" },
            "400": { "$ref": "#/components/responses/BadRequest" },
            "413": { "$ref": "#/components/responses/BodyTooLarge" },
            "415": { "$ref": "#/components/responses/UnsupportedMediaType" },
            "422": { "$ref": "#/components/responses/InvalidInput" },
            "500": { "$ref": "#/components/responses/RunFailed" },
            "503": { "$ref": "#/components/responses/Unavailable" },
            "504": { "$ref": "#/components/responses/Timeout" },
        },
    });
    if has_body {
        let body = if params_in_path.is_empty() {
            input.clone()
        } else {
            body_without(input_schema, &params_in_path)
        };
        let nullable = accepts_null(input_schema);
        operation["requestBody"] = json!({
            "required": !nullable,
            "description": "The workflow's input, as JSON.",
            "content": { "application/json": { "schema": body } },
        });
    }
    operation
}

/// The input's schema without the fields that come from the path.
fn body_without(input: &Value, params: &[&str]) -> Value {
    let mut body = input.clone();
    if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
        for p in params {
            props.remove(*p);
        }
    }
    if let Some(required) = body.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| !r.as_str().is_some_and(|r| params.contains(&r)));
    }
    if let Some(map) = body.as_object_mut() {
        map.remove("title");
    }
    body
}

/// Whether a schema takes `null` (an input of `()` or `Option<T>`): the body may then be absent.
fn accepts_null(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        _ => ["anyOf", "oneOf"].iter().any(|k| {
            schema
                .get(*k)
                .and_then(Value::as_array)
                .is_some_and(|b| b.iter().any(accepts_null))
        }),
    }
}

/// `{"error": {"code", "message", ...}}`, every code listed.
fn error_schema() -> Value {
    let mut codes: Vec<&str> = TRIGGER_ERRORS
        .iter()
        .flat_map(|(_, _, codes)| codes.iter().copied())
        .chain(RUN_API_CODES)
        .collect();
    codes.sort_unstable();
    codes.dedup();
    json!({
        "type": "object",
        "description": "Every error answer. `error.code` is stable; `message` is safe to show.",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": { "type": "string", "enum": codes },
                    "message": { "type": "string" },
                    "node": { "type": "string", "description": "The step that failed, when a node failed." },
                    "run_id": { "type": "string", "description": "The run, when one was created." },
                    "path": { "type": "string", "description": "`invalid_input`: where in the input, as `items[2].qty` (`.` for the root)." },
                    "expected": { "type": "string", "description": "`invalid_input`: what the input's schema expects at `path`." },
                    "line": { "type": "integer", "description": "`malformed_json`: 1-based line." },
                    "column": { "type": "integer", "description": "`malformed_json`: 1-based column." },
                },
                "required": ["code", "message"],
            },
        },
        "required": ["error"],
    })
}

fn accepted_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "run_id": { "type": "string" },
            "status": { "type": "string", "enum": ["running"] },
            "location": { "type": "string", "description": "`/runs/{id}`, as in the `Location` header." },
        },
        "required": ["run_id", "status", "location"],
    })
}

fn run_error_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "code": { "type": "string" },
            "message": { "type": "string" },
            "node": { "type": "string" },
            "step": { "type": "string", "description": "With `graph_changed`: the recorded step that no longer fits this build's graph." },
        },
        "required": ["code", "message"],
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    })
}

fn responses() -> Value {
    let mut out = Map::new();
    let names = [
        ("400", "BadRequest"),
        ("413", "BodyTooLarge"),
        ("415", "UnsupportedMediaType"),
        ("422", "InvalidInput"),
        ("500", "RunFailed"),
        ("503", "Unavailable"),
        ("504", "Timeout"),
        ("401", "Unauthorized"),
    ];
    for (status, description, codes) in TRIGGER_ERRORS {
        let name = names
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(status, |(_, n)| n);
        let codes: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
        out.insert(
            name.to_owned(),
            error_response(&format!("{description} Codes: {}.", codes.join(", "))),
        );
    }
    out.insert(
        "Accepted".into(),
        json!({
            "description": "With `Prefer: respond-async` (or a repeated `Idempotency-Key` whose run is still going): the run was recorded and runs on; poll `Location`.",
            "headers": { "Location": { "description": "`/runs/{id}`", "schema": { "type": "string" } } },
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } },
        }),
    );
    out.insert(
        "NotFound".into(),
        error_response("No such run, or (to retry a run) no journal. Codes: `run_not_found`, `journal_disabled`."),
    );
    Value::Object(out)
}

/// The runner's own routes.
fn run_api(paths: &mut Map<String, Value>, workflows: &[Value]) {
    let secured = json!([{ "adminToken": [] }, {}]);
    let unauthorized = json!({ "$ref": "#/components/responses/Unauthorized" });
    let run = json!({
        "type": "object",
        "description": "A run: its status, input, output or error, and with the journal its per-step timeline.",
        "properties": {
            "run_id": { "type": "string" },
            "workflow": { "type": "string", "enum": workflows },
            "status": { "type": "string", "enum": ["running", "succeeded", "failed", "blocked"] },
            "input": {},
            "output": {},
            "error": { "$ref": "#/components/schemas/RunError" },
            "idempotency_key": { "type": "string" },
            "created_ms": { "type": "integer", "description": "When the run was recorded, ms since the Unix epoch." },
            "started_ms": { "type": "integer", "description": "The same instant as `created_ms`." },
            "finished_ms": { "type": "integer" },
            "timeline": { "type": "array", "description": "Every attempt of every step, in order (with the journal; one run, not lists).", "items": { "type": "object" } },
        },
        "required": ["run_id", "workflow", "status", "created_ms", "started_ms"],
    });
    paths.insert(
        "/healthz".into(),
        json!({ "get": {
            "operationId": "healthz", "tags": ["runner"], "summary": "Liveness",
            "responses": { "200": { "description": "The runner is up.", "content": { "application/json": {
                "schema": { "type": "object", "properties": { "status": { "const": "ok" } } } } } } },
        }}),
    );
    paths.insert(
        "/workflows".into(),
        json!({ "get": {
            "operationId": "listWorkflows", "tags": ["runner"], "security": secured,
            "summary": "Every workflow with its steps, edges, triggers, types and JSON Schemas",
            "responses": {
                "200": { "description": "The workflows.", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "workflows": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "name": { "type": "string" },
                            "doc": { "type": "string" },
                            "input_type": { "type": "string" },
                            "output_type": { "type": "string" },
                            "input_schema": { "description": "The input's JSON Schema (draft 2020-12), or null when the type has none." },
                            "output_schema": { "description": "The output's JSON Schema, or null." },
                            "triggers": { "type": "array", "items": { "type": "string" } },
                        },
                        "required": ["name", "input_schema", "output_schema"],
                    } } },
                } } } },
                "401": unauthorized,
            },
        }}),
    );
    paths.insert(
        "/runs".into(),
        json!({ "get": {
            "operationId": "listRuns", "tags": ["runs"], "security": secured,
            "summary": "Runs, newest first (needs the journal)",
            "parameters": [
                { "name": "workflow", "in": "query", "schema": { "type": "string", "enum": workflows } },
                { "name": "status", "in": "query", "schema": { "type": "string", "enum": ["running", "queued", "waiting", "succeeded", "failed", "cancelled", "blocked"] } },
                { "name": "q", "in": "query", "description": "A run id prefix, or text in the idempotency key, input or error.", "schema": { "type": "string" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1 } },
                { "name": "before", "in": "query", "description": "`next_before` of the previous page.", "schema": { "type": "string" } },
            ],
            "responses": {
                "200": { "description": "One page of runs.", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": {
                        "runs": { "type": "array", "items": run },
                        "next_before": { "type": ["string", "null"] },
                    },
                } } } },
                "400": error_response("A bad filter. Codes: `invalid_query`, `invalid_status`, `invalid_run_id`."),
                "401": unauthorized,
                "404": { "$ref": "#/components/responses/NotFound" },
            },
        }}),
    );
    paths.insert(
        "/runs/{id}".into(),
        json!({ "get": {
            "operationId": "getRun", "tags": ["runs"], "security": secured,
            "summary": "One run with its input, output or error and its per-step timeline",
            "parameters": [{ "$ref": "#/components/parameters/RunId" }],
            "responses": {
                "200": { "description": "The run.", "content": { "application/json": { "schema": run } } },
                "400": error_response("Not a run id. Code: `invalid_run_id`."),
                "401": unauthorized,
                "404": { "$ref": "#/components/responses/NotFound" },
            },
        }}),
    );
    paths.insert(
        "/runs/{id}/retry".into(),
        json!({ "post": {
            "operationId": "retryRun", "tags": ["runs"], "security": secured,
            "summary": "Re-drive a failed or blocked run from where it stopped, or from its first step",
            "parameters": [
                { "$ref": "#/components/parameters/RunId" },
                { "name": "from_start", "in": "query", "description": "Forget what the run recorded and run it from its first step (for a run blocked by `graph_changed`).", "schema": { "type": "boolean" } },
            ],
            "responses": {
                "202": { "$ref": "#/components/responses/Accepted" },
                "400": error_response("Not a run id, or a bad query. Codes: `invalid_run_id`, `invalid_query`."),
                "401": unauthorized,
                "404": { "$ref": "#/components/responses/NotFound" },
                "409": error_response("The run is neither failed nor blocked, or it still does not fit this build's graph (it stays blocked). Codes: `run_not_failed`, `graph_changed`."),
                "503": { "$ref": "#/components/responses/Unavailable" },
            },
        }}),
    );
    paths.insert(
        "/runs/{id}/replay".into(),
        json!({ "post": {
            "operationId": "replayRun", "tags": ["runs"], "security": secured,
            "summary": "Re-execute a recorded run's input through this build's code (nothing is recorded) and compare each step's output with the recorded one",
            "parameters": [
                { "$ref": "#/components/parameters/RunId" },
                { "name": "stub", "in": "query", "description": "Steps fed their recorded outputs instead of running, comma-separated.", "schema": { "type": "string" } },
            ],
            "responses": {
                "200": { "description": "The comparison, whether or not it reproduces.", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": {
                        "run_id": { "type": "string" },
                        "workflow": { "type": "string" },
                        "reproduces": { "type": "boolean" },
                        "error": { "type": "string" },
                        "steps": { "type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "step": { "type": "string" },
                                "verdict": { "type": "string", "enum": ["same", "differs", "new", "missing", "stubbed"] },
                                "recorded": {},
                                "replayed": {},
                                "diff": { "type": "array", "items": { "type": "object", "properties": {
                                    "path": { "type": "string" }, "recorded": {}, "replayed": {},
                                } } },
                            },
                            "required": ["step", "verdict"],
                        } },
                    },
                    "required": ["run_id", "workflow", "reproduces", "steps"],
                } } } },
                "400": error_response("Not a run id, or a stub that is no step. Codes: `invalid_run_id`, `invalid_query`, `invalid_stub`."),
                "401": unauthorized,
                "404": { "$ref": "#/components/responses/NotFound" },
                "409": error_response("The run's workflow is not in this runner, or its input no longer fits. Codes: `unknown_workflow`, `invalid_input`."),
                "503": { "$ref": "#/components/responses/Unavailable" },
            },
        }}),
    );
    paths.insert(
        "/runs/{id}/fork".into(),
        json!({ "post": {
            "operationId": "forkRun", "tags": ["runs"], "security": secured,
            "summary": "Start a new run of a recorded run's input that reuses the recorded outputs of the steps `from` depends on and executes from `from` on (linked by `forked_from`)",
            "parameters": [
                { "$ref": "#/components/parameters/RunId" },
                { "name": "from", "in": "query", "required": true, "description": "The step to execute from.", "schema": { "type": "string" } },
            ],
            "responses": {
                "202": { "$ref": "#/components/responses/Accepted" },
                "400": error_response("Not a run id, or no such step. Codes: `invalid_run_id`, `invalid_query`, `invalid_step`."),
                "401": unauthorized,
                "404": { "$ref": "#/components/responses/NotFound" },
                "409": error_response("The reused records do not fit this build's graph: the new run is blocked. Code: `graph_changed`."),
                "503": { "$ref": "#/components/responses/Unavailable" },
            },
        }}),
    );
    paths.insert(
        "/runs/{id}/cancel".into(),
        json!({ "post": {
            "operationId": "cancelRun", "tags": ["runs"], "security": secured,
            "summary": "Cancel a run that has not ended: a queued or blocked run ends `cancelled` at once; a running or waiting one stops, runs the compensations of its completed steps and ends `cancelled`",
            "parameters": [{ "$ref": "#/components/parameters/RunId" }],
            "responses": {
                "200": { "description": "The run was queued or blocked: it is cancelled.", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "run_id": { "type": "string" }, "status": { "const": "cancelled" } },
                } } } },
                "202": { "description": "The run was running or waiting: it stops, compensates, and ends `cancelled`.", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "run_id": { "type": "string" }, "status": { "const": "cancelling" } },
                } } } },
                "400": error_response("Not a run id. Code: `invalid_run_id`."),
                "401": unauthorized,
                "404": { "$ref": "#/components/responses/NotFound" },
                "409": error_response("The run has ended, or runs in another runner. Codes: `run_finished`, `running_elsewhere`."),
                "503": { "$ref": "#/components/responses/Unavailable" },
            },
        }}),
    );
    paths.insert(
        "/runs/{id}/signals/{name}".into(),
        json!({ "post": {
            "operationId": "signalRun", "tags": ["runs"], "security": secured,
            "summary": "Deliver signal `name` to a run (`signal(name: T)` in its graph): the run continues, or finds it when it reaches the step",
            "parameters": [
                { "$ref": "#/components/parameters/RunId" },
                { "name": "name", "in": "path", "required": true, "description": "The signal's step name (`payment/approval` inside sub-workflow step `payment`).", "schema": { "type": "string" } },
            ],
            "requestBody": { "required": true, "description": "The signal's value, as JSON of its type (see the workflow's steps in `GET /workflows`).", "content": { "application/json": { "schema": {} } } },
            "responses": {
                "202": { "description": "Delivered (recorded durably).", "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "run_id": { "type": "string" }, "signal": { "type": "string" }, "status": { "const": "delivered" } },
                } } } },
                "400": error_response("Not a run id. Code: `invalid_run_id`."),
                "401": unauthorized,
                "404": { "$ref": "#/components/responses/NotFound" },
                "409": error_response("The run waits for no such signal, had it delivered already (or its timeout passed), or has ended. Codes: `not_waiting`, `signal_delivered`, `run_finished`."),
                "422": error_response("The value does not fit the signal's type; `path` says where. Code: `invalid_signal`."),
                "503": { "$ref": "#/components/responses/Unavailable" },
            },
        }}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_move_to_components_and_clashing_names_are_numbered() {
        let mut c = Components::default();
        let a = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Order", "type": "object",
            "properties": { "line": { "$ref": "#/$defs/Line" } },
            "$defs": { "Line": { "type": "object", "properties": { "qty": { "type": "integer" } } } },
        });
        let b = json!({
            "title": "Order", "type": "object",
            "properties": { "line": { "$ref": "#/$defs/Line" } },
            "$defs": { "Line": { "type": "string" } },
        });
        assert_eq!(
            c.add("a", "input", "Order", Some(a.clone()))["$ref"],
            "#/components/schemas/Order"
        );
        // The same type again: the same entries.
        assert_eq!(
            c.add("a2", "input", "Order", Some(a))["$ref"],
            "#/components/schemas/Order"
        );
        assert_eq!(
            c.add("b", "input", "Order", Some(b))["$ref"],
            "#/components/schemas/Order_2"
        );
        assert_eq!(
            c.schemas["Order"]["properties"]["line"]["$ref"],
            "#/components/schemas/Line"
        );
        assert_eq!(
            c.schemas["Order_2"]["properties"]["line"]["$ref"],
            "#/components/schemas/Line_2"
        );
        assert_eq!(c.schemas["Line_2"]["type"], "string");
        assert!(c.schemas["Order"].get("$schema").is_none());
        let none = c.add("c", "output", "Opaque", None);
        assert!(none["description"]
            .as_str()
            .unwrap()
            .contains("`Opaque` has no JSON Schema"));
    }

    #[test]
    fn path_parameters_are_found() {
        assert_eq!(path_params("/items/{id}/parts/{part}"), vec!["id", "part"]);
        assert!(path_params("/orders").is_empty());
    }
}
