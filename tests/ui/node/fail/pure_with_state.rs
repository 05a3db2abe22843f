use nanoflow::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Visit {
    customer: String,
}

#[node(pure, state, key = customer)]
fn count(_visit: Visit, seen: &mut State<u64>) -> u64 {
    **seen += 1;
    **seen
}

fn main() {}
