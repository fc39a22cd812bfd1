//! A lock with shared holders (`SHARED`, or a counting semaphore with `LIMIT n`): each holder
//! has its own token, deadline and fence, and every operation costs at most a logarithm of the
//! number of holders.
//!
//! Holders are 32-byte `Lock`s in one vector, in no order (a removal moves the last one into
//! the gap), found by their token through a hash table of positions, and ordered by three
//! indexed heaps of positions: soonest deadline (the next to expire), latest deadline (the
//! key's expiry) and highest fence (LOCK.INFO). So a holder costs its `Lock`, a 4-byte slot in
//! the hash table and 8 bytes in each heap: about 70 bytes with the vectors' spare room.
//!
//! A holder whose deadline has passed counts for nothing; it stays stored until `prune`, so
//! that its removal can be replicated and notified like any other change.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::compact::INLINE_TEXT_MAX;
use crate::lock::Lock;
use crate::meta::Meta;
use crate::token::Token;

/// The largest `LIMIT`.
pub const MAX_LIMIT: u32 = 1_000_000;

// Within the allocator's 256-byte size class, where it was before labels.
const _: () = assert!(std::mem::size_of::<SharedLock>() <= 256);

pub struct SharedLock {
    /// None for `SHARED`, `n` for `LIMIT n`.
    limit: Option<u32>,
    holders: Vec<Lock>,
    /// Each holder's label, by position: None until some holder has one (boxed, so that a
    /// lock without labels stays in its allocator size class: 8 bytes, not a vector's 24).
    #[allow(clippy::box_collection)] // the box is the point: one pointer, not three words
    labels: Option<Box<Vec<Option<Meta>>>>,
    /// The position in `holders` of each holder, by the hash of its token.
    by_token: HashTable<u32>,
    soonest: Heap,
    latest: Heap,
    newest: Heap,
    hash_keys: RandomState,
}

/// Which way a heap orders holders: its top is the first by this order.
#[derive(Clone, Copy)]
enum Order {
    SoonestDeadline,
    LatestDeadline,
    HighestFence,
}

impl Order {
    fn before(self, a: &Lock, b: &Lock) -> bool {
        match self {
            // Equal deadlines go in grant order, so a prune's order is the same everywhere.
            Order::SoonestDeadline => (a.deadline_ms, a.fence()) < (b.deadline_ms, b.fence()),
            Order::LatestDeadline => (a.deadline_ms, a.fence()) > (b.deadline_ms, b.fence()),
            Order::HighestFence => a.fence() > b.fence(),
        }
    }
}

/// A binary heap of positions in `holders` that knows where each position is, so that any
/// holder can be moved or taken out in logarithmic time.
struct Heap {
    order: Order,
    /// Positions of holders, as a binary heap.
    heap: Vec<u32>,
    /// `at[p]`: where in `heap` position `p` is.
    at: Vec<u32>,
}

impl Heap {
    fn new(order: Order) -> Self {
        Self {
            order,
            heap: Vec::new(),
            at: Vec::new(),
        }
    }

    fn top(&self) -> Option<u32> {
        self.heap.first().copied()
    }

    /// Add `p`, the position just appended to `holders`.
    fn push(&mut self, p: u32, holders: &[Lock]) {
        self.at.push(self.heap.len() as u32);
        self.heap.push(p);
        self.up(self.heap.len() - 1, holders);
    }

    /// Take `p` out.
    fn remove(&mut self, p: u32, holders: &[Lock]) {
        let i = self.at[p as usize] as usize;
        let last = self.heap.len() - 1;
        self.swap(i, last);
        self.heap.pop();
        if i < self.heap.len() {
            self.fix(i, holders);
        }
    }

    /// `p`'s key changed.
    fn moved(&mut self, p: u32, holders: &[Lock]) {
        self.fix(self.at[p as usize] as usize, holders);
    }

    /// The holder at position `from` (the last) is now at `to` (a removed holder's gap).
    fn relabel(&mut self, from: u32, to: u32) {
        let i = self.at[from as usize];
        self.heap[i as usize] = to;
        self.at[to as usize] = i;
        self.at.pop();
    }

    /// The last position is gone (it was removed, and nothing moved into its place).
    fn forget_last(&mut self) {
        self.at.pop();
    }

    fn fix(&mut self, i: usize, holders: &[Lock]) {
        let i = self.up(i, holders);
        self.down(i, holders);
    }

    fn before(&self, i: usize, j: usize, holders: &[Lock]) -> bool {
        let (a, b) = (self.heap[i] as usize, self.heap[j] as usize);
        self.order.before(&holders[a], &holders[b])
    }

