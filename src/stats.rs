//! The module's counters, shown by `INFO lock`. Plain atomics: the lock values they count
//! can be freed on a background thread (FLUSHALL ASYNC).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub struct Stats {
    /// Lock values in memory (held, or expired and not yet removed by the server).
    pub locks: AtomicU64,
    /// New grants by ACQUIRE (not retries, not hand-offs).
    pub acquired: AtomicU64,
    /// ACQUIRE calls that found the lock held by another owner (answered null, or queued).
    pub contended: AtomicU64,
    pub renewed: AtomicU64,
    pub released: AtomicU64,
    /// Locks whose deadline passed while held, counted when the server removes or replaces them.
    pub expired: AtomicU64,
    /// Grants to waiting clients.
    pub handed_off: AtomicU64,
    /// Waiting clients whose BLOCK timeout passed (or that CLIENT UNBLOCK released).
    pub timeouts: AtomicU64,
}

pub static STATS: Stats = Stats {
    locks: AtomicU64::new(0),
    acquired: AtomicU64::new(0),
    contended: AtomicU64::new(0),
    renewed: AtomicU64::new(0),
    released: AtomicU64::new(0),
    expired: AtomicU64::new(0),
    handed_off: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
};

/// Since when (Unix ms) this server serves clients: while it loads data it does not, and a lock
/// whose deadline passed before it served (while the server was down, or during the load)
/// did not expire in its care, so it is neither counted nor notified as expired.
static SERVING_SINCE_MS: AtomicI64 = AtomicI64::new(i64::MAX);

pub fn serving_from(now_ms: i64) {
    SERVING_SINCE_MS.store(now_ms, Ordering::Relaxed);
}

/// Whether a lock with this deadline, now passed, expired while this server served.
pub fn expired_while_serving(deadline_ms: i64) -> bool {
    deadline_ms >= SERVING_SINCE_MS.load(Ordering::Relaxed)
}

pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One lock value fewer (saturating: a count never wraps below zero).
pub fn uncount(counter: &AtomicU64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_without_wrapping() {
        let c = AtomicU64::new(0);
        count(&c);
        count(&c);
        uncount(&c);
        assert_eq!(get(&c), 1);
        uncount(&c);
        uncount(&c);
        assert_eq!(get(&c), 0);
    }

    #[test]
    fn only_expiries_while_serving_count() {
        serving_from(i64::MAX);
        assert!(!expired_while_serving(5_000), "while loading");
        serving_from(1_000);
        assert!(!expired_while_serving(999), "before the server served");
        assert!(expired_while_serving(1_000));
    }
}
