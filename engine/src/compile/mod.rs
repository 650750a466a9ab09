//! compile (in progress)
mod error;
pub use error::{suggest, CompileError, CompileErrorKind};
