//! A lock with shared holders (`SHARED`, or a counting semaphore with `LIMIT n`): each holder
//! has its own token, deadline and fence, and every operation costs at most a logarithm of the
//! number of holders.
//!
//! Holders are kept by fence, which is also their grant order (fences only rise), with two
//! indexes: their deadlines (the next to expire, and the latest, which is the key's expiry),
//! and a hash of their token (RENEW, RELEASE and retries name a holder by token).
//!
//! A holder whose deadline has passed counts for nothing; it stays stored until `prune`, so
//! that its removal can be replicated and notified like any other change.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::lock::Lock;
use crate::token::Token;

/// The largest `LIMIT`.
pub const MAX_LIMIT: u32 = 1_000_000;

pub struct SharedLock {
    /// None for `SHARED`, `n` for `LIMIT n`.
    limit: Option<u32>,
    holders: BTreeMap<u64, Lock>,
    /// `(deadline, fence)` of every holder.
    deadlines: BTreeSet<(i64, u64)>,
    /// The hash of each holder's token, to its fence.
    by_token: HashMap<u64, u64, BuildHasherDefault<Prehashed>>,
    /// Fences of holders whose token hash equals another holder's: distinct tokens of up to
    /// 256 bytes under a randomly keyed 64-bit hash, so in practice always empty.
    collided: Vec<u64>,
    hash_keys: RandomState,
}

impl SharedLock {
    pub fn new(limit: Option<u32>) -> Self {
        Self {
            limit,
            holders: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            by_token: HashMap::default(),
            collided: Vec::new(),
            hash_keys: RandomState::new(),
        }
    }

    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    /// Holders stored, live or not yet pruned.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// Holders whose deadline has not passed. Costs the number of expired holders not yet
    /// pruned (which a primary prunes at their deadlines).
    pub fn live(&self, now_ms: i64) -> usize {
        self.holders.len() - self.deadlines.range(..=(now_ms, u64::MAX)).count()
    }

