//! The bookkeeping of LOCK.ACQUIRE ... BLOCK as a state machine: the module tells it what
//! happened (a client waits, a waiter is granted, a reply was delivered or dropped, a timer
//! fired, a key went away, the owner of a grant showed up) and it answers what to do (which
//! waiter to grant or answer, which timer to stop or start, whether deferred work must be
//! scheduled). It never calls the server; the module runs what it answers.
//!
//! The rules it keeps:
//! - waiters are granted in the order they queued (per lock), and each leaves the queue once:
//!   granted, timed out, gone, or failed with an error;
//! - a grant whose reply was never delivered is taken back, unless its owner showed meanwhile
//!   (a retry or a renewal with its token) or the lock changed hands since;
//! - a lock with waiters has one timer at its (soonest) holder's deadline, and so has a shared
//!   lock of several holders, whose holders leave at their own deadlines; none otherwise;
//! - work that must not run inside the server's current operation (serving waiters after a
//!   DEL or a flush, taking grants back, notifying expiries) waits in `Pending` for one runner.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::bindings::Orphan;
use crate::queue::{HoldOptions, LockId, Queues, Waiter};
use crate::token::Token;
use crate::value::Want;

/// The server's name for a timer.
pub type TimerId = u64;

/// A grant handed to the server whose reply has not been delivered yet.
#[derive(Debug)]
struct InFlight {
    token: Token,
    fence: u64,
    /// The owner retried or renewed meanwhile: it has the lock whatever became of the reply.
    seen: bool,
}

/// A grant whose client went away before its reply: free it unless it changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoke {
    pub lock: LockId,
    pub token: Token,
    pub fence: u64,
}

/// Deferred work, taken out whole by the runner.
#[derive(Debug, Default)]
pub struct Pending {
    /// Locks to be looked at: expired shared holders leave, and the first waiters are granted
    /// if the lock has room.
    pub serve: HashSet<LockId>,
    /// Grants to take back.
    pub revoke: Vec<Revoke>,
    /// Locks the server removed or replaced after their deadline: to be notified as expired.
    pub expired: Vec<LockId>,
    /// Ephemeral holds whose connection closed: to be ended (whatever their owner does
    /// meanwhile from another connection, unlike a grant to take back).
    pub orphans: Vec<Orphan>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.serve.is_empty()
            && self.revoke.is_empty()
            && self.expired.is_empty()
            && self.orphans.is_empty()
    }
}

/// What to do with a lock's deadline timer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TimerChange {
    /// The timer to stop.
    pub stop: Option<TimerId>,
    /// Start one at this Unix time (ms), and report it with `deadline_armed`.
    pub start_at: Option<i64>,
}

/// A waiter that left its queue without a grant.
#[derive(Debug, PartialEq, Eq)]
pub struct Left<H> {
    pub lock: LockId,
    pub waiter: Waiter<H>,
    /// The lock's deadline timer, to stop: nobody waits for the lock any more.
    pub stop_deadline: Option<TimerId>,
    /// It was first in the queue, and others wait: the new first may fit where it did not
    /// (a reader behind a writer that gave up); the runner is to be scheduled.
    pub serve: bool,
}

#[derive(Debug)]
pub struct HandOff<H> {
    queues: Queues<H>,
    next_serial: u64,
    /// Per lock, every grant whose reply the server has not freed yet (usually one; more when
    /// a lock changed hands again before an earlier reply was freed).
    in_flight: HashMap<LockId, Vec<InFlight>>,
    /// The BLOCK timeout timer of each waiter that has one, by serial.
    timeouts: HashMap<u64, TimerId>,
    /// Per lock with waiters or expiring holders: the timer at its soonest holder deadline,
    /// that deadline, and whether holders expire first (the timer stays without waiters).
    deadlines: HashMap<LockId, (TimerId, i64, bool)>,
    pending: Pending,
    /// A runner is scheduled for `pending`.
    armed: bool,
}

impl<H: Copy + Eq + Hash> Default for HandOff<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Copy + Eq + Hash> HandOff<H> {
    pub fn new() -> Self {
        Self {
            queues: Queues::new(),
            next_serial: 0,
            in_flight: HashMap::new(),
            timeouts: HashMap::new(),
            deadlines: HashMap::new(),
            pending: Pending::default(),
            armed: false,
        }
    }

    // ---- queries ------------------------------------------------------------------------

