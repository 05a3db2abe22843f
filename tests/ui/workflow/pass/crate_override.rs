// `crate = path` and `#![crate = path]`, for a user who reaches nanoflow under another name.
extern crate nanoflow as nf;

mod my_reexport {
    pub use nanoflow::*;
}

#[nf::node(crate = nf)]
fn double(n: u64) -> u64 {
    n * 2
}

#[my_reexport::node(crate = my_reexport)]
fn inc(n: u64) -> u64 {
    n + 1
}

#[nf::node(crate = "nf")]
fn square(n: u64) -> u64 {
    n * n
}

nf::workflow! {
    #![crate = nf]
    /// Through `extern crate ... as`.
    pub first: double -> inc;
}

my_reexport::workflow! {
    #![crate = my_reexport]
    /// Through a module that re-exports the crate.
    pub second: inc -> double -> square;
}

#[tokio::main]
async fn main() {
    assert_eq!(first.run(2).await.unwrap(), 5);
    assert_eq!(second.run(2).await.unwrap(), 36);
}
