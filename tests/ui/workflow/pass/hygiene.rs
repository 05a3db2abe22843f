// User items named like the names an expansion might use unqualified: the expansions use
// absolute paths and `__nanoflow_` prefixes, so none of these interferes.
#![allow(dead_code, non_camel_case_types)]

use nanoflow::{node, workflow};

struct Node;
struct Result;
struct Ok;
struct Err;
struct Error;
struct Workflow;
struct Option;
struct Some;
struct None;
struct Send;
struct Future;
struct Vec;
struct String;
struct Debug;
struct Clone;
struct Copy;
struct Default;
mod core {}
mod std {}
mod serde {}
mod nanoflow_runtime {}
trait Into {}
trait From {}

fn input(x: u64) -> u64 {
    x
}
fn value(x: u64) -> u64 {
    x
}
fn run() {}
fn graph() {}
fn call() {}
fn duplicate() {}
fn fan_out() {}
fn accepts() {}

#[node]
fn start(input: u64) -> u64 {
    input
}
#[node]
async fn left(value: u64) -> ::std::result::Result<u64, nanoflow::NodeError> {
    ::std::result::Result::Ok(value + 1)
}
#[node]
fn right(value: u64) -> u64 {
    value + 2
}
#[node]
fn join(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}

workflow! {
    /// Uses every graph shape.
    pub flow: start -> (left, right) -> join;
}

#[::tokio::main]
async fn main() {
    let out = flow.run(input(1)).await.unwrap();
    ::std::assert_eq!(out, 5);
    ::std::assert_eq!(value(1), 1);
}
