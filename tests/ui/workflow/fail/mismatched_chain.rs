use nanoflow::prelude::*;

#[node]
fn parse(text: String) -> u64 {
    text.len() as u64
}
#[node]
fn shout(text: String) -> String {
    text.to_uppercase()
}

workflow! {
    pub flow: parse -> shout;
}

fn main() {}
