//! Property tests of shared holds and counting semaphores (lock-commands.md, "Shared holds and
//! counting semaphores"):
//!
//! 1. the queue policy of the module (prune, serve the head, `decide`, store) driven through
//!    the real core types over one lock and a clock, against a plain model of holders and
//!    waiters written from the rules; and, with two clients waiting with one token, that a
//!    token never holds the lock twice (this one FAILS: see
//!    `two_waiters_with_one_token_get_one_hold`);
//! 2. `encode_value` / `decode_value` round-trip arbitrary shared (and exclusive) locks;
//! 3. `SharedLock`'s indexes agree with a `BTreeMap` under random changes.
//!
//! Run with `cargo test --test shared_properties`.

mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use lock_core::codec::{decode_value, encode_value, Field, Fields, CURRENT_VERSION};
use lock_core::fence::MAX_FENCE;
use lock_core::lock::Lock;
use lock_core::queue::{LockId, Queues, Waiter};
use lock_core::shared::{SharedLock, MAX_LIMIT};
use lock_core::token::Token;
use lock_core::value::{decide, Acquire, Held, Value, Want};
use lock_core::LockError;
use support::{config, spelled, token};

// =============================================================================================
// 1. The queue policy against a model
// =============================================================================================

/// The tokens of the state machine: every storage form (short, 32 hex, UUID, heap).
const TOKENS: [&[u8]; 4] = [
    b"a",
    b"0123456789abcdef0123456789abcdef",
    b"123e4567-e89b-12d3-a456-426614174000",
    b"a-token-long-enough-to-live-on-the-heap",
];

const START_MS: i64 = 1_000;

fn token_index(bytes: &[u8]) -> usize {
    TOKENS
        .iter()
        .position(|t| *t == bytes)
        .unwrap_or_else(|| panic!("a token the test never used: {bytes:?}"))
}

/// What a request asks for, as the test spells it (independent of `Want`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Exclusive,
    /// `SHARED` (None) or `LIMIT n`.
    Shared(Option<u32>),
}

impl Ask {
    fn want(self) -> Want {
        match self {
            Ask::Exclusive => Want::Exclusive,
            Ask::Shared(limit) => Want::Shared { limit },
        }
    }

    fn shared(self) -> bool {
        matches!(self, Ask::Shared(_))
    }
}

const ASKS: [Ask; 5] = [
    Ask::Exclusive,
    Ask::Shared(None),
    Ask::Shared(Some(1)),
    Ask::Shared(Some(2)),
    Ask::Shared(Some(3)),
];

#[derive(Debug, Clone)]
enum Op {
    /// LOCK.ACQUIRE key ttl TOKEN t [BLOCK] [SHARED | LIMIT n].
    Acquire {
        token: usize,
        ask: Ask,
        ttl: i64,
        block: bool,
    },
    /// LOCK.RELEASE key t.
    Release { token: usize },
    /// LOCK.RENEW key t ttl.
    Renew { token: usize, ttl: i64 },
    /// The clock moves on.
    Advance(i64),
    /// The lock's timer fires: expired holders leave, the waiters get the room.
    Tick,
    /// A waiter leaves the queue (timeout, disconnect): a queued one picked cyclically, or, if
    /// nobody waits, any handle ever issued (which must not be found).
    Leave(usize),
}

/// Mostly the case's own shared limit (so that shared requests meet and queue together), now
/// and then another one (a mismatch).
fn ask(limit: Option<u32>) -> impl Strategy<Value = Ask> {
    prop_oneof![
        2 => Just(Ask::Exclusive),
        5 => Just(Ask::Shared(limit)),
        1 => Just(Ask::Shared(None)),
        1 => (1u32..=3).prop_map(|n| Ask::Shared(Some(n))),
    ]
}

fn op(limit: Option<u32>) -> impl Strategy<Value = Op> {
    let token = 0..TOKENS.len();
    prop_oneof![
        8 => (token.clone(), ask(limit), 1i64..=120, prop::bool::weighted(0.6))
            .prop_map(|(token, ask, ttl, block)| Op::Acquire { token, ask, ttl, block }),
        3 => token.clone().prop_map(|token| Op::Release { token }),
        2 => (token, 1i64..=120).prop_map(|(token, ttl)| Op::Renew { token, ttl }),
        4 => (0i64..=50).prop_map(Op::Advance),
        1 => Just(Op::Tick),
        1 => any::<usize>().prop_map(Op::Leave),
    ]
}

/// A run of operations around one shared limit (`SHARED`, or `LIMIT 1..=3`).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![Just(None), (1u32..=3).prop_map(Some)].prop_flat_map(|limit| vec(op(limit), 1..80))
}

/// What a step answered.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Granted(u64),
    Retried(u64),
    /// Busy; the waiter's handle when it was queued (BLOCK).
    Busy(Option<u32>),
    Refused(LockError),
    Released(bool),
    Renewed(bool),
    /// The handle that left the queue, if it was queued.
    Left(Option<u32>),
    Nothing,
}

/// A step's answer, the waiters it granted (handle and fence, in grant order), and, for an
/// ACQUIRE, whether anyone waited when it was decided.
#[derive(Debug)]
struct Outcome {
    reply: Reply,
    served: Vec<(u32, u64)>,
    others_waited: bool,
}

