//! `map(..)` in a graph: the same steps for every item of a collection, a bounded number of
//! items at a time, results in input order.
//!
//! Items run concurrently on the run's own task (as the branches of a fan-out do), through a
//! `FuturesUnordered` holding at most `concurrency` items: the collection is read lazily, so a
//! map over 10,000 items never holds more than `concurrency` item futures. Each item gets a
//! child context whose steps are named with the item's index (`score[17]`), so a resumed run
//! skips the items that completed.

use std::future::Future;

use futures_util::stream::{FuturesUnordered, StreamExt as _};

use crate::error::Error;
use crate::node::NodeError;
use crate::run::RunCtx;

/// How many items of a `map(..)` run at once when the graph does not say
/// (`map(score, concurrency = 8)`).
pub const DEFAULT_CONCURRENCY: usize = 16;

impl RunCtx {
    /// Runs `body` on every item of `items`, at most `concurrency` at once, and returns the
    /// outputs in input order. The first item to fail fails the map; the items in flight are
    /// dropped (cancelled) and no further item starts.
    #[doc(hidden)]
    pub async fn map<C, U, F, Fut>(
        &self,
        concurrency: usize,
        items: C,
        body: F,
    ) -> Result<Vec<U>, Error>
    where
        C: IntoIterator,
        F: FnMut(RunCtx, C::Item) -> Fut,
        Fut: Future<Output = (RunCtx, Result<U, Error>)>,
    {
        drive(self, concurrency, items, body, |result| result).await
    }

    /// [`RunCtx::map`] for `map(.., collect_errors)`: an item whose step fails gives an `Err`
    /// in its place instead of failing the map. (A journal failure still fails the run.)
    #[doc(hidden)]
    pub async fn map_results<C, U, F, Fut>(
        &self,
        concurrency: usize,
        items: C,
        body: F,
    ) -> Result<Vec<Result<U, NodeError>>, Error>
    where
        C: IntoIterator,
        F: FnMut(RunCtx, C::Item) -> Fut,
        Fut: Future<Output = (RunCtx, Result<U, Error>)>,
    {
        drive(self, concurrency, items, body, |result| match result {
            Ok(value) => Ok(Ok(value)),
            Err(Error::Node { error, .. }) => Ok(Err(error)),
            Err(other) => Err(other),
        })
        .await
    }
}

/// The map loop: keeps up to `concurrency` item futures in flight, starting the next item as
/// one finishes, and puts each result (as `keep` makes it) in its item's place.
async fn drive<C, U, V, F, Fut, K>(
    ctx: &RunCtx,
    concurrency: usize,
    items: C,
    mut body: F,
    mut keep: K,
) -> Result<Vec<V>, Error>
where
    C: IntoIterator,
    F: FnMut(RunCtx, C::Item) -> Fut,
    Fut: Future<Output = (RunCtx, Result<U, Error>)>,
    K: FnMut(Result<U, Error>) -> Result<V, Error>,
{
    let base = ctx.scope().items_base();
    let limit = concurrency.max(1);
    let mut items = items.into_iter().enumerate();
    let mut slots: Vec<Option<V>> = Vec::with_capacity(items.size_hint().0);
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < limit {
            let Some((index, item)) = items.next() else {
                break;
            };
            in_flight.push(body(ctx.child(base.item(index)), item));
        }
        let Some((child, result)) = in_flight.next().await else {
            break;
        };
        let index = child.scope().item_index().unwrap_or_default();
        ctx.adopt(child);
        // An early return drops `in_flight`: the items still running are cancelled.
        let value = keep(result)?;
        if index >= slots.len() {
            slots.resize_with(index + 1, || None);
        }
        slots[index] = Some(value);
    }
    Ok(slots.into_iter().flatten().collect())
}
