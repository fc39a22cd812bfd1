//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE and LOCK.INFO: parse into a typed request, read the
//! key, let `lock` decide, write the effect, replicate it, reply.

use std::collections::BTreeMap;

use redis_module::redisvalue::RedisValueKey;
use redis_module::{Context, ContextFlags, RedisResult, RedisString, RedisValue};

use crate::blocking;
use crate::clock;
use crate::config;
use crate::error::{LockError, LockResult};
use crate::guard;
use crate::key::{LockKey, Mode};
use crate::lock::{self, decide_acquire, held_by, Acquire, Lock, INLINE_TEXT_MAX};
use crate::notify;
use crate::replication;
use crate::request::{parse_release, AcquireRequest, RenewRequest};
use crate::stats::{count, STATS};
use crate::token::Token;

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
        let waiting = blocking::anyone_waiting();
        // No overtaking: a lock that is free while clients queue goes to the first of them.
        if waiting && !lock_key.lock()?.is_some_and(|lock| lock.is_live(now)) {
            let id = blocking::lock_id(ctx, key)?;
            if blocking::has_waiters(&id) {
                blocking::grant_to_head(ctx, key, &mut lock_key, &id)?;
            }
        }
        let current = lock_key.lock()?;
        match decide_acquire(current.as_deref(), request.token.as_ref(), now) {
            Acquire::Grant => {
                let token = request.token.map_or_else(Token::generate, Ok)?;
                lock_key.store(Lock::new(&token, deadline, clock::grant_fence()?)?)?;
                count(&STATS.acquired);
                notify::event(ctx, notify::ACQUIRED, key);
                stored(ctx, key, &mut lock_key)
            }
            Acquire::Retry => {
                lock_key.set_deadline(deadline)?;
                owner_active(ctx, key, request.token.as_ref(), waiting, deadline)?;
                notify::event(ctx, notify::RENEWED, key);
                stored(ctx, key, &mut lock_key)
            }
            Acquire::Busy => match request.block_ms {
                // Inside MULTI, Lua and functions BLOCK is a single attempt, as BLPOP is there;
                // and only a primary makes clients wait (nothing may block on a replica).
                Some(timeout)
                    if !flags.contains(ContextFlags::DENY_BLOCKING)
                        && flags.contains(ContextFlags::MASTER) =>
                {
                    let id = blocking::lock_id(ctx, key)?;
                    let max_waiters = config::max_waiters();
                    if max_waiters > 0 && blocking::waiters(&id) >= max_waiters {
                        return Err(LockError::TooManyWaiters(max_waiters));
                    }
                    count(&STATS.contended);
                    let holder_deadline = current.map_or(now, |lock| lock.deadline_ms);
                    let token = request.token.map_or_else(Token::generate, Ok)?;
                    blocking::block(ctx, id, holder_deadline, token, request.ttl_ms, timeout)
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
            replication::replicate_lock(ctx, key, lock);
        }
        owner_active(
            ctx,
            key,
            Some(&request.token),
            blocking::anyone_waiting(),
            deadline,
        )?;
        count(&STATS.renewed);
        notify::event(ctx, notify::RENEWED, key);
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
        notify::event(ctx, notify::RELEASED, key);
        blocking::free_lock(ctx, key, &mut lock_key)?;
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
        let waiters =
            i64::try_from(blocking::waiters(&blocking::lock_id(ctx, key)?)).unwrap_or(i64::MAX);
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

/// The holder retried or renewed, moving its deadline: the hand-off timer follows it, and a
/// grant thought undelivered is evidently known to its owner.
fn owner_active(
    ctx: &Context,
    key: &RedisString,
    token: Option<&Token>,
    waiting: bool,
    deadline: i64,
) -> LockResult<()> {
    let revokes = blocking::grants_unsettled();
    if !waiting && !revokes {
        return Ok(());
    }
    let id = blocking::lock_id(ctx, key)?;
    if waiting {
        blocking::deadline_moved(&id, deadline);
    }
    if let (true, Some(token)) = (revokes, token) {
        blocking::owner_seen(&id, token);
    }
    Ok(())
}

/// The key (argv[1]) and the arguments after it.
fn key_and_rest<'a>(
    args: &'a [RedisString],
    command: &'static str,
) -> LockResult<(&'a RedisString, Vec<&'a [u8]>)> {
    match args {
        [_, key, rest @ ..] => Ok((key, rest.iter().map(RedisString::as_slice).collect())),
        _ => Err(LockError::WrongArity(command)),
    }
}

/// After a grant or retry has been stored: replicate the lock as stored, reply `[token, fence]`.
fn stored(ctx: &Context, key: &RedisString, lock_key: &mut LockKey) -> LockResult<RedisValue> {
    let lock = lock_key
        .lock()?
        .ok_or_else(|| LockError::Internal("the stored lock vanished".into()))?;
    replication::replicate_lock(ctx, key, lock);
    let mut buf = [0u8; INLINE_TEXT_MAX];
    Ok(grant_reply(lock.token(&mut buf), lock.fence()))
}

/// `[token, fence]`: the reply to every grant, at once or after waiting.
pub fn grant_reply(token: &[u8], fence: u64) -> RedisValue {
    RedisValue::Array(vec![
        RedisValue::StringBuffer(token.to_vec()),
        RedisValue::Integer(i64::try_from(fence).unwrap_or(i64::MAX)),
    ])
}