impl Outcome {
    fn of(reply: Reply) -> Self {
        Outcome {
            reply,
            served: Vec::new(),
            others_waited: false,
        }
    }
}

/// A holder as both sides show it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HolderView {
    token: usize,
    shared: bool,
    deadline: i64,
    fence: u64,
}

// ---- the module's use of the core ----------------------------------------------------------

/// One lock and its queue, run through the real core types as the module runs them.
struct Real {
    value: Option<Value>,
    queues: Queues<u32>,
    id: LockId,
    last_fence: u64,
    next_serial: u64,
    next_handle: u32,
    /// The serial each handle was queued with.
    serials: HashMap<u32, u64>,
}

impl Real {
    fn new() -> Self {
        Real {
            value: None,
            queues: Queues::new(),
            id: LockId {
                db: 0,
                key: b"lock".to_vec(),
            },
            last_fence: 0,
            next_serial: 1,
            next_handle: 1,
            serials: HashMap::new(),
        }
    }

    fn held(&mut self) -> Option<Held<'_>> {
        self.value.as_mut().map(Value::held)
    }

    /// A shared lock's expired holders leave; the key goes with the last one.
    fn prune(&mut self, now: i64) {
        if let Some(Value::Shared(shared)) = &mut self.value {
            shared.prune(now);
            if shared.is_empty() {
                self.value = None;
            }
        }
    }

    /// An empty shared lock left after a release without a taker: the key goes.
    fn drop_if_empty(&mut self) {
        if matches!(&self.value, Some(Value::Shared(s)) if s.is_empty()) {
            self.value = None;
        }
    }

    /// A new grant of `want` to `token` until `deadline`, with a new fence.
    fn store_grant(&mut self, token: &Token, want: Want, deadline: i64, now: i64) -> u64 {
        // As `runner::grant_shared`: a waiter with the token of a live shared holder gets that
        // same hold, with a new deadline.
        if let (Want::Shared { .. }, Some(Value::Shared(shared))) = (want, &mut self.value) {
            if let Some(fence) = shared
                .holder(token)
                .filter(|h| h.is_live(now))
                .map(Lock::fence)
            {
                shared.set_deadline(token, deadline);
                return fence;
            }
        }
        self.last_fence += 1;
        let fence = self.last_fence;
        let holder = Lock::new(token, deadline, fence).expect("a holder");
        match want {
            Want::Exclusive => self.value = Some(Value::Exclusive(Box::new(holder))),
            Want::Shared { limit } => match &mut self.value {
                Some(Value::Shared(shared)) if shared.live(now) > 0 => shared.insert(holder, None),
                _ => {
                    let mut shared = SharedLock::new(limit);
                    shared.insert(holder, None);
                    self.value = Some(Value::Shared(Box::new(shared)));
                }
            },
        }
        fence
    }

    /// Grant the waiters from the head for as long as the head is admitted.
    fn serve(&mut self, now: i64) -> Vec<(u32, u64)> {
        let mut served = Vec::new();
        while let Some(want) = self.queues.front(&self.id).map(|w| w.want) {
            if !self.held().is_none_or(|held| held.admits(want, now)) {
                break;
            }
            let waiter = self.queues.pop_front(&self.id).expect("the front waiter");
            let fence = self.store_grant(&waiter.token, waiter.want, now + waiter.ttl_ms, now);
            served.push((waiter.handle, fence));
            if waiter.want == Want::Exclusive {
                break;
            }
        }
        served
    }

    fn acquire(&mut self, tok: &Token, want: Want, ttl: i64, block: bool, now: i64) -> Outcome {
        self.prune(now);
        let served = if self.queues.has_waiters(&self.id) {
            self.serve(now)
        } else {
            Vec::new()
        };
        let queued = self.queues.shared_limit(&self.id);
        let others_waited = self.queues.has_waiters(&self.id);
        let before = self.snapshot();
        let decision = {
            let held = self.held();
            decide(held.as_ref(), want, Some(tok), now, queued, others_waited)
        };
        let deadline = now + ttl;
        let reply = match decision {
            Ok(Acquire::Grant) => Reply::Granted(self.store_grant(tok, want, deadline, now)),
            Ok(Acquire::Retry) => Reply::Retried(match &mut self.value {
                Some(Value::Exclusive(lock)) => {
                    lock.deadline_ms = deadline;
                    lock.fence()
                }
                Some(Value::Shared(shared)) => shared
                    .set_deadline(tok, deadline)
                    .expect("a retry of a holder"),
                Some(Value::Labeled(_)) | None => panic!("a retry without an unlabeled lock"),
            }),
            Ok(Acquire::Busy) if block => {
                let handle = self.next_handle;
                self.next_handle += 1;
                let serial = self.next_serial;
                self.next_serial += 1;
                self.serials.insert(handle, serial);
                let waiter = Waiter {
                    handle,
                    serial,
                    token: tok.clone(),
                    ttl_ms: ttl,
                    want,
                    options: Default::default(),
                };
                self.queues.push(self.id.clone(), waiter);
                Reply::Busy(Some(handle))
            }
            Ok(Acquire::Busy) => Reply::Busy(None),
            Err(e) => {
                assert_eq!(self.snapshot(), before, "an error changes nothing");
                Reply::Refused(e)
            }
        };
        self.drop_if_empty();
        Outcome {
            reply,
            served,
            others_waited,
        }
    }

    fn holds(&mut self, tok: &Token, now: i64) -> bool {
        self.held()
            .is_some_and(|held| held.holder(tok, now).is_some())
    }

    fn release(&mut self, tok: &Token, now: i64) -> Outcome {
        self.prune(now);
        if !self.holds(tok, now) {
            return Outcome::of(Reply::Released(false));
        }
        match &mut self.value {
            Some(Value::Shared(shared)) => {
                // The empty lock stays until a waiter replaces it or the key goes.
                shared.remove(tok).expect("the holder");
            }
            _ => self.value = None,
        }
        let served = if self.queues.has_waiters(&self.id) {
            self.serve(now)
        } else {
            Vec::new()
        };
        self.drop_if_empty();
        Outcome {
            reply: Reply::Released(true),
            served,
            others_waited: false,
        }
    }

    fn renew(&mut self, tok: &Token, ttl: i64, now: i64) -> Outcome {
        self.prune(now);
        if !self.holds(tok, now) {
            return Outcome::of(Reply::Renewed(false));
        }
        match &mut self.value {
            Some(Value::Exclusive(lock)) => lock.deadline_ms = now + ttl,
            Some(Value::Labeled(labeled)) => labeled.lock.deadline_ms = now + ttl,
            Some(Value::Shared(shared)) => assert!(shared.set_deadline(tok, now + ttl).is_some()),
            None => unreachable!(),
        }
        Outcome::of(Reply::Renewed(true))
    }

    fn tick(&mut self, now: i64) -> Outcome {
        self.prune(now);
        let served = if self.queues.has_waiters(&self.id) {
            self.serve(now)
        } else {
            Vec::new()
        };
        Outcome {
            reply: Reply::Nothing,
            served,
            others_waited: false,
        }
    }

    fn leave(&mut self, handle: u32) -> Outcome {
        let left = self.queues.remove(handle).map(|(lock, waiter)| {
            assert_eq!(lock, self.id);
            assert_eq!(waiter.handle, handle);
            assert_eq!(Some(&waiter.serial), self.serials.get(&handle));
            handle
        });
        assert!(self.queues.remove(handle).is_none(), "a handle leaves once");
        Outcome::of(Reply::Left(left))
    }

    /// Every stored holder (live or not yet pruned), in fence order, and the limit.
    fn holders(&mut self) -> (Vec<HolderView>, Option<Option<u32>>) {
        match &self.value {
            None | Some(Value::Labeled(_)) => (Vec::new(), None),
            Some(Value::Exclusive(lock)) => (
                vec![HolderView {
                    token: token_index(&spelled(lock)),
                    shared: false,
                    deadline: lock.deadline_ms,
                    fence: lock.fence(),
                }],
                None,
            ),
            Some(Value::Shared(shared)) => (
                shared
                    .holders()
                    .map(|h| HolderView {
                        token: token_index(&spelled(h)),
                        shared: true,
                        deadline: h.deadline_ms,
                        fence: h.fence(),
                    })
                    .collect(),
                Some(shared.limit()),
            ),
        }
    }

    fn live_holders(&mut self, now: i64) -> Vec<HolderView> {
        let (mut all, _) = self.holders();
        all.retain(|h| now < h.deadline);
        all
    }

    /// Everything an error must leave as it was.
    #[allow(clippy::type_complexity)]
    fn snapshot(&mut self) -> (Vec<HolderView>, Option<Option<u32>>, usize, Option<u32>) {
        let (holders, limit) = self.holders();
        let len = self.queues.len(&self.id);
        let front = self.queues.front(&self.id).map(|w| w.handle);
        (holders, limit, len, front)
    }
}

