//! Running the hand-off machine's answers against the server: granting a freed lock, or a
//! shared lock's room, to its first waiters (from RELEASE itself, from a timer at a holder's
//! deadline, and, deferred to a 0 ms timer because the server is in the middle of deleting,
//! after DEL, overwrite, FLUSHDB, FLUSHALL and SWAPDB), pruning expired shared holders, taking
//! back grants whose reply never arrived, ending the ephemeral holds of a closed connection
//! (deferred to a 0 ms timer too: a connection can close in the middle of anything), and the
//! timers all of this runs on.
//!
//! The grant is decided, stored and replicated where the lock is freed; the reply callback
//! (`blocked.rs`) only delivers it. Timers and deferred work write only on a primary, and never
//! while clients are paused (a write then would trip the server's own assertion during a
//! failover).

use std::time::{Duration, Instant};

use lock_core::bindings::{ClientId, Hold, Orphan};
use lock_core::effect::Effect;
use lock_core::handoff::{Left, Revoke, TimerChange};
use lock_core::lock::{self, Lock};
use lock_core::queue::{HoldOptions, LockId, Waiter};
use lock_core::shared::SharedLock;
use lock_core::token::{Token, TokenRef};
use lock_core::value::{Held, Value, Want};
use lock_core::{LockError, LockResult};
use redis_module::{Context, ContextFlags, RedisString};

use crate::ffi::api::{clients_paused, lock_id, open_name};
use crate::ffi::block::Blocked;
use crate::ffi::key::{LockKey, Mode};
use crate::ffi::{clock, cluster, guard, propagate, timer};
use crate::observe::notify;
use crate::observe::stats::{count, count_by, STATS};
use crate::server::answer::{unblock, unblock_with_error, BlockTimeout, Reply};
use crate::server::{fences, notices, state};

/// While clients are paused, deferred hand-offs are retried this often.
const PAUSED_RETRY_MS: u64 = 10;

// ---- granting -----------------------------------------------------------------------------

/// What the lock under a key is when it is handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// Absent, past its deadline, or a shared lock with room: replacing it ends an expired
    /// lock.
    Free,
    /// A live exclusive lock being freed (released, or a grant taken back): replacing or
    /// deleting it is not an expiry, even if the clock passes its deadline meanwhile.
    BeingFreed,
}

/// Grant the lock under `key` (open for writing) to its waiters from the head, for as long as
/// the head can be granted: one exclusive waiter, or consecutive shared ones while there is
/// room. `current` is what the key holds before the first grant. The number granted.
pub fn grant_to_head(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    id: &LockId,
    current: Current,
) -> LockResult<usize> {
    let mut granted = 0;
    let mut current = current;
    while let Some(want) = state::with(|s| s.handoff.front(id).map(|w| w.want))? {
        let now = clock::now_ms()?;
        let admits = current == Current::BeingFreed
            || lock_key.held()?.is_none_or(|held| held.admits(want, now));
        if !admits {
            break;
        }
        let Some(waiter) = state::with(|s| s.handoff.next_waiter(id))? else {
            break;
        };
        match grant_waiter(ctx, key, lock_key, id, &waiter, current, now) {
            Ok(()) => granted += 1,
            Err(e) => {
                unblock_with_error(waiter.handle, waiter.serial, &e);
                if matches!(e, LockError::Internal(_)) {
                    return Err(e);
                }
                continue;
            }
        }
        current = Current::Free;
        if waiter.want == Want::Exclusive {
            break;
        }
    }
    follow(id, lock_key)?;
    Ok(granted)
}

