//! The wait queues of LOCK.ACQUIRE ... BLOCK: one FIFO queue per lock, kept in
//! module memory rather than inside the key (which can expire, be deleted or be flushed while
//! clients wait on it).
//!
//! `H` is the handle of a blocked client; the queues only store and return it.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::token::Token;

/// A lock's identity: its database and key name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockId {
    pub db: i32,
    pub key: Vec<u8>,
}

/// A client waiting for a lock: what it will be granted with.
#[derive(Debug, PartialEq, Eq)]
pub struct Waiter<H> {
    pub handle: H,
    /// Tells this waiter from a later one the server may give the same handle.
    pub serial: u64,
    pub token: Token,
    pub ttl_ms: i64,
}

#[derive(Debug)]
pub struct Queues<H> {
    queues: HashMap<LockId, VecDeque<Waiter<H>>>,
    /// Which lock each waiting handle waits for, to remove it on timeout or disconnect.
    waiting_on: HashMap<H, LockId>,
}

impl<H: Copy + Eq + Hash> Queues<H> {
    pub fn new() -> Self {
        Self {
            queues: HashMap::new(),
            waiting_on: HashMap::new(),
        }
    }

    /// Put a waiter at the back of the lock's queue.
    pub fn push(&mut self, lock: LockId, waiter: Waiter<H>) {
        self.waiting_on.insert(waiter.handle, lock.clone());
        self.queues.entry(lock).or_default().push_back(waiter);
    }

    /// The first waiter of the lock, taken out of the queue.
    pub fn pop_front(&mut self, lock: &LockId) -> Option<Waiter<H>> {
        let queue = self.queues.get_mut(lock)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(lock);
        }
        if let Some(waiter) = &waiter {
            self.waiting_on.remove(&waiter.handle);
        }
        waiter
    }

    /// Take a waiter out wherever it is in its queue (timeout, disconnect). None if it is not
    /// waiting any more (it was granted, or already removed).
    pub fn remove(&mut self, handle: H) -> Option<(LockId, Waiter<H>)> {
        let lock = self.waiting_on.remove(&handle)?;
        let queue = self.queues.get_mut(&lock)?;
        let at = queue.iter().position(|w| w.handle == handle)?;
        let waiter = queue.remove(at)?;
        if queue.is_empty() {
            self.queues.remove(&lock);
        }
        Some((lock, waiter))
    }

    /// Like `remove`, but only if the handle still belongs to waiter `serial`.
    pub fn remove_serial(&mut self, handle: H, serial: u64) -> Option<(LockId, Waiter<H>)> {
        let lock = self.waiting_on.get(&handle)?;
        let current = self.queues.get(lock)?.iter().find(|w| w.handle == handle)?;
        if current.serial != serial {
            return None;
        }
        self.remove(handle)
    }

    /// Whether the handle is queued as waiter `serial`.
    pub fn is_waiting(&self, handle: H, serial: u64) -> bool {
        self.waiting_on
            .get(&handle)
            .and_then(|lock| self.queues.get(lock))
            .is_some_and(|q| q.iter().any(|w| w.handle == handle && w.serial == serial))
    }

    /// Take every waiter of the lock out, in order.
    pub fn take_all(&mut self, lock: &LockId) -> Vec<Waiter<H>> {
        let waiters: Vec<_> = self.queues.remove(lock).unwrap_or_default().into();
        for waiter in &waiters {
            self.waiting_on.remove(&waiter.handle);
        }
        waiters
    }

    pub fn len(&self, lock: &LockId) -> usize {
        self.queues.get(lock).map_or(0, VecDeque::len)
    }

    /// Waiting clients over all locks.
    pub fn total(&self) -> usize {
        self.waiting_on.len()
    }

    pub fn has_waiters(&self, lock: &LockId) -> bool {
        self.queues.contains_key(lock)
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Locks with waiters in database `db`, or in every database when `db` is None.
    pub fn locks_in(&self, db: Option<i32>) -> Vec<LockId> {
        self.queues
            .keys()
            .filter(|lock| db.is_none_or(|db| lock.db == db))
            .cloned()
            .collect()
    }
}