// ---- the model -----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MWaiter {
    handle: u32,
    token: usize,
    ask: Ask,
    ttl: i64,
}

/// The rules, plainly: a list of holders and a FIFO of waiters.
#[derive(Debug, Default)]
struct Model {
    holders: Vec<HolderView>,
    /// The limit of the shared holders (meaningful while any is held).
    limit: Option<u32>,
    waiters: VecDeque<MWaiter>,
    last_fence: u64,
    next_handle: u32,
}

impl Model {
    fn new() -> Self {
        Model {
            next_handle: 1,
            ..Model::default()
        }
    }

    fn expire(&mut self, now: i64) {
        self.holders.retain(|h| now < h.deadline);
    }

    fn live(&self, now: i64) -> Vec<HolderView> {
        self.holders
            .iter()
            .filter(|h| now < h.deadline)
            .cloned()
            .collect()
    }

    /// Whether `ask` could be granted by the live holders at `now`, waiters aside.
    fn room(&self, ask: Ask, now: i64) -> bool {
        let live = self.live(now);
        if live.is_empty() {
            return true;
        }
        match ask {
            Ask::Exclusive => false,
            Ask::Shared(_) => {
                live.iter().all(|h| h.shared) && self.limit.is_none_or(|n| live.len() < n as usize)
            }
        }
    }

    /// The limit shared waiters have set, if any shared request waits.
    fn queued_limit(&self) -> Option<Option<u32>> {
        self.waiters.iter().find_map(|w| match w.ask {
            Ask::Shared(limit) => Some(limit),
            Ask::Exclusive => None,
        })
    }

