//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE, LOCK.INFO and LOCK.HOLDERS: parse into a typed
//! request, read the key, let the core decide, write the effect, replicate it, reply.

use std::collections::BTreeMap;

use redis_module::redisvalue::RedisValueKey;
use redis_module::{Context, ContextFlags, RedisString, RedisValue};

use lock_core::lock::{self, Lock};
use lock_core::meta::Meta;
use lock_core::queue::{HoldOptions, LockId};
use lock_core::request::{parse_release, AcquireRequest, RenewRequest};
use lock_core::token::Token;
use lock_core::value::{decide, Acquire, Held, Value, Want};
use lock_core::{LockError, LockResult};

use crate::ffi::api::{api, lock_id};
use crate::ffi::call::{Answer, Args};
use crate::ffi::key::{LockKey, Mode};
use crate::ffi::{clock, propagate};
use crate::observe::config;
use crate::observe::notify;
use crate::observe::stats::{count, STATS};
use crate::server::runner::Current;
use crate::server::{blocked, notices, runner, state};

/// LOCK.ACQUIRE key ttl [TOKEN token] [BLOCK timeout] [SHARED | LIMIT n] [EPHEMERAL]
/// [META value]
pub fn acquire(ctx: &Context, args: &Args, opened: Option<LockKey>) -> LockResult<Answer> {
    let (key, rest) = args.keyed()?;
    let request = AcquireRequest::parse(rest, config::max_ttl())?;
    // Kept up to date by config events: asking the server on every call costs time (on Redis
    // 8.2 with enable-debug-command, a system call), so the context flags are read only
    // where a rarer path needs them.
    if state::eviction_possible() {
        return Err(LockError::EvictionPossible);
    }
    // Inside MULTI the context's client is the caller's connection; inside a script or a
    // function it is the script's own, which never closes, and the server tells a module
    // nothing of the caller's.
    if request.ephemeral && ctx.get_flags().contains(ContextFlags::LUA) {
        return Err(LockError::EphemeralInScript);
    }
    let options = HoldOptions {
        meta: request.meta,
        bind_to: match request.ephemeral {
            true => Some(client_id(ctx)?),
            false => None,
        },
    };
    let now = clock::command_ms();
    let deadline = lock::deadline(now, request.ttl_ms)?;
    if let Some(timeout) = request.block_ms {
        lock::deadline(now, timeout).map_err(|_| LockError::TimeoutOverflow(timeout))?;
    }
    let mut lock_key = open_for_writing(ctx, key, opened)?;
    let id = queue_of(ctx, key, &mut lock_key, now)?;
    let (queued, others_wait) = match &id {
        Some(id) => state::with(|s| (s.handoff.shared_limit(id), s.handoff.has_waiters(id)))?,
        None => (None, false),
    };
    let current = lock_key.held()?;
    let decision = decide(
        current.as_ref(),
        request.want,
        request.token.as_ref(),
        now,
        queued,
        others_wait,
    )?;
    match decision {
        Acquire::Grant => {
            let token = request.token.map_or_else(Token::generate, Ok)?;
            let fence = match request.want {
                Want::Exclusive => {
                    let lock = runner::new_lock((&token).into(), deadline)?;
                    runner::grant_exclusive(
                        ctx,
                        key,
                        &mut lock_key,
                        (lock, (&token).into()),
                        Current::Free,
                        &options,
                    )?
                }
                Want::Shared { limit } => {
                    let fence = runner::grant_shared(
                        ctx,
                        key,
                        &mut lock_key,
                        &token,
                        (deadline, limit),
                        Current::Free,
                        now,
                        &options,
                    )?;
                    let id = match id {
                        Some(id) => id,
                        None => lock_id(ctx, key)?,
                    };
                    runner::follow(&id, &mut lock_key)?;
                    fence
                }
            };
            count(&STATS.acquired);
            notices::event(ctx, notify::ACQUIRED, key);
            Ok(Answer::Grant { token, fence })
        }
        Acquire::Retry => {
            let token = request
                .token
                .ok_or_else(|| LockError::Internal("a retry without a token".into()))?;
            let fence = extend(ctx, key, &mut lock_key, &token, deadline, options.meta)?;
            // A retry with EPHEMERAL moves the binding to this connection.
            runner::bind(ctx, key, &token, fence, options.bind_to)?;
            notices::event(ctx, notify::RENEWED, key);
            Ok(Answer::Grant { token, fence })
        }
        Acquire::Busy => match request.block_ms {
            // Inside MULTI, Lua and functions BLOCK is a single attempt, as BLPOP is there;
            // and only a primary makes clients wait (nothing may block on a replica).
            Some(timeout) if may_block(ctx) => {
                let id = match id {
                    Some(id) => id,
                    None => lock_id(ctx, key)?,
                };
                let max_waiters = config::max_waiters();
                if max_waiters > 0 && state::waiters(&id) >= max_waiters {
                    return Err(LockError::TooManyWaiters(max_waiters));
                }
                count(&STATS.contended);
                let wake = current.as_ref().map_or((now, false), runner::wake);
                let token = request.token.map_or_else(Token::generate, Ok)?;
                let wait = blocked::Wait {
                    token,
                    ttl_ms: request.ttl_ms,
                    want: request.want,
                    options,
                    timeout_ms: timeout,
                };
                blocked::block(ctx, id, wake, wait).map(Answer::Value)
            }
            _ => {
                count(&STATS.contended);
                Ok(Answer::Null)
            }
        },
    }
}

