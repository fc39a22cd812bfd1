//! Running the hand-off machine's answers against the server: granting a freed lock to its
//! first waiter (from RELEASE itself, from a timer at the holder's deadline, and, deferred
//! to a 0 ms timer because the server is in the middle of deleting, after DEL, overwrite,
//! FLUSHDB, FLUSHALL and SWAPDB), taking back grants whose reply never arrived, and the timers
//! all of this runs on.
//!
//! The grant is decided, stored and replicated where the lock is freed; the reply callback
//! (`blocked.rs`) only delivers it. Timers and deferred work write only on a primary, and never
//! while clients are paused (a write then would trip the server's own assertion during a
//! failover).

use std::time::{Duration, Instant};

use lock_core::effect::Effect;
use lock_core::handoff::{Revoke, TimerChange};
use lock_core::lock::{self, Lock};
use lock_core::queue::{LockId, Waiter};
use lock_core::token::Token;
use lock_core::{LockError, LockResult};
use redis_module::{Context, ContextFlags, RedisString};

use crate::ffi::api::{clients_paused, lock_id, open_name};
use crate::ffi::block::Blocked;
use crate::ffi::key::{LockKey, Mode};
use crate::ffi::{clock, cluster, guard, propagate, timer};
use crate::observe::notify;
use crate::observe::stats::{count, STATS};
use crate::server::answer::{unblock, unblock_with_error, BlockTimeout, Reply};
use crate::server::{fences, notices, state};

/// While clients are paused, deferred hand-offs are retried this often.
const PAUSED_RETRY_MS: u64 = 10;

// ---- granting -----------------------------------------------------------------------------

/// What the lock under a key is when it is handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// Absent, or past its deadline: replacing it ends an expired lock.
    Free,
    /// Live, and being freed (released, or a grant taken back): replacing or deleting it is
    /// not an expiry, even if the clock passes its deadline meanwhile.
    BeingFreed,
}