    fn grant(&mut self, token: usize, ask: Ask, deadline: i64) -> u64 {
        if let Some(h) = self
            .holders
            .iter_mut()
            .find(|h| h.token == token && h.shared && ask.shared())
        {
            h.deadline = deadline;
            return h.fence;
        }
        if self.holders.is_empty() {
            if let Ask::Shared(limit) = ask {
                self.limit = limit;
            }
        }
        self.last_fence += 1;
        self.holders.push(HolderView {
            token,
            shared: ask.shared(),
            deadline,
            fence: self.last_fence,
        });
        self.last_fence
    }

    fn serve(&mut self, now: i64) -> Vec<(u32, u64)> {
        let mut served = Vec::new();
        while let Some(head) = self.waiters.front() {
            if !self.room(head.ask, now) {
                break;
            }
            let head = self.waiters.pop_front().unwrap();
            let fence = self.grant(head.token, head.ask, now + head.ttl);
            served.push((head.handle, fence));
        }
        served
    }

    fn holder_at(&self, token: usize) -> Option<usize> {
        self.holders.iter().position(|h| h.token == token)
    }

    fn acquire(&mut self, token: usize, ask: Ask, ttl: i64, block: bool, now: i64) -> Outcome {
        self.expire(now);
        let served = self.serve(now);
        let others_waited = !self.waiters.is_empty();
        let reply = self.decide(token, ask, ttl, block, now);
        Outcome {
            reply,
            served,
            others_waited,
        }
    }

    fn decide(&mut self, token: usize, ask: Ask, ttl: i64, block: bool, now: i64) -> Reply {
        if let Some(at) = self.holder_at(token) {
            let held_shared = self.holders[at].shared;
            return match ask {
                Ask::Exclusive if held_shared => Reply::Refused(LockError::HeldShared),
                Ask::Shared(_) if !held_shared => Reply::Refused(LockError::HeldExclusively),
                Ask::Shared(limit) if limit != self.limit => {
                    Reply::Refused(LockError::LimitMismatch(self.limit))
                }
                _ => {
                    self.holders[at].deadline = now + ttl;
                    Reply::Retried(self.holders[at].fence)
                }
            };
        }
        if let Ask::Shared(limit) = ask {
            let held_shared = self.holders.first().is_some_and(|h| h.shared);
            if held_shared && self.limit != limit {
                return Reply::Refused(LockError::LimitMismatch(self.limit));
            }
            match self.queued_limit() {
                Some(queued) if queued != limit => {
                    return Reply::Refused(LockError::LimitMismatch(queued))
                }
                _ => {}
            }
        }
        if !self.waiters.is_empty() || !self.room(ask, now) {
            if !block {
                return Reply::Busy(None);
            }
            let handle = self.next_handle;
            self.next_handle += 1;
            self.waiters.push_back(MWaiter {
                handle,
                token,
                ask,
                ttl,
            });
            return Reply::Busy(Some(handle));
        }
        Reply::Granted(self.grant(token, ask, now + ttl))
    }

    fn release(&mut self, token: usize, now: i64) -> Outcome {
        self.expire(now);
        let Some(at) = self.holder_at(token) else {
            return Outcome::of(Reply::Released(false));
        };
        self.holders.remove(at);
        Outcome {
            reply: Reply::Released(true),
            served: self.serve(now),
            others_waited: false,
        }
    }

    fn renew(&mut self, token: usize, ttl: i64, now: i64) -> Outcome {
        self.expire(now);
        let Some(at) = self.holder_at(token) else {
            return Outcome::of(Reply::Renewed(false));
        };
        self.holders[at].deadline = now + ttl;
        Outcome::of(Reply::Renewed(true))
    }

    fn tick(&mut self, now: i64) -> Outcome {
        self.expire(now);
        Outcome {
            reply: Reply::Nothing,
            served: self.serve(now),
            others_waited: false,
        }
    }

    /// The handle `Op::Leave(pick)` names, and whether it waits.
    fn leave(&mut self, pick: usize) -> (u32, Outcome) {
        if self.waiters.is_empty() {
            let handle = (pick % self.next_handle as usize) as u32;
            return (handle, Outcome::of(Reply::Left(None)));
        }
        let waiter = self.waiters.remove(pick % self.waiters.len()).unwrap();
        (waiter.handle, Outcome::of(Reply::Left(Some(waiter.handle))))
    }
}

// ---- the run -------------------------------------------------------------------------------

