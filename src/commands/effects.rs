//! The effect commands, run only by replicas (from the primary's link) and AOF replay: the
//! core's `effect` module says what each form means. `LOCK.APPLY key ...` stores a lock, or one
//! shared holder, exactly as the primary made it; `LOCK.DROP key token` removes one shared
//! holder; `LOCK.CLOCK fence` raises the fence clock.

use lock_core::effect::{parse_apply, parse_clock, parse_drop};
use lock_core::shared::SharedLock;
use lock_core::value::{Held, Value, Want};
use lock_core::{LockError, LockResult};
use redis_module::{Context, ContextFlags};

use crate::ffi::api::lock_id;
use crate::ffi::call::{Answer, Args};
use crate::ffi::key::{LockKey, Mode};
use crate::server::{fences, state};

/// AOF replay runs on a client whose id is UINT64_MAX (`RedisModule_IsAOFClient`).
const AOF_CLIENT_ID: u64 = u64::MAX;

/// LOCK.APPLY key deadline:fence:token [SHARED | LIMIT n] [META label] (and every older form
/// the core reads).
/// Ordinary clients are refused: only the primary's link and AOF replay may apply effects.
pub fn apply(ctx: &Context, args: &Args) -> LockResult<Answer> {
    effects_only(ctx, "LOCK.APPLY")?;
    let (key, rest) = args.keyed()?;
    let applied = parse_apply(rest)?;
    let fence = applied.fence;
    let want = applied.want;
    let meta = applied.meta.clone();
    // Checked (the fence fits) before it may raise the clock.
    let lock = applied.into_lock()?;
    fences::observe_fence_or_warn(ctx, fence);
    let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
    match want {
        Want::Exclusive => lock_key.store(Value::exclusive(lock, meta))?,
        Want::Shared { limit } => match lock_key.held()? {
            Some(Held::Shared(shared)) => {
                shared.upsert(lock, meta);
                lock_key.follow_deadline()?;
            }
            _ => {
                let mut shared = SharedLock::new(limit);
                shared.insert(lock, meta);
                lock_key.store(Value::Shared(Box::new(shared)))?;
            }
        },
    }
    // Replayed from an AOF: its holders leave at their deadlines once the load ends.
    let loading = ctx.get_flags().contains(ContextFlags::LOADING);
    if loading && lock_key.held()?.is_some_and(|h| h.holders_expire_first()) {
        let id = lock_id(ctx, key)?;
        state::update(|s| {
            if s.loaded_shared.last() != Some(&id) {
                s.loaded_shared.push(id);
            }
        });
    }
    // A replica's own AOF must record the effect too (sub-replicas get the primary's
    // stream proxied; nothing propagates while the AOF itself is loading).
    ctx.replicate_verbatim();
    Ok(Answer::Done)
}

/// LOCK.DROP key token: the shared holder with `token` leaves; the key goes with the last.
/// (From the primary's link or AOF replay only.)
pub fn drop_holder(ctx: &Context, args: &Args) -> LockResult<Answer> {
    effects_only(ctx, "LOCK.DROP")?;
    let (key, rest) = args.keyed()?;
    let token = parse_drop(rest)?;
    let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
    let empty = match lock_key.held()? {
        Some(Held::Shared(shared)) => {
            shared.remove(&token);
            shared.is_empty()
        }
        Some(Held::Exclusive(lock, _)) => lock.has_token(&token),
        None => false,
    };
    if empty {
        lock_key.delete()?;
    } else if lock_key.held()?.is_some() {
        lock_key.follow_deadline()?;
    }
    ctx.replicate_verbatim();
    Ok(Answer::Done)
}

/// LOCK.CLOCK fence: raise the fence clock (from the primary's link or AOF replay only).
pub fn clock(ctx: &Context, args: &Args) -> LockResult<Answer> {
    effects_only(ctx, "LOCK.CLOCK")?;
    // Effects load whole (the primary or the file made them); a fence too far ahead raises
    // the clock only within lock.fence-max-ahead.
    fences::observe_fence_or_warn(ctx, parse_clock(args.all())?);
    ctx.replicate_verbatim();
    Ok(Answer::Done)
}

fn effects_only(ctx: &Context, command: &'static str) -> LockResult<()> {
    let from_primary = ctx.get_flags().contains(ContextFlags::REPLICATED);
    if from_primary || client_id(ctx) == Some(AOF_CLIENT_ID) {
        Ok(())
    } else {
        Err(LockError::InternalCommand(command))
    }
}

fn client_id(ctx: &Context) -> Option<u64> {
    // SAFETY: ctx is live for this command call.
    unsafe { redis_module::raw::RedisModule_GetClientId }.map(|get| unsafe { get(ctx.ctx) })
}
