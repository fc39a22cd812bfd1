//! One holder's lock: token, deadline and fence in 32 bytes. An exclusive lock is one; a
//! shared lock (`shared.rs`) is a set of them. The decisions are in `value.rs`.
//!
//! Times are Unix milliseconds as signed 64-bit numbers, like Redis's own expiry times.
//! A lock is held while `now < deadline`; from the deadline on it is free, whether or not
//! Redis has removed the key yet.

use std::fmt;

use crate::compact::{CompactHold, INLINE_TEXT_MAX};
use crate::error::{LockError, LockResult};
use crate::token::TokenRef;

/// A lock as stored under its key: 32 bytes for the usual tokens, so that with the server's
/// own per-key headers a lock takes no more memory than a `SET NX PX` string lock.
#[derive(PartialEq, Eq)]
pub struct Lock {
    pub deadline_ms: i64,
    hold: CompactHold,
}

const _: () = assert!(std::mem::size_of::<Lock>() == 32);

impl Lock {
    #[inline(always)]
    pub fn new<'t>(
        token: impl Into<TokenRef<'t>>,
        deadline_ms: i64,
        fence: u64,
    ) -> LockResult<Self> {
        Ok(Self {
            deadline_ms,
            hold: CompactHold::new(token, fence)?,
        })
    }

    pub fn fence(&self) -> u64 {
        self.hold.fence()
    }

    /// The token as the owner gave it, spelled into `buf` when it is stored compactly.
    pub fn token<'a>(&'a self, buf: &'a mut [u8; INLINE_TEXT_MAX]) -> &'a [u8] {
        self.hold.token(buf)
    }

    pub fn has_token<'t>(&self, token: impl Into<TokenRef<'t>>) -> bool {
        self.hold.has_token(token)
    }

    /// Heap bytes owned beyond the 32 of the lock itself.
    pub fn heap_bytes(&self) -> usize {
        self.hold.heap_bytes()
    }

    /// See `CompactHold::defrag_token`.
    pub fn defrag_token(&mut self, moved: impl FnOnce(*mut u8) -> *mut u8) {
        self.hold.defrag_token(moved);
    }

    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms < self.deadline_ms
    }

    /// Milliseconds left before the deadline, 0 once it has passed.
    pub fn remaining_ms(&self, now_ms: i64) -> i64 {
        self.deadline_ms.saturating_sub(now_ms).max(0)
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; INLINE_TEXT_MAX];
        f.debug_struct("Lock")
            .field("token", &String::from_utf8_lossy(self.token(&mut buf)))
            .field("deadline_ms", &self.deadline_ms)
            .field("fence", &self.fence())
            .finish()
    }
}

/// `now + ttl`, refused rather than wrapped when it leaves the 64-bit range.
pub fn deadline(now_ms: i64, ttl_ms: i64) -> LockResult<i64> {
    // A match, not `ok_or`: an error made eagerly is dropped again on every call.
    match now_ms.checked_add(ttl_ms) {
        Some(deadline) => Ok(deadline),
        None => Err(LockError::TtlOverflow(ttl_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::MAX_FENCE;
    use crate::token::Token;

    fn tok(s: &str) -> Token {
        Token::parse(s.as_bytes()).unwrap()
    }

    fn lock(owner: &str, deadline_ms: i64) -> Lock {
        Lock::new(&tok(owner), deadline_ms, 7).unwrap()
    }

    #[test]
    fn a_lock_keeps_its_token_deadline_and_fence() {
        let l = Lock::new(&tok("worker-7"), 5, 9).unwrap();
        let mut buf = [0u8; INLINE_TEXT_MAX];
        assert_eq!(l.token(&mut buf), b"worker-7");
        assert_eq!((l.deadline_ms, l.fence()), (5, 9));
        assert_eq!(l, Lock::new(&tok("worker-7"), 5, 9).unwrap());
        assert_ne!(l, Lock::new(&tok("worker-7"), 6, 9).unwrap());
        assert_eq!(
            Lock::new(&tok("a"), 1, MAX_FENCE + 1).err(),
            Some(LockError::FenceExhausted)
        );
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
