//! `map(..)` in a graph: the same steps for every item of a collection, a bounded number of
//! items at a time, results in input order.
//!
//! Items run concurrently on the run's own task (as the branches of a fan-out do), in at most
//! `concurrency` places: the collection is read lazily, so a map over 10,000 items never holds
//! more than `concurrency` item futures. Each place keeps, from one item to the next, its
//! context (whose steps are named with the item's index, `score[17]`, so a resumed run skips
//! the items that completed), its future's allocation and its waker: an item costs no
//! allocation, and one that finishes on its first poll (a CPU-only node) no wake-up either.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

use crate::error::Error;
use crate::node::NodeError;
use crate::run::RunCtx;

/// How many items of a `map(..)` run at once when the graph does not say
/// (`map(score, concurrency = 8)`).
pub const DEFAULT_CONCURRENCY: usize = 16;

/// How many items in a row may finish on their first poll before the map lets the other
/// tasks of its thread run.
const INLINE_BUDGET: usize = 512;

impl RunCtx {
    /// Runs `body` on every item of `items`, at most `concurrency` at once, and returns the
    /// outputs in input order. The first item to fail fails the map; the items in flight are
    /// dropped (cancelled) and no further item starts.
    #[doc(hidden)]
    pub async fn map<C, U, F>(&self, concurrency: usize, items: C, body: F) -> Result<Vec<U>, Error>
    where
        C: IntoIterator,
        F: AsyncFn(&RunCtx, C::Item) -> Result<U, Error>,
    {
        drive(self, concurrency, items, body, |result| result).await
    }

    /// [`RunCtx::map`] for `map(.., collect_errors)`: an item whose step fails gives an `Err`
    /// in its place instead of failing the map. (A journal failure still fails the run.)
    #[doc(hidden)]
    pub async fn map_results<C, U, F>(
        &self,
        concurrency: usize,
        items: C,
        body: F,
    ) -> Result<Vec<Result<U, NodeError>>, Error>
    where
        C: IntoIterator,
        F: AsyncFn(&RunCtx, C::Item) -> Result<U, Error>,
    {
        drive(self, concurrency, items, body, |result| match result {
            Ok(value) => Ok(Ok(value)),
            Err(Error::Node { error, .. }) => Ok(Err(error)),
            Err(other) => Err(other),
        })
        .await
    }
}

/// Which places have an item that asked to be polled again, and the map's own waker.
struct Woken {
    places: Box<[AtomicBool]>,
    map: AtomicWaker,
}

/// The waker given to the item in one place.
struct PlaceWaker {
    place: usize,
    woken: Arc<Woken>,
}

impl Wake for PlaceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.places[self.place].store(true, Ordering::Release);
        self.woken.map.wake();
    }
}

/// The map loop: keeps up to `concurrency` items in flight, starting the next item in a place
/// as soon as the place's item finishes, and puts each result (as `keep` makes it) in its
/// item's place in the output.
async fn drive<C, U, V, F, K>(
    ctx: &RunCtx,
    concurrency: usize,
    items: C,
    body: F,
    mut keep: K,
) -> Result<Vec<V>, Error>
where
    C: IntoIterator,
    F: AsyncFn(&RunCtx, C::Item) -> Result<U, Error>,
    K: FnMut(Result<U, Error>) -> Result<V, Error>,
{
    let mut items = items.into_iter().enumerate();
    let (at_least, at_most) = items.size_hint();
    let places = concurrency.clamp(1, at_most.unwrap_or(usize::MAX).max(1));
    let base = ctx.scope().items_base();
    let contexts: Vec<RunCtx> = (0..places).map(|_| ctx.child(base.clone())).collect();
    let woken = Arc::new(Woken {
        places: (0..places).map(|_| AtomicBool::new(false)).collect(),
        map: AtomicWaker::new(),
    });
    let wakers: Vec<Waker> = (0..places)
        .map(|place| {
            Waker::from(Arc::new(PlaceWaker {
                place,
                woken: woken.clone(),
            }))
        })
        .collect();
    // Each place: its item's future (the allocation is reused by the next item), and whether
    // that item is still running.
    let mut futures: Vec<Option<Pin<Box<_>>>> = (0..places).map(|_| None).collect();
    let mut running = vec![false; places];
    let mut indices = vec![0; places];
    let mut in_flight = 0;
    let mut exhausted = false;
    // The outputs in input order, and those of items that finished before an earlier one
    // (`ahead[k]` is item `outputs.len() + k`).
    let mut outputs: Vec<V> = Vec::with_capacity(at_least);
    let mut ahead: VecDeque<Option<V>> = VecDeque::new();
    let mut record = |index: usize, result: Result<U, Error>| -> Result<(), Error> {
        let value = keep(result)?;
        let offset = index - outputs.len();
        if offset == 0 && ahead.is_empty() {
            outputs.push(value);
            return Ok(());
        }
        if offset >= ahead.len() {
            ahead.resize_with(offset + 1, || None);
        }
        ahead[offset] = Some(value);
        while let Some(Some(_)) = ahead.front() {
            outputs.extend(ahead.pop_front().flatten());
        }
        Ok(())
    };

    let result = poll_fn(|cx| {
        woken.map.register(cx.waker());
        let mut budget = INLINE_BUDGET;
        loop {
            let mut progress = false;
            // The items that asked to be polled again.
            for place in 0..places {
                if !running[place] || !woken.places[place].swap(false, Ordering::Acquire) {
                    continue;
                }
                if let Poll::Ready(result) = poll_in(&mut futures[place], &wakers[place]) {
                    running[place] = false;
                    in_flight -= 1;
                    progress = true;
                    record(indices[place], result)?;
                }
            }
            // New items in the free places, each polled at once.
            for place in 0..places {
                while !running[place] && !exhausted {
                    if budget == 0 {
                        // Come back at once, after the thread's other tasks had a turn.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    let Some((index, item)) = items.next() else {
                        exhausted = true;
                        break;
                    };
                    contexts[place].scope().set_item(index);
                    woken.places[place].store(false, Ordering::Relaxed);
                    let future = body(&contexts[place], item);
                    progress = true;
                    match start_in(&mut futures[place], future, &wakers[place]) {
                        Poll::Ready(result) => {
                            budget -= 1;
                            record(index, result)?;
                        }
                        Poll::Pending => {
                            running[place] = true;
                            indices[place] = index;
                            in_flight += 1;
                        }
                    }
                }
            }
            if exhausted && in_flight == 0 {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }
    })
    .await;
    // After a failure, the items still running are cancelled here.
    drop(futures);
    // What the items completed is undone with the rest of the run if it fails.
    for child in &contexts {
        ctx.adopt(child);
    }
    result.map(|()| outputs)
}

/// Polls the item in a place (pending when there is none).
#[inline]
fn poll_in<Fut: Future>(place: &mut Option<Pin<Box<Fut>>>, waker: &Waker) -> Poll<Fut::Output> {
    match place {
        Some(future) => future.as_mut().poll(&mut Context::from_waker(waker)),
        None => Poll::Pending,
    }
}

/// Puts a new item's future in a place (in the allocation of the previous one, if any) and
/// polls it once.
#[inline]
fn start_in<Fut: Future>(
    place: &mut Option<Pin<Box<Fut>>>,
    future: Fut,
    waker: &Waker,
) -> Poll<Fut::Output> {
    match place.as_mut() {
        Some(reused) => reused.set(future),
        None => *place = Some(Box::pin(future)),
    }
    poll_in(place, waker)
}
