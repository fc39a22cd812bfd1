//! A command call's way in and out, for every LOCK command: the arguments are read in place
//! from the server's argv (no copies, no per-argument string handles, no list allocated for
//! the usual counts), and the answer is written with the raw reply calls. The `redis-module`
//! crate's wrapper builds a `Vec<RedisString>` and a `RedisValue` tree per call, which cost
//! about a tenth of an ACQUIRE.

use std::ffi::CString;
use std::mem::ManuallyDrop;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

use lock_core::token::Token;
use lock_core::{LockError, LockResult};
use redis_module::{raw, Context, RedisString, RedisValue};

use crate::ffi::guard;
use crate::ffi::key::LockKey;

/// Arguments up to this count are read into an array on the stack.
const ON_STACK: usize = 16;

/// One call's arguments after the command name.
pub struct Args<'a> {
    command: &'static str,
    /// argv[1] as a server string, for the commands that take a key there: borrowed from the
    /// call (neither retained nor freed), as nothing keeps it past the call.
    key: Option<ManuallyDrop<RedisString>>,
    words: &'a [&'a [u8]],
}

impl Args<'_> {
    /// The key (argv[1]) and the arguments after it.
    pub fn keyed(&self) -> LockResult<(&RedisString, &[&[u8]])> {
        match (&self.key, self.words) {
            (Some(key), [_, rest @ ..]) => Ok((&**key, rest)),
            _ => Err(LockError::WrongArity(self.command)),
        }
    }

    /// Every argument after the command name.
    pub fn all(&self) -> &[&[u8]] {
        self.words
    }
}

/// What a command answers.
pub enum Answer {
    /// `[token, fence]`: every grant, at once or after waiting.
    Grant {
        token: Token,
        fence: u64,
    },
    Int(i64),
    Null,
    /// `+OK`.
    Done,
    /// Anything else (LOCK.INFO's map, a blocked client's no-reply-yet).
    Value(RedisValue),
}

/// What a command's fast path did with a call.
pub enum Fast {
    /// It answered (the reply call's status).
    Done(c_int),
    /// Not its case: the general command takes the call, with the key handle the fast path
    /// opened, if it got that far (nothing was changed).
    General(Option<LockKey>),
}

/// Run `fast` on the call's arguments, and unless it answers, `handler` (given the key the
/// fast path opened, if any); inside the panic guard; send the answer. Inlined into each
/// command's entry, so that its fast path is called directly (and may be inlined there).
#[inline(always)]
pub fn run_fast(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    command: &'static str,
    fast: fn(&Context, &[*mut raw::RedisModuleString]) -> LockResult<Fast>,
    handler: fn(&Context, &Args, Option<LockKey>) -> LockResult<Answer>,
) -> c_int {
    let context = Context::new(ctx);
    let opened = match guard::run(|| fast(&context, raw_args(argv, argc))) {
        Ok(Fast::Done(status)) => return status,
        Ok(Fast::General(opened)) => opened,
        Err(e) => return send(&context, Err(e)),
    };
    run(ctx, argv, argc, command, move |ctx, args| {
        handler(ctx, args, opened)
    })
}

/// The server's argv as a slice.
fn raw_args<'a>(
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> &'a [*mut raw::RedisModuleString] {
    match (NonNull::new(argv), usize::try_from(argc)) {
        // SAFETY: the server passes argc live strings for the duration of the call.
        (Some(argv), Ok(n)) => unsafe { std::slice::from_raw_parts(argv.as_ptr(), n) },
        _ => &[],
    }
}

/// The key argument as a server string, borrowed from the call: neither retained nor freed,
/// as nothing keeps it past the call.
pub fn borrowed_key(ctx: &Context, key: *mut raw::RedisModuleString) -> ManuallyDrop<RedisString> {
    ManuallyDrop::new(RedisString::from_redis_module_string(ctx.ctx, key))
}

