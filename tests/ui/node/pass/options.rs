use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::{Isolation, Node};

#[node(
    retries = 3,
    backoff = "50ms",
    max_backoff = "1.5m",
    timeout = "2s",
    isolation = "container",
    name = "charge-card"
)]
fn charge(cents: u64) -> u64 {
    cents
}

#[node(isolation = "process", timeout = "250us", retries = 0)]
fn quick(cents: u64) -> u64 {
    cents
}

#[node()]
fn empty_options(cents: u64) -> u64 {
    cents
}

fn main() {
    let o = <charge as Node>::OPTIONS;
    assert_eq!(o.retries, 3);
    assert_eq!(o.backoff, Duration::from_millis(50));
    assert_eq!(o.max_backoff, Duration::from_secs(90));
    assert_eq!(o.timeout, Some(Duration::from_secs(2)));
    assert_eq!(o.isolation, Some(Isolation::Container));
    assert_eq!(<charge as Node>::NAME, "charge-card");

    let q = <quick as Node>::OPTIONS;
    assert_eq!(q.timeout, Some(Duration::from_micros(250)));
    assert_eq!(q.isolation, Some(Isolation::Process));
    assert_eq!(<empty_options as Node>::OPTIONS, nanoflow::NodeOptions::DEFAULT);
}
