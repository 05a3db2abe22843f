use nanoflow::prelude::*;

// A bad option is reported, but the node still exists (with default settings), so the
// workflow below is still checked: this mismatched edge is reported too.
#[node(retries = 3, backoff = "fast")]
fn count(text: String) -> u64 {
    text.len() as u64
}
#[node]
fn shout(text: String) -> String {
    text.to_uppercase()
}

workflow! {
    pub flow: count -> shout;
}

fn main() {}
