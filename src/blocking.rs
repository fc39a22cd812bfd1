//! Server-side waiting for LOCK.ACQUIRE ... BLOCK: blocking a client, the server's callbacks
//! for it (reply, timeout, disconnect, free), and the hand-off of a freed lock to the first
//! waiter, from RELEASE itself, from a timer at the holder's deadline, and (deferred to a 0 ms
//! timer, because the server is in the middle of deleting) after DEL, overwrite, FLUSHDB,
//! FLUSHALL and SWAPDB.
//!
//! The grant is decided, stored and replicated where the lock is freed; the reply callback
//! only delivers it. A grant whose client vanished before the reply went out is taken back and
//! handed on. Timers and deferred work write only on a primary, and never while clients are
//! paused (a write then would trip the server's own assertion during a failover).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::os::raw::c_int;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use redis_module::{
    raw, Context, ContextFlags, RedisError, RedisModuleTimerID, RedisString, RedisValue,
};

use crate::api;
use crate::clock;
use crate::error::{LockError, LockResult};
use crate::events;
use crate::guard;
use crate::key::{LockKey, Mode};
use crate::lock::{self, Lock};
use crate::notify;
use crate::replication;
use crate::stats::{count, STATS};
use crate::token::Token;
use crate::waiters::{LockId, Queues, Waiter};

/// A blocked client's handle, as the server gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Blocked(*mut raw::RedisModuleBlockedClient);

/// What a blocked client is answered with, handed to the server on unblocking.
enum Reply {
    Granted {
        lock: LockId,
        token: Token,
        fence: u64,
        /// Set by the reply callback; a grant never delivered is taken back.
        delivered: bool,
    },
    Error(String),
    /// The BLOCK timeout passed: null.
    TimedOut,
}

/// A grant whose client disconnected before its reply: free it unless it changed since.
struct Revoke {
    lock: LockId,
    token: Token,
    fence: u64,
}

#[derive(Default)]
struct Pending {
    serve: HashSet<LockId>,
    revoke: Vec<Revoke>,
    /// Locks the server removed or replaced after their deadline: notified as expired.
    expired: Vec<LockId>,
    armed: bool,
}

/// A grant handed to the server whose reply has not been delivered yet.
struct InFlight {
    token: Token,
    fence: u64,
    /// The owner retried or renewed meanwhile: it has the lock whatever became of the reply.
    seen: bool,
}

#[derive(Default)]
struct State {
    queues: Queues<Blocked>,
    next_serial: u64,
    in_flight: HashMap<LockId, InFlight>,
    /// The BLOCK timeout timer of each waiter that has one, by serial.
    timeouts: HashMap<u64, RedisModuleTimerID>,
    /// Per lock with waiters: the timer at its holder's deadline, and that deadline.
    timers: HashMap<LockId, (RedisModuleTimerID, i64)>,
    pending: Pending,
}

thread_local! {
    // Everything here runs on the server's main thread.
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// A context of the module's own for timers created outside any command (the unlink callback).
static TIMER_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());

/// Timers never wait longer than this; one that fires early just re-arms.
const MAX_TIMER: Duration = Duration::from_secs(24 * 60 * 60);
/// While clients are paused, deferred hand-offs are retried this often.
const PAUSED_RETRY_MS: i64 = 10;

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> LockResult<R> {
    STATE.with(|state| {
        let mut state = state
            .try_borrow_mut()
            .map_err(|_| LockError::Internal("waiter state re-entered".into()))?;
        Ok(f(&mut state))
    })
}

/// Subscribe to the events that free locks without a key callback (FLUSHDB, FLUSHALL, SWAPDB).
pub fn init(ctx: &Context) -> LockResult<()> {
    let detached = api!(RedisModule_GetDetachedThreadSafeContext)?;
    TIMER_CTX.store(unsafe { detached(ctx.ctx) }, Ordering::Relaxed);
    events::subscribe(ctx, raw::REDISMODULE_EVENT_FLUSHDB, on_flush)?;
    events::subscribe(ctx, raw::REDISMODULE_EVENT_SWAPDB, on_swapdb)
}

