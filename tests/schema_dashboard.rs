//! The dashboard's "Start run" form built from the input's JSON Schema (issue 17), in headless
//! Chromium (Debian's `chromium` and `chromium-driver` over WebDriver on 127.0.0.1): fill the
//! form of a nested input (a struct in a struct, a list of structs, an enum, an `Option`),
//! submit a valid run and see it succeed with its input shown against the schema; submit an
//! invalid one and see the runner's `422` under the form, on the field it names; switch to the
//! JSON editor and back. Screenshots go to `target/screenshots/schema-*`.
//!
//! Without Chromium the test fails when `CI` is set, and is skipped, loudly, otherwise.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

#[path = "browser/mod.rs"]
mod browser;

use std::net::SocketAddr;
use std::path::PathBuf;

use nanoflow::prelude::*;
use nanoflow::{AdminToken, ServeConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShopOrder {
    pub id: String,
    pub customer: Customer,
    pub items: Vec<Line>,
    pub kind: Kind,
    pub note: Option<String>,
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Customer {
    pub name: String,
    pub vip: bool,
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub order_id: String,
    pub units: u32,
    pub wholesale: bool,
}

#[node]
fn summarize(o: ShopOrder) -> Summary {
    Summary {
        units: o.items.iter().map(|l| l.qty).sum(),
        wholesale: matches!(o.kind, Kind::Wholesale),
        order_id: o.id,
    }
}

workflow! {
    /// Sums an order's units.
    #[trigger(http = "POST /shop")]
    pub shop: summarize;
}

const TOKEN: &str = "schema-form-test-token-91b3";

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_form_from_the_input_schema_in_headless_chromium() {
    Box::pin(scenario()).await;
}

/// Sets a `<select>` and tells the page, as a user's choice would.
async fn choose(b: &browser::Browser, css: &str, value: &str) {
    b.wait(css).await;
    b.exec(
        "const s = document.querySelector(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change'));",
        serde_json::json!([css, value]),
    )
    .await;
}

async fn scenario() {
    let Some((chromium, driver)) = browser::find_browser() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but `chromium` and `chromedriver` are not installed: the schema form's browser test \
                 cannot run (source .ci/services-browser, or `apt-get install chromium chromium-driver`)"
            );
        }
        eprintln!(
            "\n!!! SKIPPED start_form_from_the_input_schema_in_headless_chromium: `chromium` / `chromedriver` \
             not found (apt-get install chromium chromium-driver). In CI this test fails instead.\n"
        );
        return;
    };
    let journal = std::env::temp_dir()
        .join(format!("nanoflow-schema-form-{}", nanoflow::RunId::new()))
        .join("journal.db");
    let server = Runner::new()
        .workflow(shop)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(journal),
            admin_token: Some(AdminToken::new(TOKEN).unwrap()),
            ..ServeConfig::default()
        })
        .await
        .expect("server starts");
    let addr = server.local_addr();
    let base = format!("http://{addr}");
    let b = browser::Browser::start(&chromium, &driver, screenshots()).await;

    b.goto(&format!("{base}/login")).await;
    b.type_into("#token", TOKEN).await;
    b.click("#login").await;

    // The form: one field per property, nested structs as field sets, required fields marked.
    b.click(r#"button[data-start="shop"]"#).await;
    b.wait("dialog[open] #start-fields fieldset.object").await;
    assert!(
        b.find("#start-json[hidden]").await.is_some(),
        "the JSON editor is hidden"
    );
    for path in ["id", "customer.name", "customer.vip", "kind", "note"] {
        b.wait(&format!(r#"#start-fields [data-path="{path}"]"#))
            .await;
    }
    b.wait(r#"#start-fields .field.required [data-path="id"]"#)
        .await;
    assert!(
        b.find(r#"#start-fields .field.required [data-path="note"]"#)
            .await
            .is_none(),
        "an Option is not required"
    );
    let kinds = b
        .exec(
            r#"return [...document.querySelectorAll('#start-fields select[data-path="kind"] option')].map(o => o.value).filter(Boolean)"#,
            serde_json::json!([]),
        )
        .await;
    assert_eq!(kinds, serde_json::json!(["retail", "wholesale"]));

    b.type_into(r#"[data-path="id"]"#, "s-1").await;
    b.type_into(r#"[data-path="customer.name"]"#, "Ada").await;
    b.click(r#"[data-path="customer.vip"]"#).await;
    choose(&b, r#"select[data-path="kind"]"#, "wholesale").await;
    b.click(r#"button[data-add="items"]"#).await;
    b.type_into(r#"[data-path="items[0].sku"]"#, "apple").await;
    b.type_into(r#"[data-path="items[0].qty"]"#, "3").await;
    b.click(r#"button[data-add="items"]"#).await;
    b.type_into(r#"[data-path="items[1].sku"]"#, "pear").await;
    b.type_into(r#"[data-path="items[1].qty"]"#, "4").await;
    b.screenshot("schema-01-form").await;

    // The JSON editor shows what the form holds, and back.
    b.click("#start-mode").await;
    b.wait("#start-fields[hidden]").await;
    let json_text = b
        .exec(
            "return document.getElementById('start-input').value",
            serde_json::json!([]),
        )
        .await;
    let as_json: serde_json::Value = serde_json::from_str(json_text.as_str().unwrap()).unwrap();
    assert_eq!(
        as_json,
        serde_json::json!({
            "id": "s-1", "customer": {"name": "Ada", "vip": true},
            "items": [{"sku": "apple", "qty": 3}, {"sku": "pear", "qty": 4}],
            "kind": "wholesale", "note": null,
        })
    );
    b.click("#start-mode").await;
    b.wait(r#"#start-fields:not([hidden]) [data-path="items[1].qty"]"#)
        .await;

    // A valid run: started, followed, its input shown against the schema.
    b.click("#start-submit").await;
    b.wait("#run-status .badge.succeeded").await;
    let run_id = b.text("h1[data-run-id]").await;
    let run = support::get_with(
        addr,
        &format!("/runs/{run_id}"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .json();
    assert_eq!(
        run["output"],
        serde_json::json!({"order_id": "s-1", "units": 7, "wholesale": true})
    );
    b.wait(r#"#input-schema tr[data-field="customer.name"]"#)
        .await;
    assert!(b
        .text(r#"#input-schema tr[data-field="items"]"#)
        .await
        .contains("list of Line"));
    assert!(b
        .text(r#"#output-schema tr[data-field="units"]"#)
        .await
        .contains("integer (uint32)"));
    assert!(b.find("#input-schema tr.misfit").await.is_none());
    b.screenshot("schema-02-run").await;

    // An invalid one: the form sends what it holds, the runner answers 422, and the page says
    // where and what was expected, on the field.
    b.click("#run-again").await; // prefilled with this run's input
    b.wait(r#"dialog[open] #start-fields [data-path="items[1].qty"]"#)
        .await;
    let prefilled = b
        .exec(
            r#"return document.querySelector('[data-path="customer.name"]').value"#,
            serde_json::json!([]),
        )
        .await;
    assert_eq!(prefilled, "Ada");
    b.clear(r#"[data-path="items[1].qty"]"#).await;
    b.type_into(r#"[data-path="items[1].qty"]"#, "-2").await;
    b.click("#start-submit").await;
    b.wait("#start-error:not(:empty)").await;
    let error = b.text("#start-error").await;
    assert!(error.contains("invalid_input"), "{error}");
    assert!(error.contains("items[1].qty"), "{error}");
    assert!(error.contains("integer (uint32)"), "{error}");
    b.wait(r#"[data-path="items[1].qty"][aria-invalid="true"]"#)
        .await;
    b.screenshot("schema-03-invalid").await;
    // The dialog stays open and no run was created.
    assert!(b.find("dialog[open]").await.is_some());
    let runs = support::get_with(
        addr,
        "/runs?workflow=shop",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .json();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");

    let severe: Vec<_> = b
        .console()
        .await
        .into_iter()
        .filter(|m| m["level"] == "SEVERE")
        // The refused input is answered 422, which the console reports.
        .filter(|m| {
            !(m["source"] == "network"
                && m["message"]
                    .as_str()
                    .is_some_and(|t| t.contains("/shop") && t.contains("422")))
        })
        .collect();
    assert!(severe.is_empty(), "page errors: {severe:?}");
    eprintln!("screenshots in {}", b.shots.display());
    drop(b);
    server.shutdown().await.unwrap();
}
