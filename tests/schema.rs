//! JSON Schemas from node types (issue 17): the README's workflows (structs, enums, `Option`,
//! `Vec`, nested types) give their input and output schemas; a type without `JsonSchema` gives
//! none and still runs; `GET /workflows` carries them; a `422` names the path and what the
//! schema expects there; `GET /openapi.json` validates against the OpenAPI 3.1 schema with
//! `openapi-spec-validator` (PyPI), and `<service> openapi` prints the same document.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Command;

use nanoflow::prelude::*;
use nanoflow::ServeConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{get, post_json};

// The README's first workflow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Order {
    pub id: String,
    pub qty: u32,
    pub unit_cents: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Priced {
    pub id: String,
    pub total_cents: u64,
}

#[node]
async fn price(o: Order) -> Result<Priced, NodeError> {
    if o.qty == 0 {
        return Err(NodeError::permanent("qty must be at least 1"));
    }
    Ok(Priced {
        id: o.id,
        total_cents: u64::from(o.qty) * o.unit_cents,
    })
}
#[node]
fn tax(p: Priced) -> u64 {
    p.total_cents / 10
}
#[node]
fn shipping(p: Priced) -> u64 {
    if p.total_cents > 10_000 {
        0
    } else {
        500
    }
}
#[node]
fn total(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}

// The README's branches and maps: an enum with every kind of variant, a `Vec`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Claim {
    pub id: u32,
    pub cents: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub enum Review {
    Approved(Claim),
    Rejected(String),
    Escalated { level: u8, note: String },
    Pending,
}
#[node]
fn review(c: Claim) -> Review {
    match c.cents {
        0 => Review::Pending,
        1..=999 => Review::Approved(c),
        1000..=9999 => Review::Escalated {
            level: 1,
            note: format!("claim {}", c.id),
        },
        _ => Review::Rejected("over the limit".into()),
    }
}
#[node]
fn batch(all: Vec<Claim>) -> Vec<Claim> {
    all
}
#[node]
fn count(reviews: Vec<Review>) -> usize {
    reviews.len()
}

// Nested types, `Option`, a unit-variant enum, a `Vec` of structs: a shop order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShopOrder {
    pub id: String,
    pub customer: Customer,
    pub items: Vec<Line>,
    pub kind: Kind,
    /// Free text for the courier.
    pub note: Option<String>,
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Customer {
    pub name: String,
    pub email: Option<String>,
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    pub sku: String,
    pub qty: u32,
}
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Retail,
    Wholesale,
}
#[node]
fn lines(o: ShopOrder) -> u32 {
    o.items.iter().map(|l| l.qty).sum()
}

// A type without `JsonSchema`: no schema, and it still runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opaque {
    pub blob: String,
}
#[node]
fn opaque_len(o: Opaque) -> usize {
    o.blob.len()
}

// Derived through the facade alone, without naming the `schemars` crate.
#[derive(Debug, Clone, Serialize, Deserialize, nanoflow::JsonSchema)]
#[schemars(crate = "nanoflow::schemars")]
pub struct ViaFacade {
    pub level: u8,
}
#[node(schema)]
fn level(v: ViaFacade) -> u8 {
    v.level
}

// Event triggers: the message's and the row's schemas.
#[node]
fn audit(e: DbEvent<Line>) -> String {
    format!("{:?}", e.operation)
}
#[node]
fn tick(t: Tick) -> i64 {
    t.fired_ms - t.scheduled_ms
}

workflow! {
    /// Prices an order, computes tax and shipping in parallel, then totals.
    #[trigger(http = "POST /checkout")]
    pub checkout: price -> (tax, shipping) -> total;

    /// Reviews a claim.
    #[trigger(http = "PUT /claims/{id}")]
    pub claims: review;

    /// Reviews claims in bulk.
    #[trigger(http = "POST /settle")]
    pub settle: batch -> map(review) -> count;

    /// Counts an order's items.
    #[trigger(http = "POST /shop")]
    #[trigger(queue = "shop.orders")]
    pub shop: lines;

    /// Takes a type without a schema.
    #[trigger(http = "POST /opaque")]
    pub opaque: opaque_len;

    /// A type derived through the facade.
    pub facade: level;

    /// Watches order lines.
    #[trigger(postgres = "public.lines")]
    pub line_changes: audit;

    /// Every minute.
    #[trigger(cron = "0 * * * * *")]
    pub every_minute: tick;
}

/// `$defs` of a root schema.
fn defs(schema: &Value) -> &Value {
    &schema["$defs"]
}