/// The lock under `key` in the client's selected database.
pub fn lock_id(ctx: &Context, key: &RedisString) -> LockResult<LockId> {
    let selected = api!(RedisModule_GetSelectedDb)?;
    Ok(LockId {
        db: unsafe { selected(ctx.ctx) },
        key: key.as_slice().to_vec(),
    })
}

/// Expired locks of database `db` not yet notified, taken out to be notified now.
pub fn take_expired(db: i32) -> Vec<Vec<u8>> {
    with_state(|s| {
        if s.pending.expired.is_empty() {
            return Vec::new();
        }
        let (here, elsewhere) = std::mem::take(&mut s.pending.expired)
            .into_iter()
            .partition(|id| id.db == db);
        s.pending.expired = elsewhere;
        here.into_iter().map(|id: LockId| id.key).collect()
    })
    .unwrap_or_default()
}

/// How many clients wait, over all locks.
pub fn total_waiters() -> usize {
    with_state(|s| s.queues.total()).unwrap_or(0)
}

/// Whether any client waits for any lock: the commands' fast path skips the queues when not.
pub fn anyone_waiting() -> bool {
    with_state(|s| !s.queues.is_empty()).unwrap_or(true)
}

/// How many clients wait for the lock.
pub fn waiters(id: &LockId) -> usize {
    with_state(|s| s.queues.len(id)).unwrap_or(0)
}

pub fn has_waiters(id: &LockId) -> bool {
    with_state(|s| s.queues.has_waiters(id)).unwrap_or(false)
}

/// Block the calling client until the lock is handed to it or `timeout_ms` passes (0: no limit).
/// `holder_deadline` is when the current holder's lock runs out.
pub fn block(
    ctx: &Context,
    id: LockId,
    holder_deadline: i64,
    token: Token,
    ttl_ms: i64,
    timeout_ms: i64,
) -> LockResult<RedisValue> {
    let block_client = api!(RedisModule_BlockClient)?;
    let set_disconnect = api!(RedisModule_SetDisconnectCallback)?;
    // Timed on the monotonic clock, so a wall-clock step or the server clock's whole
    // milliseconds can never end a wait before its timeout.
    let timeout_at = match timeout_ms {
        0 => None,
        ms => Some(
            u64::try_from(ms)
                .ok()
                .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)))
                .ok_or(LockError::TimeoutOverflow(ms))?,
        ),
    };
    // The server is given no timeout: BLOCK timeouts run on the module's own timers, so a
    // timeout can never race a grant inside the server (on Redis 7.0 that race left the
    // client without any reply). The timeout callback still serves CLIENT UNBLOCK.
    // SAFETY: called from a command on the main thread; the callbacks live as long as the module.
    let handle =
        unsafe { block_client(ctx.ctx, Some(on_reply), Some(on_timeout), Some(on_free), 0) };
    if handle.is_null() {
        return Err(LockError::Internal(
            "the server could not block the client".into(),
        ));
    }
    unsafe { set_disconnect(handle, Some(on_disconnect)) };
    let pushed = with_state(|s| {
        s.next_serial += 1;
        let serial = s.next_serial;
        let waiter = Waiter {
            handle: Blocked(handle),
            serial,
            token,
            ttl_ms,
        };
        s.queues.push(id.clone(), waiter);
        serial
    });
    let serial = match pushed {
        Ok(serial) => serial,
        Err(e) => {
            // Not queued, so nothing else would ever unblock it.
            unblock_with_error(Blocked(handle), 0, &e);
            return Ok(RedisValue::NoReply);
        }
    };
    if let Some(at) = timeout_at {
        arm_timeout(BlockTimeout {
            handle: handle as usize,
            serial,
            at,
        });
    }
    arm(&id, holder_deadline);
    Ok(RedisValue::NoReply)
}

