//! Replication and AOF by effects. A grant or renewal is sent as `LOCK.APPLY key token
//! deadline fence` with the primary's own token, absolute deadline and fence, never as the
//! command the client typed (which would draw a new token and read the replica's clock);
//! a release is sent as `DEL key`.

use std::ffi::CStr;

use redis_module::{raw, Context, ContextFlags, RedisResult, RedisString, RedisValue};

use crate::error::{LockError, LockResult};
use crate::fence::FENCE;
use crate::guard;
use crate::key::{LockKey, Mode};
use crate::lock::Lock;
use crate::request::ApplyRequest;

pub const APPLY_COMMAND: &CStr = c"LOCK.APPLY";

/// AOF replay runs on a client whose id is UINT64_MAX (`RedisModule_IsAOFClient`).
const AOF_CLIENT_ID: u64 = u64::MAX;

/// Send the lock's state, as stored, to replicas and the AOF.
pub fn replicate_lock(ctx: &Context, key: &RedisString, lock: &Lock) {
    let deadline = lock.deadline_ms.to_string();
    let fence = lock.fence.to_string();
    let args: [&[u8]; 4] = [
        key.as_slice(),
        lock.token.as_bytes(),
        deadline.as_bytes(),
        fence.as_bytes(),
    ];
    ctx.replicate("LOCK.APPLY", &args[..]);
}

/// Send the freeing of a lock.
pub fn replicate_release(ctx: &Context, key: &RedisString) {
    let args: [&[u8]; 1] = [key.as_slice()];
    ctx.replicate("DEL", &args[..]);
}

/// LOCK.APPLY key token deadline fence: store a lock exactly as the primary made it.
/// Ordinary clients are refused: only the primary's link and AOF replay may apply effects.
pub fn apply(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::command(|| {
        let from_primary = ctx.get_flags().contains(ContextFlags::REPLICATED);
        if !from_primary && client_id(ctx) != Some(AOF_CLIENT_ID) {
            return Err(LockError::InternalCommand("LOCK.APPLY"));
        }
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

fn client_id(ctx: &Context) -> Option<u64> {
    // SAFETY: ctx is live for this command call.
    unsafe { raw::RedisModule_GetClientId }.map(|get| unsafe { get(ctx.ctx) })
}

fn apply_request(ctx: &Context, key: &RedisString, request: ApplyRequest) -> LockResult<()> {
    FENCE.observe(request.fence);
    let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
    lock_key.store(Lock {
        token: request.token,
        deadline_ms: request.deadline_ms,
        fence: request.fence,
    })
}