    /// Whether any client waits for any lock: the commands' fast path skips the rest if not.
    pub fn anyone_waiting(&self) -> bool {
        !self.queues.is_empty()
    }

    pub fn has_waiters(&self, lock: &LockId) -> bool {
        self.queues.has_waiters(lock)
    }

    pub fn waiters(&self, lock: &LockId) -> usize {
        self.queues.len(lock)
    }

    /// The first waiter of `lock`, still queued: the one to grant when the lock has room.
    pub fn front(&self, lock: &LockId) -> Option<&Waiter<H>> {
        self.queues.front(lock)
    }

    /// See `Queues::shared_limit`.
    pub fn shared_limit(&self, lock: &LockId) -> Option<Option<u32>> {
        self.queues.shared_limit(lock)
    }

    pub fn total_waiters(&self) -> usize {
        self.queues.total()
    }

    /// Whether some grant's delivery is still open (in flight, or to be taken back).
    pub fn unsettled(&self) -> bool {
        !self.in_flight.is_empty() || !self.pending.revoke.is_empty()
    }

    /// Whether `handle` is queued as waiter `serial`.
    pub fn is_waiting(&self, handle: H, serial: u64) -> bool {
        self.queues.is_waiting(handle, serial)
    }

    /// Nothing is kept any more: no waiter, grant in flight, timer or deferred work.
    pub fn is_clear(&self) -> bool {
        self.queues.is_empty()
            && self.in_flight.is_empty()
            && self.timeouts.is_empty()
            && self.deadlines.is_empty()
            && self.pending.is_empty()
    }

    // ---- waiting ------------------------------------------------------------------------

    /// A client waits for `lock`, to be granted `want` with `token` for `ttl_ms`: it joins the
    /// back of the queue. Its serial tells it from a later waiter with the same handle.
    pub fn wait(
        &mut self,
        lock: LockId,
        handle: H,
        token: Token,
        ttl_ms: i64,
        want: Want,
        options: HoldOptions,
    ) -> u64 {
        self.next_serial += 1;
        let serial = self.next_serial;
        let waiter = Waiter {
            handle,
            serial,
            token,
            ttl_ms,
            want,
            options,
        };
        self.queues.push(lock, waiter);
        serial
    }

    /// Waiter `serial` has a BLOCK timeout timer.
    pub fn timeout_armed(&mut self, serial: u64, timer: TimerId) {
        self.timeouts.insert(serial, timer);
    }

    /// Waiter `serial`'s timeout timer fired: it is no longer one to stop.
    pub fn timeout_fired(&mut self, serial: u64) {
        self.timeouts.remove(&serial);
    }

    /// Waiter `serial` is being answered (granted, timed out, failed or gone): its timeout
    /// timer, if it still runs, is to be stopped.
    pub fn answered(&mut self, serial: u64) -> Option<TimerId> {
        self.timeouts.remove(&serial)
    }

    /// Waiter `serial`'s timeout has come: it leaves the queue, if it still waits.
    pub fn time_out(&mut self, handle: H, serial: u64) -> Option<Left<H>> {
        let (lock, waiter) = self.queues.remove_serial(handle, serial)?;
        Some(self.left(lock, waiter))
    }

    /// The client of `handle` leaves (disconnected, CLIENT UNBLOCK, the server demoted), if
    /// it still waits. A handle no longer queued was granted; its reply decides in
    /// `reply_freed`.
    pub fn leave(&mut self, handle: H) -> Option<Left<H>> {
        let (lock, waiter) = self.queues.remove(handle)?;
        Some(self.left(lock, waiter))
    }

    fn left(&mut self, lock: LockId, waiter: Waiter<H>) -> Left<H> {
        let stop_deadline = self.stop_deadline_unless_waited(&lock);
        let was_first = self
            .queues
            .front(&lock)
            .is_some_and(|next| next.serial > waiter.serial);
        let serve = was_first && {
            self.pending.serve.insert(lock.clone());
            self.schedule()
        };
        Left {
            lock,
            waiter,
            stop_deadline,
            serve,
        }
    }

    /// Every waiter of `lock` leaves, in order (the key's slot moved, the key holds another
    /// type now): each is to be answered with an error.
    pub fn take_all(&mut self, lock: &LockId) -> (Vec<Waiter<H>>, Option<TimerId>) {
        let waiters = self.queues.take_all(lock);
        (waiters, self.disarm(lock))
    }

