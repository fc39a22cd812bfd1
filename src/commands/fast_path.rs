//! The calls nearly every client makes, answered in fewer steps: LOCK.ACQUIRE `key ttl [TOKEN
//! token]` of a free lock while nobody waits for any lock, and LOCK.RENEW and LOCK.RELEASE of
//! an exclusive lock. Each does what the general command (`locks.rs`) does in that case, by
//! the same grant, renewal and release functions, but reads its arguments straight from argv
//! and skips the general command's steps that have nothing to do there (options, waiters,
//! shared holders, the decision table). Every other call goes to the general command before
//! anything is changed, with the key handle already open if it was opened.
//!
//! The small functions these call are marked `#[inline(always)]` where they are defined: the
//! calls' prologues and the moves of their `Result`s were a sixth of ACQUIRE's own
//! instructions and a fifth of RELEASE's (callgrind).

use lock_core::lock::{self, Lock};
use lock_core::queue::HoldOptions;
use lock_core::request::{parse_plain_acquire, parse_renew_in_place};
use lock_core::token::{Token, TokenRef};
use lock_core::value::Held;
use lock_core::LockResult;
use redis_module::{raw, Context};

use crate::ffi::call::{borrowed_key, bytes, reply_grant, reply_int, Fast};
use crate::ffi::clock;
use crate::ffi::key::{LockKey, Mode};
use crate::ffi::propagate;
use crate::observe::config;
use crate::observe::notify;
use crate::observe::stats::{count, STATS};
use crate::server::runner::{self, Current};
use crate::server::{fences, notices, state};

type Argv<'a> = &'a [*mut raw::RedisModuleString];

/// LOCK.ACQUIRE key ttl [TOKEN token], when the key is free and nobody waits for any lock
/// (then no waiter comes first, and the decision is a grant).
pub fn acquire(ctx: &Context, argv: Argv) -> LockResult<Fast> {
    let [_, key, options @ ..] = argv else {
        return Ok(Fast::General(None));
    };
    let mut words: [&[u8]; 3] = [&[]; 3];
    let Some(words) = words.get_mut(..options.len()) else {
        return Ok(Fast::General(None));
    };
    for (word, &arg) in words.iter_mut().zip(options) {
        *word = bytes(arg)?;
    }
    let plain = parse_plain_acquire(words, config::max_ttl());
    let (Some((ttl_ms, token)), false, false) =
        (plain, state::eviction_possible(), state::anyone_waiting())
    else {
        return Ok(Fast::General(None));
    };
    // The command's time, for the deadline and the fence (both Unix time).
    let now_us = clock::command_us();
    let Ok(deadline) = lock::deadline(clock::ms_of(now_us), ttl_ms) else {
        return Ok(Fast::General(None));
    };
    let key = borrowed_key(ctx, *key);
    let mut lock_key = LockKey::open(ctx, &key, Mode::Write)?;
    if lock_key.held()?.is_some() {
        return Ok(Fast::General(Some(lock_key)));
    }
    // A given token is made into the lock, replicated and answered from the argument itself.
    let generated;
    let token = match token {
        Some(token) => token,
        None => {
            generated = Token::generate()?;
            TokenRef::from(&generated)
        }
    };
    let lock = Lock::new(token, deadline, fences::grant_fence_at(now_us)?)?;
    let fence = runner::grant_exclusive(
        ctx,
        &key,
        &mut lock_key,
        (lock, token),
        Current::Free,
        &HoldOptions::default(),
    )?;
    count(&STATS.acquired);
    notices::event(ctx, notify::ACQUIRED, &key);
    Ok(Fast::Done(reply_grant(ctx, token.as_bytes(), fence)))
}

/// LOCK.RENEW key token ttl, of an exclusive lock (or of none).
pub fn renew(ctx: &Context, argv: Argv) -> LockResult<Fast> {
    let &[_, key, token, ttl] = argv else {
        return Ok(Fast::General(None));
    };
    let Ok((token, ttl_ms)) = parse_renew_in_place([bytes(token)?, bytes(ttl)?], config::max_ttl())
    else {
        return Ok(Fast::General(None));
    };
    let now = clock::command_ms();
    let Ok(deadline) = lock::deadline(now, ttl_ms) else {
        return Ok(Fast::General(None));
    };
    let key = borrowed_key(ctx, key);
    let mut lock_key = LockKey::open(ctx, &key, Mode::Write)?;
    match lock_key.held()? {
        Some(Held::Exclusive(lock, _)) if lock.is_live(now) && lock.has_token(token) => {
            lock.deadline_ms = deadline;
        }
        Some(Held::Exclusive(..)) | None => return Ok(Fast::Done(reply_int(ctx, 0))),
        Some(Held::Shared(_)) => return Ok(Fast::General(Some(lock_key))),
    }
    lock_key.follow_deadline()?;
    if let Some(Held::Exclusive(lock, meta)) = lock_key.held()? {
        propagate::replicate_lock(ctx, &key, lock, token, meta);
    }
    runner::owner_active(ctx, &key, &mut lock_key, token)?;
    count(&STATS.renewed);
    notices::event(ctx, notify::RENEWED, &key);
    Ok(Fast::Done(reply_int(ctx, 1)))
}

/// LOCK.RELEASE key token, of an exclusive lock (or of none).
pub fn release(ctx: &Context, argv: Argv) -> LockResult<Fast> {
    let &[_, key, token] = argv else {
        return Ok(Fast::General(None));
    };
    let Ok(token) = TokenRef::check(bytes(token)?) else {
        return Ok(Fast::General(None));
    };
    let now = clock::command_ms();
    let key = borrowed_key(ctx, key);
    let mut lock_key = LockKey::open(ctx, &key, Mode::Write)?;
    match lock_key.held()? {
        Some(Held::Exclusive(lock, _)) if lock.is_live(now) && lock.has_token(token) => {}
        Some(Held::Exclusive(..)) | None => return Ok(Fast::Done(reply_int(ctx, 0))),
        Some(Held::Shared(_)) => return Ok(Fast::General(Some(lock_key))),
    }
    count(&STATS.released);
    notices::event(ctx, notify::RELEASED, &key);
    runner::free_lock(ctx, &key, &mut lock_key)?;
    Ok(Fast::Done(reply_int(ctx, 1)))
}
