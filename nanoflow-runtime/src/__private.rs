//! Support for the macros' expansions. Not a public API: anything here may change.

pub use futures_util;
pub use serde;
pub use serde_json;
pub use tokio;

pub use crate::error::Error;
pub use crate::graph::{Endpoint, Graph, Limit, MapDef, Step};
pub use crate::id::RunId;
pub use crate::map::DEFAULT_CONCURRENCY as DEFAULT_MAP_CONCURRENCY;
pub use crate::node::{Accepts, Isolation, Node, NodeError, NodeOptions, State};
pub use crate::run::RunCtx;
pub use crate::schema::{require_schema, Side};
pub use crate::triggers::{Overlap, TriggerDef};
pub use crate::wait::{send_signal, SignalError};
pub use crate::workflow::run_as_node;
pub use crate::workflow::Workflow;

/// Whether `T` is [`Data`](crate::Data), as a constant: `<Probe<T>>::IS_DATA` is the inherent
/// `true` when `T: Data`, and otherwise [`NotData::IS_DATA`], `false` (the trait must be in scope).
///
/// `#[node]` declares its input type as `<Pick<{ IS_DATA }> as Choose<In, [(); if IS_DATA { 0 } else
/// { panic!(..) }]>>::Type`: `In` itself when it is `Data`; otherwise an array whose length fails
/// to evaluate, which is one error in the user's terms, at the user's type, after which rustc
/// treats the node's input as already failed and reports nothing else about it. (A bare
/// `type Input = In` would report the `Serialize` and `Deserialize` bounds as two errors.)
#[derive(Debug)]
pub struct Probe<T: ?Sized>(core::marker::PhantomData<T>);
impl<T: crate::Data> Probe<T> {
    /// `T` is `Data`.
    pub const IS_DATA: bool = true;
}
/// See [`Probe`].
pub trait NotData {
    /// `T` is not `Data`.
    const IS_DATA: bool = false;
}
impl<T: ?Sized> NotData for Probe<T> {}

/// `<Probe<T>>::json_schema(side)`: the schema of `T` when it implements `schemars::JsonSchema`
/// (this inherent function), otherwise [`NoSchema::json_schema`]'s `None`. `workflow!` asks each
/// workflow's input and output this way, so a type without the derive is no error.
#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema> Probe<T> {
    /// The JSON Schema of `T` on `side`.
    pub fn json_schema(side: Side) -> Option<serde_json::Value> {
        Some(crate::schema::json_schema::<T>(side))
    }
}

/// See [`Probe`]: the `None` picked for a type without `schemars::JsonSchema` (or when the
/// `schema` feature is off). Must be in scope.
pub trait NoSchema {
    /// No schema.
    fn json_schema(_side: Side) -> Option<serde_json::Value> {
        None
    }
}
impl<T: ?Sized> NoSchema for Probe<T> {}

/// See [`Probe`]: chooses `A` when `OK`, `B` otherwise.
#[derive(Debug)]
pub struct Pick<const OK: bool>;
/// See [`Probe`].
pub trait Choose<A, B> {
    /// `A` or `B`.
    type Type;
}
impl<A, B> Choose<A, B> for Pick<true> {
    type Type = A;
}
impl<A, B> Choose<A, B> for Pick<false> {
    type Type = B;
}

/// An error type a node may return: anything that converts into [`NodeError`].
///
/// A separate trait (rather than a bare `Into<NodeError>` bound) so that a type that does not
/// convert is reported with a message in the user's terms, at the user's error type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned as a node error",
    label = "`{Self}` does not convert into `nanoflow::NodeError`",
    note = "implement `std::error::Error` for `{Self}` (every `std::error::Error + Send + Sync + 'static` converts), or `impl From<{Self}> for nanoflow::NodeError`, or return `nanoflow::NodeError` itself"
)]
pub trait IntoNodeError {
    /// Converts the error.
    fn into_node_error(self) -> NodeError;
}
#[diagnostic::do_not_recommend]
impl<E: Into<NodeError>> IntoNodeError for E {
    #[inline(always)]
    fn into_node_error(self) -> NodeError {
        self.into()
    }
}

/// Converts a node's error type; spanned at the user's error type so a type that does not
/// convert is reported there.
#[inline(always)]
pub fn node_error<E: IntoNodeError>(error: E) -> NodeError {
    error.into_node_error()
}

