//! The wait queues of LOCK.ACQUIRE ... BLOCK: one FIFO queue per lock, across modes, kept in
//! module memory rather than inside the key (which can expire, be deleted or be flushed while
//! clients wait on it). Joining, leaving from anywhere and serving the head cost a logarithm
//! of the queue's length.
//!
//! `H` is the handle of a blocked client; the queues only store and return it.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::meta::Meta;
use crate::token::Token;
use crate::value::Want;

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
    /// Tells this waiter from a later one the server may give the same handle; serials rise,
    /// so they are also the order of arrival.
    pub serial: u64,
    pub token: Token,
    pub ttl_ms: i64,
    pub want: Want,
    pub options: HoldOptions,
}

/// The server's id of a client connection.
pub type ClientId = u64;

/// What a hold carries beyond its token, deadline and fence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldOptions {
    pub meta: Option<Meta>,
    /// `EPHEMERAL`: the connection to bind the hold to when it is granted.
    pub bind_to: Option<ClientId>,
}

#[derive(Debug)]
struct Queue<H> {
    by_serial: BTreeMap<u64, Waiter<H>>,
    /// Shared requests among them, and their limit (all the same: see `shared_limit`).
    shared: usize,
    limit: Option<u32>,
}

#[derive(Debug)]
pub struct Queues<H> {
    queues: HashMap<LockId, Queue<H>>,
    /// Which lock and serial each waiting handle waits as, to remove it on timeout or
    /// disconnect.
    waiting_on: HashMap<H, (LockId, u64)>,
}

impl<H: Copy + Eq + Hash> Queues<H> {
    pub fn new() -> Self {
        Self {
            queues: HashMap::new(),
            waiting_on: HashMap::new(),
        }
    }

    /// Put a waiter at the back of the lock's queue (its serial is above every queued one).
    pub fn push(&mut self, lock: LockId, waiter: Waiter<H>) {
        self.waiting_on
            .insert(waiter.handle, (lock.clone(), waiter.serial));
        let queue = self.queues.entry(lock).or_insert_with(|| Queue {
            by_serial: BTreeMap::new(),
            shared: 0,
            limit: None,
        });
        if let Want::Shared { limit } = waiter.want {
            queue.shared += 1;
            queue.limit = limit;
        }
        queue.by_serial.insert(waiter.serial, waiter);
    }

    /// The first waiter of the lock, still queued.
    pub fn front(&self, lock: &LockId) -> Option<&Waiter<H>> {
        self.queues
            .get(lock)?
            .by_serial
            .first_key_value()
            .map(|(_, w)| w)
    }

    /// The first waiter of the lock, taken out of the queue.
    pub fn pop_front(&mut self, lock: &LockId) -> Option<Waiter<H>> {
        let serial = *self.queues.get(lock)?.by_serial.first_key_value()?.0;
        self.take(lock, serial)
    }

    fn take(&mut self, lock: &LockId, serial: u64) -> Option<Waiter<H>> {
        let queue = self.queues.get_mut(lock)?;
        let waiter = queue.by_serial.remove(&serial)?;
        if matches!(waiter.want, Want::Shared { .. }) {
            queue.shared -= 1;
        }
        if queue.by_serial.is_empty() {
            self.queues.remove(lock);
        }
        self.waiting_on.remove(&waiter.handle);
        Some(waiter)
    }

    /// Take a waiter out wherever it is in its queue (timeout, disconnect). None if it is not
    /// waiting any more (it was granted, or already removed).
    pub fn remove(&mut self, handle: H) -> Option<(LockId, Waiter<H>)> {
        let (lock, serial) = self.waiting_on.get(&handle)?.clone();
        let waiter = self.take(&lock, serial)?;
        Some((lock, waiter))
    }

    /// Like `remove`, but only if the handle still belongs to waiter `serial`.
    pub fn remove_serial(&mut self, handle: H, serial: u64) -> Option<(LockId, Waiter<H>)> {
        if !self.is_waiting(handle, serial) {
            return None;
        }
        self.remove(handle)
    }

    /// Whether the handle is queued as waiter `serial`.
    pub fn is_waiting(&self, handle: H, serial: u64) -> bool {
        self.waiting_on
            .get(&handle)
            .is_some_and(|(_, queued)| *queued == serial)
    }

    /// Take every waiter of the lock out, in order.
    pub fn take_all(&mut self, lock: &LockId) -> Vec<Waiter<H>> {
        let waiters: Vec<_> = self
            .queues
            .remove(lock)
            .map(|q| q.by_serial.into_values().collect())
            .unwrap_or_default();
        for waiter in &waiters {
            self.waiting_on.remove(&waiter.handle);
        }
        waiters
    }

    pub fn len(&self, lock: &LockId) -> usize {
        self.queues.get(lock).map_or(0, |q| q.by_serial.len())
    }

    /// The limit of the shared requests waiting for `lock`: `Some(None)` for `SHARED`,
    /// `Some(Some(n))` for `LIMIT n`, None when no shared request waits.
    pub fn shared_limit(&self, lock: &LockId) -> Option<Option<u32>> {
        self.queues
            .get(lock)
            .filter(|q| q.shared > 0)
            .map(|q| q.limit)
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
            want: Want::Exclusive,
            options: HoldOptions::default(),
        }
    }

    #[test]
    fn shared_waiters_give_the_queue_its_limit() {
        let mut q = Queues::new();
        q.push(id(0, "a"), waiter(1));
        assert_eq!(q.shared_limit(&id(0, "a")), None);
        let mut w = waiter(2);
        w.want = Want::Shared { limit: Some(3) };
        q.push(id(0, "a"), w);
        assert_eq!(q.shared_limit(&id(0, "a")), Some(Some(3)));
        assert_eq!(q.front(&id(0, "a")).map(|w| w.handle), Some(1));
        assert!(q.remove(2).is_some());
        assert_eq!(q.shared_limit(&id(0, "a")), None);
        assert_eq!(q.len(&id(0, "a")), 1);
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