    // ---- granting -----------------------------------------------------------------------

    /// The first waiter of `lock`, out of the queue, to be granted now (or answered with the
    /// error that kept it from being granted). The caller checked with `front` that the lock
    /// has room for it.
    pub fn next_waiter(&mut self, lock: &LockId) -> Option<Waiter<H>> {
        self.queues.pop_front(lock)
    }

    /// `lock` was stored for a waiter with `token` and `fence`, and its reply handed to the
    /// server: in flight until the server frees that reply.
    pub fn granted(&mut self, lock: LockId, token: Token, fence: u64) {
        self.in_flight.entry(lock).or_default().push(InFlight {
            token,
            fence,
            seen: false,
        });
    }

    /// The server freed the reply of the grant (`lock`, `token`, `fence`); `delivered` says
    /// whether the client got it. Undelivered, and its owner not seen, the grant is to be taken
    /// back. True when the runner must be scheduled.
    pub fn reply_freed(&mut self, lock: LockId, token: Token, fence: u64, delivered: bool) -> bool {
        let seen = self.in_flight.get_mut(&lock).is_some_and(|grants| {
            let at = grants.iter().position(|grant| grant.fence == fence);
            at.is_some_and(|at| grants.swap_remove(at).seen)
        });
        if self.in_flight.get(&lock).is_some_and(Vec::is_empty) {
            self.in_flight.remove(&lock);
        }
        if delivered || seen {
            return false;
        }
        self.pending.revoke.push(Revoke { lock, token, fence });
        self.schedule()
    }

    /// A connection closed holding `orphans` (see `Bindings::closed`): they are to be ended.
    /// True when the runner must be scheduled.
    pub fn orphaned(&mut self, orphans: Vec<Orphan>) -> bool {
        if orphans.is_empty() {
            return false;
        }
        self.pending.orphans.extend(orphans);
        self.schedule()
    }

    /// The owner of `lock` showed it has its grant (a retry or a renewal with `token`): a
    /// grant whose reply seemed lost must not be taken back from it.
    pub fn owner_seen(&mut self, lock: &LockId, token: &Token) {
        for grant in self.in_flight.get_mut(lock).into_iter().flatten() {
            grant.seen |= grant.token == *token;
        }
        self.pending
            .revoke
            .retain(|r| !(r.lock == *lock && r.token == *token));
    }

    // ---- the deadline timers ------------------------------------------------------------

    /// The soonest holder deadline of `lock` is now `deadline` (a grant, renewal or retry, a
    /// waiter queued behind it), and `holders_expire` says whether some holder leaves before
    /// the key expires (a shared lock of several holders): its timer follows while anyone
    /// waits or holders expire, and goes otherwise.
    pub fn deadline_moved(
        &mut self,
        lock: &LockId,
        deadline: i64,
        holders_expire: bool,
    ) -> TimerChange {
        if !self.has_waiters(lock) && !holders_expire {
            return TimerChange {
                stop: self.disarm(lock),
                start_at: None,
            };
        }
        if let Some((_, at, expire)) = self.deadlines.get_mut(lock) {
            if *at == deadline {
                *expire = holders_expire;
                return TimerChange::default();
            }
        }
        TimerChange {
            stop: self.disarm(lock),
            start_at: Some(deadline),
        }
    }

    /// A timer was started at `at` for `lock`, as `deadline_moved` asked (with
    /// `holders_expire` as given there).
    pub fn deadline_armed(&mut self, lock: LockId, timer: TimerId, at: i64, holders_expire: bool) {
        self.deadlines.insert(lock, (timer, at, holders_expire));
    }

    /// The lock's deadline timer goes (nobody waits, no holder expires first); the timer to
    /// stop.
    pub fn disarm(&mut self, lock: &LockId) -> Option<TimerId> {
        self.deadlines.remove(lock).map(|(timer, ..)| timer)
    }

    fn stop_deadline_unless_waited(&mut self, lock: &LockId) -> Option<TimerId> {
        let kept = self.deadlines.get(lock).is_some_and(|&(.., expire)| expire);
        if self.has_waiters(lock) || kept {
            None
        } else {
            self.disarm(lock)
        }
    }

    /// The deadline timer of `lock` fired: the lock is to be served now (the runner is to
    /// run at once, not scheduled).
    pub fn deadline_fired(&mut self, lock: LockId) {
        self.deadlines.remove(&lock);
        self.pending.serve.insert(lock);
    }