/// LOCK.INFO-like queries, the queue and the invariants of the rules, after every step.
fn check_state(real: &mut Real, model: &Model, now: i64, step: usize) {
    let live = model.live(now);
    let mut real_live = real.live_holders(now);
    real_live.sort_by_key(|h| h.fence);
    assert_eq!(real_live, live, "step {step}: the live holders");

    // Never an exclusive holder beside another; distinct tokens; no more than the limit.
    if live.iter().any(|h| !h.shared) {
        assert_eq!(live.len(), 1, "step {step}: an exclusive holder is alone");
    }
    let mut tokens: Vec<usize> = real_live.iter().map(|h| h.token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(
        tokens.len(),
        real_live.len(),
        "step {step}: a token holds the lock once: {real_live:?}"
    );
    let (_, real_limit) = real.holders();
    if let Some(Some(n)) = real_limit {
        assert!(
            real_live.len() <= n as usize,
            "step {step}: {} live shared holders over LIMIT {n}",
            real_live.len()
        );
    }
    if live.iter().any(|h| h.shared) {
        assert_eq!(real_limit, Some(model.limit), "step {step}: the limit");
    }

    // LOCK.INFO: mode, holders, fence (the highest live), ttl (the latest deadline).
    {
        let held = real.held();
        let is_live = held.as_ref().is_some_and(|h| h.is_live(now));
        assert_eq!(is_live, !live.is_empty(), "step {step}: is_live");
        let live_count = held.as_ref().map_or(0, |h| h.live_holders(now));
        assert_eq!(live_count, live.len(), "step {step}: live_holders");
        let fence = held.as_ref().and_then(|h| h.fence(now));
        assert_eq!(
            fence,
            live.iter().map(|h| h.fence).max(),
            "step {step}: fence"
        );
        if is_live {
            let deadline = held.as_ref().and_then(Held::deadline);
            assert_eq!(
                deadline,
                live.iter().map(|h| h.deadline).max(),
                "step {step}: deadline"
            );
            let shared = matches!(held, Some(Held::Shared(_)));
            assert_eq!(shared, live[0].shared, "step {step}: mode");
        }
        if !model.holders.is_empty() && model.holders.iter().all(|h| now < h.deadline) {
            // Nothing expired since the last prune: the soonest deadline is a live one.
            let next = held.as_ref().and_then(Held::next_deadline);
            assert_eq!(
                next,
                model.holders.iter().map(|h| h.deadline).min(),
                "step {step}: next_deadline"
            );
        }
        for (i, t) in TOKENS.iter().enumerate() {
            let got = held
                .as_ref()
                .and_then(|h| h.holder(&token(t), now))
                .map(Lock::fence);
            let want = live.iter().find(|h| h.token == i).map(|h| h.fence);
            assert_eq!(got, want, "step {step}: holder({i})");
        }
        for ask in ASKS {
            let got = held.as_ref().is_none_or(|h| h.admits(ask.want(), now));
            assert_eq!(got, model.room(ask, now), "step {step}: admits({ask:?})");
        }
    }

    // The queue: length, head, the waiters' limit, every waiter findable by handle.
    assert_eq!(
        real.queues.len(&real.id),
        model.waiters.len(),
        "step {step}: queue length"
    );
    assert_eq!(
        real.queues.total(),
        model.waiters.len(),
        "step {step}: total"
    );
    assert_eq!(
        real.queues.has_waiters(&real.id),
        !model.waiters.is_empty(),
        "step {step}: has_waiters"
    );
    assert_eq!(
        real.queues.front(&real.id).map(|w| w.handle),
        model.waiters.front().map(|w| w.handle),
        "step {step}: queue head"
    );
    assert_eq!(
        real.queues.shared_limit(&real.id),
        model.queued_limit(),
        "step {step}: queued limit"
    );
    for w in &model.waiters {
        let serial = real.serials[&w.handle];
        assert!(
            real.queues.is_waiting(w.handle, serial),
            "step {step}: waiter {} is queued",
            w.handle
        );
    }
}

fn run_policy(ops: &[Op], one_waiter_per_token: bool) {
    let mut real = Real::new();
    let mut model = Model::new();
    let mut now = START_MS;
    let mut highest_fence = 0u64;
    for (step, op) in ops.iter().enumerate() {
        let queue_before: Vec<u32> = model.waiters.iter().map(|w| w.handle).collect();
        let waiter_tokens: HashMap<u32, usize> =
            model.waiters.iter().map(|w| (w.handle, w.token)).collect();
        let live_before = real.live_holders(now);
        let (got, want) = match *op {
            Op::Acquire {
                token: t,
                ask,
                ttl,
                block,
            } => {
                // One client per token: a token already waiting asks without BLOCK.
                let block =
                    block && !(one_waiter_per_token && model.waiters.iter().any(|w| w.token == t));
                let held_fence = real
                    .held()
                    .and_then(|h| h.holder(&token(TOKENS[t]), now).map(Lock::fence));
                let got = real.acquire(&token(TOKENS[t]), ask.want(), ttl, block, now);
                let want = model.acquire(t, ask, ttl, block, now);
                // No overtaking: while anyone waits, only a retry or an error is not Busy.
                if got.others_waited {
                    assert!(
                        !matches!(got.reply, Reply::Granted(_)),
                        "step {step}: {op:?} overtook a waiter: {got:?}"
                    );
                }
                // A retry keeps the fence the token held (before the step, or from a waiter
                // of its own granted just before the decision).
                if let Reply::Retried(fence) = got.reply {
                    let served_fence = got
                        .served
                        .iter()
                        .filter(|&&(h, _)| waiter_tokens.get(&h) == Some(&t))
                        .map(|&(_, f)| f)
                        .next();
                    assert_eq!(
                        Some(fence),
                        held_fence.or(served_fence),
                        "step {step}: a retry keeps its fence"
                    );
                }
                (got, want)
            }
            Op::Release { token: t } => {
                (real.release(&token(TOKENS[t]), now), model.release(t, now))
            }
            Op::Renew { token: t, ttl } => (
                real.renew(&token(TOKENS[t]), ttl, now),
                model.renew(t, ttl, now),
            ),
            Op::Advance(ms) => {
                now += ms;
                (Outcome::of(Reply::Nothing), Outcome::of(Reply::Nothing))
            }
            Op::Tick => (real.tick(now), model.tick(now)),
            Op::Leave(pick) => {
                let (handle, want) = model.leave(pick);
                (real.leave(handle), want)
            }
        };
        assert_eq!(got.reply, want.reply, "step {step}: {op:?}");
        assert_eq!(got.served, want.served, "step {step}: {op:?} served");
        assert_eq!(got.others_waited, want.others_waited, "step {step}: {op:?}");

        // FIFO across modes: the granted waiters are the head of the queue, in order.
        let served: Vec<u32> = got.served.iter().map(|&(h, _)| h).collect();
        assert!(
            queue_before.starts_with(&served),
            "step {step}: served {served:?} out of order from {queue_before:?}"
        );
        // Every grant draws a fence above all earlier ones (waiters first, then the caller).
        let mut fences: Vec<u64> = got.served.iter().map(|&(_, f)| f).collect();
        if let Reply::Granted(f) = got.reply {
            fences.push(f);
        }
        let mut this_step = Vec::new();
        for f in fences {
            // A waiter with the token of a live holder gets that hold again (its fence).
            let same_hold = this_step.contains(&f)
                || live_before.iter().any(|h| h.fence == f && now < h.deadline);
            this_step.push(f);
            if same_hold {
                continue;
            }
            assert!(
                f > highest_fence,
                "step {step}: fence {f} after {highest_fence}"
            );
            highest_fence = f;
        }
        // A live holder leaves only by its own release (or its deadline).
        let after = real.live_holders(now);
        for h in live_before.iter().filter(|h| now < h.deadline) {
            let released = matches!(*op, Op::Release { token } if token == h.token);
            let kept = after
                .iter()
                .any(|a| a.token == h.token && a.fence == h.fence);
            assert!(
                kept || released,
                "step {step}: {op:?} dropped live holder {h:?}"
            );
        }
        check_state(&mut real, &model, now, step);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Random ACQUIRE (exclusive, SHARED, LIMIT 1..=3, with or without BLOCK), RELEASE, RENEW,
    /// timer ticks, waiters leaving and the clock, over one lock: the real core types driven
    /// by the queue policy agree with the model after every step, and keep the rules.
    #[test]
    fn the_queue_policy_keeps_the_rules(ops in ops()) {
        run_policy(&ops, true);
    }

    /// As above, but two clients may wait with the same token: a token still never holds the
    /// lock twice (each holder has its own token).
    #[test]
    fn a_token_waiting_twice_never_holds_twice(ops in ops()) {
        run_policy(&ops, false);
    }
}

/// The smallest case of the property above: while "a" holds the lock, two clients wait with one
/// token for `LIMIT 2`; when "a"'s hold ends, both are answered with the one hold (one fence),
/// and a RELEASE with the token frees it. (Before the fix, the token held the lock twice.)
#[test]
fn two_waiters_with_one_token_get_one_hold() {
    let wait = Op::Acquire {
        token: 3,
        ask: Ask::Shared(Some(2)),
        ttl: 10,
        block: true,
    };
    let ops = [
        Op::Acquire {
            token: 0,
            ask: Ask::Exclusive,
            ttl: 1,
            block: false,
        },
        wait.clone(),
        wait,
        Op::Advance(1),
        Op::Tick,
    ];
    run_policy(&ops, false);
}

// =============================================================================================
// 2. The encoding round-trips shared locks
// =============================================================================================

fn any_token() -> impl Strategy<Value = Vec<u8>> {
    let hex = b"0123456789abcdef";
    prop_oneof![
        // Short, inline.
        vec(any::<u8>(), 1..=15),
        // 32 lowercase hex.
        vec(0usize..16, 32).prop_map(move |d| d.iter().map(|&i| hex[i]).collect()),
        // A lowercase UUID.
        vec(0usize..16, 32).prop_map(move |d| {
            let mut out = Vec::with_capacity(36);
            for (i, &x) in d.iter().enumerate() {
                if [8, 12, 16, 20].contains(&i) {
                    out.push(b'-');
                }
                out.push(hex[x]);
            }
            out
        }),
        // Anything else, on the heap.
        vec(any::<u8>(), 16..=256),
    ]
}

fn any_limit() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        (1u32..=4).prop_map(Some),
        (1u32..=MAX_LIMIT).prop_map(Some)
    ]
}

