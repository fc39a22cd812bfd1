//! Wall-clock readings. Deadlines use the server's own millisecond clock, the one Redis
//! expires keys by; fences use Unix time in microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use lock_core::LockResult;

use crate::ffi::api::api;

pub fn now_ms() -> LockResult<i64> {
    let milliseconds = api!(RedisModule_Milliseconds)?;
    // SAFETY: the function pointer is filled in by the server at load.
    Ok(unsafe { milliseconds() })
}

/// Microseconds since the Unix epoch; 0 if the clock reads before 1970 (the fence clock's
/// `last + 1` still keeps fences rising then).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        // Whole seconds times a million, not `as_micros`: that multiplies in 128 bits.
        .map(|d| {
            d.as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(d.subsec_micros()))
        })
        .unwrap_or(0)
}
