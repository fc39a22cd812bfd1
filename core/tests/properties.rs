//! Property tests of the lock core: the wait queues against a model, the hand-off state machine
//! driven by a simulated module (the glue of `src/server/runner.rs` and `blocked.rs`), the
//! encodings, request parsing against a reference, and the fence clock.
//!
//! Run with `cargo test --test properties`.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::collection::vec;
use proptest::prelude::*;

use lock_core::codec::{
    decode_clock, decode_value, encode_clock, encode_value, Field, Fields, CURRENT_VERSION,
};
use lock_core::compact::INLINE_TEXT_MAX;
use lock_core::effect::{parse_apply, parse_clock, Effect, HoldText};
use lock_core::fence::{within_reach, FenceClock, Observed, MAX_FENCE};
use lock_core::handoff::{HandOff, Left, Revoke, TimerChange, TimerId};
use lock_core::lock::Lock;
use lock_core::queue::{LockId, Queues, Waiter};
use lock_core::request::{parse_i64, parse_plain_acquire, AcquireRequest, RenewRequest};
use lock_core::token::{Token, TokenRef};
use lock_core::value::{Held, Value, Want};
use lock_core::{LockError, LockResult};
use support::{config, spelled, token};

/// An exclusive lock as the codec reads it.
fn decode_lock(version: i32, from: &mut Fields) -> LockResult<Lock> {
    match decode_value(version, from)? {
        Value::Exclusive(lock) => Ok(*lock),
        other => panic!("not an unlabeled exclusive lock: {other:?}"),
    }
}

fn encode_lock(lock: &Lock, to: &mut Fields) {
    let mut copy = Lock::new(
        &Token::parse(&spelled(lock)).unwrap(),
        lock.deadline_ms,
        lock.fence(),
    )
    .unwrap();
    encode_value(&Held::Exclusive(&mut copy, None), to);
}

// =============================================================================================
// 1. The wait queues against a model
// =============================================================================================

const QUEUE_KEYS: [&[u8]; 3] = [b"a", b"b", b"\x00k"];
/// Locks 0..6: databases 0 and 1, three keys each (the same key names in both databases).
const QUEUE_LOCKS: usize = 6;
const QUEUE_HANDLES: u32 = 6;

fn queue_lock(i: usize) -> LockId {
    LockId {
        db: (i / QUEUE_KEYS.len()) as i32,
        key: QUEUE_KEYS[i % QUEUE_KEYS.len()].to_vec(),
    }
}

/// Which serial an operation names.
#[derive(Debug, Clone)]
enum SerialPick {
    /// The handle's current serial if it waits (else its latest one, if any).
    Current,
    /// Any serial handed out so far (often stale, or another handle's).
    Issued(usize),
    /// A serial never handed out.
    Never(u64),
}

#[derive(Debug, Clone)]
enum QueueOp {
    Push { lock: usize, handle: u32, ttl: i64 },
    PopFront { lock: usize },
    Remove { handle: u32 },
    RemoveSerial { handle: u32, pick: SerialPick },
    TakeAll { lock: usize },
    IsWaiting { handle: u32, pick: SerialPick },
}

fn serial_pick() -> impl Strategy<Value = SerialPick> {
    prop_oneof![
        3 => Just(SerialPick::Current),
        3 => any::<usize>().prop_map(SerialPick::Issued),
        1 => (0u64..1000).prop_map(SerialPick::Never),
    ]
}

fn queue_op() -> impl Strategy<Value = QueueOp> {
    let lock = 0..QUEUE_LOCKS;
    let handle = 0..QUEUE_HANDLES;
    prop_oneof![
        5 => (lock.clone(), handle.clone(), 1i64..10_000)
            .prop_map(|(lock, handle, ttl)| QueueOp::Push { lock, handle, ttl }),
        2 => lock.clone().prop_map(|lock| QueueOp::PopFront { lock }),
        2 => handle.clone().prop_map(|handle| QueueOp::Remove { handle }),
        3 => (handle.clone(), serial_pick())
            .prop_map(|(handle, pick)| QueueOp::RemoveSerial { handle, pick }),
        1 => lock.prop_map(|lock| QueueOp::TakeAll { lock }),
        2 => (handle, serial_pick()).prop_map(|(handle, pick)| QueueOp::IsWaiting { handle, pick }),
    ]
}

/// The queues as plain FIFOs of (handle, serial), and what each serial was pushed with.
#[derive(Default)]
struct QueueModel {
    queues: HashMap<LockId, VecDeque<(u32, u64)>>,
    pushed: HashMap<u64, (u32, Token, i64)>,
    issued: Vec<u64>,
    next_serial: u64,
}

impl QueueModel {
    fn waiting_on(&self, handle: u32) -> Option<(LockId, u64)> {
        self.queues.iter().find_map(|(lock, q)| {
            q.iter()
                .find(|(h, _)| *h == handle)
                .map(|&(_, serial)| (lock.clone(), serial))
        })
    }

    fn waiter(&self, serial: u64) -> Waiter<u32> {
        let (handle, token, ttl_ms) = self.pushed[&serial].clone();
        Waiter {
            handle,
            serial,
            token,
            ttl_ms,
            want: Want::Exclusive,
            options: Default::default(),
        }
    }

    fn take_out(&mut self, lock: &LockId, serial: u64) {
        let q = self.queues.get_mut(lock).expect("a queue with that waiter");
        q.retain(|&(_, s)| s != serial);
        if q.is_empty() {
            self.queues.remove(lock);
        }
    }

    fn pick(&self, handle: u32, pick: &SerialPick) -> u64 {
        match pick {
            SerialPick::Current => self.waiting_on(handle).map_or_else(
                || {
                    self.issued
                        .iter()
                        .rev()
                        .find(|s| self.pushed[s].0 == handle)
                        .copied()
                        .unwrap_or(0)
                },
                |(_, serial)| serial,
            ),
            SerialPick::Issued(i) if !self.issued.is_empty() => self.issued[i % self.issued.len()],
            SerialPick::Issued(_) => 0,
            SerialPick::Never(k) => self.next_serial + 1_000 + k,
        }
    }
}

fn sorted_locks(mut locks: Vec<LockId>) -> Vec<LockId> {
    locks.sort_by(|a, b| (a.db, &a.key).cmp(&(b.db, &b.key)));
    locks
}

fn check_queues(q: &Queues<u32>, m: &QueueModel) {
    let mut total = 0;
    for i in 0..QUEUE_LOCKS {
        let lock = queue_lock(i);
        let len = m.queues.get(&lock).map_or(0, VecDeque::len);
        total += len;
        assert_eq!(q.len(&lock), len, "len of {lock:?}");
        assert_eq!(q.has_waiters(&lock), len > 0, "has_waiters of {lock:?}");
    }
    assert_eq!(q.total(), total, "total");
    assert_eq!(q.is_empty(), total == 0, "is_empty");
    let with_waiters: Vec<LockId> = m.queues.keys().cloned().collect();
    assert_eq!(
        sorted_locks(q.locks_in(None)),
        sorted_locks(with_waiters.clone()),
        "locks_in(None)"
    );
    for db in 0..3 {
        let here = with_waiters
            .iter()
            .filter(|l| l.db == db)
            .cloned()
            .collect();
        assert_eq!(
            sorted_locks(q.locks_in(Some(db))),
            sorted_locks(here),
            "locks_in(Some({db}))"
        );
    }
    for (&serial, &(handle, _, _)) in &m.pushed {
        let waits = m.waiting_on(handle).is_some_and(|(_, s)| s == serial);
        assert_eq!(
            q.is_waiting(handle, serial),
            waits,
            "is_waiting({handle}, {serial})"
        );
    }
}

