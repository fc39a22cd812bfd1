//! Subscribing to server events.

use std::ffi::c_void;
use std::os::raw::c_int;

use lock_core::{LockError, LockResult};
use redis_module::{raw, Context};

use crate::ffi::api::api;

pub type EventCallback =
    unsafe extern "C" fn(*mut raw::RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);

/// Have `callback` called on every event `id` (a `REDISMODULE_EVENT_*`).
pub fn subscribe(ctx: &Context, id: u64, callback: EventCallback) -> LockResult<()> {
    let subscribe = api!(RedisModule_SubscribeToServerEvent)?;
    let event = raw::RedisModuleEvent { id, dataver: 1 };
    // SAFETY: ctx is live during module load; the callback lives as long as the module.
    if unsafe { subscribe(ctx.ctx, event, Some(callback)) } != raw::REDISMODULE_OK as c_int {
        return Err(LockError::Internal(format!(
            "could not subscribe to server event {id}"
        )));
    }
    Ok(())
}