/// Store, replicate and answer the grant of `waiter`: its own deadline counted from now and a
/// new fence.
fn grant_waiter(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    id: &LockId,
    waiter: &Waiter<Blocked>,
    current: Current,
    now: i64,
) -> LockResult<()> {
    let deadline = lock::deadline(now, waiter.ttl_ms)?;
    let fence = match waiter.want {
        Want::Exclusive => {
            let token = TokenRef::from(&waiter.token);
            let lock = new_lock(token, deadline)?;
            grant_exclusive(ctx, key, lock_key, (lock, token), current, &waiter.options)?
        }
        Want::Shared { limit } => grant_shared(
            ctx,
            key,
            lock_key,
            &waiter.token,
            (deadline, limit),
            current,
            now,
            &waiter.options,
        )?,
    };
    count(&STATS.handed_off);
    notices::event(ctx, notify::HANDED_OFF, key);
    state::update(|s| s.handoff.granted(id.clone(), waiter.token.clone(), fence));
    unblock(
        waiter.handle,
        waiter.serial,
        Some(Reply::Granted {
            lock: id.clone(),
            token: waiter.token.clone(),
            fence,
            delivered: false,
        }),
    );
    Ok(())
}

/// The new exclusive lock `lock` of `token` (which it is made of), with `options`, replacing
/// what the key holds (free, or `current`). Replicated; its fence.
#[inline(always)]
pub fn grant_exclusive(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    (lock, token): (Lock, TokenRef),
    current: Current,
    options: &HoldOptions,
) -> LockResult<u64> {
    let fence = lock.fence();
    let effect = Effect::apply_as(&lock, token.as_bytes(), options.meta.as_ref());
    // The lock it replaces takes its bindings with it (the unlink callback): bind after.
    replacing(current, || {
        lock_key.store(Value::exclusive(lock, options.meta.clone()))
    })?;
    propagate::replicate(ctx, key.inner, &effect);
    if options.bind_to.is_some() {
        bind(ctx, key, &token.to_token(), fence, options.bind_to)?;
    }
    Ok(fence)
}

/// A new exclusive lock of `token` until `deadline`, with the fence of a grant now.
pub fn new_lock(token: TokenRef, deadline: i64) -> LockResult<Lock> {
    Lock::new(token, deadline, fences::grant_fence()?)
}

/// Bind the hold of `token`, granted with `fence`, to the connection `client` (EPHEMERAL).
pub fn bind(
    ctx: &Context,
    key: &RedisString,
    token: &Token,
    fence: u64,
    client: Option<ClientId>,
) -> LockResult<()> {
    if let Some(client) = client {
        let id = lock_id(ctx, key)?;
        state::with(|s| s.bindings.bind(&id, token, fence, client))?;
    }
    Ok(())
}

/// Shared holders of the lock `id` left: their bindings go (no token is read when nothing is
/// bound, as on every RELEASE of a shared holder without EPHEMERAL).
fn unbind<'a>(id: &LockId, tokens: impl Iterator<Item = &'a [u8]>) {
    state::update(|s| {
        if s.bindings.is_empty() {
            return;
        }
        for token in tokens {
            if let Ok(token) = Token::parse(token) {
                s.bindings.unbind(id, &token);
            }
        }
    });
}

/// Whether any hold is bound to a connection (if the state cannot be read: true, the careful
/// answer).
pub fn anything_bound() -> bool {
    state::with(|s| !s.bindings.is_empty()).unwrap_or(true)
}

/// A new shared holder with `token` until `deadline` (with `options`): it joins the live shared
/// lock under the key, or starts one with `limit` (replacing a free lock). Replicated; its
/// fence.
#[allow(clippy::too_many_arguments)]
pub fn grant_shared(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    token: &Token,
    (deadline, limit): (i64, Option<u32>),
    current: Current,
    now: i64,
    options: &HoldOptions,
) -> LockResult<u64> {
    // Holders that expired since the caller looked leave first, replicated: a replica must
    // not keep them inside the shared lock this grant joins or replaces.
    prune(ctx, key, lock_key, now)?;
    if let Some(Held::Shared(shared)) = lock_key.held()? {
        // A second waiter with the token of a live holder (two clients with one token): the
        // same hold, as a retry would be, never a second one.
        if let Some(fence) = shared
            .holder(token)
            .filter(|h| h.is_live(now))
            .map(Lock::fence)
        {
            shared.set_deadline(token, deadline);
            if options.meta.is_some() {
                shared.set_meta(token, options.meta.clone());
            }
            lock_key.follow_deadline()?;
            replicate_holder(ctx, key, lock_key, token)?;
            bind(ctx, key, token, fence, options.bind_to)?;
            return Ok(fence);
        }
    }
    let holder = Lock::new(token, deadline, fences::grant_fence()?)?;
    let fence = holder.fence();
    match lock_key.held()? {
        Some(Held::Shared(shared)) if shared.live(now) > 0 => {
            shared.insert(holder, options.meta.clone());
            lock_key.follow_deadline()?;
        }
        _ => {
            let mut shared = SharedLock::new(limit);
            shared.insert(holder, options.meta.clone());
            replacing(current, || lock_key.store(Value::Shared(Box::new(shared))))?;
        }
    }
    replicate_holder(ctx, key, lock_key, token)?;
    bind(ctx, key, token, fence, options.bind_to)?;
    Ok(fence)
}