fn run_queue_ops(ops: &[QueueOp]) {
    let mut q = Queues::<u32>::new();
    let mut m = QueueModel::default();
    for op in ops {
        match op {
            &QueueOp::Push { lock, handle, ttl } => {
                // The server never queues a blocked client twice.
                if m.waiting_on(handle).is_some() {
                    continue;
                }
                m.next_serial += 1;
                let serial = m.next_serial;
                let tok = token(format!("t{serial}").as_bytes());
                m.pushed.insert(serial, (handle, tok.clone(), ttl));
                m.issued.push(serial);
                let lock = queue_lock(lock);
                m.queues
                    .entry(lock.clone())
                    .or_default()
                    .push_back((handle, serial));
                q.push(
                    lock,
                    Waiter {
                        handle,
                        serial,
                        token: tok,
                        ttl_ms: ttl,
                        want: Want::Exclusive,
                        options: Default::default(),
                    },
                );
            }
            &QueueOp::PopFront { lock } => {
                let lock = queue_lock(lock);
                let want = m.queues.get(&lock).and_then(|q| q.front().copied());
                let got = q.pop_front(&lock);
                assert_eq!(got, want.map(|(_, serial)| m.waiter(serial)), "pop_front");
                if let Some((_, serial)) = want {
                    m.take_out(&lock, serial);
                }
            }
            &QueueOp::Remove { handle } => {
                let want = m.waiting_on(handle);
                let got = q.remove(handle);
                assert_eq!(
                    got,
                    want.clone().map(|(lock, serial)| (lock, m.waiter(serial))),
                    "remove({handle})"
                );
                if let Some((lock, serial)) = want {
                    m.take_out(&lock, serial);
                }
            }
            QueueOp::RemoveSerial { handle, pick } => {
                let handle = *handle;
                let serial = m.pick(handle, pick);
                let want = m.waiting_on(handle).filter(|(_, s)| *s == serial);
                let got = q.remove_serial(handle, serial);
                assert_eq!(
                    got,
                    want.clone().map(|(lock, serial)| (lock, m.waiter(serial))),
                    "remove_serial({handle}, {serial})"
                );
                if let Some((lock, serial)) = want {
                    m.take_out(&lock, serial);
                }
            }
            &QueueOp::TakeAll { lock } => {
                let lock = queue_lock(lock);
                let want: Vec<Waiter<u32>> = m
                    .queues
                    .remove(&lock)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, serial)| m.waiter(serial))
                    .collect();
                assert_eq!(q.take_all(&lock), want, "take_all({lock:?})");
            }
            QueueOp::IsWaiting { handle, pick } => {
                let serial = m.pick(*handle, pick);
                let want = m.waiting_on(*handle).is_some_and(|(_, s)| s == serial);
                assert_eq!(q.is_waiting(*handle, serial), want, "is_waiting");
            }
        }
        check_queues(&q, &m);
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Random pushes, pops and removals over six locks agree with plain FIFOs after every step.
    #[test]
    fn queues_agree_with_a_model(ops in vec(queue_op(), 0..60)) {
        run_queue_ops(&ops);
    }
}

// =============================================================================================
// 2. The hand-off state machine, driven by a simulated module
// =============================================================================================

const CLIENTS: u32 = 6;
const LOCKS: usize = 3;

fn lock_of(i: usize) -> LockId {
    let (db, key): (i32, &[u8]) = match i {
        0 => (0, b"a"),
        1 => (0, b"b"),
        _ => (1, b"a"),
    };
    LockId {
        db,
        key: key.to_vec(),
    }
}

fn index_of(id: &LockId) -> usize {
    (0..LOCKS)
        .find(|&i| lock_of(i) == *id)
        .unwrap_or_else(|| panic!("a lock the simulation never used: {id:?}"))
}

/// What happens to the server, as the module sees it. A `client` of Wait, Deliver, DropReply,
/// Leave and TimeOut picks (cyclically) among the clients in the state the event needs.
#[derive(Debug, Clone)]
enum Ev {
    /// LOCK.ACQUIRE ... BLOCK by an idle client: granted at once if the lock is free, else it
    /// waits (with a BLOCK timeout timer when `timeout`).
    Wait {
        client: u32,
        lock: usize,
        timeout: bool,
        ttl: i64,
        errs: u8,
    },
    /// The holder releases the lock: it goes to the first waiter that can take it.
    Free { lock: usize, errs: u8 },
    /// A granted client's reply reached it.
    Deliver { client: u32 },
    /// A granted client's connection closed before its reply was delivered.
    DropReply { client: u32 },
    /// A client disconnects or is unblocked (CLIENT UNBLOCK); `any`: not only a waiting one.
    Leave { client: u32, any: bool },
    /// A waiter's BLOCK timeout timer fires (`early`: a long timeout re-armed in steps).
    TimeOut { client: u32, early: bool },
    /// `time_out` for a serial that is not (any more) the client's.
    StaleTimeOut { client: u32, pick: usize },
    /// The holder retries or renews with its token, moving its deadline.
    OwnerSeen { lock: usize, ttl: i64 },
    /// The holder's deadline passes (the key stays until the server removes it).
    Expire { lock: usize },
    /// The scheduled runner fires (while clients are paused when `paused`).
    RunnerFires { paused: bool, errs: u8 },
    /// A lock's deadline timer fires; `expired`: the holder did not renew.
    DeadlineFires {
        lock: usize,
        expired: bool,
        paused: bool,
        errs: u8,
    },
    /// The key goes: deleted or expired (`how` 0), its slot moved or another type stored
    /// over it (1: every waiter answered with an error), or both (2).
    KeyGone { lock: usize, expired: bool, how: u8 },
    /// FLUSHDB / FLUSHALL (`flush`) or SWAPDB: every lock with waiters there is looked at again.
    ServeLater { db: Option<i32>, flush: bool },
    /// Expiry notices of a database are taken out.
    TakeExpired { db: i32 },
}

fn errs() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(0u8), 1 => 1u8..3]
}