/// A `Result` whose error converts into [`NodeError`] (for `-> Result<T>` aliases).
#[diagnostic::on_unimplemented(
    message = "the error type of `{Self}` cannot be returned as a node error",
    label = "its error type does not convert into `nanoflow::NodeError`",
    note = "a node returns `T` or `Result<T, E>` where `E` implements `std::error::Error + Send + Sync + 'static` or `Into<nanoflow::NodeError>`"
)]
pub trait IntoNodeResult<T> {
    /// Converts the error side.
    fn into_node_result(self) -> Result<T, NodeError>;
}
#[diagnostic::do_not_recommend]
impl<T, E: Into<NodeError>> IntoNodeResult<T> for Result<T, E> {
    #[inline(always)]
    fn into_node_result(self) -> Result<T, NodeError> {
        self.map_err(Into::into)
    }
}

/// See [`IntoNodeResult`].
#[inline(always)]
pub fn into_node_result<T, R: IntoNodeResult<T>>(result: R) -> Result<T, NodeError> {
    result.into_node_result()
}

/// What a cron trigger delivers.
#[diagnostic::on_unimplemented(
    message = "a cron-triggered workflow must start with a node that takes `nanoflow::Tick`, not `{Self}`",
    label = "this cron trigger delivers a `nanoflow::Tick`",
    note = "change the first node's input to `nanoflow::Tick`, or start the workflow with a node that takes it"
)]
pub trait CronInput {}
// Not shown as "implemented for `Tick`" beside the error: the message already says it.
#[diagnostic::do_not_recommend]
impl CronInput for crate::triggers::Tick {}

/// Checked by `workflow!` for each cron trigger.
pub fn cron_input<T: CronInput>() {}

/// What a database-event trigger delivers.
#[diagnostic::on_unimplemented(
    message = "a postgres-triggered workflow must start with a node that takes `nanoflow::DbEvent<Row>`, not `{Self}`",
    label = "this database trigger delivers a `nanoflow::DbEvent<Row>`",
    note = "take `nanoflow::DbEvent<T>` in the first node, where `T` is your type for one row of the table"
)]
pub trait DbEventInput {}
#[diagnostic::do_not_recommend]
impl<Row> DbEventInput for crate::triggers::DbEvent<Row> {}

/// Checked by `workflow!` for each database-event trigger.
pub fn db_event_input<T: DbEventInput>() {}

/// Proof that a workflow taking `Self` can start with the output `Out` of workflow `Up`.
#[diagnostic::on_unimplemented(
    message = "a workflow triggered `after` `{Up}` must take its output `{Out}` as input, not `{Self}`",
    label = "`{Up}` outputs `{Out}`",
    note = "change the first node's input to `{Out}`, or chain after a workflow whose output it takes"
)]
pub trait AfterInput<Up, Out> {}
#[diagnostic::do_not_recommend]
impl<Up, T> AfterInput<Up, T> for T {}

/// What `#[trigger(after = ...)]` names: a workflow. A separate trait (rather than a bare
/// `Workflow` bound) so that naming a node is one error, without a list of every workflow.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a workflow",
    label = "`after` takes a workflow declared in `workflow!`",
    note = "a workflow is started after another workflow, named as in `workflow!`, not after a node"
)]
pub trait Upstream {
    /// The upstream workflow's output.
    type Output;
}
#[diagnostic::do_not_recommend]
impl<W: Workflow> Upstream for W {
    type Output = <W as Workflow>::Output;
}

/// Checked by `workflow!` for each `after` trigger: this workflow's input `I` is exactly the
/// output of workflow `Up`.
pub fn after_input<Up: Upstream, I: AfterInput<Up, <Up as Upstream>::Output>>() {}

/// A value that a fan-out `a -> (b, c)` copies to each branch.
///
/// A separate trait (rather than a bare `Clone` bound) so that the message speaks of the graph.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `Clone` to be sent to several branches",
    label = "each branch of this fan-out gets its own copy of `{Self}`",
    note = "add `#[derive(Clone)]` to `{Self}`, or give the branches a node that returns a type that is `Clone`"
)]
pub trait FanOut: Sized {
    /// Makes one branch's copy.
    fn fan_out_copy(&self) -> Self;
}
// `Data` too (every value in a graph is), so that references are not `FanOut` and rustc does
// not suggest borrowing the group.
#[diagnostic::do_not_recommend]
impl<T: Clone + crate::Data> FanOut for T {
    #[inline(always)]
    fn fan_out_copy(&self) -> Self {
        self.clone()
    }
}

