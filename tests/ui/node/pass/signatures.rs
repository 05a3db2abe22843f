use nanoflow::prelude::*;
use nanoflow::Node;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub qty: u32,
}

/// Not `Clone`: a retried node's input is then copied through JSON.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: u64,
}

#[derive(Debug)]
pub struct Declined;

impl From<Declined> for NodeError {
    fn from(_: Declined) -> Self {
        NodeError::permanent("declined")
    }
}

#[derive(Debug)]
pub struct Io(std::io::Error);
impl std::fmt::Display for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for Io {}

#[node]
fn sync_plain(o: Order) -> u32 {
    o.qty
}
#[node]
async fn async_plain(o: Order) -> u32 {
    o.qty
}
#[node]
fn no_output(_o: Order) {}
#[node]
fn unit_input(_: ()) -> u32 {
    7
}
#[node]
fn node_error(o: Order) -> Result<u32, NodeError> {
    Ok(o.qty)
}
#[node]
fn own_error(o: Order) -> Result<u32, Declined> {
    if o.qty == 0 {
        return Err(Declined);
    }
    Ok(o.qty)
}
#[node]
async fn std_error(o: Order) -> Result<u32, Io> {
    Ok(o.qty)
}
#[node]
fn boxed_error(o: Order) -> Result<u32, std::io::Error> {
    Ok(o.qty)
}
#[node]
fn tuple_input((a, b): (u32, u32)) -> u32 {
    a + b
}
#[node]
fn mut_input(mut o: Order) -> Order {
    o.qty += 1;
    o
}
#[node(retries = 2)]
fn not_clone(t: Ticket) -> u64 {
    t.id
}
#[node]
fn nested_types(v: Vec<Option<Order>>) -> std::collections::BTreeMap<String, u32> {
    v.into_iter().flatten().map(|o| (o.qty.to_string(), o.qty)).collect()
}

mod aliased {
    use super::{Declined, Order};
    use nanoflow::node;

    /// A `Result` alias with one argument.
    type Result<T> = std::result::Result<T, Declined>;

    #[node]
    pub(crate) fn alias_result(o: Order) -> Result<u32> {
        Ok(o.qty)
    }
}
use aliased::alias_result;

mod api {
    /// An alias from elsewhere.
    pub type Result<T> = std::result::Result<T, std::io::Error>;
}

#[node]
fn alias_path(o: Order) -> api::Result<u32> {
    Ok(o.qty)
}

#[tokio::main]
async fn main() {
    // The functions stay callable as normal Rust functions.
    assert_eq!(sync_plain(Order { qty: 2 }), 2);
    assert_eq!(async_plain(Order { qty: 2 }).await, 2);
    assert_eq!(unit_input(()), 7);
    assert!(own_error(Order { qty: 0 }).is_err());
    assert_eq!(tuple_input((1, 2)), 3);
    assert_eq!(mut_input(Order { qty: 1 }), Order { qty: 2 });
    assert_eq!(not_clone(Ticket { id: 4 }), 4);
    assert_eq!(alias_result(Order { qty: 3 }).unwrap(), 3);
    assert_eq!(alias_path(Order { qty: 3 }).unwrap(), 3);
    no_output(Order { qty: 1 });
    let _ = (node_error, std_error, boxed_error, nested_types);

    // And each is a node with its types and name.
    assert_eq!(<sync_plain as Node>::NAME, "sync_plain");
    assert_eq!(std::any::type_name::<<own_error as Node>::Output>(), "u32");
    assert_eq!(std::any::type_name::<<no_output as Node>::Output>(), "()");
    assert_eq!(<not_clone as Node>::OPTIONS.retries, 2);
    let copy = <not_clone as Node>::duplicate(&Ticket { id: 9 }).unwrap();
    assert_eq!(copy, Ticket { id: 9 });
    let out = <own_error as Node>::call(Order { qty: 0 }).await.unwrap_err();
    assert_eq!(out.message(), "declined");
}
