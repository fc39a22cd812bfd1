//! The server's fence clock, driven by the wall clock and the settings: the fence of each new
//! grant, and the clock raised by fences seen elsewhere.

use std::sync::atomic::Ordering;

use lock_core::fence::{self, Observed};
use lock_core::LockResult;
use redis_module::Context;

use crate::ffi::clock::now_us;
use crate::observe::config;
use crate::server::state;

/// The fence of a new grant, now.
pub fn grant_fence() -> LockResult<u64> {
    grant_fence_at(now_us())
}

/// The fence of a new grant, with the clock read at `now_us` (by a command that reads it once
/// for the lock's deadline too).
#[inline(always)]
pub fn grant_fence_at(now_us: u64) -> LockResult<u64> {
    let (jump, max_ahead) = (config::fence_jump_us(), config::fence_max_ahead_us());
    state::with(|s| s.fence.grant(now_us, jump, max_ahead))?
}

/// Raise the fence clock to a fence loaded, replicated or restored, within
/// `lock.fence-max-ahead` of now. (If the state cannot be read, the failure is logged and the
/// fence reported as raised.)
pub fn observe_fence(fence: u64) -> Observed {
    let max_ahead = config::fence_max_ahead_us();
    state::with(|s| s.fence.observe(fence, now_us(), max_ahead)).unwrap_or(Observed::Raised)
}

/// `observe_fence`, with a warning in the log when the fence was too far ahead.
pub fn observe_fence_or_warn(ctx: &Context, fence: u64) {
    if observe_fence(fence) == Observed::Capped {
        ctx.log_warning(&capped_message(fence));
    }
}

/// Whether RESTORE may take a lock with this fence: within `lock.fence-max-ahead` of now.
pub fn fence_within_reach(fence: u64) -> bool {
    fence::within_reach(fence, now_us(), config::fence_max_ahead_us())
}

/// This server may have missed grants (it started, loaded data, or became a primary): the next
/// grant jumps ahead.
pub fn jump_next_grant() {
    state::update(|s| s.fence.jump_next_grant());
}

/// The last fence issued or seen; 0 if the state cannot be read (nothing is written then).
pub fn last_fence() -> u64 {
    state::with(|s| s.fence.last()).unwrap_or(0)
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
