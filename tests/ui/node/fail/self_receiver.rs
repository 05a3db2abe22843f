use nanoflow::prelude::*;

struct Pricing;

impl Pricing {
    #[node]
    fn price(self) -> u64 {
        100
    }
}

fn main() {}
