//! Distributed locks as native Redis/Valkey commands. This file only registers the module;
//! see the README for what each command does, and the `lock-core` crate (`core/`) for the
//! decisions behind them.
//!
//! The layers, each using only those below it:
//! - `commands`: the LOCK.* commands;
//! - `server`: the module's one state and what runs on it (hand-offs, timers, blocked
//!   clients, the data type's callbacks, server and keyspace events, INFO);
//! - `ffi`: raw server access (API lookups, panic guards, clock, keys, RDB IO, blocked
//!   clients, timers, effects out, the cluster probe);
//! - `observe`: counters, notification names, settings and command docs, leaves any layer
//!   may use;
//! - `lock_core`: the pure logic.
//!
//! The module is registered by hand rather than with the crate's `redis_module!` macro, so that
//! it loads the same way on every server: settings are checked before they are registered, ACL
//! categories are declared only where the server has them, and nothing is logged about server
//! features the module does not use.

// The glue is only reachable through the module registration, which unit tests leave out.
#![cfg_attr(test, allow(dead_code))]

mod commands;
mod ffi;
mod observe;
mod server;

#[cfg(not(test))]
use {
    commands::{effects, fast_path, locks},
    ffi::{call, guard},
    observe::{command_info, config},
    redis_module::{raw, Context, RedisString},
    server::{datatype, events, eviction, info, keyspace, state},
    std::os::raw::{c_char, c_int},
};

/// `MODULE LIST` shows `ver` as major * 10000 + minor * 100 + patch of `Cargo.toml`'s version.
pub const MODULE_VERSION: i32 = version_number(env!("CARGO_PKG_VERSION"));

/// `"1.2.3"` as 10203 (a pre-release or build suffix after the patch number is ignored).
const fn version_number(text: &str) -> i32 {
    let bytes = text.as_bytes();
    let (mut parts, mut part, mut at) = ([0i32; 3], 0, 0);
    while at < bytes.len() && part < 3 {
        match bytes[at] {
            b'.' => part += 1,
            b @ b'0'..=b'9' => parts[part] = parts[part] * 10 + (b - b'0') as i32,
            _ => break,
        }
        at += 1;
    }
    parts[0] * 10_000 + parts[1] * 100 + parts[2]
}

/// Unit tests run without the server, so they must not install its allocator.
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: redis_module::alloc::RedisAlloc = redis_module::alloc::RedisAlloc;

/// Valkey 9's `VALKEYMODULE_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION`: without it Valkey refuses
/// `CLUSTER MIGRATESLOTS`. Lock keys move like any key (their values travel through the
/// type's callbacks, and loading one raises the fence clock). Redis 7 ignores the bit.
#[cfg(not(test))]
const HANDLE_ATOMIC_SLOT_MIGRATION: i32 = 1 << 5;

/// The server's entry point for one command: `$name` (for arity errors) run by `$handler`.
#[cfg(not(test))]
macro_rules! entry {
    ($name:literal, $handler:path) => {{
        extern "C" fn entry(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            call::run(ctx, argv, argc, $name, $handler)
        }
        entry
    }};
}

/// `entry!` for a command with a fast path (`commands::fast_path`): `$fast` first, then
/// `$handler` if the fast path leaves the call to it.
#[cfg(not(test))]
macro_rules! entry_fast {
    ($name:literal, $fast:path, $handler:path) => {{
        extern "C" fn entry(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            call::run_fast(ctx, argv, argc, $name, $fast, $handler)
        }
        entry
    }};
}

/// A command's name, entry point, flags, and key positions (first, last, step).
#[cfg(not(test))]
type CommandEntry = (
    &'static std::ffi::CStr,
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int,
    &'static std::ffi::CStr,
    [c_int; 3],
);

/// The key is argv[1].
#[cfg(not(test))]
const KEY: [c_int; 3] = [1, 1, 1];
#[cfg(not(test))]
const NO_KEY: [c_int; 3] = [0, 0, 0];

