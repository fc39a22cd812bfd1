//! The module's settings, as `CONFIG GET/SET lock.<name>` and as load-time arguments
//! (`loadmodule ... max-ttl 60000`).

use std::sync::atomic::{AtomicI64, Ordering};

/// `lock.max-ttl`: the largest ttl ACQUIRE and RENEW accept, in ms; 0 means no limit.
pub static MAX_TTL: AtomicI64 = AtomicI64::new(0);

pub fn max_ttl() -> i64 {
    MAX_TTL.load(Ordering::Relaxed)
}

/// `lock.max-waiters`: how many clients may wait for one lock with BLOCK; 0 means no limit.
pub static MAX_WAITERS: AtomicI64 = AtomicI64::new(0);

pub fn max_waiters() -> usize {
    usize::try_from(MAX_WAITERS.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}
