use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Visit {
    pub customer: Customer,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: u32,
}

#[node(state, key = "customer.id")]
async fn count(v: Visit, seen: &mut State<u64>) -> Result<u64, NodeError> {
    **seen += 1;
    Ok(u64::from(v.customer.id) * 1000 + **seen)
}

workflow! {
    #[defaults(retries = 1, backoff = "1ms", max_backoff = "10ms", timeout = "1s")]
    pub visits: count;
}

#[tokio::main]
async fn main() {
    let v = Visit { customer: Customer { id: 7 } };
    assert_eq!(visits.run(v.clone()).await.unwrap(), 7001);
    assert_eq!(visits.run(v).await.unwrap(), 7002);
}