/// Hand the lock under `key` (open for writing, free or being freed) to its first waiter that
/// can take it: store the grant, replicate it, unblock the waiter. False when no one waits.
pub fn grant_to_head(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    id: &LockId,
) -> LockResult<bool> {
    while let Some(waiter) = with_state(|s| s.queues.pop_front(id))? {
        let lock = match grant_for(&waiter) {
            Ok(lock) => lock,
            Err(e) => {
                unblock_with_error(waiter.handle, waiter.serial, &e);
                continue;
            }
        };
        let (token, fence, deadline) = (waiter.token.clone(), lock.fence(), lock.deadline_ms);
        if let Err(e) = lock_key.store(lock) {
            unblock_with_error(waiter.handle, waiter.serial, &e);
            return Err(e);
        }
        if let Some(stored) = lock_key.lock()? {
            replication::replicate_lock(ctx, key, stored);
        }
        count(&STATS.handed_off);
        notify::event(ctx, notify::HANDED_OFF, key);
        let in_flight = InFlight {
            token: token.clone(),
            fence,
            seen: false,
        };
        let _ = with_state(|s| s.in_flight.insert(id.clone(), in_flight));
        unblock(
            waiter.handle,
            waiter.serial,
            Some(Reply::Granted {
                lock: id.clone(),
                token,
                fence,
                delivered: false,
            }),
        );
        deadline_moved(id, deadline);
        return Ok(true);
    }
    disarm(id);
    Ok(false)
}

/// A live lock under `key` is freed (released, or a grant taken back): it goes to the first
/// waiter, or the key is deleted.
pub fn free_lock(ctx: &Context, key: &RedisString, lock_key: &mut LockKey) -> LockResult<()> {
    lock_key.found_live();
    let handed_off = anyone_waiting() && grant_to_head(ctx, key, lock_key, &lock_id(ctx, key)?)?;
    if !handed_off {
        lock_key.delete()?;
        replication::replicate_release(ctx, key);
    }
    Ok(())
}

/// A new lock for a waiter: its own deadline counted from now and a new fence.
fn grant_for(waiter: &Waiter<Blocked>) -> LockResult<Lock> {
    let deadline_ms = lock::deadline(clock::now_ms()?, waiter.ttl_ms)?;
    Lock::new(&waiter.token, deadline_ms, clock::grant_fence()?)
}

/// The holder's deadline is now `deadline` (grant, renewal, retry): the timer follows it.
pub fn deadline_moved(id: &LockId, deadline: i64) {
    if has_waiters(id) {
        arm(id, deadline);
    } else {
        disarm(id);
    }
}

/// The type's unlink callback: a lock key left the database (DEL, UNLINK, overwrite, expiry,
/// RENAME, MOVE). Its waiters are served once the server has finished the deletion; a lock
/// whose deadline had passed is counted and notified as expired.
pub fn key_removed(db: i32, key: &[u8], expired: bool) {
    if expired {
        count(&STATS.expired);
    }
    // Runs for every deleted or replaced lock (each RELEASE): no work when nobody waits.
    if !expired && !anyone_waiting() {
        return;
    }
    let id = LockId {
        db,
        key: key.to_vec(),
    };
    let waited = has_waiters(&id);
    if waited || expired {
        defer(|p| {
            if expired {
                p.expired.push(id.clone());
            }
            if waited {
                p.serve.insert(id);
            }
        });
    }
}

// ---- timers -------------------------------------------------------------------------------

fn timer_ctx() -> Option<Context> {
    let ctx = TIMER_CTX.load(Ordering::Relaxed);
    (!ctx.is_null()).then(|| Context::new(ctx))
}

/// How long a timer waits for something `left` away: whole milliseconds (the timers' unit)
/// rounded up, so it never fires early, and at most MAX_TIMER (one that fires early re-arms).
fn period(left: Duration) -> Duration {
    let ms = u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
    Duration::from_millis(ms).min(MAX_TIMER)
}