/// Send the shared holder with `token`, as stored, to replicas and the AOF.
pub fn replicate_holder(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    token: &Token,
) -> LockResult<()> {
    if let Some(Held::Shared(shared)) = lock_key.held()? {
        if let Some((holder, meta)) = shared.holder_and_meta(token) {
            let effect = Effect::share_as(holder, token.as_bytes(), shared.limit(), meta);
            propagate::replicate(ctx, key.inner, &effect);
        }
    }
    Ok(())
}

/// The live holder with `token` leaves the lock under `key` (released, or a grant taken
/// back): its room goes to the waiters, or the key is deleted with the last holder.
pub fn free_holder(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    token: &Token,
) -> LockResult<()> {
    let shared_left = match lock_key.held()? {
        Some(Held::Shared(shared)) => {
            shared.remove(token);
            Some(shared.is_empty())
        }
        _ => None,
    };
    let Some(empty) = shared_left else {
        return free_lock(ctx, key, lock_key);
    };
    // On replicas the effect also deletes the key with the last holder.
    propagate::replicate(
        ctx,
        key.inner,
        &Effect::DropHolder {
            token: token.as_bytes(),
        },
    );
    let id = lock_id(ctx, key)?;
    unbind(&id, std::iter::once(token.as_bytes()));
    let granted = if state::anyone_waiting() {
        grant_to_head(ctx, key, lock_key, &id, Current::Free)?
    } else {
        0
    };
    if granted == 0 {
        if empty {
            lock_key.delete()?;
        } else {
            lock_key.follow_deadline()?;
            follow(&id, lock_key)?;
        }
    }
    Ok(())
}

/// A live exclusive lock under `key` is freed (released, or a grant taken back): it goes to
/// the first waiters, or the key is deleted.
#[inline(always)]
pub fn free_lock(ctx: &Context, key: &RedisString, lock_key: &mut LockKey) -> LockResult<()> {
    if state::quiet() {
        state::replacing_live(true, || lock_key.delete())?;
    } else {
        let current = Current::BeingFreed;
        if state::anyone_waiting()
            && grant_to_head(ctx, key, lock_key, &lock_id(ctx, key)?, current)? > 0
        {
            return Ok(());
        }
        replacing(current, || lock_key.delete())?;
    }
    propagate::replicate(ctx, key.inner, &Effect::Release);
    Ok(())
}

/// A shared lock's holders whose deadline has passed leave, each replicated and notified, and
/// the key goes if none is left. Only a primary prunes; its replicas follow the effects.
pub fn prune(ctx: &Context, key: &RedisString, lock_key: &mut LockKey, now: i64) -> LockResult<()> {
    let Some(Held::Shared(shared)) = lock_key.held()? else {
        return Ok(());
    };
    if shared.earliest_deadline().is_none_or(|d| d > now) {
        return Ok(());
    }
    let gone = shared.prune(now);
    let empty = shared.is_empty();
    let mut buf = [0u8; lock_core::compact::INLINE_TEXT_MAX];
    if anything_bound() {
        let id = lock_id(ctx, key)?;
        let mut spelled = Vec::with_capacity(gone.len());
        for holder in &gone {
            spelled.push(holder.token(&mut buf).to_vec());
        }
        unbind(&id, spelled.iter().map(Vec::as_slice));
    }
    for holder in &gone {
        let token = holder.token(&mut buf);
        propagate::replicate(ctx, key.inner, &Effect::DropHolder { token });
        count(&STATS.expired);
        notices::event(ctx, notify::EXPIRED, key);
    }
    if empty {
        lock_key.delete()
    } else {
        lock_key.follow_deadline()
    }
}

