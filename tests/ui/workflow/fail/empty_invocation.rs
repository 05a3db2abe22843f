use nanoflow::prelude::*;

workflow! {}

fn main() {}