/// The period of a timer for Unix time `at` (ms); zero if that has passed.
fn until(at: i64) -> Duration {
    let now = clock::now_ms().unwrap_or(at);
    period(Duration::from_millis(
        u64::try_from(at.saturating_sub(now)).unwrap_or(0),
    ))
}

/// A timer at the holder's deadline, replacing an earlier one at another time.
fn arm(id: &LockId, deadline: i64) {
    let current = with_state(|s| s.timers.get(id).copied()).ok().flatten();
    if current.is_some_and(|(_, at)| at == deadline) {
        return;
    }
    disarm(id);
    let Some(ctx) = timer_ctx() else { return };
    let timer = ctx.create_timer(until(deadline), on_deadline, id.clone());
    let _ = with_state(|s| s.timers.insert(id.clone(), (timer, deadline)));
}

fn disarm(id: &LockId) {
    if let Some((timer, _)) = with_state(|s| s.timers.remove(id)).ok().flatten() {
        if let Some(ctx) = timer_ctx() {
            let _ = ctx.stop_timer::<LockId>(timer);
        }
    }
}

/// The holder's deadline has come: hand the lock on (or follow a renewal).
fn on_deadline(ctx: &Context, id: LockId) {
    guard::callback((), || {
        let _ = with_state(|s| s.timers.remove(&id));
        defer_now(ctx, |p| {
            p.serve.insert(id);
        });
    })
}

/// A waiter's BLOCK timeout: which waiter (handle and serial), and when.
struct BlockTimeout {
    handle: usize,
    serial: u64,
    at: Instant,
}

fn arm_timeout(timeout: BlockTimeout) {
    let Some(ctx) = timer_ctx() else { return };
    let serial = timeout.serial;
    let left = timeout.at.saturating_duration_since(Instant::now());
    let timer = ctx.create_timer(period(left), on_block_timeout, timeout);
    let _ = with_state(|s| s.timeouts.insert(serial, timer));
}

/// The waiter `serial` left the queue: its timeout timer goes too.
fn forget_timeout(serial: u64) {
    let Some(timer) = with_state(|s| s.timeouts.remove(&serial)).ok().flatten() else {
        return;
    };
    if let Some(ctx) = timer_ctx() {
        let _ = ctx.stop_timer::<BlockTimeout>(timer);
    }
}

/// A waiter's timeout has come: if it still waits, it leaves the queue with a null reply.
fn on_block_timeout(_ctx: &Context, timeout: BlockTimeout) {
    guard::callback((), || {
        // This timer has fired: it is no longer one to stop.
        let _ = with_state(|s| s.timeouts.remove(&timeout.serial));
        let handle = Blocked(timeout.handle as *mut raw::RedisModuleBlockedClient);
        if !with_state(|s| s.queues.is_waiting(handle, timeout.serial)).unwrap_or(false) {
            return; // granted, disconnected or unblocked since
        }
        if Instant::now() < timeout.at {
            arm_timeout(timeout); // a long timeout, in steps
            return;
        }
        if let Ok(Some((id, _))) = with_state(|s| s.queues.remove_serial(handle, timeout.serial)) {
            count(&STATS.timeouts);
            unblock(handle, timeout.serial, Some(Reply::TimedOut));
            if !has_waiters(&id) {
                disarm(&id);
            }
        }
    })
}

/// The owner of `id` showed it has its grant (a retry or a renewal with `token`): a grant
/// whose reply seemed lost must not be taken back from it.
pub fn owner_seen(id: &LockId, token: &Token) {
    let _ = with_state(|s| {
        if let Some(grant) = s.in_flight.get_mut(id) {
            grant.seen |= grant.token == *token;
        }
        s.pending
            .revoke
            .retain(|r| !(r.lock == *id && r.token == *token));
    });
}

