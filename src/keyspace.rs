//! The lock's deadline decides, whatever the key's expiry says: when a command other than the
//! module's moves a lock key's expiry (EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST, RESTORE
//! with another ttl), it is put back to the lock's deadline at once, inside that command.
//!
//! The same event of RESTORE raises the fence clock to the restored lock's fence.
//!
//! Every server does this for itself, primary, replica and AOF replay alike, from the same
//! lock value, so they agree without the module propagating anything. (An expiry in the past
//! deletes the key outright, as DEL does, and frees the lock.)

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

use redis_module::{raw, Context, RedisString};

use crate::api;
use crate::clock;
use crate::error::{LockError, LockResult};
use crate::fence::Observed;
use crate::guard;
use crate::key::{LockKey, Mode};

/// The generic keyspace events that change a key's expiry and leave the key in place.
const EXPIRY_EVENTS: [&CStr; 3] = [c"expire", c"persist", c"restore"];

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

/// RESTORE (and MIGRATE's on the receiving side) took a whole lock value: it raises the fence
/// clock now, so that no later grant undercuts it. (`rdb_load` leaves that to here, because
/// the server may still refuse the payload after reading the value.)
fn restored(ctx: &Context, lock_key: &mut LockKey) {
    let Ok(Some(lock)) = lock_key.lock() else {
        return;
    };
    let fence = lock.fence();
    if clock::observe_fence(fence) == Observed::Capped {
        ctx.log_warning(&clock::capped_message(fence));
    }
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
            // Opening a lock key for writing puts its expiry back to the lock's deadline;
            // another type (WRONGTYPE) is none of the module's business.
            match LockKey::open(&ctx, &key, Mode::Write) {
                Ok(mut lock_key) if event == c"restore" => restored(&ctx, &mut lock_key),
                Ok(_) | Err(LockError::WrongType) => {}
                Err(e) => {
                    ctx.log_warning(&format!("lock: could not keep a lock key's expiry: {e}"));
                }
            }
        }
        raw::REDISMODULE_OK as c_int
    })
}