    fn up(&mut self, mut i: usize, holders: &[Lock]) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.before(i, parent, holders) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        i
    }

    fn down(&mut self, mut i: usize, holders: &[Lock]) {
        loop {
            let mut first = i;
            for child in [2 * i + 1, 2 * i + 2] {
                if child < self.heap.len() && self.before(child, first, holders) {
                    first = child;
                }
            }
            if first == i {
                return;
            }
            self.swap(i, first);
            i = first;
        }
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.heap.swap(i, j);
        self.at[self.heap[i] as usize] = i as u32;
        self.at[self.heap[j] as usize] = j as u32;
    }

    /// Positions from the top down for as long as `wanted` holds, best first: costs the number
    /// visited times its logarithm (the heap below a holder that is not wanted is not looked
    /// at, since none there comes first).
    fn leading(&self, holders: &[Lock], mut wanted: impl FnMut(&Lock) -> bool) -> Vec<u32> {
        let mut found = Vec::new();
        let mut frontier: Vec<usize> = Vec::new();
        if !self.heap.is_empty() {
            frontier.push(0);
        }
        while let Some(i) = frontier.pop() {
            let p = self.heap[i];
            if !wanted(&holders[p as usize]) {
                continue;
            }
            found.push(p);
            frontier.extend(
                [2 * i + 1, 2 * i + 2]
                    .into_iter()
                    .filter(|&c| c < self.heap.len()),
            );
        }
        found
    }

    fn bytes(&self) -> usize {
        (self.heap.capacity() + self.at.capacity()) * 4
    }
}

