//! `#[trigger(...)]` inside `workflow!`: parsed and validated at compile time, so a bad cron
//! expression, time zone or HTTP route is a spanned compile error.

pub(crate) mod ast;
pub(crate) mod expand;
pub(crate) mod parse;
pub(crate) mod validate;
