//! Wall-clock readings, and the fence clock driven by them. Deadlines use the server's own
//! millisecond clock, the one Redis expires keys by; fences use Unix time in microseconds.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use redis_module::Context;

use crate::api;
use crate::config;
use crate::error::LockResult;
use crate::fence::{Observed, FENCE};

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
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The fence of a new grant, now.
pub fn grant_fence() -> LockResult<u64> {
    FENCE.grant(
        now_us(),
        config::fence_jump_us(),
        config::fence_max_ahead_us(),
    )
}

/// Raise the fence clock to a fence loaded, replicated or restored, within
/// `lock.fence-max-ahead` of now.
pub fn observe_fence(fence: u64) -> Observed {
    FENCE.observe(fence, now_us(), config::fence_max_ahead_us())
}

/// `observe_fence`, with a warning in the log when the fence was too far ahead.
pub fn observe_fence_or_warn(ctx: &Context, fence: u64) {
    if observe_fence(fence) == Observed::Capped {
        ctx.log_warning(&capped_message(fence));
    }
}

/// Whether RESTORE may take a lock with this fence: within `lock.fence-max-ahead` of now.
pub fn fence_within_reach(fence: u64) -> bool {
    crate::fence::within_reach(fence, now_us(), config::fence_max_ahead_us())
}

/// What is logged when a fence further ahead than lock.fence-max-ahead is loaded anyway.
pub fn capped_message(fence: u64) -> String {
    format!(
        "a lock's fence {fence} is more than lock.fence-max-ahead ({} ms) ahead of this \
         server's clock: the lock is kept, but the fence clock is raised only to now + \
         lock.fence-max-ahead, so later fences may be lower than this one",
        config::FENCE_MAX_AHEAD.load(Ordering::Relaxed)
    )
}
