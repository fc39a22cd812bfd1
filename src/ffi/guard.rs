//! Panic guards. A Rust panic that unwinds into the server aborts the whole Redis process, so
//! every entry point the server calls (commands, data-type callbacks, events) runs inside one.

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{RedisError, RedisResult, RedisValue};

use lock_core::{LockError, LockResult};

/// Run a command body; its error or a panic becomes an error reply.
pub fn command(body: impl FnOnce() -> LockResult<RedisValue>) -> RedisResult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(reply_error(e)),
        Err(_) => Err(reply_error(LockError::Internal(
            "the command failed unexpectedly".into(),
        ))),
    }
}

/// Run a callback; on a panic return `fallback` instead.
pub fn callback<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The error reply for `e`: its text as is (the crate's blanket `From` would add a second
/// `ERR` prefix).
pub fn reply_error(e: LockError) -> RedisError {
    RedisError::String(e.to_string())
}
