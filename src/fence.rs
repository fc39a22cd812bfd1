//! The fence clock: one per server, over all keys and databases.
//!
//! Every grant takes `max(last + 1, now in µs)`. Following the wall clock keeps fences rising
//! even after a crash or failover lost the newest writes; `last + 1` keeps them strictly rising
//! when the clock stands still or steps back. `observe` raises `last` to any fence loaded,
//! replicated or restored, so no later grant can repeat or undercut it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{LockError, LockResult};

/// Fences are replied as RESP integers (signed 64-bit); a stored lock keeps two bits of its
/// fence word for itself, so fences stay below 2^62 (Unix microseconds reach it in 146,000
/// years).
pub const MAX_FENCE: u64 = (1 << 62) - 1;

/// The server's one clock; every grant, load and replicated effect goes through it.
pub static FENCE: FenceClock = FenceClock::new();

pub struct FenceClock {
    last: AtomicU64,
}

impl FenceClock {
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// The fence for a new grant at `now_us` (Unix time in microseconds).
    pub fn grant(&self, now_us: u64) -> LockResult<u64> {
        let mut next = 0;
        self.last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                next = last.checked_add(1)?.max(now_us);
                (next <= MAX_FENCE).then_some(next)
            })
            .map_err(|_| LockError::FenceExhausted)?;
        Ok(next)
    }

    /// Raise the clock to a fence seen elsewhere (RDB, AOF, replication, RESTORE).
    pub fn observe(&self, fence: u64) {
        self.last.fetch_max(fence.min(MAX_FENCE), Ordering::SeqCst);
    }

    pub fn last(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }
}

impl Default for FenceClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_clock_when_it_moves_forward() {
        let c = FenceClock::new();
        assert_eq!(c.grant(1_000).unwrap(), 1_000);
        assert_eq!(c.grant(5_000).unwrap(), 5_000);
        assert_eq!(c.last(), 5_000);
    }

    #[test]
    fn strictly_increases_when_the_clock_stands_still_or_steps_back() {
        let c = FenceClock::new();
        assert_eq!(c.grant(1_000).unwrap(), 1_000);
        assert_eq!(c.grant(1_000).unwrap(), 1_001);
        assert_eq!(c.grant(10).unwrap(), 1_002);
    }

    #[test]
    fn observe_raises_but_never_lowers() {
        let c = FenceClock::new();
        c.observe(9_000);
        assert_eq!(c.grant(1_000).unwrap(), 9_001);
        c.observe(5);
        assert_eq!(c.last(), 9_001);
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap() {
        let c = FenceClock::new();
        c.observe(MAX_FENCE);
        assert_eq!(c.grant(1), Err(LockError::FenceExhausted));
        assert_eq!(c.last(), MAX_FENCE);
        let d = FenceClock::new();
        d.observe(u64::MAX);
        assert_eq!(d.last(), MAX_FENCE);
        assert_eq!(d.grant(1), Err(LockError::FenceExhausted));
    }
}