/// Whether some grant's delivery is still open (in flight, or to be taken back).
pub fn grants_unsettled() -> bool {
    with_state(|s| !s.in_flight.is_empty() || !s.pending.revoke.is_empty()).unwrap_or(true)
}

/// Queue work for the deferred runner and make sure it is scheduled.
fn defer(add: impl FnOnce(&mut Pending)) {
    let schedule = with_state(|s| {
        add(&mut s.pending);
        !std::mem::replace(&mut s.pending.armed, true)
    });
    if schedule == Ok(true) {
        schedule_pending(0);
    }
}

/// Queue work and run it at once (from a timer, where the server is not mid-operation).
fn defer_now(ctx: &Context, add: impl FnOnce(&mut Pending)) {
    let _ = with_state(|s| add(&mut s.pending));
    run_pending(ctx, ());
}

fn schedule_pending(delay_ms: i64) {
    if let Some(ctx) = timer_ctx() {
        ctx.create_timer(
            Duration::from_millis(delay_ms.unsigned_abs()),
            on_pending_timer,
            (),
        );
    }
}

/// The scheduled runner: no longer armed once it runs.
fn on_pending_timer(ctx: &Context, (): ()) {
    let _ = with_state(|s| s.pending.armed = false);
    run_pending(ctx, ());
}

fn run_pending(ctx: &Context, (): ()) {
    guard::callback((), || {
        // Timers fire on replicas too; only a primary hands locks over (a demoted server has
        // no waiters left, and its data is now its primary's).
        if !ctx.get_flags().contains(ContextFlags::MASTER) {
            let _ = with_state(|s| s.pending = Pending::default());
            return;
        }
        if events::clients_paused() {
            // One retry loop at a time, however many timers find the pause.
            if with_state(|s| !std::mem::replace(&mut s.pending.armed, true)) == Ok(true) {
                schedule_pending(PAUSED_RETRY_MS);
            }
            return;
        }
        let Ok(pending) = with_state(|s| std::mem::take(&mut s.pending)) else {
            return;
        };
        for id in pending.expired {
            if let Ok(key) = open_name(ctx, &id) {
                notify::event(ctx, notify::EXPIRED, &key);
            }
        }
        for revoke in pending.revoke {
            if let Err(e) = take_back(ctx, revoke) {
                ctx.log_warning(&format!("lock hand-off: {e}"));
            }
        }
        for id in pending.serve {
            if let Err(e) = serve(ctx, &id) {
                ctx.log_warning(&format!("lock hand-off: {e}"));
            }
        }
    })
}

/// Select the lock's database and name its key, from a timer.
pub fn open_name(ctx: &Context, id: &LockId) -> LockResult<RedisString> {
    let select = api!(RedisModule_SelectDb)?;
    if unsafe { select(ctx.ctx, id.db) } != raw::REDISMODULE_OK as c_int {
        return Err(LockError::Internal(format!("no database {}", id.db)));
    }
    Ok(RedisString::create_from_slice(ctx.ctx, &id.key))
}

/// Open the lock `id` from a timer.
fn open(ctx: &Context, id: &LockId) -> LockResult<(RedisString, LockResult<LockKey>)> {
    let key = open_name(ctx, id)?;
    let lock_key = LockKey::open(ctx, &key, Mode::Write);
    Ok((key, lock_key))
}

