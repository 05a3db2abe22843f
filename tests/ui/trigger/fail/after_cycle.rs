use nanoflow::prelude::*;

#[node]
fn echo(s: String) -> String {
    s
}

workflow! {
    #[trigger(after = c)]
    pub a: echo;
    #[trigger(after = a)]
    pub b: echo;
    #[trigger(after = b)]
    pub c: echo;

    #[trigger(after = again)]
    pub again: echo;
}

fn main() {}