    /// Whether one more holder fits (`LIMIT`), counting live holders only.
    pub fn has_room(&self, now_ms: i64) -> bool {
        self.limit
            .is_none_or(|n| self.live(now_ms) < usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The holder with this token, live or not.
    pub fn holder(&self, token: &Token) -> Option<&Lock> {
        self.fence_of(token)
            .and_then(|fence| self.holders.get(&fence))
    }

    fn fence_of(&self, token: &Token) -> Option<u64> {
        let hash = self.hash_keys.hash_one(token.as_bytes());
        let holds = |fence: &u64| self.holders.get(fence).is_some_and(|h| h.has_token(token));
        match self.by_token.get(&hash) {
            Some(fence) if holds(fence) => Some(*fence),
            _ => self.collided.iter().copied().find(|fence| holds(fence)),
        }
    }

    /// Add a holder whose token holds nothing here yet (the caller checked with `holder`).
    pub fn insert(&mut self, holder: Lock) {
        let fence = holder.fence();
        let mut buf = [0u8; crate::compact::INLINE_TEXT_MAX];
        let hash = self.hash_keys.hash_one(holder.token(&mut buf));
        match self.by_token.entry(hash) {
            Entry::Occupied(_) => self.collided.push(fence),
            Entry::Vacant(slot) => {
                slot.insert(fence);
            }
        }
        self.deadlines.insert((holder.deadline_ms, fence));
        if let Some(old) = self.holders.insert(fence, holder) {
            // A fence is granted once; a repeated one (a corrupt file) replaces its holder.
            self.deadlines.remove(&(old.deadline_ms, fence));
            self.deadlines
                .insert((self.holders[&fence].deadline_ms, fence));
        }
    }

    /// Add `holder`, or replace the one with its token (an effect from the primary).
    pub fn upsert(&mut self, holder: Lock) {
        let mut buf = [0u8; crate::compact::INLINE_TEXT_MAX];
        if let Ok(token) = Token::parse(holder.token(&mut buf)) {
            self.remove(&token);
        }
        self.insert(holder);
    }

    /// Move the deadline of the holder with `token`; false if there is none.
    pub fn set_deadline(&mut self, token: &Token, deadline_ms: i64) -> bool {
        let Some(fence) = self.fence_of(token) else {
            return false;
        };
        let Some(holder) = self.holders.get_mut(&fence) else {
            return false;
        };
        self.deadlines.remove(&(holder.deadline_ms, fence));
        holder.deadline_ms = deadline_ms;
        self.deadlines.insert((deadline_ms, fence));
        true
    }

    /// Take out the holder with `token`.
    pub fn remove(&mut self, token: &Token) -> Option<Lock> {
        let fence = self.fence_of(token)?;
        self.remove_fence(fence)
    }

    fn remove_fence(&mut self, fence: u64) -> Option<Lock> {
        let holder = self.holders.remove(&fence)?;
        self.deadlines.remove(&(holder.deadline_ms, fence));
        if let Some(at) = self.collided.iter().position(|f| *f == fence) {
            self.collided.swap_remove(at);
        } else {
            let mut buf = [0u8; crate::compact::INLINE_TEXT_MAX];
            let hash = self.hash_keys.hash_one(holder.token(&mut buf));
            self.by_token.remove(&hash);
            // A collided holder with the same hash takes the freed place.
            if let Some(at) = self.collided.iter().position(|f| {
                let mut buf = [0u8; crate::compact::INLINE_TEXT_MAX];
                self.holders
                    .get(f)
                    .is_some_and(|h| self.hash_keys.hash_one(h.token(&mut buf)) == hash)
            }) {
                self.by_token.insert(hash, self.collided.swap_remove(at));
            }
        }
        Some(holder)
    }

    /// Take out every holder whose deadline has passed, soonest first.
    pub fn prune(&mut self, now_ms: i64) -> Vec<Lock> {
        let mut gone = Vec::new();
        while let Some(&(deadline, fence)) = self.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            gone.extend(self.remove_fence(fence));
        }
        gone
    }

    /// The soonest deadline of any holder.
    pub fn earliest_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// The latest deadline of any holder: the key's expiry.
    pub fn latest_deadline(&self) -> Option<i64> {
        self.deadlines.last().map(|&(deadline, _)| deadline)
    }

    /// The highest fence among live holders. Costs the number of newer expired holders.
    pub fn max_live_fence(&self, now_ms: i64) -> Option<u64> {
        self.holders
            .values()
            .rev()
            .find(|h| h.is_live(now_ms))
            .map(Lock::fence)
    }

    /// Every holder, in grant order.
    pub fn holders(&self) -> impl Iterator<Item = &Lock> {
        self.holders.values()
    }

    /// Heap bytes beyond the `SharedLock` itself: an estimate from the entry sizes of its three
    /// maps (B-tree nodes are about two-thirds full, the hash table seven-eighths at most).
    pub fn heap_bytes(&self) -> usize {
        let per_holder = (8 + std::mem::size_of::<Lock>()) * 3 / 2 + 16 * 3 / 2 + 17 * 8 / 7;
        self.holders.len() * per_holder
            + self.holders.values().map(Lock::heap_bytes).sum::<usize>()
            + self.collided.capacity() * 8
    }

    /// Every holder and the limit, for equality in tests.
    fn entries(&self) -> Vec<(&Lock, i64)> {
        self.holders.values().map(|h| (h, h.deadline_ms)).collect()
    }
}

impl PartialEq for SharedLock {
    fn eq(&self, other: &Self) -> bool {
        self.limit == other.limit && self.entries() == other.entries()
    }
}

impl Eq for SharedLock {}

impl std::fmt::Debug for SharedLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLock")
            .field("limit", &self.limit)
            .field("holders", &self.holders.values().collect::<Vec<_>>())
            .finish()
    }
}

