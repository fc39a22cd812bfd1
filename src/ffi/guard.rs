//! Panic guards. A Rust panic that unwinds into the server aborts the whole Redis process, so
//! every entry point the server calls (commands, data-type callbacks, events) runs inside one.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lock_core::{LockError, LockResult};

/// Run a command body; a panic becomes an `Internal` error. Inlined into each command's
/// entry, with the fast path inside it (a call and a move of the result fewer).
#[inline(always)]
pub fn run<T>(body: impl FnOnce() -> LockResult<T>) -> LockResult<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        Err(LockError::Internal(
            "the command failed unexpectedly".into(),
        ))
    })
}

/// Run a callback; on a panic return `fallback` instead.
pub fn callback<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}
