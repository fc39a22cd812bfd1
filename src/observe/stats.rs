//! The module's counters, shown by `INFO lock`. Plain atomics: the lock values they count
//! can be freed on a background thread (FLUSHALL ASYNC).

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Ephemeral holds released because their connection closed (also counted in `released`).
    pub closed_releases: AtomicU64,
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
    closed_releases: AtomicU64::new(0),
};

pub fn count(counter: &AtomicU64) {
    count_by(counter, 1);
}

pub fn count_by(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// One lock value fewer (saturating: a count never wraps below zero).
pub fn uncount(counter: &AtomicU64) {
    let mut n = counter.load(Ordering::Relaxed);
    while n > 0 {
        match counter.compare_exchange_weak(n, n - 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => n = now,
        }
    }
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
}