/// The by-token map's keys are already hashes: use them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Token {
        Token::parse(s.as_bytes()).unwrap()
    }

    fn holder(t: &str, deadline: i64, fence: u64) -> Lock {
        Lock::new(&tok(t), deadline, fence).unwrap()
    }

    #[test]
    fn holders_are_found_by_token_and_kept_in_grant_order() {
        let mut s = SharedLock::new(None);
        s.insert(holder("a", 300, 1));
        s.insert(holder("b", 100, 2));
        s.insert(holder("c", 200, 3));
        assert_eq!(s.len(), 3);
        assert_eq!(s.holder(&tok("b")).map(Lock::fence), Some(2));
        assert!(s.holder(&tok("d")).is_none());
        let order: Vec<u64> = s.holders().map(Lock::fence).collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(s.earliest_deadline(), Some(100));
        assert_eq!(s.latest_deadline(), Some(300));
        assert_eq!(s.max_live_fence(0), Some(3));
        assert_eq!(s.max_live_fence(250), Some(1), "c and b have expired");
    }

    #[test]
    fn a_deadline_moves_its_holder_in_the_deadline_order() {
        let mut s = SharedLock::new(Some(2));
        s.insert(holder("a", 100, 1));
        s.insert(holder("b", 200, 2));
        assert!(s.set_deadline(&tok("a"), 500));
        assert!(!s.set_deadline(&tok("z"), 500));
        assert_eq!(s.earliest_deadline(), Some(200));
        assert_eq!(s.latest_deadline(), Some(500));
        assert_eq!(s.holder(&tok("a")).map(|h| h.deadline_ms), Some(500));
    }

    #[test]
    fn expired_holders_count_for_nothing_and_are_pruned_soonest_first() {
        let mut s = SharedLock::new(Some(2));
        s.insert(holder("a", 100, 1));
        s.insert(holder("b", 200, 2));
        assert_eq!(s.live(99), 2);
        assert!(!s.has_room(99));
        assert_eq!(s.live(100), 1, "a holder is gone at its deadline");
        assert!(s.has_room(100));
        let gone: Vec<u64> = s.prune(200).iter().map(Lock::fence).collect();
        assert_eq!(gone, [1, 2]);
        assert!(s.is_empty());
        assert_eq!(s.latest_deadline(), None);
    }

    #[test]
    fn removing_and_upserting_keep_the_indexes_whole() {
        let mut s = SharedLock::new(None);
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            s.insert(holder(t, 100 + i as i64, i as u64 + 1));
        }
        assert_eq!(s.remove(&tok("b")).map(|h| h.fence()), Some(2));
        assert!(s.remove(&tok("b")).is_none());
        s.upsert(holder("a", 900, 1));
        assert_eq!(s.len(), 2);
        assert_eq!(s.latest_deadline(), Some(900));
        assert_eq!(s.earliest_deadline(), Some(102));
        assert_eq!(s.prune(500).len(), 1);
        assert_eq!(s.holder(&tok("a")).map(|h| h.deadline_ms), Some(900));
    }

    #[test]
    fn tokens_whose_hashes_collide_are_still_told_apart() {
        let mut s = SharedLock::new(None);
        s.insert(holder("a", 100, 1));
        // Force a collision: file "b" under "a"'s hash, as `insert` does for a real one.
        let b = holder("b", 200, 2);
        s.deadlines.insert((200, 2));
        s.holders.insert(2, b);
        s.collided.push(2);
        assert_eq!(s.holder(&tok("b")).map(Lock::fence), Some(2));
        assert_eq!(s.holder(&tok("a")).map(Lock::fence), Some(1));
        assert!(s.remove(&tok("a")).is_some());
        assert_eq!(s.holder(&tok("b")).map(Lock::fence), Some(2));
        assert!(s.remove(&tok("b")).is_some());
        assert!(s.is_empty() && s.collided.is_empty() && s.by_token.is_empty());
    }
}
