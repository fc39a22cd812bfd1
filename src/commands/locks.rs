//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE and LOCK.INFO: parse into a typed request, read the
//! key, let the core decide, write the effect, replicate it, reply.

use std::collections::BTreeMap;

use redis_module::redisvalue::RedisValueKey;
use redis_module::{Context, ContextFlags, RedisResult, RedisString, RedisValue};

use lock_core::compact::INLINE_TEXT_MAX;
use lock_core::lock::{self, decide_acquire, held_by, Acquire, Lock};
use lock_core::request::{parse_release, AcquireRequest, RenewRequest};
use lock_core::token::Token;
use lock_core::{LockError, LockResult};

use crate::commands::key_and_rest;
use crate::ffi::api::lock_id;
use crate::ffi::key::{LockKey, Mode};
use crate::ffi::{clock, guard, propagate};
use crate::observe::config;
use crate::observe::notify;
use crate::observe::stats::{count, STATS};
use crate::server::answer::grant_reply;
use crate::server::runner::Current;
use crate::server::{blocked, fences, notices, runner, state};

/// LOCK.ACQUIRE key ttl [TOKEN token] [BLOCK timeout]
pub fn acquire(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::command(|| {
        let (key, rest) = key_and_rest(&args, "lock.acquire")?;
        let request = AcquireRequest::parse(&rest, config::max_ttl())?;
        let flags = ctx.get_flags();
        if flags.contains(ContextFlags::EVICTED) {
            return Err(LockError::EvictionPossible);
        }
        let now = clock::now_ms()?;
        let deadline = lock::deadline(now, request.ttl_ms)?;
        if let Some(timeout) = request.block_ms {
            lock::deadline(now, timeout).map_err(|_| LockError::TimeoutOverflow(timeout))?;
        }
        let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
        let waiting = state::anyone_waiting();
        // No overtaking: a lock that is free while clients queue goes to the first of them.
        if waiting && !lock_key.lock()?.is_some_and(|lock| lock.is_live(now)) {
            let id = lock_id(ctx, key)?;
            if state::has_waiters(&id) {
                runner::grant_to_head(ctx, key, &mut lock_key, &id, Current::Free)?;
            }
        }
        let current = lock_key.lock()?;
        match decide_acquire(current.as_deref(), request.token.as_ref(), now) {
            Acquire::Grant => {
                let token = request.token.map_or_else(Token::generate, Ok)?;
                lock_key.store(Lock::new(&token, deadline, fences::grant_fence()?)?)?;
                count(&STATS.acquired);
                notices::event(ctx, notify::ACQUIRED, key);
                stored(ctx, key, &mut lock_key)
            }
            Acquire::Retry => {
                lock_key.set_deadline(deadline)?;
                runner::owner_active(ctx, key, request.token.as_ref(), waiting, deadline)?;
                notices::event(ctx, notify::RENEWED, key);
                stored(ctx, key, &mut lock_key)
            }
            Acquire::Busy => match request.block_ms {
                // Inside MULTI, Lua and functions BLOCK is a single attempt, as BLPOP is there;
                // and only a primary makes clients wait (nothing may block on a replica).
                Some(timeout)
                    if !flags.contains(ContextFlags::DENY_BLOCKING)
                        && flags.contains(ContextFlags::MASTER) =>
                {
                    let id = lock_id(ctx, key)?;
                    let max_waiters = config::max_waiters();
                    if max_waiters > 0 && state::waiters(&id) >= max_waiters {
                        return Err(LockError::TooManyWaiters(max_waiters));
                    }
                    count(&STATS.contended);
                    let holder_deadline = current.map_or(now, |lock| lock.deadline_ms);
                    let token = request.token.map_or_else(Token::generate, Ok)?;
                    blocked::block(ctx, id, holder_deadline, token, request.ttl_ms, timeout)
                }
                _ => {
                    count(&STATS.contended);
                    Ok(RedisValue::Null)
                }
            },
        }
    })
}

/// LOCK.RENEW key token ttl
pub fn renew(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::command(|| {
        let (key, rest) = key_and_rest(&args, "lock.renew")?;
        let request = RenewRequest::parse(&rest, config::max_ttl())?;
        let now = clock::now_ms()?;
        let deadline = lock::deadline(now, request.ttl_ms)?;
        let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
        if held_by(lock_key.lock()?, &request.token, now).is_none() {
            return Ok(RedisValue::Integer(0));
        }
        lock_key.set_deadline(deadline)?;
        if let Some(lock) = lock_key.lock()? {
            propagate::replicate_lock(ctx, key, lock);
        }
        runner::owner_active(
            ctx,
            key,
            Some(&request.token),
            state::anyone_waiting(),
            deadline,
        )?;
        count(&STATS.renewed);
        notices::event(ctx, notify::RENEWED, key);
        Ok(RedisValue::Integer(1))
    })
}

/// LOCK.RELEASE key token: the lock goes to the first waiter, or the key is deleted.
pub fn release(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::command(|| {
        let (key, rest) = key_and_rest(&args, "lock.release")?;
        let token = parse_release(&rest)?;
        let now = clock::now_ms()?;
        let mut lock_key = LockKey::open(ctx, key, Mode::Write)?;
        if held_by(lock_key.lock()?, &token, now).is_none() {
            return Ok(RedisValue::Integer(0));
        }
        count(&STATS.released);
        notices::event(ctx, notify::RELEASED, key);
        runner::free_lock(ctx, key, &mut lock_key)?;
        Ok(RedisValue::Integer(1))
    })
}

/// LOCK.INFO key: fence, remaining ttl and waiters; never the token.
pub fn info(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::command(|| {
        let (key, rest) = key_and_rest(&args, "lock.info")?;
        if !rest.is_empty() {
            return Err(LockError::WrongArity("lock.info"));
        }
        let now = clock::now_ms()?;
        let mut lock_key = LockKey::open(ctx, key, Mode::Read)?;
        let Some(lock) = lock_key.lock()?.filter(|lock| lock.is_live(now)) else {
            return Ok(RedisValue::Null);
        };
        let waiters = i64::try_from(state::waiters(&lock_id(ctx, key)?)).unwrap_or(i64::MAX);
        let fence = i64::try_from(lock.fence())
            .map_err(|_| LockError::Internal("fence out of range".into()))?;
        let fields = [
            ("fence", fence),
            ("ttl", lock.remaining_ms(now)),
            ("waiters", waiters),
        ];
        Ok(RedisValue::OrderedMap(BTreeMap::from(fields.map(
            |(name, value)| {
                (
                    RedisValueKey::String(name.into()),
                    RedisValue::Integer(value),
                )
            },
        ))))
    })
}

/// After a grant or retry has been stored: replicate the lock as stored, reply `[token, fence]`.
fn stored(ctx: &Context, key: &RedisString, lock_key: &mut LockKey) -> LockResult<RedisValue> {
    let lock = lock_key
        .lock()?
        .ok_or_else(|| LockError::Internal("the stored lock vanished".into()))?;
    propagate::replicate_lock(ctx, key, lock);
    let mut buf = [0u8; INLINE_TEXT_MAX];
    Ok(grant_reply(lock.token(&mut buf), lock.fence()))
}
