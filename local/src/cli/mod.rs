//! The `caudal-local` command's side (the binary is `src/main.rs`): what `up` does with a
//! running [`crate::stack::Stack`].
//!
//! - [`traffic`]: posts the repository's sample requests through the local HTTP API.
//! - [`report`]: reads per-stage counts and the reconciliation view back from the stack.

pub mod report;
pub mod traffic;
