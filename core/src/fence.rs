//! The fence clock: one per server, over all keys and databases. A plain value here; the module
//! keeps the one instance in its state.
//!
//! Every grant takes `max(last + 1, now in µs)`. Following the wall clock keeps fences rising
//! even after a crash or failover lost the newest writes; `last + 1` keeps them strictly rising
//! when the clock stands still or steps back. `observe` raises `last` to any fence loaded,
//! replicated or restored, so no later grant can repeat or undercut it.
//!
//! Two things keep that true when `last` has run ahead of the wall clock (a primary whose clock
//! was ahead, a restored fence, a burst of grants), where fences follow `last + 1` instead:
//! - after a start or a promotion, when this server may have missed grants that another
//!   server (or this one, before a crash) made, the next grant jumps a gap ahead of both `last`
//!   and the clock, so it exceeds every fence made within that gap of time or count;
//! - a fence too far ahead of the clock (`max_ahead`) never raises `last` past `now +
//!   max_ahead`, so a crafted value cannot freeze the clock at `last + 1` or exhaust it.

use crate::error::{LockError, LockResult};

/// Fences are replied as RESP integers (signed 64-bit); a stored lock keeps two bits of its
/// fence word for itself, so fences stay below 2^62 (Unix microseconds reach it in 146,000
/// years).
pub const MAX_FENCE: u64 = (1 << 62) - 1;

#[derive(Debug)]
pub struct FenceClock {
    last: u64,
    /// The next grant jumps ahead (set at start and on promotion to primary).
    jump_pending: bool,
}

/// What `observe` did with a fence.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed {
    /// The clock is at or above the fence now.
    Raised,
    /// The fence is further ahead of the wall clock than allowed: the clock went only as far
    /// as `now + max_ahead`.
    Capped,
}

impl FenceClock {
    pub const fn new() -> Self {
        Self {
            last: 0,
            jump_pending: true,
        }
    }

    /// The fence for a new grant at `now_us` (Unix time in microseconds). If a jump is pending
    /// it lands `jump_us` above `max(last + 1, now)`, but never past `now + max_ahead_us / 2`:
    /// jumps that follow each other faster than the clock (a crash loop, repeated failovers)
    /// add up only that far, so the fences stay within reach of any server with the same
    /// bound, and of its clock if that differs by less than half the bound.
    pub fn grant(&mut self, now_us: u64, jump_us: u64, max_ahead_us: u64) -> LockResult<u64> {
        let Some(after_last) = self.last.checked_add(1) else {
            return Err(LockError::FenceExhausted);
        };
        let plain = after_last.max(now_us);
        // Almost every grant has no jump pending: it skips the jump's arithmetic.
        let next = match self.jump_pending {
            false => plain,
            true => plain.max(
                plain
                    .saturating_add(jump_us)
                    .min(now_us.saturating_add(max_ahead_us / 2)),
            ),
        };
        if next > MAX_FENCE {
            return Err(LockError::FenceExhausted);
        }
        self.last = next;
        self.jump_pending = false;
        Ok(next)
    }

    /// This server may have missed grants (it started, or became a primary): the next grant
    /// jumps ahead.
    pub fn jump_next_grant(&mut self) {
        self.jump_pending = true;
    }

    /// Raise the clock to a fence seen elsewhere (RDB, AOF, replication, RESTORE), but never
    /// past `now_us + max_ahead_us`.
    pub fn observe(&mut self, fence: u64, now_us: u64, max_ahead_us: u64) -> Observed {
        let limit = ceiling(now_us, max_ahead_us);
        self.last = self.last.max(fence.min(limit));
        if fence > limit {
            Observed::Capped
        } else {
            Observed::Raised
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }
}

/// Whether `fence` is within `max_ahead_us` of the clock: what RESTORE accepts.
pub fn within_reach(fence: u64, now_us: u64, max_ahead_us: u64) -> bool {
    fence <= ceiling(now_us, max_ahead_us)
}

fn ceiling(now_us: u64, max_ahead_us: u64) -> u64 {
    now_us.saturating_add(max_ahead_us).min(MAX_FENCE)
}

impl Default for FenceClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: u64 = u64::MAX;