#[test]
fn structs_give_object_schemas_with_their_fields() {
    let (input, output) = Workflow::schemas(&checkout);
    let input = input.expect("`Order` derives JsonSchema");
    assert_eq!(
        input["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(input["title"], "Order");
    assert_eq!(input["type"], "object");
    assert_eq!(input["properties"]["id"]["type"], "string");
    assert_eq!(input["properties"]["qty"]["type"], "integer");
    assert_eq!(input["properties"]["qty"]["format"], "uint32");
    assert_eq!(input["properties"]["unit_cents"]["format"], "uint64");
    assert_eq!(input["required"], json!(["id", "qty", "unit_cents"]));
    // The output is the last node's: `total`'s `u64`.
    let output = output.expect("u64 has a schema");
    assert_eq!(output["type"], "integer");
    assert_eq!(output["format"], "uint64");
}

#[test]
fn enums_give_one_branch_per_variant() {
    let (input, output) = Workflow::schemas(&claims);
    assert_eq!(input.unwrap()["title"], "Claim");
    let output = output.unwrap();
    assert_eq!(output["title"], "Review");
    let variants = output["oneOf"].as_array().expect("an enum is `oneOf`");
    assert_eq!(variants.len(), 4, "{output:#}");
    let text = output.to_string();
    // Unit variants are strings; the others externally tagged objects.
    assert!(
        variants
            .iter()
            .any(|v| v["enum"] == json!(["Pending"]) || v["const"] == "Pending"),
        "{text}"
    );
    let escalated = variants
        .iter()
        .find(|v| v["required"] == json!(["Escalated"]))
        .expect("Escalated");
    assert_eq!(
        escalated["properties"]["Escalated"]["properties"]["level"]["format"],
        "uint8"
    );
    let approved = variants
        .iter()
        .find(|v| v["required"] == json!(["Approved"]))
        .unwrap();
    assert_eq!(approved["properties"]["Approved"]["$ref"], "#/$defs/Claim");
    assert_eq!(defs(&output)["Claim"]["type"], "object");
}

#[test]
fn vecs_give_arrays_of_their_items() {
    let (input, output) = Workflow::schemas(&settle);
    let input = input.unwrap();
    assert_eq!(input["type"], "array");
    assert_eq!(input["items"]["$ref"], "#/$defs/Claim");
    assert_eq!(
        defs(&input)["Claim"]["properties"]["cents"]["type"],
        "integer"
    );
    // `usize`: a non-negative integer.
    let output = output.unwrap();
    assert_eq!(output["type"], "integer");
    assert_eq!(output["minimum"], 0);
}

#[test]
fn nested_types_options_and_unit_enums() {
    let (input, _) = Workflow::schemas(&shop);
    let input = input.unwrap();
    let props = &input["properties"];
    assert_eq!(props["customer"]["$ref"], "#/$defs/Customer");
    assert_eq!(props["items"]["items"]["$ref"], "#/$defs/Line");
    assert_eq!(props["kind"]["$ref"], "#/$defs/Kind");
    // `Option<String>`: a string or null, and not required.
    assert_eq!(props["note"]["type"], json!(["string", "null"]));
    assert_eq!(props["note"]["description"], "Free text for the courier.");
    assert_eq!(
        input["required"],
        json!(["id", "customer", "items", "kind"])
    );
    let d = defs(&input);
    assert_eq!(
        d["Customer"]["properties"]["email"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(d["Customer"]["required"], json!(["name"]));
    assert_eq!(d["Line"]["properties"]["qty"]["format"], "uint32");
    assert_eq!(d["Kind"]["enum"], json!(["retail", "wholesale"]));
}

#[test]
fn a_type_without_json_schema_has_no_schema_and_still_runs() {
    let (input, output) = Workflow::schemas(&opaque);
    assert!(input.is_none(), "{input:?}");
    assert!(output.is_some());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let len = rt
        .block_on(opaque.run(Opaque { blob: "abc".into() }))
        .unwrap();
    assert_eq!(len, 3);
}

#[test]
fn the_facade_derives_json_schema_too() {
    let (input, _) = Workflow::schemas(&facade);
    let input = input.unwrap();
    assert_eq!(input["title"], "ViaFacade");
    assert_eq!(input["properties"]["level"]["format"], "uint8");
}

#[test]
fn event_triggers_have_the_schemas_of_their_payloads() {
    let (db, _) = Workflow::schemas(&line_changes);
    let db = db.unwrap();
    assert_eq!(db["title"], "DbEvent_for_Line");
    assert_eq!(db["properties"]["operation"]["$ref"], "#/$defs/DbOp");
    assert_eq!(
        defs(&db)["DbOp"]["enum"],
        json!(["insert", "update", "delete"])
    );
    // The row, or null, before and after the change.
    let old = db["properties"]["old"].to_string();
    assert!(
        old.contains("#/$defs/Line") && old.contains("null"),
        "{old}"
    );
    let (tick_schema, _) = Workflow::schemas(&every_minute);
    let tick_schema = tick_schema.unwrap();
    assert_eq!(tick_schema["properties"]["fired_ms"]["format"], "int64");
    // A queue message is the workflow's input, as an HTTP body is.
    let (queued, _) = Workflow::schemas(&shop);
    assert_eq!(queued.unwrap()["title"], "ShopOrder");
}

async fn start() -> nanoflow::Server {
    Runner::new()
        .workflow(checkout)
        .workflow(claims)
        .workflow(settle)
        .workflow(shop)
        .workflow(opaque)
        .workflow(line_changes)
        .workflow(every_minute)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: None,
            ..ServeConfig::default()
        })
        .await
        .expect("server starts")
}

#[tokio::test]
async fn get_workflows_carries_the_schemas() {
    let server = start().await;
    let body = get(server.local_addr(), "/workflows").await.json();
    let find = |name: &str| {
        body["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(find("checkout")["input_schema"]["title"], "Order");
    assert_eq!(find("shop")["input_schema"]["title"], "ShopOrder");
    assert_eq!(
        find("line_changes")["input_schema"]["title"],
        "DbEvent_for_Line"
    );
    assert_eq!(find("every_minute")["input_schema"]["title"], "Tick");
    assert!(find("opaque")["input_schema"].is_null());
    assert_eq!(find("opaque")["output_schema"]["type"], "integer");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_input_names_the_path_and_what_the_schema_expects() {
    let server = start().await;
    let addr = server.local_addr();
    let r = post_json(
        addr,
        "/shop",
        r#"{"id":"s-1","customer":{"name":"ada"},"items":[{"sku":"a","qty":1},{"sku":"b","qty":"two"}],"kind":"retail"}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    let error = &r.json()["error"];
    assert_eq!(error["code"], "invalid_input");
    assert_eq!(error["path"], "items[1].qty", "{error}");
    assert_eq!(error["expected"], "integer (uint32)", "{error}");
    let message = error["message"].as_str().unwrap();
    // serde's own words are kept, the schema's added.
    assert!(
        message.contains("invalid type: string \"two\""),
        "{message}"
    );
    assert!(message.contains("expects integer (uint32)"), "{message}");

    let r = post_json(
        addr,
        "/shop",
        r#"{"id":"s-1","customer":{"name":"ada"},"items":[],"kind":"bulk"}"#,
    )
    .await;
    let error = &r.json()["error"];
    assert_eq!(error["path"], "kind", "{error}");
    assert_eq!(
        error["expected"], "one of \"retail\", \"wholesale\"",
        "{error}"
    );

    let r = post_json(addr, "/shop", r#"{"id":"s-1","customer":{"name":7}}"#).await;
    let error = &r.json()["error"];
    assert_eq!(error["path"], "customer.name", "{error}");
    assert_eq!(error["expected"], "string", "{error}");

    // Without a schema, the 422 is as before: the path, no `expected`.
    let r = post_json(addr, "/opaque", r#"{"blob": 1}"#).await;
    assert_eq!(r.status, 422);
    let error = &r.json()["error"];
    assert_eq!(error["path"], "blob");
    assert!(error.get("expected").is_none(), "{error}");
    server.shutdown().await.unwrap();
}

/// Validates `document` with `openapi-spec-validator` (PyPI), installed by `.ci/services`.
/// `Ok(false)`: the validator is not installed.
fn validate_openapi(document: &Value) -> Result<bool, String> {
    let script = "import json, sys\n\
        try:\n    from openapi_spec_validator import validate\n    from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator\n\
        except ImportError:\n    sys.exit(3)\n\
        spec = json.load(sys.stdin)\n\
        errors = [str(e).splitlines()[0] for e in OpenAPIV31SpecValidator(spec).iter_errors()]\n\
        print('\\n'.join(errors))\n\
        sys.exit(1 if errors else 0)\n";
    let mut child = match Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return Ok(false),
    };
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(document.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Ok(true),
        Some(3) => Ok(false),
        _ => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn require_validated(document: &Value) {
    match validate_openapi(document) {
        Ok(true) => {}
        Ok(false) if std::env::var_os("CI").is_none() => eprintln!(
            "\n!!! NOT VALIDATED: the OpenAPI document was not checked against the OpenAPI 3.1 schema: \
             `openapi-spec-validator` is not installed (pip install openapi-spec-validator; \
             .ci/services installs it). In CI this fails instead.\n"
        ),
        Ok(false) => panic!(
            "CI is set but `openapi-spec-validator` (PyPI) is not installed: source .ci/services"
        ),
        Err(errors) => panic!(
            "the OpenAPI document does not validate:\n{errors}\n{}",
            serde_json::to_string_pretty(document).unwrap()
        ),
    }
}

#[tokio::test]
async fn the_openapi_document_validates_and_describes_every_http_trigger() {
    let server = start().await;
    let doc = get(server.local_addr(), "/openapi.json").await.json();
    server.shutdown().await.unwrap();
    require_validated(&doc);

    assert_eq!(doc["openapi"], "3.1.0");
    let checkout_op = &doc["paths"]["/checkout"]["post"];
    assert_eq!(checkout_op["operationId"], "checkout");
    assert_eq!(
        checkout_op["summary"],
        "Prices an order, computes tax and shipping in parallel, then totals."
    );
    assert_eq!(
        checkout_op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Order"
    );
    assert_eq!(checkout_op["requestBody"]["required"], true);
    let ok = &checkout_op["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(ok["type"], "integer");
    // 202 with `Location`, the error answers, the two headers.
    let responses = &doc["components"]["responses"];
    assert!(responses["Accepted"]["headers"]["Location"].is_object());
    assert_eq!(
        checkout_op["responses"]["202"]["$ref"],
        "#/components/responses/Accepted"
    );
    for status in ["400", "413", "415", "422", "500", "503", "504"] {
        assert!(
            checkout_op["responses"][status].is_object(),
            "no {status} response"
        );
    }
    let params = checkout_op["parameters"].to_string();
    assert!(params.contains("#/components/parameters/IdempotencyKey"));
    assert!(params.contains("#/components/parameters/Prefer"));
    let parameters = &doc["components"]["parameters"];
    assert_eq!(parameters["IdempotencyKey"]["name"], "Idempotency-Key");
    assert_eq!(
        parameters["Prefer"]["schema"]["enum"],
        json!(["respond-async"])
    );
    let codes =
        &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    for code in [
        "malformed_json",
        "body_too_large",
        "unsupported_media_type",
        "invalid_input",
        "node_failed",
        "node_timeout",
        "node_panicked",
        "overloaded",
        "journal_unavailable",
    ] {
        assert!(
            codes.as_array().unwrap().iter().any(|c| c == code),
            "{code}"
        );
    }

    // A path parameter is merged into the input: described as a parameter, out of the body.
    let claim_op = &doc["paths"]["/claims/{id}"]["put"];
    let id = claim_op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "id")
        .unwrap();
    assert_eq!(id["in"], "path");
    assert_eq!(id["schema"]["format"], "uint32");
    let body = &claim_op["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["required"], json!(["cents"]), "{body}");
    // Shared definitions move to components once; the enum references the claim there.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Claim"]["type"], "object");
    assert!(schemas["Review"]["oneOf"]
        .to_string()
        .contains("#/components/schemas/Claim"));
    assert!(!doc.to_string().contains("#/$defs/"));
    // No schema: any JSON, said so.
    let opaque_body =
        &doc["paths"]["/opaque"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert!(opaque_body["description"]
        .as_str()
        .unwrap()
        .contains("has no JSON Schema"));
    // The run API.
    for (path, method) in [
        ("/runs", "get"),
        ("/runs/{id}", "get"),
        ("/runs/{id}/retry", "post"),
        ("/workflows", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    // Event triggers have no route: not in the document.
    assert!(doc["paths"].get("/shop.orders").is_none());
}

#[test]
fn the_validator_is_real_and_refuses_a_broken_document() {
    let broken = json!({
        "openapi": "3.1.0",
        "info": { "title": "x" },
        "paths": { "/a": { "get": { "responses": { "200": { "content": {} } } } } },
    });
    match validate_openapi(&broken) {
        Ok(true) => panic!("a document without `info.version` validated"),
        Ok(false) if std::env::var_os("CI").is_none() => {
            eprintln!("\n!!! SKIPPED: `openapi-spec-validator` is not installed\n")
        }
        Ok(false) => panic!("CI is set but `openapi-spec-validator` is not installed"),
        Err(errors) => assert!(errors.contains("version"), "{errors}"),
    }
}

#[test]
fn the_orders_service_prints_its_openapi_document() {
    let out = Command::new(support::example_binary("orders"))
        .arg("openapi")
        .output()
        .expect("the orders example runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["info"]["title"], "orders");
    let op = &doc["paths"]["/orders"]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Order"
    );
    assert_eq!(
        doc["components"]["schemas"]["Item"]["properties"]["qty"]["format"],
        "uint32"
    );
    require_validated(&doc);
}