/// Run `write`, which replaces or deletes the lock under a key, telling the type's unlink
/// callback whether that lock is being freed rather than expiring.
#[inline(always)]
fn replacing<R>(current: Current, write: impl FnOnce() -> R) -> R {
    if current == Current::Free {
        return write();
    }
    state::replacing_live(false, write)
}

/// The owner of the lock under `key` retried or renewed with `token`, moving its deadline:
/// the lock's timer follows, and a grant thought undelivered is evidently known to its owner.
pub fn owner_active(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    token: TokenRef,
) -> LockResult<()> {
    let unsettled = state::grants_unsettled();
    let timed =
        state::anyone_waiting() || matches!(lock_key.held()?, Some(Held::Shared(s)) if s.len() > 1);
    if !timed && !unsettled {
        return Ok(());
    }
    let id = lock_id(ctx, key)?;
    if timed {
        follow(&id, lock_key)?;
    }
    if unsettled {
        let token = token.to_token();
        state::update(|s| s.handoff.owner_seen(&id, &token));
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

/// The lock's timer follows what the key holds: at its soonest holder deadline while anyone
/// waits or a shared holder leaves before the key expires; none otherwise.
pub fn follow(id: &LockId, lock_key: &mut LockKey) -> LockResult<()> {
    match lock_key.held()? {
        Some(held) => {
            let (at, expire) = wake(&held);
            deadline_moved(id, at, expire);
        }
        None => disarm(id),
    }
    Ok(())
}

/// When the timer of a lock holding `held` is due, and whether holders expire on their own.
pub fn wake(held: &Held) -> (i64, bool) {
    (
        held.next_deadline().unwrap_or(0),
        held.holders_expire_first(),
    )
}

// ---- the deadline timers ------------------------------------------------------------------

/// The soonest holder deadline is now `deadline` (grant, renewal, retry, a new waiter): the
/// timer follows it while anyone waits or `holders_expire`.
pub fn deadline_moved(id: &LockId, deadline: i64, holders_expire: bool) {
    let change =
        state::with(|s| s.handoff.deadline_moved(id, deadline, holders_expire)).unwrap_or_default();
    apply_timer_change(id, change, holders_expire);
}

fn apply_timer_change(id: &LockId, change: TimerChange, holders_expire: bool) {
    stop_deadline_timer(change.stop);
    let Some(at) = change.start_at else { return };
    let Some(ctx) = state::detached() else {
        state::log_warning("lock: no timer context: a lock's waiters wait for a later event");
        return;
    };
    let timer = timer::start(&ctx, timer::until(at), on_deadline, id.clone());
    state::update(|s| {
        s.handoff
            .deadline_armed(id.clone(), timer, at, holders_expire)
    });
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

/// A holder's deadline has come: prune, hand the lock on (or follow a renewal).
fn on_deadline(ctx: &Context, id: LockId) {
    guard::callback((), || {
        state::update(|s| s.handoff.deadline_fired(id));
        run_pending(ctx);
    })
}

/// A waiter left its queue without a grant (timeout, disconnect, CLIENT UNBLOCK): it is
/// answered with `reply` (None: no reply is due), the lock's timer goes if nobody waits any
/// more, and the lock is served again if the waiter was first.
pub fn waiter_left(left: Left<Blocked>, reply: Option<Reply>) {
    unblock(left.waiter.handle, left.waiter.serial, reply);
    stop_deadline_timer(left.stop_deadline);
    if left.serve {
        schedule_runner(0);
    }
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
            waiter_left(left, Some(Reply::TimedOut));
        }
    })
}

// ---- deferred work ------------------------------------------------------------------------

