//! LOCK.ACQUIRE ... BLOCK: blocking the calling client, and the server's callbacks for it
//! (reply, CLIENT UNBLOCK, disconnect, free).

use std::ffi::c_void;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

use lock_core::queue::{HoldOptions, LockId};
use lock_core::token::Token;
use lock_core::value::Want;
use lock_core::{LockError, LockResult};
use redis_module::{raw, Context, RedisValue};

use crate::ffi::block::{self, Blocked, Callbacks};
use crate::ffi::call::{self, Answer};
use crate::ffi::guard;
use crate::observe::stats::{count, STATS};
use crate::server::answer::{unblock_with_error, BlockTimeout, Reply};
use crate::server::{runner, state};

const CALLBACKS: Callbacks = Callbacks {
    reply: on_reply,
    timeout: on_timeout,
    free: on_free,
    disconnect: on_disconnect,
};

/// What a client waits to be granted.
pub struct Wait {
    pub token: Token,
    pub ttl_ms: i64,
    pub want: Want,
    pub options: HoldOptions,
    /// 0: no limit.
    pub timeout_ms: i64,
}

/// Block the calling client until the lock is handed to it or its timeout passes. `wake` is
/// when the lock's timer is due and whether its holders expire first (`runner::wake`).
pub fn block(ctx: &Context, id: LockId, wake: (i64, bool), wait: Wait) -> LockResult<RedisValue> {
    let Wait {
        token,
        ttl_ms,
        want,
        options,
        timeout_ms,
    } = wait;
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
    let handle = block::block(ctx, &CALLBACKS)?;
    let serial = match state::with(|s| {
        s.handoff
            .wait(id.clone(), handle, token, ttl_ms, want, options)
    }) {
        Ok(serial) => serial,
        Err(e) => {
            // Not queued, so nothing else would ever unblock it.
            unblock_with_error(handle, 0, &e);
            return Ok(RedisValue::NoReply);
        }
    };
    if let Some(at) = timeout_at {
        runner::arm_timeout(BlockTimeout {
            handle: handle.0 as usize,
            serial,
            at,
        });
    }
    runner::deadline_moved(&id, wake.0, wake.1);
    Ok(RedisValue::NoReply)
}

/// Delivers the reply decided at unblocking.
unsafe extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    in_reply_callback(ctx, |ctx| {
        // SAFETY: every client this module blocks is unblocked with a Reply or none.
        match unsafe { block::private_data::<Reply>(ctx) } {
            Some(Reply::Granted {
                token,
                fence,
                delivered,
                ..
            }) => {
                *delivered = true;
                let fence = *fence;
                let token = token.clone();
                call::send(ctx, Ok(Answer::Grant { token, fence }));
            }
            Some(Reply::Error(text)) => {
                call::send_error(ctx, text);
            }
            Some(Reply::TimedOut) | None => {
                call::send(ctx, Ok(Answer::Null));
            }
        }
    })
}

/// CLIENT UNBLOCK (BLOCK timeouts are the module's own timers): leave the queue, answer null.
unsafe extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    in_reply_callback(ctx, |ctx| {
        ctx.reply(Ok(RedisValue::Null));
        if block::handle_of(ctx).is_some_and(leave) {
            count(&STATS.timeouts);
        }
    })
}

/// What both reply callbacks share: the panic guard and the context; `answer` replies.
fn in_reply_callback(ctx: *mut raw::RedisModuleCtx, answer: impl FnOnce(&Context)) -> c_int {
    guard::callback(raw::REDISMODULE_OK as c_int, || {
        answer(&Context::new(ctx));
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
    let Ok(Some(left)) = state::with(|s| s.handoff.leave(handle)) else {
        return false;
    };
    runner::waiter_left(left, None);
    true
}

/// The server is done with a reply. A grant whose reply callback never ran (its client went
/// away in between) is taken back and handed on.
unsafe extern "C" fn on_free(_ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    guard::callback((), || {
        // SAFETY: the private data of our blocked clients is always a Box<Reply> or null.
        let Some(reply) = (unsafe { block::take_private_data::<Reply>(privdata) }) else {
            return;
        };
        if let Reply::Granted {
            lock,
            token,
            fence,
            delivered,
        } = *reply
        {
            runner::reply_freed(lock, token, fence, delivered);
        }
    })
}