    /// A clock whose start-up jump has been taken, as after the first grant.
    fn running() -> FenceClock {
        let mut c = FenceClock::new();
        c.jump_pending = false;
        c
    }

    #[test]
    fn follows_the_clock_when_it_moves_forward() {
        let mut c = running();
        assert_eq!(c.grant(1_000, 50, FAR).unwrap(), 1_000);
        assert_eq!(c.grant(5_000, 50, FAR).unwrap(), 5_000);
        assert_eq!(c.last(), 5_000);
    }

    #[test]
    fn strictly_increases_when_the_clock_stands_still_or_steps_back() {
        let mut c = running();
        assert_eq!(c.grant(1_000, 50, FAR).unwrap(), 1_000);
        assert_eq!(c.grant(1_000, 50, FAR).unwrap(), 1_001);
        assert_eq!(c.grant(10, 50, FAR).unwrap(), 1_002);
    }

    #[test]
    fn the_first_grant_after_a_start_or_a_promotion_jumps_ahead_once() {
        let mut c = FenceClock::new();
        assert_eq!(c.grant(1_000, 50, FAR).unwrap(), 1_050, "start-up jump");
        assert_eq!(c.grant(1_001, 50, FAR).unwrap(), 1_051, "no second jump");
        // Promoted while the last fence ran ahead of the clock: above both.
        c.observe(9_000, 2_000, FAR);
        c.jump_next_grant();
        assert_eq!(c.grant(2_000, 50, FAR).unwrap(), 9_051);
        c.jump_next_grant();
        assert_eq!(c.grant(20_000, 50, FAR).unwrap(), 20_050);
        assert_eq!(c.grant(20_000, 50, FAR).unwrap(), 20_051);
    }

    #[test]
    fn jumps_add_up_only_to_half_the_bound_ahead_of_the_clock() {
        let mut c = FenceClock::new();
        let fences: Vec<u64> = (0..5)
            .map(|_| {
                c.jump_next_grant();
                c.grant(1_000, 60, 400).unwrap()
            })
            .collect();
        assert_eq!(
            fences,
            [1_060, 1_121, 1_182, 1_200, 1_201],
            "capped at now + 400 / 2"
        );
        // A jump never lowers a fence: past the limit it is plain `last + 1`.
        let mut d = FenceClock::new();
        d.observe(5_000, 1_000, FAR);
        assert_eq!(d.grant(1_000, 60, 400).unwrap(), 5_001);
    }

    #[test]
    fn observe_raises_but_never_lowers() {
        let mut c = running();
        assert_eq!(c.observe(9_000, 0, FAR), Observed::Raised);
        assert_eq!(c.grant(1_000, 50, FAR).unwrap(), 9_001);
        c.observe(5, 0, FAR);
        assert_eq!(c.last(), 9_001);
    }

    #[test]
    fn a_fence_too_far_ahead_raises_the_clock_only_to_the_limit() {
        let mut c = running();
        assert_eq!(c.observe(MAX_FENCE, 1_000, 500), Observed::Capped);
        assert_eq!(c.last(), 1_500);
        assert_eq!(c.observe(1_500, 1_000, 500), Observed::Raised);
        assert_eq!(c.grant(1_200, 50, FAR).unwrap(), 1_501);
        assert!(within_reach(1_500, 1_000, 500));
        assert!(!within_reach(1_501, 1_000, 500));
        assert!(within_reach(MAX_FENCE, 1, FAR));
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap() {
        let mut c = running();
        c.observe(MAX_FENCE, 0, FAR);
        assert_eq!(c.grant(1, 0, FAR), Err(LockError::FenceExhausted));
        assert_eq!(c.last(), MAX_FENCE);
        let mut d = running();
        d.observe(u64::MAX, 0, FAR);
        assert_eq!(d.last(), MAX_FENCE);
        assert_eq!(d.grant(1, 0, FAR), Err(LockError::FenceExhausted));
        let mut e = FenceClock::new();
        e.observe(MAX_FENCE - 10, 0, FAR);
        assert_eq!(e.grant(1, 100, FAR), Err(LockError::FenceExhausted));
        assert_eq!(e.last(), MAX_FENCE - 10, "a refused grant changes nothing");
    }
}