/// A lock key left its database (from the type's unlink callback): its waiters are served, and
/// an expiry notified, once the server has finished the deletion.
/// `expired` is how many holders the key still had whose deadlines passed (0: not an expiry).
pub fn key_removed(db: i32, key: &[u8], expired: usize) {
    count_by(&STATS.expired, expired);
    // Runs for every deleted or replaced lock (each RELEASE): no work when nobody waits and
    // no hold is bound to a connection.
    let quiet = state::with(|s| s.quiet());
    if expired == 0 && quiet == Ok(true) {
        return;
    }
    let id = LockId {
        db,
        key: key.to_vec(),
    };
    let serve = state::with(|s| {
        s.bindings.lock_gone(&id);
        s.handoff.key_removed(id, expired)
    });
    if serve == Ok(true) {
        schedule_runner(0);
    }
}

/// The connection `client` closed: the holds bound to it end, right after (nothing to do,
/// beyond one look, for a connection that held nothing ephemeral).
pub fn connection_closed(client: ClientId) {
    let schedule = state::with(|s| {
        if s.bindings.is_empty() {
            return false;
        }
        let orphans = s.bindings.closed(client);
        s.handoff.orphaned(orphans)
    });
    if schedule == Ok(true) {
        schedule_runner(0);
        // A client that QUIT or was killed by another is freed just before the server sleeps.
        timer::wake_event_loop();
    }
}

/// Re-examine, after the current command, every lock with waiters in `db` (None: all).
pub fn serve_later(db: Option<i32>) {
    if state::with(|s| s.handoff.serve_later(db)) == Ok(true) {
        schedule_runner(0);
    }
}

/// Look at `locks` after the current command (loaded or restored shared locks): expired
/// holders leave, and the timer follows the others.
pub fn look_again(locks: Vec<LockId>) {
    if state::with(|s| s.handoff.look_again(locks)) == Ok(true) {
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
    for orphan in pending.orphans {
        if let Err(e) = end_orphan(ctx, orphan) {
            ctx.log_warning(&format!("lock: an ephemeral hold was not ended: {e}"));
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

/// The lock `id`'s timer fired or its key went: expired holders leave, and the waiters get
/// what room there is; the timer then follows the holders.
fn serve(ctx: &Context, id: &LockId) -> LockResult<()> {
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
    prune(ctx, &key, &mut lock_key, clock::now_ms()?)?;
    if state::has_waiters(id) {
        grant_to_head(ctx, &key, &mut lock_key, id, Current::Free)?;
    } else {
        follow(id, &mut lock_key)?;
    }
    Ok(())
}

/// A grant its client never received: free it (to the next waiter, or delete the key), unless
/// the lock has changed hands since.
fn take_back(ctx: &Context, revoke: Revoke) -> LockResult<()> {
    // A lock whose slot has left goes on with its own deadline on its new node.
    cluster::served_here(ctx, &revoke.lock.key)?;
    let (key, lock_key) = open(ctx, &revoke.lock)?;
    let mut lock_key = lock_key?;
    if !still_granted(&mut lock_key, &revoke.token, revoke.fence)? {
        return Ok(());
    }
    free_holder(ctx, &key, &mut lock_key, &revoke.token)
}

/// Whether `token` still holds the lock under the key with the grant of `fence` (it has not
/// ended or changed hands since).
fn still_granted(lock_key: &mut LockKey, token: &Token, fence: u64) -> LockResult<bool> {
    let now = clock::now_ms()?;
    Ok(lock_key.held()?.is_some_and(|held| {
        held.holder(token, now)
            .is_some_and(|holder| holder.fence() == fence)
    }))
}

/// An ephemeral hold whose connection closed: released, as its owner's RELEASE would be,
/// unless it ended or changed hands since (another fence).
fn end_orphan(ctx: &Context, orphan: Orphan) -> LockResult<()> {
    let Orphan {
        hold: Hold { lock, token },
        fence,
    } = orphan;
    if cluster::served_here(ctx, &lock.key).is_err() {
        // The slot left: the hold goes on with its own deadline on its new node.
        return Ok(());
    }
    let (key, lock_key) = open(ctx, &lock)?;
    let mut lock_key = match lock_key {
        Ok(lock_key) => lock_key,
        Err(LockError::WrongType) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !still_granted(&mut lock_key, &token, fence)? {
        return Ok(());
    }
    count(&STATS.released);
    count(&STATS.closed_releases);
    notices::event(ctx, notify::RELEASED, &key);
    free_holder(ctx, &key, &mut lock_key, &token)
}
