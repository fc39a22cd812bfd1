//! Replication and AOF by effects. A grant or renewal is sent as `LOCK.APPLY key token
//! deadline fence` with the primary's own token, absolute deadline and fence, never as the
//! command the client typed (which would draw a new token and read the replica's clock);
//! a release is sent as `DEL key`.
//!
//! The fence clock itself travels as `LOCK.CLOCK fence`, written whenever the server forks
//! (BGSAVE, BGREWRITEAOF): a rewritten AOF without the RDB preamble keeps only live locks, so
//! the clock goes into the incremental file that follows it.

use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_longlong};
use std::time::Duration;

use redis_module::{raw, Context, ContextFlags, RedisResult, RedisString, RedisValue};

use crate::clock;
use crate::error::{LockError, LockResult};
use crate::events;
use crate::fence::FENCE;
use crate::guard;
use crate::key::{LockKey, Mode};
use crate::lock::{Lock, INLINE_TEXT_MAX};
use crate::request::{parse_clock, ApplyRequest};

pub const APPLY_COMMAND: &CStr = c"LOCK.APPLY";

/// AOF replay runs on a client whose id is UINT64_MAX (`RedisModule_IsAOFClient`).
const AOF_CLIENT_ID: u64 = u64::MAX;

/// Send the lock's state, as stored, to replicas and the AOF.
pub fn replicate_lock(ctx: &Context, key: &RedisString, lock: &Lock) {
    let Some(replicate) = (unsafe { raw::RedisModule_Replicate }) else {
        return;
    };
    let mut buf = [0u8; INLINE_TEXT_MAX];
    let token = lock.token(&mut buf);
    // SAFETY: "sbll" is a RedisModuleString, a buffer with its length, two long longs.
    unsafe {
        replicate(
            ctx.ctx,
            APPLY_COMMAND.as_ptr(),
            c"sbll".as_ptr(),
            key.inner,
            token.as_ptr().cast::<c_char>(),
            token.len(),
            lock.deadline_ms as c_longlong,
            lock.fence() as c_longlong,
        )
    };
}

/// Send the freeing of a lock.
pub fn replicate_release(ctx: &Context, key: &RedisString) {
    if let Some(replicate) = unsafe { raw::RedisModule_Replicate } {
        // SAFETY: "s" is one RedisModuleString, live for this call.
        unsafe { replicate(ctx.ctx, c"DEL".as_ptr(), c"s".as_ptr(), key.inner) };
    }
}

/// LOCK.APPLY key token deadline fence: store a lock exactly as the primary made it.
/// Ordinary clients are refused: only the primary's link and AOF replay may apply effects.
pub fn apply(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::command(|| {
        effects_only(ctx, "LOCK.APPLY")?;
        let [_, key, rest @ ..] = args.as_slice() else {
            return Err(LockError::WrongArity("lock.apply"));
        };
        let rest: Vec<&[u8]> = rest.iter().map(RedisString::as_slice).collect();
        let request = ApplyRequest::parse(&rest)?;
        apply_request(ctx, key, request)?;
        // A replica's own AOF must record the effect too (sub-replicas get the primary's
        // stream proxied; nothing propagates while the AOF itself is loading).
        ctx.replicate_verbatim();
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}

/// LOCK.CLOCK fence: raise the fence clock (from the primary's link or AOF replay only).
pub fn clock(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::command(|| {
        effects_only(ctx, "LOCK.CLOCK")?;
        let rest: Vec<&[u8]> = args.iter().skip(1).map(RedisString::as_slice).collect();
        // Effects load whole (the primary or the file made them); a fence too far ahead raises
        // the clock only within lock.fence-max-ahead.
        clock::observe_fence_or_warn(ctx, parse_clock(&rest)?);
        ctx.replicate_verbatim();
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}

fn effects_only(ctx: &Context, command: &'static str) -> LockResult<()> {
    let from_primary = ctx.get_flags().contains(ContextFlags::REPLICATED);
    if from_primary || client_id(ctx) == Some(AOF_CLIENT_ID) {
        Ok(())
    } else {
        Err(LockError::InternalCommand(command))
    }
}

/// Write the fence clock into the AOF and to replicas each time the server forks.
pub fn watch_forks(ctx: &Context) -> LockResult<()> {
    events::subscribe(ctx, raw::REDISMODULE_EVENT_FORK_CHILD, on_fork)
}

unsafe extern "C" fn on_fork(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || {
        if subevent == raw::REDISMODULE_SUBEVENT_FORK_CHILD_BORN {
            write_clock(&Context::new(ctx), ());
        }
    })
}

/// While clients are paused nothing may be propagated (the server asserts on it): retry.
fn write_clock(ctx: &Context, (): ()) {
    let last = FENCE.last();
    if last == 0 {
        return;
    }
    if events::clients_paused() {
        ctx.create_timer(Duration::from_millis(50), write_clock, ());
        return;
    }
    let fence = last.to_string();
    ctx.replicate("LOCK.CLOCK", &[fence.as_bytes()][..]);
}

fn client_id(ctx: &Context) -> Option<u64> {
    // SAFETY: ctx is live for this command call.
    unsafe { raw::RedisModule_GetClientId }.map(|get| unsafe { get(ctx.ctx) })
}

fn apply_request(ctx: &Context, key: &RedisString, request: ApplyRequest) -> LockResult<()> {
    // Checked (the fence fits) before it may raise the clock.
    let lock = Lock::new(&request.token, request.deadline_ms, request.fence)?;
    clock::observe_fence_or_warn(ctx, request.fence);
    let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
    lock_key.store(lock)
}
