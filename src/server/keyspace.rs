//! The lock's deadline decides, whatever the key's expiry says: when a command other than the
//! module's moves a lock key's expiry (EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST, RESTORE
//! with another ttl), it is put back to the lock's deadline. The same event of RESTORE raises
//! the fence clock to the restored lock's fence, once the server has taken the payload.
//!
//! Every server does this for itself, primary, replica and AOF replay alike, from the same
//! lock value, so they agree without the module propagating anything. (An expiry in the past
//! deletes the key outright, as DEL does, and frees the lock.)
//!
//! The events come for keys of every type, inside the command that changed them, so the key is
//! first looked at without side effects (`Mode::Peek`), and only a lock key is written:
//! - Redis 7.2+ and Valkey: in a post-notification job, which runs at the end of the same
//!   command, as writes from keyspace events must; at once where the server takes no jobs
//!   (loading, a read-only replica), because there no lookup deletes an expired key.
//! - Redis 7.0 has no such job, and no way to look at a key without deleting it if it has
//!   expired: a lookup inside `SET k v PXAT <past>` would delete the new string and replicate
//!   a DEL ahead of the SET. So an `expire` event is looked at on a 0 ms timer, right after
//!   the command; `persist` and `restore` (which leave the key in place, unexpired) at once.

use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_int};
use std::time::Duration;

use lock_core::queue::LockId;
use lock_core::{LockError, LockResult};
use redis_module::{raw, Context, RedisString};

use crate::ffi::api::{api, lock_id, open_name};
use crate::ffi::key::{LockKey, Mode};
use crate::ffi::{guard, timer};
use crate::server::{fences, runner, state};

/// The generic keyspace events that change a key's expiry and leave the key in place.
const EXPIRY_EVENTS: [&CStr; 3] = [c"expire", c"persist", c"restore"];

/// A lock key to put right: which one, and whether RESTORE made it.
struct Follow {
    lock: LockId,
    restored: bool,
}

pub fn watch(ctx: &Context) -> LockResult<()> {
    let subscribe = api!(RedisModule_SubscribeToKeyspaceEvents)?;
    // SAFETY: called during module load; the callback lives as long as the module.
    let subscribed = unsafe {
        subscribe(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_GENERIC as c_int,
            Some(on_generic_event),
        )
    };
    if subscribed != raw::REDISMODULE_OK as c_int {
        return Err(LockError::Internal(
            "could not subscribe to keyspace events".into(),
        ));
    }
    Ok(())
}

unsafe extern "C" fn on_generic_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard::callback(raw::REDISMODULE_OK as c_int, || {
        if event.is_null() || key.is_null() {
            return raw::REDISMODULE_OK as c_int;
        }
        // SAFETY: the server passes a NUL-terminated event name.
        let event = unsafe { CStr::from_ptr(event) };
        if EXPIRY_EVENTS.contains(&event) {
            let ctx = Context::new(ctx);
            let key = RedisString::new(None, key);
            warn_if_failed(&ctx, on_expiry_event(&ctx, &key, event));
        }
        raw::REDISMODULE_OK as c_int
    })
}

fn on_expiry_event(ctx: &Context, key: &RedisString, event: &CStr) -> LockResult<()> {
    let restored = event == c"restore";
    let post_job = unsafe { raw::RedisModule_AddPostNotificationJob };
    if post_job.is_none() && event == c"expire" {
        after_command(ctx, lock_id(ctx, key)?);
        return Ok(());
    }
    if !holds_lock(ctx, key) {
        return Ok(());
    }
    let Some(add_job) = post_job else {
        // Redis 7.0, PERSIST or RESTORE: the key is in place and unexpired; writing now is safe.
        return follow(ctx, key, restored);
    };
    let lock = lock_id(ctx, key)?;
    let job = Box::into_raw(Box::new(Follow { lock, restored }));
    // SAFETY: the job and its data are handed to the server, which runs the job once at the
    // end of this command and then frees the data with `free_job`.
    let added = unsafe { add_job(ctx.ctx, Some(run_job), job.cast(), Some(free_job)) };
    if added != raw::REDISMODULE_OK as c_int {
        // The server takes no jobs while it loads or on a read-only replica. There a lookup
        // never deletes an expired key, so writing now is safe.
        drop(unsafe { Box::from_raw(job) });
        return follow(ctx, key, restored);
    }
    Ok(())
}

/// Whether `key` holds a lock, looked at without side effects.
fn holds_lock(ctx: &Context, key: &RedisString) -> bool {
    LockKey::open(ctx, key, Mode::Peek)
        .is_ok_and(|mut lock_key| lock_key.held().is_ok_and(|l| l.is_some()))
}

/// Put the lock key's expiry back to its deadline; after RESTORE, raise the fence clock to it.
fn follow(ctx: &Context, key: &RedisString, restored: bool) -> LockResult<()> {
    // Opening a lock key for writing puts its expiry back to the lock's deadline.
    let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
    if restored {
        if let Some(held) = lock_key.held()? {
            fences::observe_fence_or_warn(ctx, held.highest_fence());
            // A restored shared lock's holders leave at their own deadlines, some maybe past.
            if held.holders_expire_first() {
                runner::look_again(vec![lock_id(ctx, key)?]);
            }
        }
    }
    Ok(())
}

/// Keeping an expiry right is best effort inside another command: a failure is logged.
fn warn_if_failed(ctx: &Context, done: LockResult<()>) {
    if let Err(e) = done {
        ctx.log_warning(&format!("lock: could not keep a lock key's expiry: {e}"));
    }
}

unsafe extern "C" fn run_job(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    guard::callback((), || {
        // SAFETY: the data is the Follow handed over in `on_expiry_event`, freed by `free_job`.
        let Some(job) = (unsafe { data.cast::<Follow>().as_ref() }) else {
            return;
        };
        let ctx = Context::new(ctx);
        let done = open_name(&ctx, &job.lock).and_then(|key| follow(&ctx, &key, job.restored));
        warn_if_failed(&ctx, done);
    })
}

unsafe extern "C" fn free_job(data: *mut c_void) {
    guard::callback((), || {
        if !data.is_null() {
            // SAFETY: the Box<Follow> made in `on_expiry_event`, freed once, here.
            drop(unsafe { Box::from_raw(data.cast::<Follow>()) });
        }
    })
}

/// Redis 7.0: look at this key right after the command, on one 0 ms timer for all of them.
fn after_command(ctx: &Context, lock: LockId) {
    let first = state::with(|s| {
        s.expiry_after_command.push(lock);
        s.expiry_after_command.len() == 1
    });
    if first == Ok(true) {
        timer::start(ctx, Duration::ZERO, on_after_command, ());
    }
}

fn on_after_command(ctx: &Context, (): ()) {
    guard::callback((), || {
        let pending = state::with(|s| std::mem::take(&mut s.expiry_after_command));
        for lock in pending.unwrap_or_default() {
            let done = open_name(ctx, &lock).and_then(|key| {
                if holds_lock(ctx, &key) {
                    follow(ctx, &key, false)
                } else {
                    Ok(())
                }
            });
            warn_if_failed(ctx, done);
        }
    })
}
