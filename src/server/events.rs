//! The server events the module follows: flushes and SWAPDB (locks freed without a key
//! callback), promotions and data loads (the fence clock jumps, the counters restart their
//! notion of "serving"), demotions (bindings go), closed connections (their ephemeral holds
//! end), and forks (the fence clock is written for the AOF).

use std::ffi::c_void;
use std::time::Duration;

use lock_core::effect::Effect;
use lock_core::LockResult;
use redis_module::{raw, Context};

use crate::ffi::api::clients_paused;
use crate::ffi::subscribe::subscribe;
use crate::ffi::{clock, cluster, guard, propagate, timer};
use crate::server::{fences, runner, state, sweep};

/// Subscribe to every event below.
pub fn watch(ctx: &Context) -> LockResult<()> {
    let now = clock::now_ms()?;
    state::update(|s| s.serving_since_ms = now);
    subscribe(ctx, raw::REDISMODULE_EVENT_FLUSHDB, on_flush)?;
    subscribe(ctx, raw::REDISMODULE_EVENT_SWAPDB, on_swapdb)?;
    subscribe(
        ctx,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        on_role_changed,
    )?;
    subscribe(ctx, raw::REDISMODULE_EVENT_LOADING, on_loading)?;
    subscribe(ctx, raw::REDISMODULE_EVENT_CLIENT_CHANGE, on_client_change)?;
    subscribe(ctx, raw::REDISMODULE_EVENT_FORK_CHILD, on_fork)
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
        state::update(|s| s.bindings.flushed(db));
        runner::serve_later(db);
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
        state::update(|s| s.bindings.swapped(info.dbnum_first, info.dbnum_second));
        runner::serve_later(Some(info.dbnum_first));
        runner::serve_later(Some(info.dbnum_second));
    })
}

/// After a promotion this server may have missed grants made by the old primary: its next
/// fence jumps ahead; and it starts keeping its shared holders' deadlines.
unsafe extern "C" fn on_role_changed(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || {
        if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
            fences::jump_next_grant();
            sweep::after_promotion();
        } else {
            // A replica's data is its primary's: no connection here ends a hold any more.
            state::update(|s| s.bindings.clear());
        }
    })
}

/// A client connection closed (QUIT, killed, dropped, timed out): its ephemeral holds end.
unsafe extern "C" fn on_client_change(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::callback((), || {
        if subevent != raw::REDISMODULE_SUBEVENT_CLIENT_CHANGE_DISCONNECTED {
            return;
        }
        // SAFETY: the server passes a RedisModuleClientInfo (version 1) with this event.
        let Some(info) = (unsafe { data.cast::<raw::RedisModuleClientInfo>().as_ref() }) else {
            return;
        };
        runner::connection_closed(info.id);
    })
}

/// After a load this server may have missed grants (made by itself before a crash, or by its
/// primary); and the counters of INFO lock count only what happens while it serves, not what
/// a load replays.
unsafe extern "C" fn on_loading(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || match subevent {
        raw::REDISMODULE_SUBEVENT_LOADING_ENDED | raw::REDISMODULE_SUBEVENT_LOADING_FAILED => {
            // Without a clock reading, count every expiry rather than none.
            let now = clock::now_ms().unwrap_or(0);
            let loaded = state::with(|s| {
                s.fence.jump_next_grant();
                s.serving_since_ms = now;
                std::mem::take(&mut s.loaded_shared)
            });
            // Their holders' deadlines may have passed while the server was down.
            runner::look_again(loaded.unwrap_or_default());
        }
        _ => state::update(|s| s.serving_since_ms = i64::MAX),
    })
}

/// A fork (BGSAVE, BGREWRITEAOF): the fence clock goes into the AOF and to replicas as
/// `LOCK.CLOCK`, because a rewritten AOF without the RDB preamble keeps only live locks. It
/// lands in the incremental file the rewrite has just opened.
///
/// Not from inside the command that forked, but on a 0 ms timer right after it: a module's
/// replicate marks the running command as a write, so the server would propagate BGSAVE or
/// BGREWRITEAOF itself, and every replica would fork and save as well.
unsafe extern "C" fn on_fork(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || {
        if subevent != raw::REDISMODULE_SUBEVENT_FORK_CHILD_BORN {
            return;
        }
        match state::detached() {
            Some(ctx) => {
                timer::start(&ctx, Duration::ZERO, write_clock, ());
            }
            None => state::log_warning("lock: no timer context: the fence clock is not written"),
        }
    })
}

/// While clients are paused nothing may be propagated (the server asserts on it): retry.
fn write_clock(ctx: &Context, (): ()) {
    guard::callback((), || {
        let last = fences::last_fence();
        if last == 0 {
            return;
        }
        // The fork may be a slot migration's snapshot: a keyless effect during it would fail
        // the migration, so the clock waits for its end.
        if clients_paused() || cluster::exporting_slots(ctx) {
            timer::start(ctx, Duration::from_millis(50), write_clock, ());
            return;
        }
        propagate::replicate(ctx, std::ptr::null_mut(), &Effect::clock(last));
    })
}