/// Hand the lock under `key` (open for writing, free or being freed) to its first waiter that
/// can take it: store the grant, replicate it, unblock the waiter. False when no one waits.
pub fn grant_to_head(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    id: &LockId,
    current: Current,
) -> LockResult<bool> {
    while let Some(waiter) = state::with(|s| s.handoff.next_waiter(id))? {
        let lock = match grant_for(&waiter) {
            Ok(lock) => lock,
            Err(e) => {
                unblock_with_error(waiter.handle, waiter.serial, &e);
                continue;
            }
        };
        let (token, fence, deadline) = (waiter.token.clone(), lock.fence(), lock.deadline_ms);
        if let Err(e) = replacing(current, || lock_key.store(lock)) {
            unblock_with_error(waiter.handle, waiter.serial, &e);
            return Err(e);
        }
        if let Some(stored) = lock_key.lock()? {
            propagate::replicate_lock(ctx, key, stored);
        }
        count(&STATS.handed_off);
        notices::event(ctx, notify::HANDED_OFF, key);
        state::update(|s| s.handoff.granted(id.clone(), token.clone(), fence));
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
    let current = Current::BeingFreed;
    let handed_off =
        state::anyone_waiting() && grant_to_head(ctx, key, lock_key, &lock_id(ctx, key)?, current)?;
    if !handed_off {
        replacing(current, || lock_key.delete())?;
        propagate::replicate(ctx, key.inner, &Effect::Release);
    }
    Ok(())
}

/// Run `write`, which replaces or deletes the lock under a key, telling the type's unlink
/// callback (through the state) whether that lock is being freed rather than expiring.
fn replacing<R>(current: Current, write: impl FnOnce() -> R) -> R {
    if current == Current::Free {
        return write();
    }
    state::update(|s| s.replacing_live = true);
    let result = write();
    state::update(|s| s.replacing_live = false);
    result
}

/// A new lock for a waiter: its own deadline counted from now and a new fence.
fn grant_for(waiter: &Waiter<Blocked>) -> LockResult<Lock> {
    let deadline_ms = lock::deadline(clock::now_ms()?, waiter.ttl_ms)?;
    Lock::new(&waiter.token, deadline_ms, fences::grant_fence()?)
}

/// The owner of `id` retried or renewed with `token`, moving its deadline: the hand-off timer
/// follows it, and a grant thought undelivered is evidently known to its owner.
pub fn owner_active(
    ctx: &Context,
    key: &RedisString,
    token: Option<&Token>,
    waiting: bool,
    deadline: i64,
) -> LockResult<()> {
    let unsettled = state::grants_unsettled();
    if !waiting && !unsettled {
        return Ok(());
    }
    let id = lock_id(ctx, key)?;
    if waiting {
        deadline_moved(&id, deadline);
    }
    if let (true, Some(token)) = (unsettled, token) {
        state::update(|s| s.handoff.owner_seen(&id, token));
    }
    Ok(())
}

/// Every waiter of `id` is answered with `error` (the slot moved, the key holds another type).
fn fail_all(id: &LockId, error: &LockError) {
    let (waiters, stop) = state::with(|s| s.handoff.take_all(id)).unwrap_or_default();
    for waiter in waiters {
        unblock_with_error(waiter.handle, waiter.serial, error);
    }
    stop_deadline_timer(stop);
}

// ---- the deadline timers ------------------------------------------------------------------

/// The holder's deadline is now `deadline` (grant, renewal, retry, a new waiter): the timer
/// follows it while anyone waits.
pub fn deadline_moved(id: &LockId, deadline: i64) {
    let change = state::with(|s| s.handoff.deadline_moved(id, deadline)).unwrap_or_default();
    apply_timer_change(id, change);
}

fn apply_timer_change(id: &LockId, change: TimerChange) {
    stop_deadline_timer(change.stop);
    let Some(at) = change.start_at else { return };
    let Some(ctx) = state::detached() else {
        state::log_warning("lock: no timer context: a lock's waiters wait for a later event");
        return;
    };
    let timer = timer::start(&ctx, timer::until(at), on_deadline, id.clone());
    state::update(|s| s.handoff.deadline_armed(id.clone(), timer, at));
}

/// Nobody waits for `id` any more: its deadline timer goes.
fn disarm(id: &LockId) {
    stop_deadline_timer(state::with(|s| s.handoff.disarm(id)).ok().flatten());
}

pub fn stop_deadline_timer(timer: Option<u64>) {
    if let (Some(timer), Some(ctx)) = (timer, state::detached()) {
        // False only if it has fired, which is then no matter.
        timer::stop::<LockId>(&ctx, timer);
    }
}

/// The holder's deadline has come: hand the lock on (or follow a renewal).
fn on_deadline(ctx: &Context, id: LockId) {
    guard::callback((), || {
        state::update(|s| s.handoff.deadline_fired(id));
        run_pending(ctx);
    })
}

// ---- BLOCK timeouts -----------------------------------------------------------------------

pub fn arm_timeout(timeout: BlockTimeout) {
    let Some(ctx) = state::detached() else {
        state::log_warning("lock: no timer context: a BLOCK timeout is not kept");
        return;
    };
    let serial = timeout.serial;
    let left = timeout.at.saturating_duration_since(Instant::now());
    let timer = timer::start(&ctx, timer::period(left), on_block_timeout, timeout);
    state::update(|s| s.handoff.timeout_armed(serial, timer));
}

/// A waiter's timeout has come: if it still waits, it leaves the queue with a null reply.
fn on_block_timeout(_ctx: &Context, timeout: BlockTimeout) {
    guard::callback((), || {
        let handle = Blocked(timeout.handle as *mut _);
        let waiting = state::with(|s| {
            // This timer has fired: it is no longer one to stop.
            s.handoff.timeout_fired(timeout.serial);
            s.handoff.is_waiting(handle, timeout.serial)
        });
        if waiting != Ok(true) {
            return; // granted, disconnected or unblocked since
        }
        if Instant::now() < timeout.at {
            arm_timeout(timeout); // a long timeout, in steps
            return;
        }
        if let Ok(Some(left)) = state::with(|s| s.handoff.time_out(handle, timeout.serial)) {
            count(&STATS.timeouts);
            unblock(handle, timeout.serial, Some(Reply::TimedOut));
            stop_deadline_timer(left.stop_deadline);
        }
    })
}

// ---- deferred work ------------------------------------------------------------------------

/// A lock key left its database (from the type's unlink callback): its waiters are served, and
/// an expiry notified, once the server has finished the deletion.
pub fn key_removed(db: i32, key: &[u8], expired: bool) {
    if expired {
        count(&STATS.expired);
    }
    // Runs for every deleted or replaced lock (each RELEASE): no work when nobody waits.
    if !expired && !state::anyone_waiting() {
        return;
    }
    let id = LockId {
        db,
        key: key.to_vec(),
    };
    if state::with(|s| s.handoff.key_removed(id, expired)) == Ok(true) {
        schedule_runner(0);
    }
}

/// Re-examine, after the current command, every lock with waiters in `db` (None: all).
pub fn serve_later(db: Option<i32>) {
    if state::with(|s| s.handoff.serve_later(db)) == Ok(true) {
        schedule_runner(0);
    }
}

/// A grant's reply was freed by the server without being delivered: take it back later.
pub fn reply_freed(lock: LockId, token: Token, fence: u64, delivered: bool) {
    if state::with(|s| s.handoff.reply_freed(lock, token, fence, delivered)) == Ok(true) {
        schedule_runner(0);
    }
}

fn schedule_runner(delay_ms: u64) {
    match state::detached() {
        Some(ctx) => {
            timer::start(&ctx, Duration::from_millis(delay_ms), on_runner_timer, ());
        }
        None => state::log_warning("lock: no timer context: deferred hand-offs do not run"),
    }
}

/// The scheduled runner: no longer scheduled once it runs.
fn on_runner_timer(ctx: &Context, (): ()) {
    guard::callback((), || {
        state::update(|s| s.handoff.runner_fired());
        run_pending(ctx);
    })
}

fn run_pending(ctx: &Context) {
    // Timers fire on replicas too; only a primary hands locks over (a demoted server has no
    // waiters left, and its data is now its primary's).
    if !ctx.get_flags().contains(ContextFlags::MASTER) {
        state::update(|s| drop(s.handoff.take_pending()));
        return;
    }
    if clients_paused() {
        // One retry loop at a time, however many timers find the pause.
        if state::with(|s| s.handoff.runner_postponed()) == Ok(true) {
            schedule_runner(PAUSED_RETRY_MS);
        }
        return;
    }
    let Ok(pending) = state::with(|s| s.handoff.take_pending()) else {
        return;
    };
    for id in pending.expired {
        match open_name(ctx, &id) {
            Ok(key) => notices::event(ctx, notify::EXPIRED, &key),
            Err(e) => ctx.log_warning(&format!("lock: an expiry was not notified: {e}")),
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
}

/// Open the lock `id` from a timer.
fn open(ctx: &Context, id: &LockId) -> LockResult<(RedisString, LockResult<LockKey>)> {
    let key = open_name(ctx, id)?;
    let lock_key = LockKey::open(ctx, &key, Mode::Write);
    Ok((key, lock_key))
}

/// If the lock `id` is free, give it to its first waiter; if it is held, wait for its deadline.
fn serve(ctx: &Context, id: &LockId) -> LockResult<()> {
    if !state::has_waiters(id) {
        return Ok(());
    }
    if let Err(e) = cluster::served_here(ctx, &id.key) {
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
    grant_to_head(ctx, &key, &mut lock_key, id, Current::Free).map(drop)
}

/// A grant its client never received: free it (to the next waiter, or delete the key), unless
/// the lock has changed hands since.
fn take_back(ctx: &Context, revoke: Revoke) -> LockResult<()> {
    // A lock whose slot has left goes on with its own deadline on its new node.
    cluster::served_here(ctx, &revoke.lock.key)?;
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