#[cfg(not(test))]
fn create_commands(ctx: &Context) -> bool {
    let commands: [CommandEntry; 8] = [
        (
            c"lock.acquire",
            entry_fast!("lock.acquire", fast_path::acquire, locks::acquire),
            c"write deny-oom blocking",
            KEY,
        ),
        (
            c"lock.renew",
            entry_fast!("lock.renew", fast_path::renew, locks::renew),
            c"write fast",
            KEY,
        ),
        (
            c"lock.release",
            entry_fast!("lock.release", fast_path::release, locks::release),
            c"write fast",
            KEY,
        ),
        (
            c"lock.info",
            entry!("lock.info", locks::info),
            c"readonly fast",
            KEY,
        ),
        // Not fast: it lists every holder of a shared lock.
        (
            c"lock.holders",
            entry!("lock.holders", locks::holders),
            c"readonly",
            KEY,
        ),
        (
            c"lock.apply",
            entry!("lock.apply", effects::apply),
            c"write deny-script",
            KEY,
        ),
        (
            c"lock.drop",
            entry!("lock.drop", effects::drop_holder),
            c"write deny-script",
            KEY,
        ),
        (
            c"lock.clock",
            entry!("lock.clock", effects::clock),
            c"write deny-script",
            NO_KEY,
        ),
    ];
    let Some(create) = (unsafe { raw::RedisModule_CreateCommand }) else {
        return false;
    };
    commands
        .iter()
        .all(|&(name, entry, flags, [first, last, step])| {
            // SAFETY: called during module load; names and flags are static C strings.
            let created = unsafe {
                create(
                    ctx.ctx,
                    name.as_ptr(),
                    Some(entry),
                    flags.as_ptr(),
                    first,
                    last,
                    step,
                )
            };
            if created != raw::REDISMODULE_OK as c_int {
                ctx.log_warning(&format!("could not create the command {name:?}"));
            }
            created == raw::REDISMODULE_OK as c_int
        })
}

#[cfg(not(test))]
fn init(ctx: &Context, args: &[RedisString]) -> bool {
    // Only real changes touch WATCHed keys: the key helpers signal them explicitly.
    if let Some(set_options) = unsafe { raw::RedisModule_SetModuleOptions } {
        unsafe {
            set_options(
                ctx.ctx,
                // HANDLE_IO_ERRORS: a short read in rdb_load (a crafted RESTORE payload)
                // comes back as an error instead of aborting the server.
                (raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED
                    | raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS) as i32
                    | HANDLE_ATOMIC_SLOT_MIGRATION,
            )
        };
    }
    if !datatype::register(ctx)
        || !config::register(ctx, args)
        || !create_commands(ctx)
        || !command_info::register(ctx)
    {
        return false;
    }
    eviction::watch(ctx);
    if !info::register(ctx.ctx) {
        ctx.log_warning("could not register the INFO lock section");
    }
    let subscribed = state::init(ctx)
        .and_then(|()| events::watch(ctx))
        .and_then(|()| keyspace::watch(ctx));
    if let Err(e) = subscribed {
        ctx.log_warning(&format!("could not subscribe to server events: {e}"));
        return false;
    }
    true
}

/// # Safety
/// Called by the server once, when it loads the module.
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // Nothing may allocate before Init: the allocator is the server's, reached through the API.
    let initialized = unsafe {
        raw::Export_RedisModule_Init(
            ctx,
            c"lock".as_ptr().cast::<c_char>(),
            MODULE_VERSION,
            raw::REDISMODULE_APIVER_1 as c_int,
        )
    };
    if initialized == raw::Status::Err as c_int {
        return raw::Status::Err as c_int;
    }
    guard::callback(raw::Status::Err as c_int, || {
        let context = Context::new(ctx);
        let args = redis_module::decode_args(ctx, argv, argc);
        if init(&context, &args) {
            raw::Status::Ok as c_int
        } else {
            raw::Status::Err as c_int
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_version_is_the_crate_version_as_a_number() {
        assert_eq!(version_number("0.1.0"), 100);
        assert_eq!(version_number("1.2.3"), 10203);
        assert_eq!(version_number("12.34.56-rc1"), 123456);
        let [major, minor, patch] = [
            env!("CARGO_PKG_VERSION_MAJOR"),
            env!("CARGO_PKG_VERSION_MINOR"),
            env!("CARGO_PKG_VERSION_PATCH"),
        ]
        .map(|p| p.parse::<i32>().unwrap());
        assert_eq!(MODULE_VERSION, major * 10_000 + minor * 100 + patch);
    }
}
