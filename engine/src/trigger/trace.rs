//! The trigger trace's types, which the store owns and keeps: see [`crate::store::trace`].
//! Re-exported here so the trigger module's users name them where they always have.

pub use crate::store::trace::{Check, Consideration, Decision, TraceEntry, Verdict, TRACE_LIMIT};