/// Copies a value fanned out to several branches. A separate function so that the `Clone`
/// requirement is reported at the fan-out in the user's graph.
#[inline(always)]
pub fn fan_out<T: FanOut>(value: &T) -> T {
    value.fan_out_copy()
}

/// Autoref specialization used by `#[node]` to duplicate an input for a retry: `Clone` when
/// the type has it, otherwise a JSON round trip (the type is always `Data`).
#[derive(Debug)]
pub struct Duplicate<'a, T>(pub &'a T);

/// Picked when the input implements `Clone`.
pub trait DuplicateByClone<T> {
    /// Clones the input.
    fn __nanoflow_duplicate(&self) -> Result<T, crate::NodeError>;
}
impl<T: Clone> DuplicateByClone<T> for Duplicate<'_, T> {
    #[inline]
    fn __nanoflow_duplicate(&self) -> Result<T, crate::NodeError> {
        Ok(self.0.clone())
    }
}

/// Picked when the input does not implement `Clone`.
pub trait DuplicateByJson<T> {
    /// Round-trips the input through JSON.
    fn __nanoflow_duplicate(&self) -> Result<T, crate::NodeError>;
}
impl<T: crate::Data> DuplicateByJson<T> for &Duplicate<'_, T> {
    fn __nanoflow_duplicate(&self) -> Result<T, crate::NodeError> {
        let copy = serde_json::to_value(self.0).and_then(serde_json::from_value);
        copy.map_err(|e| crate::NodeError::permanent(format!("cannot copy the input for a retry (it is not `Clone` and does not round-trip through JSON): {e}")))
    }
}

/// Runs a workflow's body; when it fails (other than by the journal failing, which the run
/// survives by resuming), runs the compensations of its completed steps, latest first.
pub async fn with_compensation<T>(
    ctx: &RunCtx,
    body: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let result = body.await;
    if let Err(error) = &result {
        // A run parked because the graph changed is not failed: nothing is undone (issue 13).
        // Nor is a run that waits (a signal, a sleep): it continues later. A duplicate's
        // steps are the earlier run's too (at-least-once): undoing them would undo its.
        if !matches!(
            error,
            Error::Journal(_)
                | Error::GraphChanged { .. }
                | Error::Waiting { .. }
                | Error::Duplicate { .. }
        ) {
            ctx.compensate(error).await;
        }
    }
    result
}

/// Checked by `workflow!` for `#[finishes(new)]` on workflow `Old`: the graph kept to finish
/// `New`'s recorded runs takes the same input (the one those runs recorded).
pub fn finishes<Old, New>()
where
    Old: Workflow,
    New: Workflow,
    <Old as Workflow>::Input: SameInput<<New as Workflow>::Input>,
{
}

/// See [`finishes`]: `T` is `Self`.
#[diagnostic::on_unimplemented(
    message = "the kept graph takes `{Self}`, and the workflow whose runs it finishes takes `{T}`",
    label = "its recorded runs have a `{T}` input",
    note = "`#[finishes(..)]` keeps a workflow's previous graph to finish the runs it recorded: it takes the input those runs recorded"
)]
pub trait SameInput<T> {}
impl<T> SameInput<T> for T {}

/// Checked by `workflow!` for each `#[compensate(step => undo)]`: `undo` takes `step`'s output.
pub fn compensates<N: Node, C: Accepts<T, <C as Node>::Input>, T>() {}

/// A value whose type `workflow!` cannot name (the payload of a `match` arm): the step it
/// feeds is called as a method on it, so that rustc knows the value's type before it checks
/// the step's `Accepts` bound, and reports a mismatch in the user's terms.
#[derive(Debug)]
pub struct Carry<T>(pub T);