/// If the lock `id` is free, give it to its first waiter; if it is held, wait for its deadline.
fn serve(ctx: &Context, id: &LockId) -> LockResult<()> {
    if !has_waiters(id) {
        return Ok(());
    }
    if let Err(e) = served_here(ctx, id) {
        // The slot left (MIGRATE, a slot moved by the cluster): the waiters retry, and the
        // cluster's MOVED or ASK takes them to the new owner.
        fail_all(id, &e);
        return Ok(());
    }
    let (key, lock_key) = open(ctx, id)?;
    let mut lock_key = match lock_key {
        Ok(lock_key) => lock_key,
        Err(LockError::WrongType) => {
            // The key now holds another type (an overwrite): its waiters get WRONGTYPE, as
            // they would on their next call.
            fail_all(id, &LockError::WrongType);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let now = clock::now_ms()?;
    if let Some(held) = lock_key.lock()?.filter(|lock| lock.is_live(now)) {
        let deadline = held.deadline_ms;
        deadline_moved(id, deadline);
        return Ok(());
    }
    grant_to_head(ctx, &key, &mut lock_key, id).map(drop)
}

/// A grant its client never received: free it (to the next waiter, or delete the key), unless
/// the lock has changed hands since.
fn take_back(ctx: &Context, revoke: Revoke) -> LockResult<()> {
    // A lock whose slot has left goes on with its own deadline on its new node.
    served_here(ctx, &revoke.lock)?;
    let (key, lock_key) = open(ctx, &revoke.lock)?;
    let mut lock_key = lock_key?;
    let now = clock::now_ms()?;
    let still_ours = lock_key
        .lock()?
        .is_some_and(|lock| lock.is_held_by(&revoke.token, now) && lock.fence() == revoke.fence);
    if !still_ours {
        return Ok(());
    }
    free_lock(ctx, &key, &mut lock_key)
}

/// In a cluster, whether this node still serves the lock's key. A module's RM_Call goes
/// through the cluster's routing check, which fails for a key this node would redirect.
fn served_here(ctx: &Context, id: &LockId) -> LockResult<()> {
    if !ctx.get_flags().contains(ContextFlags::CLUSTER) {
        return Ok(());
    }
    let call = api!(RedisModule_Call)?;
    let free_reply = api!(RedisModule_FreeCallReply)?;
    let key = RedisString::create_from_slice(ctx.ctx, &id.key);
    // SAFETY: "s" takes one RedisModuleString; the reply, if any, is freed at once.
    let reply = unsafe { call(ctx.ctx, c"EXISTS".as_ptr(), c"s".as_ptr(), key.inner) };
    if !reply.is_null() {
        unsafe { free_reply(reply) };
        return Ok(());
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(ENETDOWN) => Err(LockError::ClusterDown),
        _ => Err(LockError::SlotMoved),
    }
}

/// Linux's errno for "network is down", which RM_Call sets when the cluster is down.
const ENETDOWN: i32 = 100;

fn fail_all(id: &LockId, error: &LockError) {
    for waiter in with_state(|s| s.queues.take_all(id)).unwrap_or_default() {
        unblock_with_error(waiter.handle, waiter.serial, error);
    }
    disarm(id);
}

fn unblock_with_error(handle: Blocked, serial: u64, error: &LockError) {
    unblock(handle, serial, Some(Reply::Error(error.to_string())));
}

/// Hand a blocked client back to the server with its reply (None: the reply was already sent),
/// and stop its timeout timer.
fn unblock(handle: Blocked, serial: u64, reply: Option<Reply>) {
    forget_timeout(serial);
    let Some(unblock_client) = (unsafe { raw::RedisModule_UnblockClient }) else {
        return;
    };
    let privdata = reply.map_or(ptr::null_mut(), |r| Box::into_raw(Box::new(r)).cast());
    // SAFETY: each handle is unblocked exactly once: it left the queue just before this.
    unsafe { unblock_client(handle.0, privdata) };
}

// ---- the server's callbacks ---------------------------------------------------------------

/// Delivers the reply decided at unblocking.
unsafe extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guard::callback(raw::REDISMODULE_OK as c_int, || {
        let ctx = Context::new(ctx);
        let privdata = unsafe { raw::RedisModule_GetBlockedClientPrivateData }
            .map_or(ptr::null_mut(), |get| unsafe { get(ctx.ctx) });
        // SAFETY: the private data of our blocked clients is always a Box<Reply> or null.
        let result = match unsafe { privdata.cast::<Reply>().as_mut() } {
            Some(Reply::Granted {
                token,
                fence,
                delivered,
                ..
            }) => {
                *delivered = true;
                Ok(crate::commands::grant_reply(token.as_bytes(), *fence))
            }
            Some(Reply::Error(text)) => Err(RedisError::String(text.clone())),
            Some(Reply::TimedOut) | None => Ok(RedisValue::Null),
        };
        ctx.reply(result);
        raw::REDISMODULE_OK as c_int
    })
}

/// CLIENT UNBLOCK (BLOCK timeouts are the module's own timers): leave the queue, answer null.
unsafe extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guard::callback(raw::REDISMODULE_OK as c_int, || {
        let ctx = Context::new(ctx);
        let handle = unsafe { raw::RedisModule_GetBlockedClientHandle }
            .map_or(ptr::null_mut(), |get| unsafe { get(ctx.ctx) });
        ctx.reply(Ok(RedisValue::Null));
        if !handle.is_null() && leave(Blocked(handle)) {
            count(&STATS.timeouts);
        }
        raw::REDISMODULE_OK as c_int
    })
}

