//! A lock's state and the decisions of the commands, in plain Rust.
//!
//! Times are Unix milliseconds as signed 64-bit numbers, like Redis's own expiry times.
//! A lock is held while `now < deadline`; from the deadline on it is free, whether or not
//! Redis has removed the key yet.

use crate::error::{LockError, LockResult};
use crate::token::Token;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub token: Token,
    pub deadline_ms: i64,
    pub fence: u64,
}

/// What LOCK.ACQUIRE does with the lock it finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Free (no lock, or its deadline has passed): a new grant with a new fence.
    Grant,
    /// Held by the caller's own token: an idempotent retry; new deadline, same fence.
    Retry,
    /// Held by someone else.
    Busy,
}

impl Lock {
    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms < self.deadline_ms
    }

    /// Held, not expired, and by this token: the condition of RENEW, RELEASE and retries.
    pub fn is_held_by(&self, token: &Token, now_ms: i64) -> bool {
        self.is_live(now_ms) && self.token == *token
    }

    /// Milliseconds left before the deadline, 0 once it has passed.
    pub fn remaining_ms(&self, now_ms: i64) -> i64 {
        self.deadline_ms.saturating_sub(now_ms).max(0)
    }
}

pub fn decide_acquire(current: Option<&Lock>, token: Option<&Token>, now_ms: i64) -> Acquire {
    match current {
        Some(lock) if lock.is_live(now_ms) => match token {
            Some(t) if lock.token == *t => Acquire::Retry,
            _ => Acquire::Busy,
        },
        _ => Acquire::Grant,
    }
}

/// The live lock held by `token`, if that is what `current` is.
pub fn held_by<'a>(
    current: Option<&'a mut Lock>,
    token: &Token,
    now_ms: i64,
) -> Option<&'a mut Lock> {
    current.filter(|lock| lock.is_held_by(token, now_ms))
}

/// `now + ttl`, refused rather than wrapped when it leaves the 64-bit range.
pub fn deadline(now_ms: i64, ttl_ms: i64) -> LockResult<i64> {
    now_ms
        .checked_add(ttl_ms)
        .ok_or(LockError::TtlOverflow(ttl_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Token {
        Token::parse(s.as_bytes()).unwrap()
    }

    fn lock(owner: &str, deadline_ms: i64) -> Lock {
        Lock {
            token: tok(owner),
            deadline_ms,
            fence: 7,
        }
    }

    #[test]
    fn free_lock_is_granted() {
        assert_eq!(decide_acquire(None, None, 100), Acquire::Grant);
        assert_eq!(decide_acquire(None, Some(&tok("a")), 100), Acquire::Grant);
    }

    #[test]
    fn expired_lock_is_granted_to_anyone() {
        let l = lock("a", 100);
        assert_eq!(
            decide_acquire(Some(&l), Some(&tok("b")), 100),
            Acquire::Grant
        );
        assert_eq!(decide_acquire(Some(&l), None, 101), Acquire::Grant);
        // Even the old owner gets a new grant (and so a new fence), not a retry.
        assert_eq!(
            decide_acquire(Some(&l), Some(&tok("a")), 100),
            Acquire::Grant
        );
    }

    #[test]
    fn live_lock_is_a_retry_for_its_owner_and_busy_for_others() {
        let l = lock("a", 100);
        assert_eq!(
            decide_acquire(Some(&l), Some(&tok("a")), 99),
            Acquire::Retry
        );
        assert_eq!(decide_acquire(Some(&l), Some(&tok("b")), 99), Acquire::Busy);
        assert_eq!(decide_acquire(Some(&l), None, 99), Acquire::Busy);
    }

    #[test]
    fn held_by_needs_the_token_and_a_live_deadline() {
        let mut l = lock("a", 100);
        assert!(held_by(Some(&mut l), &tok("a"), 99).is_some());
        assert!(held_by(Some(&mut l), &tok("a"), 100).is_none());
        assert!(held_by(Some(&mut l), &tok("b"), 99).is_none());
        assert!(held_by(None, &tok("a"), 0).is_none());
    }

    #[test]
    fn remaining_never_goes_negative() {
        let l = lock("a", 100);
        assert_eq!(l.remaining_ms(40), 60);
        assert_eq!(l.remaining_ms(100), 0);
        assert_eq!(l.remaining_ms(500), 0);
        assert_eq!(l.remaining_ms(i64::MIN), i64::MAX);
    }

    #[test]
    fn deadline_is_checked() {
        assert_eq!(deadline(1_000, 500), Ok(1_500));
        assert_eq!(deadline(i64::MAX - 1, 1), Ok(i64::MAX));
        assert_eq!(deadline(i64::MAX - 1, 2), Err(LockError::TtlOverflow(2)));
    }
}