/// Whether this call may make its client wait: not inside MULTI, a script or a function, and
/// only on a primary.
fn may_block(ctx: &Context) -> bool {
    let flags = ctx.get_flags();
    !flags.contains(ContextFlags::DENY_BLOCKING) && flags.contains(ContextFlags::MASTER)
}

/// Before ACQUIRE decides: a shared lock's expired holders leave, and if clients wait for the
/// lock, whatever room it has goes to them first (nobody overtakes a waiter). The lock's id
/// when anyone waits for any lock.
fn queue_of(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    now: i64,
) -> LockResult<Option<LockId>> {
    runner::prune(ctx, key, lock_key, now)?;
    if !state::anyone_waiting() {
        return Ok(None);
    }
    let id = lock_id(ctx, key)?;
    if state::has_waiters(&id) {
        runner::grant_to_head(ctx, key, lock_key, &id, Current::Free)?;
    }
    Ok(Some(id))
}

/// The live holder with `token` keeps its fence and gets `deadline` (a retry or a renewal)
/// and, when given, the label `meta` (a retry with META), replicated; the lock's timer
/// follows. Its fence.
fn extend(
    ctx: &Context,
    key: &RedisString,
    lock_key: &mut LockKey,
    token: &Token,
    deadline: i64,
    meta: Option<Meta>,
) -> LockResult<u64> {
    let (fence, relabeled) = match lock_key.held()? {
        Some(Held::Exclusive(lock, old)) => {
            lock.deadline_ms = deadline;
            // A new label makes a new value (a lock without one has no room for it).
            let relabeled = match meta {
                Some(meta) if old != Some(&meta) => Some(Value::exclusive(
                    Lock::new(token, deadline, lock.fence())?,
                    Some(meta),
                )),
                _ => None,
            };
            (lock.fence(), relabeled)
        }
        Some(Held::Shared(shared)) => {
            let fence = shared.set_deadline(token, deadline).unwrap_or(0);
            if meta.is_some() {
                shared.set_meta(token, meta);
            }
            (fence, None)
        }
        None => return Err(LockError::Internal("no lock to extend".into())),
    };
    match relabeled {
        Some(value) => lock_key.replace(value)?,
        None => lock_key.follow_deadline()?,
    }
    match lock_key.held()? {
        Some(Held::Exclusive(lock, meta)) => {
            propagate::replicate_lock(ctx, key, lock, token.into(), meta)
        }
        _ => runner::replicate_holder(ctx, key, lock_key, token)?,
    }
    runner::owner_active(ctx, key, lock_key, token.into())?;
    Ok(fence)
}

/// LOCK.RENEW key token ttl
pub fn renew(ctx: &Context, args: &Args, opened: Option<LockKey>) -> LockResult<Answer> {
    let (key, rest) = args.keyed()?;
    let request = RenewRequest::parse(rest, config::max_ttl())?;
    let now = clock::command_ms();
    let deadline = lock::deadline(now, request.ttl_ms)?;
    let mut lock_key = open_for_writing(ctx, key, opened)?;
    runner::prune(ctx, key, &mut lock_key, now)?;
    if !holds(&mut lock_key, &request.token, now)? {
        return Ok(Answer::Int(0));
    }
    extend(ctx, key, &mut lock_key, &request.token, deadline, None)?;
    count(&STATS.renewed);
    notices::event(ctx, notify::RENEWED, key);
    Ok(Answer::Int(1))
}

/// LOCK.RELEASE key token: the holder leaves; its room goes to the first waiters, or the key
/// is deleted with the last holder.
pub fn release(ctx: &Context, args: &Args, opened: Option<LockKey>) -> LockResult<Answer> {
    let (key, rest) = args.keyed()?;
    let token = parse_release(rest)?;
    let now = clock::command_ms();
    let mut lock_key = open_for_writing(ctx, key, opened)?;
    runner::prune(ctx, key, &mut lock_key, now)?;
    if !holds(&mut lock_key, &token, now)? {
        return Ok(Answer::Int(0));
    }
    count(&STATS.released);
    notices::event(ctx, notify::RELEASED, key);
    runner::free_holder(ctx, key, &mut lock_key, &token)?;
    Ok(Answer::Int(1))
}

/// The key open for writing: the handle the command's fast path opened, or a new one.
fn open_for_writing(
    ctx: &Context,
    key: &RedisString,
    opened: Option<LockKey>,
) -> LockResult<LockKey> {
    opened.map_or_else(|| LockKey::open(ctx, key, Mode::Write), Ok)
}