    // ---- deferred work ------------------------------------------------------------------

    /// A lock key left its database, with `expired` holders whose deadlines had passed in this
    /// server's care (0: not an expiry; a shared lock's last holders may be several): one
    /// expiry notice each. True when the runner must be scheduled.
    pub fn key_removed(&mut self, lock: LockId, expired: usize) -> bool {
        let waited = self.has_waiters(&lock);
        if !waited && expired == 0 {
            return false;
        }
        self.pending
            .expired
            .extend(std::iter::repeat_n(lock.clone(), expired));
        if waited {
            self.pending.serve.insert(lock);
        }
        self.schedule()
    }

    /// Every lock with waiters in `db` (None: every database) is to be looked at again (a
    /// flush, SWAPDB). True when the runner must be scheduled.
    pub fn serve_later(&mut self, db: Option<i32>) -> bool {
        let locks = self.queues.locks_in(db);
        if locks.is_empty() {
            return false;
        }
        self.pending.serve.extend(locks);
        self.schedule()
    }

    /// `locks` are to be looked at (loaded or restored shared locks whose holders must leave
    /// at their deadlines). True when the runner must be scheduled.
    pub fn look_again(&mut self, locks: impl IntoIterator<Item = LockId>) -> bool {
        let before = self.pending.serve.len();
        self.pending.serve.extend(locks);
        self.pending.serve.len() > before && self.schedule()
    }

    /// True the first time: the runner is to be scheduled; later calls find it scheduled.
    fn schedule(&mut self) -> bool {
        !std::mem::replace(&mut self.armed, true)
    }

    /// The scheduled runner fired.
    pub fn runner_fired(&mut self) {
        self.armed = false;
    }

    /// The runner cannot work now (clients are paused): true when it must be scheduled again.
    pub fn runner_postponed(&mut self) -> bool {
        self.schedule()
    }

    /// Everything deferred, for the runner to do now.
    pub fn take_pending(&mut self) -> Pending {
        self.armed = false;
        std::mem::take(&mut self.pending)
    }

    /// Whether expired locks wait to be notified (in any database).
    pub fn expired_pending(&self) -> bool {
        !self.pending.expired.is_empty()
    }

