//! What the module follows of the server's state: server events (config changes, forks,
//! flushes, SWAPDB, role changes, loading) and whether clients are paused.

use std::ffi::c_void;
use std::os::raw::c_int;

use redis_module::{raw, Context};

use crate::api;
use crate::clock;
use crate::error::{LockError, LockResult};
use crate::fence::FENCE;
use crate::guard;
use crate::stats;

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

/// While clients are paused (CLIENT PAUSE, a failover) the data set must not change: the
/// server asserts that nothing is propagated then, so timers and events must wait.
pub fn clients_paused() -> bool {
    unsafe { raw::RedisModule_AvoidReplicaTraffic }.is_some_and(|avoid| unsafe { avoid() } != 0)
}

/// Follow promotions and data loads: after either, this server may have missed grants (made
/// by the old primary, or by itself before a crash), so its next fence jumps ahead; and the
/// counters of INFO lock count only what happens while it serves, not what a load replays.
pub fn watch_role_and_loading(ctx: &Context) -> LockResult<()> {
    stats::serving_from(clock::now_ms()?);
    subscribe(
        ctx,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        on_role_changed,
    )?;
    subscribe(ctx, raw::REDISMODULE_EVENT_LOADING, on_loading)
}

unsafe extern "C" fn on_role_changed(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || {
        if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
            FENCE.jump_next_grant();
        }
    })
}

unsafe extern "C" fn on_loading(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || match subevent {
        raw::REDISMODULE_SUBEVENT_LOADING_ENDED | raw::REDISMODULE_SUBEVENT_LOADING_FAILED => {
            FENCE.jump_next_grant();
            // Without a clock reading, count every expiry rather than none.
            stats::serving_from(clock::now_ms().unwrap_or(0));
        }
        _ => stats::serving_from(i64::MAX),
    })
}
