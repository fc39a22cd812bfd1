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

/// Run `handler` on the call's arguments, inside the panic guard, and send its answer.
pub fn run(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    command: &'static str,
    handler: fn(&Context, &Args) -> LockResult<Answer>,
) -> c_int {
    let context = Context::new(ctx);
    let answer = guard::run(|| {
        let argv: &[*mut raw::RedisModuleString] = match (NonNull::new(argv), usize::try_from(argc))
        {
            // SAFETY: the server passes argc live strings for the duration of the call.
            (Some(argv), Ok(n)) => unsafe { std::slice::from_raw_parts(argv.as_ptr(), n) },
            _ => &[],
        };
        let rest = argv.get(1..).unwrap_or(&[]);
        let key = rest
            .first()
            .map(|&key| ManuallyDrop::new(RedisString::from_redis_module_string(ctx, key)));
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
fn bytes<'a>(arg: *mut raw::RedisModuleString) -> LockResult<&'a [u8]> {
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
    // Every reply function is present on every server this module loads on (Redis 6.0+).
    let (Some(array), Some(buffer), Some(integer), Some(null)) = (unsafe {
        (
            raw::RedisModule_ReplyWithArray,
            raw::RedisModule_ReplyWithStringBuffer,
            raw::RedisModule_ReplyWithLongLong,
            raw::RedisModule_ReplyWithNull,
        )
    }) else {
        return raw::REDISMODULE_ERR as c_int;
    };
    // SAFETY: ctx is the live context of this call; buffers outlive the calls.
    unsafe {
        match answer {
            Ok(Answer::Grant { token, fence }) => {
                array(ctx.ctx, 2);
                let bytes = token.as_bytes();
                buffer(ctx.ctx, bytes.as_ptr().cast::<c_char>(), bytes.len());
                integer(ctx.ctx, i64::try_from(fence).unwrap_or(i64::MAX))
            }
            Ok(Answer::Int(n)) => integer(ctx.ctx, n),
            Ok(Answer::Null) => null(ctx.ctx),
            Ok(Answer::Done) => ctx.reply(Ok(RedisValue::SimpleStringStatic("OK"))) as c_int,
            Ok(Answer::Value(value)) => ctx.reply(Ok(value)) as c_int,
            Err(e) => error(ctx, &e),
        }
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