/// The client disconnected, was killed, or the server became a replica.
unsafe extern "C" fn on_disconnect(
    _ctx: *mut raw::RedisModuleCtx,
    handle: *mut raw::RedisModuleBlockedClient,
) {
    guard::callback((), || {
        leave(Blocked(handle));
    })
}

/// A waiter leaves its queue without a grant. A handle that is not queued any more was granted
/// and already unblocked; its undelivered grant is dealt with in `on_free`.
fn leave(handle: Blocked) -> bool {
    let Ok(Some((id, waiter))) = with_state(|s| s.queues.remove(handle)) else {
        return false;
    };
    unblock(handle, waiter.serial, None);
    if !has_waiters(&id) {
        disarm(&id);
    }
    true
}

/// The server is done with a reply. A grant whose reply callback never ran (its client went
/// away in between) is taken back and handed on.
unsafe extern "C" fn on_free(_ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    guard::callback((), || {
        if privdata.is_null() {
            return;
        }
        // SAFETY: privdata is the Box<Reply> given to UnblockClient; the server frees it once.
        let reply = unsafe { Box::from_raw(privdata.cast::<Reply>()) };
        if let Reply::Granted {
            lock,
            token,
            fence,
            delivered,
        } = *reply
        {
            let seen = with_state(|s| match s.in_flight.get(&lock) {
                Some(grant) if grant.fence == fence => {
                    s.in_flight.remove(&lock).is_some_and(|g| g.seen)
                }
                _ => false,
            })
            .unwrap_or(false);
            if !delivered && !seen {
                defer(|p| p.revoke.push(Revoke { lock, token, fence }));
            }
        }
    })
}

unsafe extern "C" fn on_flush(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::callback((), || {
        if subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_END {
            return;
        }
        // SAFETY: the server passes a RedisModuleFlushInfo with this event.
        let Some(info) = (unsafe { data.cast::<raw::RedisModuleFlushInfo>().as_ref() }) else {
            return;
        };
        let db = (info.dbnum >= 0).then_some(info.dbnum);
        serve_later(db);
    })
}

unsafe extern "C" fn on_swapdb(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    data: *mut c_void,
) {
    guard::callback((), || {
        // SAFETY: the server passes a RedisModuleSwapDbInfo with this event.
        let Some(info) = (unsafe { data.cast::<raw::RedisModuleSwapDbInfo>().as_ref() }) else {
            return;
        };
        serve_later(Some(info.dbnum_first));
        serve_later(Some(info.dbnum_second));
    })
}

/// Re-examine, after the current command, every lock with waiters in `db` (None: all).
fn serve_later(db: Option<i32>) {
    let locks = with_state(|s| s.queues.locks_in(db)).unwrap_or_default();
    if !locks.is_empty() {
        defer(|p| p.serve.extend(locks));
    }
}
