//! Sending the core's effects: to replicas and the AOF (`RedisModule_Replicate`), and into a
//! rewritten AOF (`RedisModule_EmitAOF`). Both take the same format, so one macro spells each
//! effect for both, and the two can never drift apart.

use std::os::raw::{c_char, c_int};

use lock_core::effect::{Effect, HoldText};
use lock_core::lock::Lock;
use lock_core::meta::Meta;
use lock_core::token::TokenRef;
use redis_module::{raw, Context, RedisString};

/// Call `$send` for one holder: `$first`, the command, the format, the key, the holder as one
/// argument (`deadline:fence:token`, see `HoldText`), then `$extra` (the mode, the label).
macro_rules! send_holder {
    ($send:expr, $first:expr, $command:expr, $key:expr, $format:expr, $token:expr,
     $deadline:expr, $fence:expr $(, $extra:expr)*) => {{
        let hold = HoldText::new($deadline, $fence, $token);
        let hold = hold.as_bytes();
        // SAFETY: see send_effect.
        unsafe {
            $send(
                $first,
                $command,
                $format.as_ptr(),
                $key,
                hold.as_ptr().cast::<c_char>(),
                hold.len()
                $(, $extra)*
            )
        }
    }};
}

/// Call the variadic server function `$send` with `$first` (a context or an AOF IO handle),
/// then the effect's command, format and arguments. `$key` is the lock's key, absent only for
/// LOCK.CLOCK.
macro_rules! send_effect {
    ($send:expr, $first:expr, $key:expr, $effect:expr) => {{
        let command = $effect.command().as_ptr();
        let mut limit_text = itoa::Buffer::new();
        // SAFETY: each format matches its arguments: "s" a RedisModuleString, "b" a buffer and
        // its length, "c" a NUL-terminated string; every pointer is live for the call.
        //
        // Numbers go as decimal text ("b"), never "l". The bytes sent are the same, but the
        // server makes one embedded string of a buffer where it formats a number into a
        // string object and a separate buffer; and during a Valkey 9 slot migration an
        // argument made from "l" has the migration fail ("A module replicated a cross-slot
        // command").
        match *$effect {
            Effect::Apply {
                token,
                deadline_ms,
                fence,
                meta,
            } => match meta {
                None => send_holder!(
                    $send,
                    $first,
                    command,
                    $key,
                    c"sb",
                    token,
                    deadline_ms,
                    fence
                ),
                Some(meta) => send_holder!(
                    $send,
                    $first,
                    command,
                    $key,
                    c"sbcb",
                    token,
                    deadline_ms,
                    fence,
                    c"META".as_ptr(),
                    meta.as_ptr().cast::<c_char>(),
                    meta.len()
                ),
            },
            Effect::Share {
                token,
                deadline_ms,
                fence,
                limit,
                meta,
            } => match (limit.map(|n| limit_text.format(n)), meta) {
                (None, None) => send_holder!(
                    $send,
                    $first,
                    command,
                    $key,
                    c"sbc",
                    token,
                    deadline_ms,
                    fence,
                    c"SHARED".as_ptr()
                ),
                (Some(limit), None) => send_holder!(
                    $send,
                    $first,
                    command,
                    $key,
                    c"sbcb",
                    token,
                    deadline_ms,
                    fence,
                    c"LIMIT".as_ptr(),
                    limit.as_ptr().cast::<c_char>(),
                    limit.len()
                ),
                (None, Some(meta)) => send_holder!(
                    $send,
                    $first,
                    command,
                    $key,
                    c"sbccb",
                    token,
                    deadline_ms,
                    fence,
                    c"SHARED".as_ptr(),
                    c"META".as_ptr(),
                    meta.as_ptr().cast::<c_char>(),
                    meta.len()
                ),
                (Some(limit), Some(meta)) => send_holder!(
                    $send,
                    $first,
                    command,
                    $key,
                    c"sbcbcb",
                    token,
                    deadline_ms,
                    fence,
                    c"LIMIT".as_ptr(),
                    limit.as_ptr().cast::<c_char>(),
                    limit.len(),
                    c"META".as_ptr(),
                    meta.as_ptr().cast::<c_char>(),
                    meta.len()
                ),
            },
            Effect::Release => unsafe { $send($first, command, c"s".as_ptr(), $key) },
            Effect::DropHolder { token } => unsafe {
                $send(
                    $first,
                    command,
                    c"sb".as_ptr(),
                    $key,
                    token.as_ptr().cast::<c_char>(),
                    token.len(),
                )
            },
            Effect::Clock { fence } => {
                let mut text = itoa::Buffer::new();
                let text = text.format(fence);
                unsafe {
                    $send(
                        $first,
                        command,
                        c"b".as_ptr(),
                        text.as_ptr().cast::<c_char>(),
                        text.len(),
                    )
                }
            }
        }
    }};
}

/// Send `effect` on `key` to replicas and the AOF, after the current command. A failure (which
/// would mean replicas and the AOF miss a change) is logged.
// Inlined: each caller names its effect's variant, so the match folds to one call.
#[inline(always)]
pub fn replicate(ctx: &Context, key: *mut raw::RedisModuleString, effect: &Effect) {
    let sent = match unsafe { raw::RedisModule_Replicate } {
        Some(replicate) => send_effect!(replicate, ctx.ctx, key, effect),
        None => raw::REDISMODULE_ERR as c_int,
    };
    if sent != raw::REDISMODULE_OK as c_int {
        not_replicated(ctx, effect);
    }
}

#[cold]
fn not_replicated(ctx: &Context, effect: &Effect) {
    ctx.log_warning(&format!(
        "lock: could not replicate {:?}: replicas and the AOF miss this change",
        effect.command()
    ));
}

/// Send the exclusive lock's state (with its label), as stored under `key`, to replicas and
/// the AOF; `token` is the lock's own, as the command that granted or renewed it gave it.
pub fn replicate_lock(
    ctx: &Context,
    key: &RedisString,
    lock: &Lock,
    token: TokenRef,
    meta: Option<&Meta>,
) {
    replicate(
        ctx,
        key.inner,
        &Effect::apply_as(lock, token.as_bytes(), meta),
    );
}

/// Write `effect` on `key` into the AOF being rewritten.
pub fn emit_aof(aof: *mut raw::RedisModuleIO, key: *mut raw::RedisModuleString, effect: &Effect) {
    if let Some(emit) = unsafe { raw::RedisModule_EmitAOF } {
        send_effect!(emit, aof, key, effect)
    }
}