impl<H: Copy + Eq + Hash> Default for Queues<H> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(db: i32, key: &str) -> LockId {
        LockId {
            db,
            key: key.as_bytes().to_vec(),
        }
    }

    fn waiter(handle: u32) -> Waiter<u32> {
        Waiter {
            handle,
            serial: u64::from(handle) * 10,
            token: Token::parse(format!("t{handle}").as_bytes()).unwrap(),
            ttl_ms: 1000,
        }
    }

    #[test]
    fn first_in_first_out_per_lock() {
        let mut q = Queues::new();
        for h in [1, 2, 3] {
            q.push(id(0, "a"), waiter(h));
        }
        q.push(id(0, "b"), waiter(9));
        assert_eq!(q.len(&id(0, "a")), 3);
        assert_eq!(q.total(), 4);
        let order: Vec<u32> = std::iter::from_fn(|| q.pop_front(&id(0, "a")))
            .map(|w| w.handle)
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(!q.has_waiters(&id(0, "a")));
        assert_eq!(q.pop_front(&id(0, "b")).map(|w| w.handle), Some(9));
        assert!(q.is_empty());
    }

    #[test]
    fn same_key_in_two_databases_are_two_locks() {
        let mut q = Queues::new();
        q.push(id(0, "a"), waiter(1));
        q.push(id(1, "a"), waiter(2));
        assert_eq!(q.len(&id(0, "a")), 1);
        assert_eq!(q.len(&id(1, "a")), 1);
        assert_eq!(q.locks_in(Some(1)), vec![id(1, "a")]);
        assert_eq!(q.locks_in(None).len(), 2);
    }

    #[test]
    fn remove_takes_a_waiter_out_of_the_middle_and_keeps_the_order() {
        let mut q = Queues::new();
        for h in [1, 2, 3] {
            q.push(id(0, "a"), waiter(h));
        }
        let (lock, removed) = q.remove(2).unwrap();
        assert_eq!((lock, removed.handle), (id(0, "a"), 2));
        assert_eq!(q.remove(2), None, "a handle is removed once");
        assert_eq!(q.pop_front(&id(0, "a")).map(|w| w.handle), Some(1));
        assert_eq!(q.pop_front(&id(0, "a")).map(|w| w.handle), Some(3));
        assert!(q.is_empty());
    }

    #[test]
    fn a_reused_handle_is_not_mistaken_for_the_waiter_it_replaced() {
        let mut q = Queues::new();
        q.push(id(0, "a"), waiter(1));
        assert!(q.is_waiting(1, 10));
        assert!(!q.is_waiting(1, 11));
        assert_eq!(q.remove_serial(1, 11), None, "another waiter's timer");
        assert!(q.is_waiting(1, 10));
        assert_eq!(q.remove_serial(1, 10).map(|(_, w)| w.serial), Some(10));
        assert!(!q.is_waiting(1, 10));
    }

    #[test]
    fn a_served_waiter_can_no_longer_be_removed() {
        let mut q = Queues::new();
        q.push(id(0, "a"), waiter(1));
        assert!(q.pop_front(&id(0, "a")).is_some());
        assert_eq!(q.remove(1), None);
    }

    #[test]
    fn take_all_empties_one_lock_only() {
        let mut q = Queues::new();
        q.push(id(0, "a"), waiter(1));
        q.push(id(0, "a"), waiter(2));
        q.push(id(0, "b"), waiter(3));
        let taken: Vec<u32> = q.take_all(&id(0, "a")).iter().map(|w| w.handle).collect();
        assert_eq!(taken, [1, 2]);
        assert_eq!(q.remove(1), None);
        assert_eq!(q.len(&id(0, "b")), 1);
        assert!(q.has_waiters(&id(0, "b")));
    }
}