fn ev() -> impl Strategy<Value = Ev> {
    let client = 0..CLIENTS;
    let lock = 0..LOCKS;
    prop_oneof![
        10 => (client.clone(), lock.clone(), any::<bool>(), 1i64..50, errs()).prop_map(
            |(client, lock, timeout, ttl, errs)| Ev::Wait { client, lock, timeout, ttl, errs }
        ),
        4 => (lock.clone(), errs()).prop_map(|(lock, errs)| Ev::Free { lock, errs }),
        3 => client.clone().prop_map(|client| Ev::Deliver { client }),
        3 => client.clone().prop_map(|client| Ev::DropReply { client }),
        2 => (client.clone(), prop::bool::weighted(0.2))
            .prop_map(|(client, any)| Ev::Leave { client, any }),
        2 => (client.clone(), any::<bool>())
            .prop_map(|(client, early)| Ev::TimeOut { client, early }),
        1 => (client, any::<usize>())
            .prop_map(|(client, pick)| Ev::StaleTimeOut { client, pick }),
        3 => (lock.clone(), 1i64..50).prop_map(|(lock, ttl)| Ev::OwnerSeen { lock, ttl }),
        1 => lock.clone().prop_map(|lock| Ev::Expire { lock }),
        4 => (any::<bool>(), errs()).prop_map(|(p, errs)| Ev::RunnerFires {
            paused: p && errs == 0,
            errs
        }),
        2 => (lock.clone(), any::<bool>(), prop::bool::weighted(0.2), errs()).prop_map(
            |(lock, expired, paused, errs)| Ev::DeadlineFires { lock, expired, paused, errs }
        ),
        2 => (lock, any::<bool>(), 0u8..3)
            .prop_map(|(lock, expired, how)| Ev::KeyGone { lock, expired, how }),
        1 => (prop_oneof![Just(None), (0i32..2).prop_map(Some)], any::<bool>())
            .prop_map(|(db, flush)| Ev::ServeLater { db, flush }),
        1 => (0i32..2).prop_map(|db| Ev::TakeExpired { db }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Idle,
    Waiting(u64),
    /// Granted, its reply not freed yet: an index into `Sim::grants`.
    Granted(usize),
}

#[derive(Debug, Clone)]
struct WaitRec {
    client: u32,
    lock: usize,
    token: Token,
    ttl: i64,
}

#[derive(Debug, Clone)]
struct Holder {
    token: Token,
    fence: u64,
    deadline: i64,
    /// The hand-off grant it came from (None: granted at once by ACQUIRE).
    grant: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyState {
    Open,
    Delivered,
    Dropped,
}

#[derive(Debug, Clone)]
struct GrantRec {
    lock: usize,
    token: Token,
    fence: u64,
    reply: ReplyState,
    /// `owner_seen` was called for it while it held the lock.
    seen: bool,
    revoked: bool,
}

/// The module around the machine, and a model of what the machine must keep.
struct Sim {
    h: HandOff<u32>,
    now: i64,
    next_fence: u64,
    next_timer: TimerId,
    next_token: u64,
    clients: Vec<ClientState>,
    /// Every serial handed out by `wait`, in order, and what it waits with.
    issued: Vec<u64>,
    waits: HashMap<u64, WaitRec>,
    /// Serials that left their queue (by next_waiter, leave, time_out or take_all).
    left: HashSet<u64>,
    /// Per lock: the serials queued, in order.
    queues: Vec<VecDeque<u64>>,
    holders: Vec<Option<Holder>>,
    grants: Vec<GrantRec>,
    grant_by_fence: HashMap<u64, usize>,
    /// Per lock: every grant handed to the server whose reply is not freed (token, fence,
    /// owner seen), as the machine must keep them.
    in_flight: HashMap<usize, Vec<(Token, u64, bool)>>,
    /// Armed BLOCK timeout timers not fired or stopped, by serial.
    timeouts: HashMap<u64, TimerId>,
    /// Armed deadline timers not fired or stopped, by lock.
    deadlines: HashMap<usize, (TimerId, i64)>,
    pending_serve: HashSet<usize>,
    pending_revoke: Vec<(usize, Token, u64)>,
    pending_expired: Vec<usize>,
    /// A runner is scheduled as far as the machine knows.
    armed: bool,
    /// Runner timers started and not fired yet.
    runner_timers: usize,
}

impl Sim {
    fn new() -> Self {
        Self {
            h: HandOff::new(),
            now: 1_000,
            next_fence: 0,
            next_timer: 0,
            next_token: 0,
            clients: vec![ClientState::Idle; CLIENTS as usize],
            issued: Vec::new(),
            waits: HashMap::new(),
            left: HashSet::new(),
            queues: vec![VecDeque::new(); LOCKS],
            holders: vec![None; LOCKS],
            grants: Vec::new(),
            grant_by_fence: HashMap::new(),
            in_flight: HashMap::new(),
            timeouts: HashMap::new(),
            deadlines: HashMap::new(),
            pending_serve: HashSet::new(),
            pending_revoke: Vec::new(),
            pending_expired: Vec::new(),
            armed: false,
            runner_timers: 0,
        }
    }

    fn fresh_fence(&mut self) -> u64 {
        self.next_fence += 1;
        self.next_fence
    }

    fn fresh_timer(&mut self) -> TimerId {
        self.next_timer += 1;
        self.next_timer
    }

    fn fresh_token(&mut self, client: u32) -> Token {
        self.next_token += 1;
        token(format!("c{client}-{}", self.next_token).as_bytes())
    }

    /// The `k`-th client (cyclically) of those `of` accepts, so that events rarely miss.
    fn pick(&self, k: u32, of: impl Fn(ClientState) -> bool) -> Option<u32> {
        let fit: Vec<u32> = (0..CLIENTS)
            .filter(|&c| of(self.clients[c as usize]))
            .collect();
        (!fit.is_empty()).then(|| fit[k as usize % fit.len()])
    }

    fn pending_is_empty(&self) -> bool {
        self.pending_serve.is_empty()
            && self.pending_revoke.is_empty()
            && self.pending_expired.is_empty()
    }

    // ---- the glue ---------------------------------------------------------------------------

    /// A serial leaves its queue: exactly once.
    fn leave_queue(&mut self, serial: u64) -> WaitRec {
        assert!(
            self.left.insert(serial),
            "serial {serial} left its queue a second time"
        );
        self.waits[&serial].clone()
    }

    /// `unblock`: the waiter is answered; its timeout timer, if still armed, is to be stopped.
    fn answer(&mut self, serial: u64) {
        let got = self.h.answered(serial);
        assert_eq!(
            got,
            self.timeouts.remove(&serial),
            "answered({serial}): the timeout timer to stop"
        );
    }

    /// A deadline timer the machine says to stop must be the lock's armed one.
    fn expect_stop(&mut self, lock: usize, stop: Option<TimerId>, what: &str) {
        let want = self.deadlines.remove(&lock).map(|(timer, _)| timer);
        assert_eq!(
            stop, want,
            "{what}: the deadline timer of lock {lock} to stop"
        );
    }

    fn check_left(&mut self, left: Left<u32>, serial: u64, client: u32, what: &str) {
        let rec = self.leave_queue(serial);
        assert_eq!(left.waiter.serial, serial, "{what}");
        assert_eq!(left.waiter.handle, client, "{what}");
        assert_eq!(left.waiter.token, rec.token, "{what}");
        assert_eq!(left.waiter.ttl_ms, rec.ttl, "{what}");
        assert_eq!(left.lock, lock_of(rec.lock), "{what}");
        let queue = &mut self.queues[rec.lock];
        let at = queue
            .iter()
            .position(|&s| s == serial)
            .expect("the model queue holds the waiter");
        queue.remove(at);
        // The first waiter left and others wait: the new first is looked at.
        let was_first = at == 0 && !self.queues[rec.lock].is_empty();
        if was_first {
            self.pending_serve.insert(rec.lock);
        }
        self.scheduled(was_first, left.serve, what);
        if self.queues[rec.lock].is_empty() {
            self.expect_stop(rec.lock, left.stop_deadline, what);
        } else {
            assert_eq!(left.stop_deadline, None, "{what}: others still wait");
        }
    }

    /// `runner::deadline_moved`.
    fn deadline_moved(&mut self, lock: usize, deadline: i64) {
        let id = lock_of(lock);
        let change = self.h.deadline_moved(&id, deadline, false);
        if self.queues[lock].is_empty() {
            let stop = self.deadlines.remove(&lock).map(|(t, _)| t);
            assert_eq!(
                change,
                TimerChange {
                    stop,
                    start_at: None
                },
                "deadline_moved({lock}, {deadline}) with nobody waiting"
            );
        } else if self
            .deadlines
            .get(&lock)
            .is_some_and(|&(_, at)| at == deadline)
        {
            assert_eq!(
                change,
                TimerChange::default(),
                "deadline_moved({lock}, {deadline}) to where its timer already is"
            );
        } else {
            let stop = self.deadlines.remove(&lock).map(|(t, _)| t);
            assert_eq!(
                change,
                TimerChange {
                    stop,
                    start_at: Some(deadline)
                },
                "deadline_moved({lock}, {deadline})"
            );
        }
        if let Some(at) = change.start_at {
            let timer = self.fresh_timer();
            self.h.deadline_armed(id, timer, at, false);
            self.deadlines.insert(lock, (timer, at));
        }
    }

    /// A call that may have added deferred work returned `got` (schedule the runner).
    fn scheduled(&mut self, added_work: bool, got: bool, what: &str) {
        assert_eq!(
            got,
            added_work && !self.armed,
            "{what}: whether the runner is to be scheduled (work added: {added_work}, runner \
             already scheduled: {})",
            self.armed
        );
        if added_work {
            self.armed = true;
        }
        if got {
            self.runner_timers += 1;
        }
    }

    /// `runner::grant_to_head`: true when a waiter got the lock.
    fn grant_to_head(&mut self, lock: usize, errs: &mut u8) -> bool {
        let id = lock_of(lock);
        loop {
            let got = self.h.next_waiter(&id);
            let want = self.queues[lock].pop_front();
            assert_eq!(
                got.as_ref().map(|w| w.serial),
                want,
                "next_waiter of lock {lock}: the first in its queue"
            );
            let Some(waiter) = got else {
                let stop = self.h.disarm(&id);
                self.expect_stop(lock, stop, "disarm once nobody waits");
                return false;
            };
            let rec = self.leave_queue(waiter.serial);
            assert_eq!(
                (waiter.handle, &waiter.token, waiter.ttl_ms, rec.lock),
                (rec.client, &rec.token, rec.ttl, lock),
                "next_waiter gives the waiter as it queued"
            );
            assert_eq!(
                self.clients[rec.client as usize],
                ClientState::Waiting(waiter.serial)
            );
            if *errs > 0 {
                // The grant failed (say the ttl overflowed): the waiter gets the error.
                *errs -= 1;
                self.answer(waiter.serial);
                self.clients[rec.client as usize] = ClientState::Idle;
                continue;
            }
            let fence = self.fresh_fence();
            let deadline = self.now + waiter.ttl_ms;
            let g = self.grants.len();
            self.grants.push(GrantRec {
                lock,
                token: waiter.token.clone(),
                fence,
                reply: ReplyState::Open,
                seen: false,
                revoked: false,
            });
            self.grant_by_fence.insert(fence, g);
            self.holders[lock] = Some(Holder {
                token: waiter.token.clone(),
                fence,
                deadline,
                grant: Some(g),
            });
            self.h.granted(id, waiter.token.clone(), fence);
            self.in_flight
                .entry(lock)
                .or_default()
                .push((waiter.token.clone(), fence, false));
            self.answer(waiter.serial);
            self.clients[rec.client as usize] = ClientState::Granted(g);
            self.deadline_moved(lock, deadline);
            return true;
        }
    }

    /// `runner::key_removed`, from the type's unlink callback.
    fn key_removed(&mut self, lock: usize, expired: bool) {
        if !expired && !self.h.anyone_waiting() {
            return;
        }
        let got = self.h.key_removed(lock_of(lock), usize::from(expired));
        let waited = !self.queues[lock].is_empty();
        if expired {
            self.pending_expired.push(lock);
        }
        if waited {
            self.pending_serve.insert(lock);
        }
        self.scheduled(waited || expired, got, "key_removed");
    }

    /// `runner::free_lock`: the live lock is freed; to the first waiter, or the key goes.
    fn free(&mut self, lock: usize, errs: &mut u8) {
        self.holders[lock] = None;
        let handed_off = self.h.anyone_waiting() && self.grant_to_head(lock, errs);
        if !handed_off {
            self.key_removed(lock, false);
        }
    }

    /// `runner::take_back`'s check.
    fn still_holds(&self, lock: usize, token: &Token, fence: u64) -> bool {
        self.holders[lock]
            .as_ref()
            .is_some_and(|h| h.fence == fence && h.token == *token)
    }

    /// `runner::run_pending` on a primary whose clients are not paused.
    fn run_pending(&mut self, errs: &mut u8) {
        let pending = self.h.take_pending();
        self.armed = false;
        let want_serve: HashSet<LockId> = self.pending_serve.drain().map(lock_of).collect();
        assert_eq!(pending.serve, want_serve, "pending serve");
        let want_revoke: Vec<Revoke> = self
            .pending_revoke
            .drain(..)
            .map(|(lock, token, fence)| Revoke {
                lock: lock_of(lock),
                token,
                fence,
            })
            .collect();
        assert_eq!(pending.revoke, want_revoke, "pending revokes");
        let want_expired: Vec<LockId> = self.pending_expired.drain(..).map(lock_of).collect();
        assert_eq!(pending.expired, want_expired, "pending expiry notices");

        for revoke in pending.revoke {
            let lock = index_of(&revoke.lock);
            let g = *self
                .grant_by_fence
                .get(&revoke.fence)
                .unwrap_or_else(|| panic!("a revoke of a fence never granted: {revoke:?}"));
            let holds = self.still_holds(lock, &revoke.token, revoke.fence);
            let grant = &mut self.grants[g];
            assert_eq!(
                (grant.lock, &grant.token),
                (lock, &revoke.token),
                "{revoke:?}"
            );
            assert_eq!(
                grant.reply,
                ReplyState::Dropped,
                "a revoke of a grant whose reply was not dropped: {revoke:?}"
            );
            assert!(!grant.revoked, "a grant revoked twice: {revoke:?}");
            grant.revoked = true;
            assert!(
                !grant.seen,
                "a revoke of a grant whose owner was seen: {revoke:?}"
            );
            if holds {
                self.free(lock, errs);
            }
        }
        let mut serve: Vec<usize> = pending.serve.iter().map(index_of).collect();
        serve.sort_unstable();
        for lock in serve {
            if !self.h.has_waiters(&lock_of(lock)) {
                continue;
            }
            match &self.holders[lock] {
                Some(holder) => {
                    let deadline = holder.deadline;
                    self.deadline_moved(lock, deadline);
                }
                None => {
                    self.grant_to_head(lock, errs);
                }
            }
        }
    }

    /// The runner called at once (a deadline timer), or postponed while clients are paused.
    fn run_now(&mut self, paused: bool, errs: &mut u8) {
        if paused {
            let got = self.h.runner_postponed();
            self.scheduled(true, got, "runner_postponed");
        } else {
            self.run_pending(errs);
        }
    }

    fn take_all(&mut self, lock: usize) {
        let (waiters, stop) = self.h.take_all(&lock_of(lock));
        let want: Vec<u64> = self.queues[lock].drain(..).collect();
        assert_eq!(
            waiters.iter().map(|w| w.serial).collect::<Vec<_>>(),
            want,
            "take_all: every waiter, in order"
        );
        for waiter in waiters {
            let rec = self.leave_queue(waiter.serial);
            assert_eq!(
                (waiter.handle, &waiter.token, waiter.ttl_ms),
                (rec.client, &rec.token, rec.ttl)
            );
            self.answer(waiter.serial);
            self.clients[rec.client as usize] = ClientState::Idle;
        }
        self.expect_stop(lock, stop, "take_all");
    }

    fn leave(&mut self, client: u32) {
        match self.clients[client as usize] {
            ClientState::Waiting(serial) => {
                let left = self
                    .h
                    .leave(client)
                    .unwrap_or_else(|| panic!("client {client} waits as {serial}: leave is Some"));
                self.check_left(left, serial, client, "leave");
                self.answer(serial);
                self.clients[client as usize] = ClientState::Idle;
            }
            _ => assert!(
                self.h.leave(client).is_none(),
                "leave of client {client}, which does not wait"
            ),
        }
    }

    fn reply_freed(&mut self, client: u32, delivered: bool) {
        let ClientState::Granted(g) = self.clients[client as usize] else {
            return;
        };
        let GrantRec {
            lock, token, fence, ..
        } = self.grants[g].clone();
        if !delivered {
            // The disconnect callback finds the handle no longer queued.
            assert!(
                self.h.leave(client).is_none(),
                "a granted client is not queued"
            );
        }
        let got = self
            .h
            .reply_freed(lock_of(lock), token.clone(), fence, delivered);
        let grants = self.in_flight.entry(lock).or_default();
        let at = grants.iter().position(|&(_, f, _)| f == fence);
        let seen = at.is_some_and(|at| grants.remove(at).2);
        if grants.is_empty() {
            self.in_flight.remove(&lock);
        }
        assert!(
            at.is_some(),
            "model: every freed reply's grant is in flight"
        );
        assert_eq!(seen, self.grants[g].seen, "model: seen follows the grant");
        if delivered {
            assert!(!got, "a delivered reply schedules nothing");
            self.grants[g].reply = ReplyState::Delivered;
        } else {
            // Undelivered: taken back unless its owner was seen.
            let revoke = !seen;
            if revoke {
                self.pending_revoke.push((lock, token, fence));
            }
            self.scheduled(revoke, got, "reply_freed(undelivered)");
            self.grants[g].reply = ReplyState::Dropped;
        }
        self.clients[client as usize] = ClientState::Idle;
    }

    // ---- events -----------------------------------------------------------------------------

    fn step(&mut self, ev: &Ev) {
        self.now += 1;
        match *ev {
            Ev::Wait {
                client,
                lock,
                timeout,
                ttl,
                mut errs,
            } => {
                let Some(client) = self.pick(client, |c| c == ClientState::Idle) else {
                    return;
                };
                let tok = self.fresh_token(client);
                let id = lock_of(lock);
                // No overtaking: a free lock with waiters goes to the first of them.
                if self.holders[lock].is_none()
                    && self.h.anyone_waiting()
                    && self.h.has_waiters(&id)
                {
                    self.grant_to_head(lock, &mut errs);
                }
                let Some(holder) = &self.holders[lock] else {
                    // Granted at once, without the hand-off machine.
                    let fence = self.fresh_fence();
                    self.holders[lock] = Some(Holder {
                        token: tok,
                        fence,
                        deadline: self.now + ttl,
                        grant: None,
                    });
                    return;
                };
                let holder_deadline = holder.deadline;
                let serial = self.h.wait(
                    id,
                    client,
                    tok.clone(),
                    ttl,
                    Want::Exclusive,
                    Default::default(),
                );
                assert_ne!(serial, 0, "serial 0 is the glue's 'not queued'");
                assert!(
                    !self.waits.contains_key(&serial),
                    "serial {serial} handed out twice"
                );
                self.waits.insert(
                    serial,
                    WaitRec {
                        client,
                        lock,
                        token: tok,
                        ttl,
                    },
                );
                self.issued.push(serial);
                self.queues[lock].push_back(serial);
                self.clients[client as usize] = ClientState::Waiting(serial);
                if timeout {
                    let timer = self.fresh_timer();
                    self.h.timeout_armed(serial, timer);
                    self.timeouts.insert(serial, timer);
                }
                self.deadline_moved(lock, holder_deadline);
            }
            Ev::Free { lock, mut errs } => {
                if self.holders[lock].is_some() {
                    self.free(lock, &mut errs);
                }
            }
            Ev::Deliver { client } | Ev::DropReply { client } => {
                let granted = |c| matches!(c, ClientState::Granted(_));
                if let Some(client) = self.pick(client, granted) {
                    self.reply_freed(client, matches!(ev, Ev::Deliver { .. }));
                }
            }
            Ev::Leave { client, any } => {
                let waiting = |c| any || matches!(c, ClientState::Waiting(_));
                if let Some(client) = self.pick(client, waiting) {
                    self.leave(client);
                }
            }
            Ev::TimeOut { client, early } => {
                let Some(client) = self.pick(client, |c| matches!(c, ClientState::Waiting(_)))
                else {
                    return;
                };
                let ClientState::Waiting(serial) = self.clients[client as usize] else {
                    unreachable!()
                };
                if self.timeouts.remove(&serial).is_some() {
                    self.h.timeout_fired(serial);
                    assert!(
                        self.h.is_waiting(client, serial),
                        "the timer's waiter waits"
                    );
                    if early {
                        let timer = self.fresh_timer();
                        self.h.timeout_armed(serial, timer);
                        self.timeouts.insert(serial, timer);
                        return;
                    }
                }
                let left = self
                    .h
                    .time_out(client, serial)
                    .unwrap_or_else(|| panic!("time_out({client}, {serial}) of a waiter"));
                self.check_left(left, serial, client, "time_out");
                self.answer(serial);
                self.clients[client as usize] = ClientState::Idle;
            }
            Ev::StaleTimeOut { client, pick } => {
                let current = match self.clients[client as usize] {
                    ClientState::Waiting(serial) => Some(serial),
                    _ => None,
                };
                let stale: Vec<u64> = self
                    .issued
                    .iter()
                    .copied()
                    .filter(|&s| Some(s) != current)
                    .collect();
                if stale.is_empty() {
                    return;
                }
                let serial = stale[pick % stale.len()];
                assert!(
                    self.h.time_out(client, serial).is_none(),
                    "time_out({client}, {serial}) with a serial not its own"
                );
                assert!(!self.h.is_waiting(client, serial));
                if self.left.contains(&serial) {
                    // A late timer of an answered waiter: nothing to forget.
                    assert!(!self.timeouts.contains_key(&serial));
                    self.h.timeout_fired(serial);
                }
            }
            Ev::OwnerSeen { lock, ttl } => {
                let deadline = self.now + ttl;
                let Some(holder) = self.holders[lock].as_mut() else {
                    return;
                };
                holder.deadline = deadline;
                let (tok, grant) = (holder.token.clone(), holder.grant);
                if let Some(g) = grant {
                    if self.grants[g].reply == ReplyState::Open {
                        assert!(
                            self.h.unsettled(),
                            "the holder's grant of lock {lock} is still in flight"
                        );
                    }
                }
                // `runner::owner_active`.
                let waiting = self.h.anyone_waiting();
                let unsettled = self.h.unsettled();
                if !waiting && !unsettled {
                    return;
                }
                if waiting {
                    self.deadline_moved(lock, deadline);
                }
                if unsettled {
                    self.h.owner_seen(&lock_of(lock), &tok);
                    for (t, _, seen) in self.in_flight.get_mut(&lock).into_iter().flatten() {
                        *seen |= *t == tok;
                    }
                    self.pending_revoke
                        .retain(|(l, t, _)| !(*l == lock && *t == tok));
                    if let Some(g) = grant {
                        self.grants[g].seen = true;
                    }
                }
            }
            Ev::Expire { lock } => self.holders[lock] = None,
            Ev::RunnerFires { paused, mut errs } => {
                if self.runner_timers == 0 {
                    return;
                }
                self.runner_timers -= 1;
                self.h.runner_fired();
                self.armed = false;
                self.run_now(paused, &mut errs);
            }
            Ev::DeadlineFires {
                lock,
                expired,
                paused,
                mut errs,
            } => {
                if self.deadlines.remove(&lock).is_none() {
                    return;
                }
                if expired {
                    self.holders[lock] = None;
                }
                self.h.deadline_fired(lock_of(lock));
                self.pending_serve.insert(lock);
                self.run_now(paused, &mut errs);
            }
            Ev::KeyGone { lock, expired, how } => {
                self.holders[lock] = None;
                if how != 1 {
                    self.key_removed(lock, expired);
                }
                if how != 0 {
                    self.take_all(lock);
                }
            }
            Ev::ServeLater { db, flush } => {
                let here: Vec<usize> = (0..LOCKS)
                    .filter(|&l| db.is_none_or(|db| lock_of(l).db == db))
                    .collect();
                if flush {
                    for &l in &here {
                        self.holders[l] = None;
                    }
                }
                let got = self.h.serve_later(db);
                let waited: Vec<usize> = here
                    .into_iter()
                    .filter(|&l| !self.queues[l].is_empty())
                    .collect();
                let added = !waited.is_empty();
                self.pending_serve.extend(waited);
                self.scheduled(added, got, "serve_later");
            }
            Ev::TakeExpired { db } => {
                let got = self.h.take_expired(db);
                let (here, elsewhere): (Vec<usize>, Vec<usize>) = self
                    .pending_expired
                    .iter()
                    .partition(|&&l| lock_of(l).db == db);
                assert_eq!(
                    got,
                    here.into_iter().map(lock_of).collect::<Vec<_>>(),
                    "take_expired({db})"
                );
                self.pending_expired = elsewhere;
            }
        }
    }

    /// What must hold between events.
    fn check(&self) {
        let h = &self.h;
        let mut total = 0;
        for lock in 0..LOCKS {
            let id = lock_of(lock);
            let n = self.queues[lock].len();
            total += n;
            assert_eq!(h.waiters(&id), n, "waiters of lock {lock}");
            assert_eq!(h.has_waiters(&id), n > 0, "has_waiters of lock {lock}");
            if n == 0 {
                assert!(
                    !self.deadlines.contains_key(&lock),
                    "model: a deadline timer for lock {lock}, which nobody waits for"
                );
            }
        }
        assert_eq!(h.total_waiters(), total, "total_waiters");
        assert_eq!(h.anyone_waiting(), total > 0, "anyone_waiting");
        for (&serial, rec) in &self.waits {
            assert_eq!(
                h.is_waiting(rec.client, serial),
                !self.left.contains(&serial),
                "is_waiting({}, {serial})",
                rec.client
            );
        }
        assert_eq!(
            h.unsettled(),
            !self.in_flight.is_empty() || !self.pending_revoke.is_empty(),
            "unsettled"
        );
        for holder in self.holders.iter().flatten() {
            if let Some(g) = holder.grant {
                if self.grants[g].reply == ReplyState::Open {
                    assert!(h.unsettled(), "a holder's reply is in flight: unsettled");
                }
            }
        }
        let clear = total == 0
            && self.in_flight.is_empty()
            && self.timeouts.is_empty()
            && self.deadlines.is_empty()
            && self.pending_is_empty();
        assert_eq!(h.is_clear(), clear, "is_clear");
        // Deferred work is never stranded: a runner is on its way to it.
        if !self.pending_is_empty() || self.armed {
            assert!(
                self.runner_timers > 0,
                "deferred work with no runner scheduled"
            );
        }
    }

    /// Everyone waiting leaves, every open reply is delivered, the runner runs once more: the
    /// machine must then keep nothing.
    fn finish(&mut self) {
        for client in 0..CLIENTS {
            if matches!(self.clients[client as usize], ClientState::Waiting(_)) {
                self.leave(client);
                self.check();
            }
        }
        for client in 0..CLIENTS {
            if matches!(self.clients[client as usize], ClientState::Granted(_)) {
                self.reply_freed(client, true);
                self.check();
            }
        }
        self.h.runner_fired();
        self.armed = false;
        self.run_pending(&mut 0);
        self.runner_timers = 0;
        for &serial in &self.issued {
            assert!(
                self.left.contains(&serial),
                "serial {serial} never left its queue"
            );
        }
        self.check();
        assert!(self.h.is_clear(), "the machine keeps something at the end");
        assert!(!self.h.anyone_waiting());
        assert_eq!(self.h.total_waiters(), 0);
        assert!(!self.h.unsettled());
        assert!(self.timeouts.is_empty() && self.deadlines.is_empty());
    }
}

fn run_handoff(events: &[Ev]) {
    let mut sim = Sim::new();
    for ev in events {
        sim.step(ev);
        sim.check();
    }
    sim.finish();
}

proptest! {
    #![proptest_config(config(1024))]

    /// The hand-off machine under a simulated module: FIFO grants, each waiter out of its queue
    /// once, timers only as armed, take-backs only of undelivered unseen grants, deferred work
    /// always scheduled, and nothing kept once everyone has left and every reply is delivered.
    #[test]
    fn handoff_keeps_its_rules(events in vec(ev(), 0..100)) {
        run_handoff(&events);
    }
}

// =============================================================================================
// 3. The encodings
// =============================================================================================

fn bytes_of(s: String) -> Vec<u8> {
    s.into_bytes()
}

const HEX32: &str = "[0-9a-f]{32}";
const UUID: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

/// Tokens of every form: arbitrary bytes, short ones, the two compact forms, and near misses.
fn token_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 1..=256),
        2 => vec(any::<u8>(), 1..=15),
        1 => vec(any::<u8>(), 14..=18),
        3 => HEX32.prop_map(bytes_of),
        3 => UUID.prop_map(bytes_of),
        // Near misses of the compact forms: kept as given.
        1 => "[0-9A-F]{32}".prop_map(bytes_of),
        1 => "[0-9a-fA-F]{32}".prop_map(bytes_of),
        1 => "[0-9a-f]{31}|[0-9a-f]{33}|[0-9a-f]{36}|[0-9a-g]{32}".prop_map(bytes_of),
        1 => "[0-9A-F]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9A-F]{12}".prop_map(bytes_of),
        1 => "[0-9a-f-]{36}".prop_map(bytes_of),
        1 => "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{11,13}".prop_map(bytes_of),
        2 => (prop_oneof![HEX32, UUID], any::<usize>(), any::<u8>()).prop_map(|(s, at, b)| {
            let mut bytes = s.into_bytes();
            let at = at % bytes.len();
            bytes[at] = b;
            bytes
        }),
    ]
}