impl<T> Carry<T> {
    /// [`RunCtx::step_in`] on the carried value.
    #[inline]
    pub fn step_in<'a, N>(
        self,
        ctx: &'a RunCtx,
        defaults: &'static NodeOptions,
        name: &'static str,
    ) -> impl std::future::Future<Output = Result<N::Output, Error>> + Send + 'a
    where
        N: Accepts<T, <N as Node>::Input>,
    {
        ctx.step_in::<N, T>(defaults, name, self.0)
    }

    /// [`RunCtx::step_compensated`] on the carried value.
    #[inline]
    pub async fn step_compensated<N, C>(
        self,
        ctx: &RunCtx,
        defaults: &'static NodeOptions,
        name: &'static str,
        compensation: &'static str,
    ) -> Result<N::Output, Error>
    where
        N: Accepts<T, <N as Node>::Input>,
        C: Node,
    {
        ctx.step_compensated::<N, T, C>(defaults, name, compensation, self.0)
            .await
    }
}

/// What `map(..)` runs over: a `Vec`, or any other `IntoIterator`.
#[diagnostic::on_unimplemented(
    message = "`map(..)` needs a collection, but the step before it gives `{Self}`",
    label = "this `map` runs its steps once per item of a `Vec` or another `IntoIterator`",
    note = "return a `Vec<T>` (or another `IntoIterator`) from the step before `map(..)`, or remove the `map`"
)]
pub trait Collection {}
#[diagnostic::do_not_recommend]
impl<C: IntoIterator> Collection for C {}

/// Checked by `workflow!` in the array length of the type of a `map(..)`'s input, so that a
/// non-collection is one error, at the `map`, and the map's uses of the type add none.
pub const fn collection<C: Collection>() -> usize {
    0
}

/// See [`Choose`]: the first type, once the second (carrying a check) is well-formed.
pub type Checked<A, B> = <Pick<true> as Choose<A, B>>::Type;

/// The arms of a `match` and the branches of an `if` rejoin: each gives the first's type.
#[diagnostic::on_unimplemented(
    message = "this branch gives `{Self}`, but the first branch gives `{T}`",
    label = "the branches of a `match` or an `if` rejoin, so each must give the same type",
    note = "end every branch with a step that returns the same type, or end the workflow with the first branch's type"
)]
pub trait SameAs<T> {
    /// The value, as the first branch's type (which it is).
    fn same(self) -> T;
}
impl<T> SameAs<T> for T {
    #[inline(always)]
    fn same(self) -> T {
        self
    }
}

/// The output of a branch after the first, as the first branch's type.
#[inline(always)]
pub fn rejoin<T, U: SameAs<T>>(value: U) -> T {
    value.same()
}

/// What an `if` condition returns.
#[diagnostic::on_unimplemented(
    message = "an `if` condition must return `bool`, not `{Self}`",
    label = "this node chooses the branch of the `if`, so it must return `bool`",
    note = "use a node returning `bool` as the condition; to branch on an enum, write `step -> match {{ Variant(x) => .., .. }}`"
)]
pub trait Condition {
    /// The branch to take.
    fn holds(self) -> bool;
}
impl Condition for bool {
    #[inline(always)]
    fn holds(self) -> bool {
        self
    }
}

/// Whether an `if` condition holds.
#[inline(always)]
pub fn condition<B: Condition>(value: B) -> bool {
    value.holds()
}

/// A value that an `if` condition looks at: the condition gets a copy.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `Clone` to be tested by an `if` condition",
    label = "the condition gets a copy of `{Self}`, and the branch taken gets the value",
    note = "add `#[derive(Clone)]` to `{Self}`, or test a value that is `Clone`"
)]
pub trait Inspect: Sized {
    /// The condition's copy.
    fn inspect_copy(&self) -> Self;
}
#[diagnostic::do_not_recommend]
impl<T: Clone + crate::Data> Inspect for T {
    #[inline(always)]
    fn inspect_copy(&self) -> Self {
        self.clone()
    }
}

/// Copies a value for an `if` condition; reported at the `if` when the value is not `Clone`.
#[inline(always)]
pub fn inspect<T: Inspect>(value: &T) -> T {
    value.inspect_copy()
}

/// A run's priority (`#[limit(.., priority = field)]`): an integer field of the input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a run's priority",
    label = "`priority` names an integer field of the workflow's input",
    note = "give the field an integer type (`u8`, `i32`, `i64`, ..): a queued run of higher priority starts first"
)]
pub trait Priority {}
macro_rules! priority {
    ($($t:ty)*) => { $(impl Priority for $t {})* };
}
priority!(i8 i16 i32 i64 isize u8 u16 u32 u64 usize);

/// Checked by `workflow!` for `#[limit(.., priority = field)]`: the field is an integer.
pub fn priority<P: Priority>(_: &P) {}