/// Whether `token` is a live holder of the lock under the key.
fn holds(lock_key: &mut LockKey, token: &Token, now: i64) -> LockResult<bool> {
    Ok(lock_key
        .held()?
        .is_some_and(|held| held.holder(token, now).is_some()))
}

/// LOCK.INFO key: fence, holders, limit, meta, mode, remaining ttl and waiters; never a token.
pub fn info(ctx: &Context, args: &Args) -> LockResult<Answer> {
    let (key, rest) = args.keyed()?;
    if !rest.is_empty() {
        return Err(LockError::WrongArity("lock.info"));
    }
    let now = clock::command_ms();
    let mut lock_key = LockKey::open(ctx, key, Mode::Read)?;
    let Some(held) = lock_key.held()?.filter(|held| held.is_live(now)) else {
        return Ok(Answer::Null);
    };
    let number = |n: usize| RedisValue::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let fence = held
        .fence(now)
        .and_then(|fence| i64::try_from(fence).ok())
        .ok_or_else(|| LockError::Internal("fence out of range".into()))?;
    let ttl = held.deadline().map_or(0, |d| d.saturating_sub(now).max(0));
    let (mode, limit, meta) = match &held {
        Held::Exclusive(_, meta) => ("exclusive", None, *meta),
        Held::Shared(shared) => ("shared", shared.limit(), None),
    };
    let mut fields = vec![
        ("fence", RedisValue::Integer(fence)),
        ("holders", number(held.live_holders(now))),
        ("mode", RedisValue::BulkString(mode.into())),
        ("ttl", RedisValue::Integer(ttl)),
        ("waiters", number(state::waiters(&lock_id(ctx, key)?))),
    ];
    if let Some(limit) = limit {
        fields.push(("limit", RedisValue::Integer(i64::from(limit))));
    }
    if let Some(meta) = meta {
        fields.push(("meta", RedisValue::StringBuffer(meta.as_bytes().to_vec())));
    }
    Ok(Answer::Value(map(fields)))
}

/// LOCK.HOLDERS key: each live holder in grant order, with its fence, remaining ttl, mode,
/// whether it is bound to a connection here, and its label; never a token.
pub fn holders(ctx: &Context, args: &Args) -> LockResult<Answer> {
    let (key, rest) = args.keyed()?;
    if !rest.is_empty() {
        return Err(LockError::WrongArity("lock.holders"));
    }
    let now = clock::command_ms();
    let mut lock_key = LockKey::open(ctx, key, Mode::Read)?;
    let Some(held) = lock_key.held()?.filter(|held| held.is_live(now)) else {
        return Ok(Answer::Null);
    };
    let live = held.live(now);
    // Which holders are bound to a connection, read in one look at the state.
    let bound: Vec<bool> = match runner::anything_bound() {
        false => vec![false; live.len()],
        true => {
            let id = lock_id(ctx, key)?;
            let tokens: Vec<Option<Token>> = (live.iter())
                .map(|h| {
                    let mut buf = [0u8; lock_core::compact::INLINE_TEXT_MAX];
                    Token::parse(h.lock.token(&mut buf)).ok()
                })
                .collect();
            state::with(|s| {
                (live.iter().zip(&tokens))
                    .map(|(h, token)| {
                        token
                            .as_ref()
                            .is_some_and(|t| s.bindings.is_bound(&id, t, h.lock.fence()))
                    })
                    .collect()
            })
            .unwrap_or_else(|_| vec![false; live.len()])
        }
    };
    let mut entries = Vec::new();
    for (holder, ephemeral) in live.iter().zip(bound) {
        let fence = i64::try_from(holder.lock.fence())
            .map_err(|_| LockError::Internal("fence out of range".into()))?;
        let mode = if holder.shared { "shared" } else { "exclusive" };
        let mut fields = vec![
            ("ephemeral", RedisValue::Integer(i64::from(ephemeral))),
            ("fence", RedisValue::Integer(fence)),
            ("mode", RedisValue::BulkString(mode.into())),
            ("ttl", RedisValue::Integer(holder.lock.remaining_ms(now))),
        ];
        if let Some(meta) = holder.meta {
            fields.push(("meta", RedisValue::StringBuffer(meta.as_bytes().to_vec())));
        }
        entries.push(map(fields));
    }
    Ok(Answer::Value(RedisValue::Array(entries)))
}

/// Fields as a map (RESP3), or a flat array of name/value pairs (RESP2), in name order.
fn map(fields: Vec<(&str, RedisValue)>) -> RedisValue {
    RedisValue::OrderedMap(BTreeMap::from_iter(
        fields
            .into_iter()
            .map(|(name, value)| (RedisValueKey::String(name.into()), value)),
    ))
}

/// The id of the connection running the command (inside MULTI, the transaction's).
fn client_id(ctx: &Context) -> LockResult<u64> {
    let get = api!(RedisModule_GetClientId)?;
    // SAFETY: ctx is live for this command call.
    match unsafe { get(ctx.ctx) } {
        0 => Err(LockError::Internal("no client to bind the hold to".into())),
        id => Ok(id),
    }
}