/// Any deadline, with the edges more often than chance would give them.
fn deadline() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => any::<i64>(),
        1 => prop_oneof![Just(i64::MIN), Just(i64::MAX), -1i64..=1],
        1 => 1_600_000_000_000i64..1_900_000_000_000,
    ]
}

/// Any fence a lock can hold (0 to MAX_FENCE), edges included.
fn fence() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..=MAX_FENCE,
        1 => prop_oneof![Just(0u64), Just(1), (MAX_FENCE - 2)..=MAX_FENCE],
    ]
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The forms stored without a heap allocation, by their definition.
fn stored_compactly(bytes: &[u8]) -> bool {
    let hex = bytes.len() == 32 && bytes.iter().all(|&b| is_lower_hex(b));
    let uuid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                is_lower_hex(b)
            }
        });
    bytes.len() <= 15 || hex || uuid
}

fn v1_fields(token: &[u8], deadline: i64, fence: u64) -> Fields {
    Fields(
        vec![
            Field::Bytes(token.to_vec()),
            Field::Signed(deadline),
            Field::Unsigned(fence),
        ]
        .into(),
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// A lock keeps its exact token, deadline and fence, in memory and through the RDB encoding;
    /// the version-1 layout is what is written and what is read.
    #[test]
    fn a_lock_round_trips_through_the_rdb_encoding(
        tok in token_bytes(),
        deadline in deadline(),
        fence in fence(),
    ) {
        let t = token(&tok);
        let lock = Lock::new(&t, deadline, fence).unwrap();
        prop_assert_eq!(spelled(&lock), tok.clone());
        prop_assert_eq!((lock.deadline_ms, lock.fence()), (deadline, fence));
        prop_assert!(lock.has_token(&t));
        // Made from the argument itself (the hot paths' way), it is the same lock.
        let in_place = TokenRef::check(&tok).unwrap();
        prop_assert_eq!(in_place.as_bytes(), t.as_bytes());
        prop_assert_eq!(&Lock::new(in_place, deadline, fence).unwrap(), &lock);
        prop_assert!(lock.has_token(in_place));
        let heap = if stored_compactly(&tok) { 0 } else { tok.len() };
        prop_assert_eq!(lock.heap_bytes(), heap);

        let mut written = Fields::default();
        encode_lock(&lock, &mut written);
        let mut v2 = v1_fields(&tok, deadline, fence);
        v2.0.push_front(Field::Unsigned(0));
        prop_assert_eq!(&written, &v2, "version 2: the exclusive kind, then the v1 fields");
        let back = decode_lock(CURRENT_VERSION, &mut written).unwrap();
        prop_assert!(written.0.is_empty(), "every field read");
        prop_assert_eq!(&back, &lock);
        prop_assert_eq!(spelled(&back), tok.clone());
        prop_assert_eq!((back.deadline_ms, back.fence()), (deadline, fence));

        // Version 1, as written by hand: readable forever.
        let mut v1 = v1_fields(&tok, deadline, fence);
        let from_v1 = decode_lock(1, &mut v1).unwrap();
        prop_assert_eq!(&from_v1, &lock);
        prop_assert_eq!(spelled(&from_v1), tok);
    }

    /// Unknown versions, truncated values, mistyped fields and fences over the limit are refused.
    #[test]
    fn bad_encodings_are_refused(
        tok in token_bytes(),
        deadline in deadline(),
        fence in fence(),
        version in prop_oneof![-2i32..8, any::<i32>()],
        drop in 1usize..=3,
        mistyped in 0usize..3,
        over in prop_oneof![Just(MAX_FENCE + 1), (MAX_FENCE + 1)..=u64::MAX],
    ) {
        let good = v1_fields(&tok, deadline, fence);
        if version != 1 && version != 2 {
            prop_assert_eq!(
                decode_lock(version, &mut good.clone()),
                Err(LockError::UnknownEncoding(version))
            );
            prop_assert_eq!(
                decode_clock(version, &mut Fields(vec![Field::Unsigned(fence)].into())),
                Err(LockError::UnknownEncoding(version))
            );
        }
        let mut truncated = good.clone();
        for _ in 0..drop {
            truncated.0.pop_back();
        }
        let got = decode_lock(1, &mut truncated);
        prop_assert!(matches!(got, Err(LockError::BadEncoding(_))), "{:?}", got);

        let mut wrong = good.clone();
        wrong.0[mistyped] = match &wrong.0[mistyped] {
            Field::Bytes(_) => Field::Unsigned(1),
            Field::Signed(_) => Field::Unsigned(1),
            Field::Unsigned(_) => Field::Signed(1),
        };
        let got = decode_lock(1, &mut wrong);
        prop_assert!(matches!(got, Err(LockError::BadEncoding(_))), "{:?}", got);

        let t = token(&tok);
        prop_assert_eq!(Lock::new(&t, deadline, over).err(), Some(LockError::FenceExhausted));
        let got = decode_lock(1, &mut v1_fields(&tok, deadline, over));
        prop_assert!(got.is_err(), "a fence over MAX_FENCE read: {:?}", got);
    }

    /// Two different tokens are never taken for one another, whatever forms they are stored in.
    #[test]
    fn distinct_tokens_stay_distinct(
        a in token_bytes(),
        other in token_bytes(),
        at in any::<usize>(),
        byte in any::<u8>(),
        one_byte_off in any::<bool>(),
    ) {
        let b = if one_byte_off {
            let mut b = a.clone();
            let at = at % b.len();
            b[at] = byte;
            b
        } else {
            other
        };
        prop_assume!(a != b);
        let lock = Lock::new(&token(&a), 5, 7).unwrap();
        prop_assert!(!lock.has_token(&token(&b)));
        prop_assert!(!lock.has_token(TokenRef::check(&b).unwrap()));
        prop_assert!(lock != Lock::new(&token(&b), 5, 7).unwrap());
    }

    /// A lock goes out as LOCK.APPLY and comes back the same on the replica.
    #[test]
    fn a_lock_round_trips_through_the_apply_effect(
        tok in token_bytes(),
        deadline in prop_oneof![Just(0i64), 0..=i64::MAX],
        fence in fence(),
        negative in i64::MIN..0,
    ) {
        let lock = Lock::new(&token(&tok), deadline, fence).unwrap();
        let mut buf = [0u8; INLINE_TEXT_MAX];
        let effect = Effect::apply(&lock, None, &mut buf);
        prop_assert_eq!(effect.command(), c"LOCK.APPLY");
        let Effect::Apply { token: t, deadline_ms, fence: f, meta: None } = effect else {
            panic!("not an APPLY: {effect:?}");
        };
        prop_assert_eq!(t, &tok[..]);
        prop_assert_eq!(deadline_ms, deadline);
        prop_assert_eq!(u64::try_from(f).ok(), Some(fence));
        let (d, fs) = (deadline_ms.to_string(), f.to_string());
        let applied = parse_apply(&[t, d.as_bytes(), fs.as_bytes()]).unwrap();
        prop_assert_eq!(applied.token.as_bytes(), &tok[..]);
        prop_assert_eq!((applied.deadline_ms, applied.fence), (deadline, fence));
        prop_assert_eq!(&applied.into_lock().unwrap(), &lock);
        // The form sent since 0.4: the holder as one argument, whatever bytes the token has.
        let hold = HoldText::new(deadline_ms, f, t);
        prop_assert_eq!(hold.as_bytes(), format!("{d}:{fs}:").into_bytes().into_iter().chain(tok.iter().copied()).collect::<Vec<u8>>());
        let applied = parse_apply(&[hold.as_bytes()]).unwrap();
        prop_assert_eq!(applied.token.as_bytes(), &tok[..]);
        prop_assert_eq!(&applied.into_lock().unwrap(), &lock);

        let n = negative.to_string();
        prop_assert!(parse_apply(&[&tok[..], n.as_bytes(), fs.as_bytes()]).is_err());
        prop_assert!(parse_apply(&[&tok[..], d.as_bytes(), n.as_bytes()]).is_err());
        prop_assert!(parse_apply(&[HoldText::new(negative, f, t).as_bytes()]).is_err());
        prop_assert!(parse_apply(&[HoldText::new(deadline_ms, negative, t).as_bytes()]).is_err());
    }

    /// The fence clock's aux data and LOCK.CLOCK effect round trip.
    #[test]
    fn the_clock_round_trips(last in any::<u64>()) {
        let mut written = Fields::default();
        encode_clock(last, &mut written);
        prop_assert_eq!(&written, &Fields(vec![Field::Unsigned(last)].into()));
        prop_assert_eq!(decode_clock(CURRENT_VERSION, &mut written), Ok(last));
        prop_assert!(matches!(
            decode_clock(CURRENT_VERSION, &mut written),
            Err(LockError::BadEncoding(_))
        ));
        let effect = Effect::clock(last);
        prop_assert_eq!(effect.command(), c"LOCK.CLOCK");
        let Effect::Clock { fence } = effect else {
            panic!("not a CLOCK: {effect:?}");
        };
        prop_assert_eq!(fence, i64::try_from(last).unwrap_or(i64::MAX));
        prop_assert_eq!(parse_clock(&[fence.to_string().as_bytes()]), Ok(fence.unsigned_abs()));
    }
}

// =============================================================================================
// 4. Parsing against a reference
// =============================================================================================

/// What Redis accepts: exactly the canonical decimal form of an i64.
fn reference_i64(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| n.to_string().as_bytes() == bytes)
}