impl SharedLock {
    pub fn new(limit: Option<u32>) -> Self {
        Self {
            limit,
            holders: Vec::new(),
            labels: None,
            by_token: HashTable::new(),
            soonest: Heap::new(Order::SoonestDeadline),
            latest: Heap::new(Order::LatestDeadline),
            newest: Heap::new(Order::HighestFence),
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
        if self
            .soonest
            .top()
            .is_none_or(|p| self.holders[p as usize].is_live(now_ms))
        {
            return self.holders.len();
        }
        let expired = self
            .soonest
            .leading(&self.holders, |h| !h.is_live(now_ms))
            .len();
        self.holders.len() - expired
    }

    /// Whether one more holder fits (`LIMIT`), counting live holders only.
    pub fn has_room(&self, now_ms: i64) -> bool {
        self.limit
            .is_none_or(|n| self.live(now_ms) < usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn hash(&self, token: &[u8]) -> u64 {
        self.hash_keys.hash_one(token)
    }

    fn position(&self, token: &Token) -> Option<u32> {
        let holders = &self.holders;
        self.by_token
            .find(self.hash(token.as_bytes()), |&p| {
                holders[p as usize].has_token(token)
            })
            .copied()
    }

    /// The holder with this token, live or not.
    pub fn holder(&self, token: &Token) -> Option<&Lock> {
        self.position(token).map(|p| &self.holders[p as usize])
    }

    /// The label of the holder with this token, live or not.
    pub fn meta(&self, token: &Token) -> Option<&Meta> {
        self.holder_and_meta(token)?.1
    }

    /// The holder with this token, live or not, and its label: one lookup for both.
    pub fn holder_and_meta(&self, token: &Token) -> Option<(&Lock, Option<&Meta>)> {
        let p = self.position(token)? as usize;
        let meta = self.labels.as_ref().and_then(|l| l.get(p)?.as_ref());
        Some((&self.holders[p], meta))
    }

    /// Label the holder with `token` (None: no label); false if there is none.
    pub fn set_meta(&mut self, token: &Token, meta: Option<Meta>) -> bool {
        let Some(p) = self.position(token) else {
            return false;
        };
        if meta.is_some() || self.labels.is_some() {
            self.labels_mut()[p as usize] = meta;
        }
        true
    }

    /// The labels, made (none labeled) on first use; one per stored holder.
    fn labels_mut(&mut self) -> &mut Vec<Option<Meta>> {
        let len = self.holders.len();
        let labels = self.labels.get_or_insert_with(Box::default);
        labels.resize(len, None);
        labels
    }

    /// Add a holder whose token holds nothing here yet (the caller checked with `holder`).
    pub fn insert(&mut self, holder: Lock, meta: Option<Meta>) {
        self.make_room();
        let p = self.holders.len() as u32;
        if meta.is_some() || self.labels.is_some() {
            self.labels_mut().push(meta);
        }
        let mut buf = [0u8; INLINE_TEXT_MAX];
        let hash = self.hash(holder.token(&mut buf));
        self.holders.push(holder);
        let (holders, keys) = (&self.holders, &self.hash_keys);
        self.by_token.insert_unique(hash, p, |&q| {
            let mut buf = [0u8; INLINE_TEXT_MAX];
            keys.hash_one(holders[q as usize].token(&mut buf))
        });
        for heap in [&mut self.soonest, &mut self.latest, &mut self.newest] {
            heap.push(p, &self.holders);
        }
    }

    /// Add `holder`, or replace the one with its token (an effect from the primary).
    pub fn upsert(&mut self, holder: Lock, meta: Option<Meta>) {
        let mut buf = [0u8; INLINE_TEXT_MAX];
        if let Ok(token) = Token::parse(holder.token(&mut buf)) {
            self.remove(&token);
        }
        self.insert(holder, meta);
    }

    /// Move the deadline of the holder with `token`: its fence, or None if there is none.
    pub fn set_deadline(&mut self, token: &Token, deadline_ms: i64) -> Option<u64> {
        let p = self.position(token)?;
        self.holders[p as usize].deadline_ms = deadline_ms;
        self.soonest.moved(p, &self.holders);
        self.latest.moved(p, &self.holders);
        Some(self.holders[p as usize].fence())
    }

    /// Take out the holder with `token`.
    pub fn remove(&mut self, token: &Token) -> Option<Lock> {
        let p = self.position(token)?;
        Some(self.remove_at(p))
    }

    fn remove_at(&mut self, p: u32) -> Lock {
        for heap in [&mut self.soonest, &mut self.latest, &mut self.newest] {
            heap.remove(p, &self.holders);
        }
        let mut buf = [0u8; INLINE_TEXT_MAX];
        let hash = self.hash(self.holders[p as usize].token(&mut buf));
        if let Ok(entry) = self.by_token.find_entry(hash, |&q| q == p) {
            entry.remove();
        }
        let last = self.holders.len() as u32 - 1;
        if p != last {
            // The last holder moves into the gap: its index entries follow.
            let hash = self.hash(self.holders[last as usize].token(&mut buf));
            if let Some(entry) = self.by_token.find_mut(hash, |&q| q == last) {
                *entry = p;
            }
            for heap in [&mut self.soonest, &mut self.latest, &mut self.newest] {
                heap.relabel(last, p);
            }
        } else {
            for heap in [&mut self.soonest, &mut self.latest, &mut self.newest] {
                heap.forget_last();
            }
        }
        let holder = self.holders.swap_remove(p as usize);
        if let Some(labels) = self.labels.as_mut() {
            labels.swap_remove(p as usize);
            if labels.len() < 64 && labels.iter().all(Option::is_none) {
                // Back to no cost once no holder is labeled (checked while that is cheap).
                self.labels = None;
            }
        }
        self.shrink();
        holder
    }

    /// Vectors grow by half, not double: a lock of many holders wastes a quarter less.
    fn make_room(&mut self) {
        let len = self.holders.len();
        if len < self.holders.capacity() {
            return;
        }
        let more = (len / 2).max(4);
        self.holders.reserve_exact(more);
        for heap in [&mut self.soonest, &mut self.latest, &mut self.newest] {
            heap.heap.reserve_exact(more);
            heap.at.reserve_exact(more);
        }
    }

    /// Give back most of the room a lock that shrank no longer needs.
    fn shrink(&mut self) {
        let len = self.holders.len();
        if self.holders.capacity() > 16 && len < self.holders.capacity() / 4 {
            self.holders.shrink_to(len * 2);
            for heap in [&mut self.soonest, &mut self.latest, &mut self.newest] {
                heap.heap.shrink_to(len * 2);
                heap.at.shrink_to(len * 2);
            }
            let (holders, keys) = (&self.holders, &self.hash_keys);
            self.by_token.shrink_to(len * 2, |&q| {
                let mut buf = [0u8; INLINE_TEXT_MAX];
                keys.hash_one(holders[q as usize].token(&mut buf))
            });
        }
    }

    /// Take out every holder whose deadline has passed, soonest first.
    pub fn prune(&mut self, now_ms: i64) -> Vec<Lock> {
        let mut gone = Vec::new();
        while let Some(p) = self.soonest.top() {
            if self.holders[p as usize].is_live(now_ms) {
                break;
            }
            gone.push(self.remove_at(p));
        }
        gone
    }

    /// The soonest deadline of any holder.
    pub fn earliest_deadline(&self) -> Option<i64> {
        self.soonest
            .top()
            .map(|p| self.holders[p as usize].deadline_ms)
    }

    /// The latest deadline of any holder: the key's expiry.
    pub fn latest_deadline(&self) -> Option<i64> {
        self.latest
            .top()
            .map(|p| self.holders[p as usize].deadline_ms)
    }

    /// The highest fence of any holder, live or not.
    pub fn highest_fence(&self) -> Option<u64> {
        self.newest.top().map(|p| self.holders[p as usize].fence())
    }

    /// The highest fence among live holders. Costs the number of expired holders with higher
    /// fences (times its logarithm).
    pub fn max_live_fence(&self, now_ms: i64) -> Option<u64> {
        let newest = self.newest.top().map(|p| &self.holders[p as usize]);
        if let Some(holder) = newest.filter(|h| h.is_live(now_ms)) {
            return Some(holder.fence());
        }
        let newer_expired = self.newest.leading(&self.holders, |h| !h.is_live(now_ms));
        // The best live holder is the root, or a child of an expired holder above it.
        let children = |i: usize| [2 * i + 1, 2 * i + 2];
        let heap = &self.newest.heap;
        let mut best: Option<u64> = None;
        let mut consider = |i: usize| {
            if let Some(&p) = heap.get(i) {
                let h = &self.holders[p as usize];
                if h.is_live(now_ms) {
                    best = best.max(Some(h.fence()));
                }
            }
        };
        if newer_expired.is_empty() {
            consider(0);
        }
        for p in newer_expired {
            let i = self.newest.at[p as usize] as usize;
            children(i).into_iter().for_each(&mut consider);
        }
        best
    }

    /// Every holder, in grant order (by fence).
    pub fn holders(&self) -> impl Iterator<Item = &Lock> {
        self.entries().map(|(holder, _)| holder)
    }

    /// Every holder with its label, in grant order (by fence).
    pub fn entries(&self) -> impl Iterator<Item = (&Lock, Option<&Meta>)> {
        let mut all: Vec<(&Lock, Option<&Meta>)> = self
            .holders
            .iter()
            .enumerate()
            .map(|(p, h)| {
                let label = self.labels.as_ref().and_then(|l| l.get(p));
                (h, label.and_then(Option::as_ref))
            })
            .collect();
        all.sort_unstable_by_key(|(h, _)| h.fence());
        all.into_iter()
    }

    /// Whether some holder has a label.
    pub fn labeled(&self) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|l| l.iter().any(Option::is_some))
    }

    /// Heap bytes beyond the `SharedLock` itself.
    pub fn heap_bytes(&self) -> usize {
        self.holders.capacity() * std::mem::size_of::<Lock>()
            + self.holders.iter().map(Lock::heap_bytes).sum::<usize>()
            + self.labels.as_ref().map_or(0, |l| {
                std::mem::size_of::<Vec<Option<Meta>>>()
                    + l.capacity() * std::mem::size_of::<Option<Meta>>()
                    + l.iter().flatten().map(Meta::heap_bytes).sum::<usize>()
            })
            + self.by_token.allocation_size()
            + self.soonest.bytes()
            + self.latest.bytes()
            + self.newest.bytes()
    }
}

impl PartialEq for SharedLock {
    fn eq(&self, other: &Self) -> bool {
        fn entries(s: &SharedLock) -> Vec<(&Lock, i64, Option<&Meta>)> {
            s.entries().map(|(h, m)| (h, h.deadline_ms, m)).collect()
        }
        self.limit == other.limit && entries(self) == entries(other)
    }
}

impl Eq for SharedLock {}

impl std::fmt::Debug for SharedLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLock")
            .field("limit", &self.limit)
            .field("holders", &self.entries().collect::<Vec<_>>())
            .finish()
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
        s.insert(holder("a", 300, 1), None);
        s.insert(holder("b", 100, 2), None);
        s.insert(holder("c", 200, 3), None);
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
        s.insert(holder("a", 100, 1), None);
        s.insert(holder("b", 200, 2), None);
        assert_eq!(s.set_deadline(&tok("a"), 500), Some(1));
        assert_eq!(s.set_deadline(&tok("z"), 500), None);
        assert_eq!(s.earliest_deadline(), Some(200));
        assert_eq!(s.latest_deadline(), Some(500));
        assert_eq!(s.holder(&tok("a")).map(|h| h.deadline_ms), Some(500));
    }

    #[test]
    fn expired_holders_count_for_nothing_and_are_pruned_soonest_first() {
        let mut s = SharedLock::new(Some(2));
        s.insert(holder("a", 100, 1), None);
        s.insert(holder("b", 200, 2), None);
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
            s.insert(holder(t, 100 + i as i64, i as u64 + 1), None);
        }
        assert_eq!(s.remove(&tok("b")).map(|h| h.fence()), Some(2));
        assert!(s.remove(&tok("b")).is_none());
        s.upsert(holder("a", 900, 1), None);
        assert_eq!(s.len(), 2);
        assert_eq!(s.latest_deadline(), Some(900));
        assert_eq!(s.earliest_deadline(), Some(102));
        assert_eq!(s.prune(500).len(), 1);
        assert_eq!(s.holder(&tok("a")).map(|h| h.deadline_ms), Some(900));
    }

    #[test]
    fn many_holders_come_and_go_with_every_index_whole() {
        let mut s = SharedLock::new(None);
        for i in 0..200u64 {
            // Deadlines out of grant order, some equal.
            s.insert(
                holder(&format!("t{i}"), 1_000 + ((i * 37) % 101) as i64, i + 1),
                None,
            );
        }
        for i in (0..200u64).step_by(3) {
            assert!(s.remove(&tok(&format!("t{i}"))).is_some());
        }
        for i in (1..200u64).step_by(3) {
            assert!(s
                .set_deadline(&tok(&format!("t{i}")), 5_000 + i as i64)
                .is_some());
        }
        let left: Vec<&Lock> = s.holders().collect();
        assert_eq!(left.len(), 133);
        assert!(left.windows(2).all(|w| w[0].fence() < w[1].fence()));
        let soonest = left.iter().map(|h| h.deadline_ms).min();
        assert_eq!(s.earliest_deadline(), soonest);
        assert_eq!(s.latest_deadline(), Some(5_000 + 199));
        for i in 0..200u64 {
            let held = s.holder(&tok(&format!("t{i}"))).map(Lock::fence);
            assert_eq!(held, (i % 3 != 0).then_some(i + 1), "t{i}");
        }
        let now = 1_050;
        let live = left.iter().filter(|h| h.is_live(now)).count();
        assert_eq!(s.live(now), live);
        let best = left
            .iter()
            .filter(|h| h.is_live(now))
            .map(|h| h.fence())
            .max();
        assert_eq!(s.max_live_fence(now), best);
        let gone = s.prune(now);
        assert!(gone
            .windows(2)
            .all(|w| w[0].deadline_ms <= w[1].deadline_ms));
        assert_eq!(s.len(), live);
        let tokens: Vec<Token> = s
            .holders()
            .map(|h| {
                let mut buf = [0u8; INLINE_TEXT_MAX];
                tok(std::str::from_utf8(h.token(&mut buf)).unwrap())
            })
            .collect();
        for t in tokens {
            assert!(s.remove(&t).is_some());
        }
        assert!(s.is_empty() && s.earliest_deadline().is_none());
        assert_eq!(s.max_live_fence(0), None);
    }

    #[test]
    fn labels_follow_their_holders_through_removals() {
        let mut s = SharedLock::new(None);
        let label = |i: u64| Meta::parse(format!("host-{i}").as_bytes()).unwrap();
        s.insert(holder("first", 50, 100), Some(label(100)));
        assert_eq!(
            s.meta(&tok("first")),
            Some(&label(100)),
            "the first holder's label"
        );
        s.remove(&tok("first"));
        for i in 0..10u64 {
            let meta = (i % 3 == 0).then(|| label(i));
            s.insert(holder(&format!("t{i}"), 100 + i as i64, i + 1), meta);
        }
        assert!(s.labeled());
        for i in [0u64, 4, 5] {
            assert!(s.remove(&tok(&format!("t{i}"))).is_some());
        }
        for i in 0..10u64 {
            let expected = (i % 3 == 0 && ![0, 4, 5].contains(&i)).then(|| label(i));
            let t = tok(&format!("t{i}"));
            assert_eq!(s.meta(&t), expected.as_ref(), "t{i}");
            // One lookup for both gives what the two lookups give.
            let both = s.holder_and_meta(&t).map(|(h, m)| (h.fence(), m.cloned()));
            assert_eq!(
                both,
                s.holder(&t).map(|h| (h.fence(), expected.clone())),
                "t{i}"
            );
        }
        assert!(s.set_meta(&tok("t1"), Some(label(1))));
        assert_eq!(s.meta(&tok("t1")), Some(&label(1)));
        for i in [1u64, 3, 6, 9] {
            assert!(s.set_meta(&tok(&format!("t{i}")), None));
        }
        s.remove(&tok("t2"));
        assert!(!s.labeled());
        assert!(s.labels.is_none(), "no cost once nobody is labeled");
        assert!(!s.set_meta(&tok("gone"), None));
        let fences: Vec<u64> = s.entries().map(|(h, _)| h.fence()).collect();
        assert_eq!(fences, vec![2, 4, 7, 8, 9, 10]);
    }
}