    /// Expired locks of database `db` not yet notified, taken out to be notified now (before
    /// any other lock event, so watchers see them in order).
    pub fn take_expired(&mut self, db: i32) -> Vec<LockId> {
        if self.pending.expired.is_empty() {
            return Vec::new();
        }
        let (here, elsewhere) = std::mem::take(&mut self.pending.expired)
            .into_iter()
            .partition(|lock| lock.db == db);
        self.pending.expired = elsewhere;
        here
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> LockId {
        LockId {
            db: 0,
            key: key.as_bytes().to_vec(),
        }
    }

    /// Client 1 waits for "k" with token "a": its serial.
    fn wait_a(h: &mut HandOff<u32>) -> u64 {
        h.wait(
            id("k"),
            1,
            tok("a"),
            100,
            Want::Exclusive,
            HoldOptions::default(),
        )
    }

    fn tok(s: &str) -> Token {
        Token::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn waiters_are_granted_in_order_and_their_grants_tracked() {
        let mut h = HandOff::<u32>::new();
        let a = wait_a(&mut h);
        let b = h.wait(
            id("k"),
            2,
            tok("b"),
            100,
            Want::Exclusive,
            HoldOptions::default(),
        );
        assert!(a < b);
        assert_eq!(h.waiters(&id("k")), 2);
        let first = h.next_waiter(&id("k")).unwrap();
        assert_eq!((first.handle, first.serial), (1, a));
        h.granted(id("k"), tok("a"), 7);
        assert!(h.unsettled());
        assert!(!h.reply_freed(id("k"), tok("a"), 7, true), "delivered");
        assert!(!h.unsettled());
    }

    #[test]
    fn an_undelivered_grant_is_taken_back_unless_its_owner_showed() {
        let mut h = HandOff::<u32>::new();
        h.granted(id("k"), tok("a"), 7);
        assert!(h.reply_freed(id("k"), tok("a"), 7, false));
        let pending = h.take_pending();
        assert_eq!(pending.revoke.len(), 1);
        assert!(h.is_clear());

        h.granted(id("k"), tok("a"), 8);
        h.owner_seen(&id("k"), &tok("a"));
        assert!(!h.reply_freed(id("k"), tok("a"), 8, false), "seen");
        assert!(h.take_pending().revoke.is_empty());

        // A seen grant stays seen when the lock changes hands before its reply is freed.
        h.granted(id("k"), tok("a"), 10);
        h.owner_seen(&id("k"), &tok("a"));
        h.granted(id("k"), tok("b"), 11);
        assert!(!h.reply_freed(id("k"), tok("a"), 10, false), "seen");
        assert!(h.reply_freed(id("k"), tok("b"), 11, false), "not seen");
        assert_eq!(h.take_pending().revoke.len(), 1);
        assert!(!h.unsettled());

        // Seen after the reply was freed: the queued take-back is cancelled.
        h.granted(id("k"), tok("a"), 9);
        assert!(h.reply_freed(id("k"), tok("a"), 9, false));
        h.owner_seen(&id("k"), &tok("b"));
        h.owner_seen(&id("k"), &tok("a"));
        assert!(h.take_pending().revoke.is_empty());
    }

    #[test]
    fn the_deadline_timer_follows_the_holder_while_anyone_waits() {
        let mut h = HandOff::<u32>::new();
        assert_eq!(
            h.deadline_moved(&id("k"), 50, false),
            TimerChange::default()
        );
        wait_a(&mut h);
        let change = h.deadline_moved(&id("k"), 50, false);
        assert_eq!(change.start_at, Some(50));
        h.deadline_armed(id("k"), 11, 50, false);
        assert_eq!(
            h.deadline_moved(&id("k"), 50, false),
            TimerChange::default()
        );
        let moved = h.deadline_moved(&id("k"), 80, false);
        assert_eq!((moved.stop, moved.start_at), (Some(11), Some(80)));
        h.deadline_armed(id("k"), 12, 80, false);
        let left = h.leave(1).unwrap();
        assert_eq!(left.stop_deadline, Some(12), "nobody waits any more");
        assert!(h.is_clear());
    }

    #[test]
    fn holders_that_expire_first_keep_the_timer_without_waiters() {
        let mut h = HandOff::<u32>::new();
        let change = h.deadline_moved(&id("k"), 50, true);
        assert_eq!(change.start_at, Some(50));
        h.deadline_armed(id("k"), 11, 50, true);
        h.wait(
            id("k"),
            1,
            tok("a"),
            100,
            Want::Shared { limit: None },
            HoldOptions::default(),
        );
        assert_eq!(h.shared_limit(&id("k")), Some(None));
        assert_eq!(h.front(&id("k")).map(|w| w.handle), Some(1));
        let left = h.leave(1).unwrap();
        assert_eq!(left.stop_deadline, None, "holders still expire");
        let change = h.deadline_moved(&id("k"), 50, false);
        assert_eq!(change.stop, Some(11), "one holder left, nobody waits");
        assert!(h.is_clear());
    }

    #[test]
    fn a_timeout_only_ends_the_waiter_it_was_for() {
        let mut h = HandOff::<u32>::new();
        let first = wait_a(&mut h);
        h.timeout_armed(first, 21);
        assert_eq!(h.answered(first), Some(21));
        h.leave(1).unwrap();
        let second = wait_a(&mut h);
        assert_eq!(h.time_out(1, first), None, "the handle was reused");
        assert_eq!(h.time_out(1, second).map(|l| l.waiter.serial), Some(second));
        assert!(h.leave(1).is_none());
    }

    #[test]
    fn removed_keys_and_flushes_defer_serving_and_expiry_notices() {
        let mut h = HandOff::<u32>::new();
        assert!(!h.key_removed(id("k"), 0), "nobody waits, not expired");
        assert!(h.key_removed(id("k"), 1));
        assert!(
            !h.key_removed(id("j"), 1),
            "the runner is already scheduled"
        );
        assert_eq!(h.take_expired(1), vec![]);
        assert_eq!(h.take_expired(0), vec![id("k"), id("j")]);
        wait_a(&mut h);
        assert!(!h.serve_later(Some(3)));
        assert!(!h.serve_later(None), "still scheduled");
        h.runner_fired();
        assert!(h.serve_later(Some(0)));
        let pending = h.take_pending();
        assert!(pending.serve.contains(&id("k")));
        assert!(
            h.runner_postponed(),
            "taking the work unschedules the runner"
        );
        assert!(!h.runner_postponed(), "one retry at a time");
    }
}