fn number_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..24),
        "[-+ 0]?[0-9]{0,21}".prop_map(bytes_of),
        "-?(92233720368547758[0-9]{2}|[1-9][0-9]{17,19})".prop_map(bytes_of),
        "[-+]?0*[0-9]{1,3}[ .e]?[0-9]?".prop_map(bytes_of),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
    ]
}

/// A keyword in a random mix of cases.
fn cased(word: &str, upper: &[bool]) -> Vec<u8> {
    word.bytes()
        .zip(upper.iter().cycle())
        .map(|(c, &up)| {
            if up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn ttl() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..10_000, 1..=i64::MAX, Just(i64::MAX)]
}

/// A max-ttl setting: anything, or close to the ttl.
fn max_ttl_for(ttl: i64, any_max: i64, delta: i64, near: bool) -> i64 {
    if near {
        ttl.saturating_add(delta).max(1)
    } else {
        any_max
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn parse_i64_reads_every_i64(n in any::<i64>()) {
        prop_assert_eq!(parse_i64(n.to_string().as_bytes()), Some(n));
    }

    #[test]
    fn parse_i64_accepts_exactly_the_canonical_form(bytes in number_like()) {
        prop_assert_eq!(parse_i64(&bytes), reference_i64(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
    }

    /// LOCK.ACQUIRE's options, in any order and case, give exactly their values.
    #[test]
    fn acquire_options_parse_to_their_values(
        ttl in ttl(),
        tok in proptest::option::of(vec(any::<u8>(), 1..=256)),
        block in proptest::option::of(prop_oneof![0i64..10_000, 0..=i64::MAX]),
        block_first in any::<bool>(),
        token_case in vec(any::<bool>(), 5),
        block_case in vec(any::<bool>(), 5),
        (any_max, delta, near) in (1..=i64::MAX, -2i64..=2, any::<bool>()),
    ) {
        let ttl_text = ttl.to_string().into_bytes();
        let block_text = block.map(|b| b.to_string().into_bytes());
        let token_word = cased("token", &token_case);
        let block_word = cased("block", &block_case);
        let mut token_opt: Vec<&[u8]> = Vec::new();
        if let Some(t) = &tok {
            token_opt = vec![token_word.as_slice(), t.as_slice()];
        }
        let mut block_opt: Vec<&[u8]> = Vec::new();
        if let Some(b) = &block_text {
            block_opt = vec![block_word.as_slice(), b.as_slice()];
        }
        let mut args: Vec<&[u8]> = vec![&ttl_text];
        if block_first {
            args.extend(block_opt.iter().chain(&token_opt));
        } else {
            args.extend(token_opt.iter().chain(&block_opt));
        }
        let want = AcquireRequest {
            ttl_ms: ttl,
            token: tok.as_deref().map(token),
            block_ms: block,
            want: Want::Exclusive,
            ephemeral: false,
            meta: None,
        };
        prop_assert_eq!(AcquireRequest::parse(&args, 0), Ok(want));

        let max = max_ttl_for(ttl, any_max, delta, near);
        let got = AcquireRequest::parse(&args, max);
        if ttl > max {
            prop_assert_eq!(got, Err(LockError::TtlOverMax { ttl, max }));
        } else {
            prop_assert_eq!(got.map(|r| r.ttl_ms), Ok(ttl));
        }
    }

    /// The ttl and BLOCK timeout are read as Redis reads integers, then checked.
    #[test]
    fn ttl_and_timeout_are_checked(ttl in number_like(), timeout in number_like()) {
        let got = AcquireRequest::parse(&[&ttl], 0);
        match reference_i64(&ttl) {
            None => prop_assert!(matches!(got, Err(LockError::TtlNotInteger(_))), "{:?}", got),
            Some(n) if n < 1 => prop_assert_eq!(got, Err(LockError::TtlNotPositive(n))),
            Some(n) => prop_assert_eq!(got.map(|r| r.ttl_ms), Ok(n)),
        }
        let got = AcquireRequest::parse(&[b"10", b"BLOCK", &timeout], 0);
        match reference_i64(&timeout) {
            Some(n) if n >= 0 => prop_assert_eq!(got.map(|r| r.block_ms), Ok(Some(n))),
            _ => prop_assert!(matches!(got, Err(LockError::TimeoutInvalid(_))), "{:?}", got),
        }
    }

    /// LOCK.RENEW token ttl.
    #[test]
    fn renew_parses_to_its_values(
        tok in vec(any::<u8>(), 1..=256),
        ttl in ttl(),
        (any_max, delta, near) in (1..=i64::MAX, -2i64..=2, any::<bool>()),
    ) {
        let ttl_text = ttl.to_string();
        let args: [&[u8]; 2] = [&tok, ttl_text.as_bytes()];
        prop_assert_eq!(
            RenewRequest::parse(&args, 0),
            Ok(RenewRequest { token: token(&tok), ttl_ms: ttl })
        );
        let max = max_ttl_for(ttl, any_max, delta, near);
        let got = RenewRequest::parse(&args, max);
        if ttl > max {
            prop_assert_eq!(got, Err(LockError::TtlOverMax { ttl, max }));
        } else {
            prop_assert_eq!(got.map(|r| r.ttl_ms), Ok(ttl));
        }
    }
}

/// A word LOCK.ACQUIRE may see where an option goes: an option's name in some case, a near
/// miss, or anything.
fn option_word() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "(?i)(token|block|shared|limit|ephemeral|meta)".prop_map(bytes_of),
        "(?i)(toke|tokens|tok en)".prop_map(bytes_of),
        vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    /// The plain form's reader (the commands' fast path) takes exactly the requests
    /// `AcquireRequest::parse` reads as a bare ttl or a ttl and a token, with the same values,
    /// and nothing else: every other argument list goes to the general parser.
    #[test]
    fn the_plain_acquire_is_the_general_parse_of_that_form(
        ttl in prop_oneof![number_like(), ttl().prop_map(|t| t.to_string().into_bytes())],
        words in vec(prop_oneof![option_word(), vec(any::<u8>(), 0..300)], 0..4),
        (any_max, delta, near, ttl_hint) in (0..=i64::MAX, -2i64..=2, any::<bool>(), ttl()),
    ) {
        let mut args: Vec<&[u8]> = vec![&ttl];
        args.extend(words.iter().map(Vec::as_slice));
        let max = if any_max == 0 { 0 } else { max_ttl_for(ttl_hint, any_max, delta, near) };
        let general = AcquireRequest::parse(&args, max);
        let plain = parse_plain_acquire(&args, max);
        match general {
            Ok(AcquireRequest {
                ttl_ms,
                token,
                block_ms: None,
                want: Want::Exclusive,
                ephemeral: false,
                meta: None,
            }) => prop_assert_eq!(
                plain,
                Some((ttl_ms, token.as_ref().map(TokenRef::from)))
            ),
            _ => prop_assert_eq!(plain, None),
        }
    }
}

// =============================================================================================
// 5. The fence clock
// =============================================================================================

#[derive(Debug, Clone)]
enum Now {
    Advance(u64),
    Set(u64),
}

#[derive(Debug, Clone)]
enum FenceOp {
    Grant {
        now: Now,
        jump: u64,
        max_ahead: u64,
    },
    /// `ahead`: the fence relative to the clock (else absolute).
    Observe {
        now: Now,
        fence: u64,
        relative: Option<i64>,
        max_ahead: u64,
    },
    Jump,
}

fn now_step() -> impl Strategy<Value = Now> {
    prop_oneof![
        4 => (0u64..2_000).prop_map(Now::Advance),
        2 => (0u64..200_000).prop_map(Now::Set),
        1 => (0u64..5_000).prop_map(|d| Now::Set(MAX_FENCE - d)),
        1 => any::<u64>().prop_map(Now::Set),
    ]
}

fn max_ahead() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..10_000,
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

fn fence_op() -> impl Strategy<Value = FenceOp> {
    prop_oneof![
        5 => (now_step(), prop_oneof![Just(0u64), 0u64..3_000, any::<u64>()], max_ahead())
            .prop_map(|(now, jump, max_ahead)| FenceOp::Grant { now, jump, max_ahead }),
        3 => (
            now_step(),
            prop_oneof![0u64..300_000, (0u64..5_000).prop_map(|d| MAX_FENCE - d), any::<u64>()],
            proptest::option::of(-2_000i64..20_000),
            max_ahead(),
        )
            .prop_map(|(now, fence, relative, max_ahead)| FenceOp::Observe {
                now,
                fence,
                relative,
                max_ahead
            }),
        1 => Just(FenceOp::Jump),
    ]
}

fn run_fence_clock(monotonic: bool, ops: &[FenceOp]) {
    let mut clock = FenceClock::new();
    let mut now = 0u64;
    let mut jump_pending = true;
    let mut last_grant: Option<u64> = None;
    // The highest fence observed within reach (fence <= now + max_ahead at the time).
    let mut reachable: Option<u64> = None;
    let tick = |now: &mut u64, step: &Now| {
        *now = match *step {
            Now::Advance(d) => now.saturating_add(d),
            Now::Set(t) if monotonic => (*now).max(t),
            Now::Set(t) => t,
        }
    };
    for op in ops {
        match op {
            FenceOp::Grant {
                now: step,
                jump,
                max_ahead,
            } => {
                tick(&mut now, step);
                let before = clock.last();
                let plain = before.saturating_add(1).max(now);
                match clock.grant(now, *jump, *max_ahead) {
                    Ok(g) => {
                        assert!(g <= MAX_FENCE, "grant {g} over MAX_FENCE");
                        if let Some(prev) = last_grant {
                            assert!(g > prev, "grant {g} not above the previous {prev}");
                        }
                        if let Some(seen) = reachable {
                            assert!(g > seen, "grant {g} not above the observed fence {seen}");
                        }
                        assert!(
                            g >= now && g > before,
                            "grant {g}: now {now}, last {before}"
                        );
                        if jump_pending {
                            assert!(g <= plain.saturating_add(*jump), "jumped too far: {g}");
                            assert!(
                                g <= plain.max(now.saturating_add(max_ahead / 2)),
                                "jumped past now + max_ahead / 2: {g}"
                            );
                        } else {
                            assert_eq!(g, plain, "max(last + 1, now)");
                        }
                        assert_eq!(clock.last(), g);
                        jump_pending = false;
                        last_grant = Some(g);
                    }
                    Err(e) => {
                        assert_eq!(e, LockError::FenceExhausted);
                        assert_eq!(clock.last(), before, "a refused grant changes nothing");
                        if !jump_pending {
                            assert!(plain > MAX_FENCE, "refused below the limit: {plain}");
                        }
                    }
                }
            }
            FenceOp::Observe {
                now: step,
                fence,
                relative,
                max_ahead,
            } => {
                tick(&mut now, step);
                let fence = relative.map_or(*fence, |d| now.saturating_add_signed(d));
                let before = clock.last();
                let ceiling = now.saturating_add(*max_ahead).min(MAX_FENCE);
                let got = clock.observe(fence, now, *max_ahead);
                let expected = if fence <= ceiling {
                    Observed::Raised
                } else {
                    Observed::Capped
                };
                assert_eq!(got, expected, "observe({fence}, {now}, {max_ahead})");
                assert_eq!(within_reach(fence, now, *max_ahead), fence <= ceiling);
                assert_eq!(clock.last(), before.max(fence.min(ceiling)));
                if fence <= now.saturating_add(*max_ahead) {
                    reachable = Some(reachable.map_or(fence, |r| r.max(fence)));
                }
            }
            FenceOp::Jump => {
                clock.jump_next_grant();
                jump_pending = true;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Grants rise strictly, stay within MAX_FENCE, follow the wall clock, and pass every fence
    /// observed within reach, whether the clock moves forward or jumps around.
    #[test]
    fn fences_rise_and_pass_what_was_observed(
        monotonic in any::<bool>(),
        ops in vec(fence_op(), 0..60),
    ) {
        run_fence_clock(monotonic, &ops);
    }
}