/// Run `handler` on the call's arguments, inside the panic guard, and send its answer.
pub fn run(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    command: &'static str,
    handler: impl FnOnce(&Context, &Args) -> LockResult<Answer>,
) -> c_int {
    let context = Context::new(ctx);
    let answer = guard::run(|| {
        let argv = raw_args(argv, argc);
        let rest = argv.get(1..).unwrap_or(&[]);
        let key = rest.first().map(|&key| borrowed_key(&context, key));
        let mut stack: [&[u8]; ON_STACK] = [&[]; ON_STACK];
        let heap: Vec<&[u8]>;
        let words: &[&[u8]] = if rest.len() <= ON_STACK {
            for (word, &arg) in stack.iter_mut().zip(rest) {
                *word = bytes(arg)?;
            }
            &stack[..rest.len()]
        } else {
            heap = rest
                .iter()
                .map(|&arg| bytes(arg))
                .collect::<LockResult<_>>()?;
            &heap
        };
        handler(
            &context,
            &Args {
                command,
                key,
                words,
            },
        )
    });
    send(&context, answer)
}

/// The bytes of an argument, valid for the call.
pub fn bytes<'a>(arg: *mut raw::RedisModuleString) -> LockResult<&'a [u8]> {
    let ptr_len = crate::ffi::api::api!(RedisModule_StringPtrLen)?;
    let mut len = 0;
    // SAFETY: arg is one of the call's live strings.
    let ptr = unsafe { ptr_len(arg, &mut len) };
    Ok(match ptr.is_null() {
        true => &[],
        // SAFETY: the server's string holds len bytes at ptr while the call runs.
        false => unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) },
    })
}

/// Write `answer` to the calling client (or, for a blocked client, the waiting one).
pub fn send(ctx: &Context, answer: LockResult<Answer>) -> c_int {
    match answer {
        Ok(Answer::Grant { token, fence }) => reply_grant(ctx, token.as_bytes(), fence),
        Ok(Answer::Int(n)) => reply_int(ctx, n),
        // Every reply function is present on every server this module loads on (Redis 6.0+).
        Ok(Answer::Null) => match unsafe { raw::RedisModule_ReplyWithNull } {
            // SAFETY: ctx is the live context of this call.
            Some(null) => unsafe { null(ctx.ctx) },
            None => raw::REDISMODULE_ERR as c_int,
        },
        Ok(Answer::Done) => ctx.reply(Ok(RedisValue::SimpleStringStatic("OK"))) as c_int,
        Ok(Answer::Value(value)) => ctx.reply(Ok(value)) as c_int,
        Err(e) => error(ctx, &e),
    }
}

/// The reply to every grant: `[token, fence]`.
#[inline(always)]
pub fn reply_grant(ctx: &Context, token: &[u8], fence: u64) -> c_int {
    let (Some(array), Some(buffer), Some(integer)) = (unsafe {
        (
            raw::RedisModule_ReplyWithArray,
            raw::RedisModule_ReplyWithStringBuffer,
            raw::RedisModule_ReplyWithLongLong,
        )
    }) else {
        return raw::REDISMODULE_ERR as c_int;
    };
    // SAFETY: ctx is the live context of this call; the token outlives the calls.
    unsafe {
        array(ctx.ctx, 2);
        buffer(ctx.ctx, token.as_ptr().cast::<c_char>(), token.len());
        integer(ctx.ctx, i64::try_from(fence).unwrap_or(i64::MAX))
    }
}

/// An integer reply.
#[inline(always)]
pub fn reply_int(ctx: &Context, n: i64) -> c_int {
    match unsafe { raw::RedisModule_ReplyWithLongLong } {
        // SAFETY: ctx is the live context of this call.
        Some(integer) => unsafe { integer(ctx.ctx, n) },
        None => raw::REDISMODULE_ERR as c_int,
    }
}

/// The error reply for `e`: its text as is (it starts with its own code, such as ERR).
fn error(ctx: &Context, e: &LockError) -> c_int {
    send_error(ctx, &e.to_string())
}

/// An error reply of `text`, which starts with its code.
pub fn send_error(ctx: &Context, text: &str) -> c_int {
    let text = CString::new(text.replace('\0', " "))
        .unwrap_or_else(|_| c"ERR the error text could not be sent".to_owned());
    match unsafe { raw::RedisModule_ReplyWithError } {
        // SAFETY: ctx is live; the text is NUL-terminated and outlives the call.
        Some(reply) => unsafe { reply(ctx.ctx, text.as_ptr()) },
        None => raw::REDISMODULE_ERR as c_int,
    }
}