/// Holders with distinct tokens and fences, in a random insertion order.
fn any_holders() -> impl Strategy<Value = Vec<(Vec<u8>, i64, u64)>> {
    (1usize..24)
        .prop_flat_map(|n| {
            (
                btree_set(any_token(), n),
                btree_set(0..=MAX_FENCE, n),
                vec(any::<i64>(), n),
                any::<u64>(),
            )
        })
        .prop_map(|(tokens, fences, deadlines, seed)| {
            let mut holders: Vec<_> = tokens
                .into_iter()
                .zip(fences)
                .zip(deadlines)
                .map(|((t, f), d)| (t, d, f))
                .collect();
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..holders.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                holders.swap(i, (s % (i as u64 + 1)) as usize);
            }
            holders
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// Any shared lock is written as kind, limit, count and its holders in grant order, and
    /// reads back equal, with every holder found by its token.
    #[test]
    fn shared_locks_round_trip(limit in any_limit(), holders in any_holders()) {
        let mut shared = SharedLock::new(limit);
        for (t, deadline, fence) in &holders {
            shared.insert(Lock::new(&token(t), *deadline, *fence).unwrap(), None);
        }
        let mut by_fence = holders.clone();
        by_fence.sort_by_key(|&(_, _, f)| f);

        let mut to = Fields::default();
        encode_value(&Held::Shared(&mut shared), &mut to);
        let mut expected = vec![
            Field::Unsigned(1),
            Field::Unsigned(limit.map_or(0, u64::from)),
            Field::Unsigned(holders.len() as u64),
        ];
        for (t, d, f) in &by_fence {
            expected.extend([Field::Bytes(t.clone()), Field::Signed(*d), Field::Unsigned(*f)]);
        }
        prop_assert_eq!(to.0.iter().cloned().collect::<Vec<_>>(), expected);

        let mut from = to.clone();
        let mut back = decode_value(CURRENT_VERSION, &mut from).unwrap();
        prop_assert!(from.0.is_empty(), "every field read");
        let mut rebuilt = SharedLock::new(limit);
        for (t, d, f) in &by_fence {
            rebuilt.insert(Lock::new(&token(t), *d, *f).unwrap(), None);
        }
        prop_assert_eq!(&back, &Value::Shared(Box::new(rebuilt)));
        prop_assert_eq!(back.held().highest_fence(), by_fence.last().unwrap().2);
        let Value::Shared(read) = &mut back else {
            panic!("not shared: {back:?}");
        };
        prop_assert_eq!(read.limit(), limit);
        prop_assert_eq!(read.len(), holders.len());
        for (t, d, f) in &holders {
            let h = read.holder(&token(t)).expect("found by token");
            prop_assert_eq!((spelled(h), h.deadline_ms, h.fence()), (t.clone(), *d, *f));
        }
        prop_assert_eq!(read.earliest_deadline(), holders.iter().map(|h| h.1).min());
        prop_assert_eq!(read.latest_deadline(), holders.iter().map(|h| h.1).max());

        // Written again, the same fields.
        let mut again = Fields::default();
        encode_value(&back.held(), &mut again);
        prop_assert_eq!(again, to);
    }

    /// An exclusive lock round-trips too, with any token form.
    #[test]
    fn exclusive_locks_round_trip(t in any_token(), deadline in any::<i64>(), fence in 0..=MAX_FENCE) {
        let mut lock = Lock::new(&token(&t), deadline, fence).unwrap();
        let mut to = Fields::default();
        encode_value(&Held::Exclusive(&mut lock, None), &mut to);
        let back = decode_value(CURRENT_VERSION, &mut to).unwrap();
        prop_assert!(to.0.is_empty());
        prop_assert_eq!(back, Value::Exclusive(Box::new(Lock::new(&token(&t), deadline, fence).unwrap())));
    }
}

// =============================================================================================
// 3. SharedLock's indexes against a BTreeMap
// =============================================================================================

/// Tokens of every storage form, one binary.
const INDEX_TOKENS: [&[u8]; 6] = [
    b"a",
    b"b\x00c",
    b"fedcba9876543210fedcba9876543210",
    b"00000000-0000-4000-8000-000000000000",
    b"a-token-long-enough-to-live-on-the-heap",
    b"FEDCBA9876543210FEDCBA9876543210",
];

#[derive(Debug, Clone)]
enum IndexOp {
    /// A new holder with a new fence (skipped when the token holds: the caller's check).
    Insert {
        token: usize,
        deadline: i64,
    },
    /// An effect: the holder with this token replaced (same fence when `keep`, else new).
    Upsert {
        token: usize,
        deadline: i64,
        keep: bool,
    },
    Remove {
        token: usize,
    },
    SetDeadline {
        token: usize,
        deadline: i64,
    },
    Prune {
        now: i64,
    },
}

fn index_op() -> impl Strategy<Value = IndexOp> {
    let token = 0..INDEX_TOKENS.len();
    let deadline = 0i64..100;
    prop_oneof![
        5 => (token.clone(), deadline.clone())
            .prop_map(|(token, deadline)| IndexOp::Insert { token, deadline }),
        2 => (token.clone(), deadline.clone(), any::<bool>())
            .prop_map(|(token, deadline, keep)| IndexOp::Upsert { token, deadline, keep }),
        2 => token.clone().prop_map(|token| IndexOp::Remove { token }),
        2 => (token, deadline.clone())
            .prop_map(|(token, deadline)| IndexOp::SetDeadline { token, deadline }),
        2 => deadline.prop_map(|now| IndexOp::Prune { now }),
    ]
}

/// fence -> (token, deadline).
type IndexModel = BTreeMap<u64, (usize, i64)>;

fn model_fence_of(m: &IndexModel, token: usize) -> Option<u64> {
    m.iter().find(|(_, &(t, _))| t == token).map(|(&f, _)| f)
}

fn check_index(s: &SharedLock, m: &IndexModel, limit: Option<u32>, step: usize) {
    assert_eq!(s.len(), m.len(), "step {step}: len");
    assert_eq!(s.is_empty(), m.is_empty(), "step {step}: is_empty");
    let got: Vec<(Vec<u8>, i64, u64)> = s
        .holders()
        .map(|h| (spelled(h), h.deadline_ms, h.fence()))
        .collect();
    let want: Vec<(Vec<u8>, i64, u64)> = m
        .iter()
        .map(|(&f, &(t, d))| (INDEX_TOKENS[t].to_vec(), d, f))
        .collect();
    assert_eq!(got, want, "step {step}: holders in grant order");
    for (i, t) in INDEX_TOKENS.iter().enumerate() {
        let got = s.holder(&token(t)).map(|h| (h.fence(), h.deadline_ms));
        let want = model_fence_of(m, i).map(|f| (f, m[&f].1));
        assert_eq!(got, want, "step {step}: holder({i})");
    }
    let deadlines = || m.values().map(|&(_, d)| d);
    assert_eq!(
        s.earliest_deadline(),
        deadlines().min(),
        "step {step}: earliest"
    );
    assert_eq!(
        s.latest_deadline(),
        deadlines().max(),
        "step {step}: latest"
    );
    // Probe every deadline, either side of it, and beyond.
    let mut probes: Vec<i64> = deadlines().flat_map(|d| [d - 1, d, d + 1]).collect();
    probes.extend([-1, 0, 200]);
    for now in probes {
        let live: Vec<u64> = m
            .iter()
            .filter(|(_, &(_, d))| now < d)
            .map(|(&f, _)| f)
            .collect();
        assert_eq!(s.live(now), live.len(), "step {step}: live({now})");
        assert_eq!(
            s.max_live_fence(now),
            live.last().copied(),
            "step {step}: max_live_fence({now})"
        );
        let room = limit.is_none_or(|n| live.len() < n as usize);
        assert_eq!(s.has_room(now), room, "step {step}: has_room({now})");
    }
}

fn run_index_ops(limit: Option<u32>, ops: &[IndexOp]) {
    let mut s = SharedLock::new(limit);
    let mut m = IndexModel::new();
    let mut last_fence = 0u64;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            IndexOp::Insert { token: t, deadline } => {
                if model_fence_of(&m, t).is_none() {
                    last_fence += 1;
                    s.insert(
                        Lock::new(&token(INDEX_TOKENS[t]), deadline, last_fence).unwrap(),
                        None,
                    );
                    m.insert(last_fence, (t, deadline));
                }
            }
            IndexOp::Upsert {
                token: t,
                deadline,
                keep,
            } => {
                let old = model_fence_of(&m, t);
                let fence = match old {
                    Some(f) if keep => f,
                    _ => {
                        last_fence += 1;
                        last_fence
                    }
                };
                s.upsert(
                    Lock::new(&token(INDEX_TOKENS[t]), deadline, fence).unwrap(),
                    None,
                );
                if let Some(f) = old {
                    m.remove(&f);
                }
                m.insert(fence, (t, deadline));
            }
            IndexOp::Remove { token: t } => {
                let got = s
                    .remove(&token(INDEX_TOKENS[t]))
                    .map(|h| (h.fence(), h.deadline_ms));
                let want = model_fence_of(&m, t).map(|f| (f, m.remove(&f).unwrap().1));
                assert_eq!(got, want, "step {step}: remove({t})");
            }
            IndexOp::SetDeadline { token: t, deadline } => {
                let got = s.set_deadline(&token(INDEX_TOKENS[t]), deadline);
                let want = model_fence_of(&m, t).inspect(|f| m.get_mut(f).unwrap().1 = deadline);
                assert_eq!(got, want, "step {step}: set_deadline({t})");
            }
            IndexOp::Prune { now } => {
                let got: Vec<(Vec<u8>, i64, u64)> = s
                    .prune(now)
                    .iter()
                    .map(|h| (spelled(h), h.deadline_ms, h.fence()))
                    .collect();
                let mut gone: Vec<(i64, u64, usize)> = m
                    .iter()
                    .filter(|(_, &(_, d))| d <= now)
                    .map(|(&f, &(t, d))| (d, f, t))
                    .collect();
                gone.sort_unstable();
                m.retain(|_, &mut (_, d)| d > now);
                let want: Vec<(Vec<u8>, i64, u64)> = gone
                    .into_iter()
                    .map(|(d, f, t)| (INDEX_TOKENS[t].to_vec(), d, f))
                    .collect();
                assert_eq!(got, want, "step {step}: prune({now}), soonest first");
            }
        }
        check_index(&s, &m, limit, step);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Random inserts, upserts, removals, deadline moves and prunes: lookups by token, the
    /// deadline order, live counts, the highest live fence and the prune order agree with a
    /// BTreeMap by fence.
    #[test]
    fn shared_lock_indexes_stay_consistent(
        limit in prop_oneof![Just(None), (1u32..=4).prop_map(Some)],
        ops in vec(index_op(), 1..60),
    ) {
        run_index_ops(limit, &ops);
    }
}
