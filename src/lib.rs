//! Distributed locks as native Redis/Valkey commands. This file only registers the module;
//! see the README for what each command does and `lock.rs` for the decisions behind them.

// The glue is only reachable through the module registration, which unit tests leave out.
#![cfg_attr(test, allow(dead_code))]

mod blocking;
mod clock;
mod command_info;
mod commands;
mod config;
mod datatype;
mod error;
mod events;
mod eviction;
mod fence;
mod guard;
mod info;
mod key;
mod lock;
mod notify;
mod replication;
mod request;
mod stats;
mod token;
mod waiters;

#[cfg(not(test))]
use {
    datatype::LOCK_TYPE,
    redis_module::{configuration::ConfigurationFlags, raw, Context, RedisString, Status},
};

/// Valkey 9's `VALKEYMODULE_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION`: without it Valkey refuses
/// `CLUSTER MIGRATESLOTS`. Lock keys move like any key (their values travel through the
/// type's callbacks, and loading one raises the fence clock). Redis 7 ignores the bit.
#[cfg(not(test))]
const HANDLE_ATOMIC_SLOT_MIGRATION: i32 = 1 << 5;

#[cfg(not(test))]
fn init(ctx: &Context, _args: &[RedisString]) -> Status {
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
    eviction::watch(ctx);
    if !info::register(ctx.ctx) {
        ctx.log_warning("could not register the INFO lock section");
    }
    if let Err(e) = blocking::init(ctx).and_then(|()| replication::watch_forks(ctx)) {
        ctx.log_warning(&format!("could not subscribe to server events: {e}"));
        return Status::Err;
    }
    command_info::register(ctx)
}

// Unit tests run without the server, so they must not install its allocator.
#[cfg(not(test))]
redis_module::redis_module! {
    name: "lock",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [LOCK_TYPE],
    init: init,
    commands: [
        ["lock.acquire", commands::acquire, "write deny-oom blocking", 1, 1, 1, ""],
        ["lock.renew", commands::renew, "write fast", 1, 1, 1, ""],
        ["lock.release", commands::release, "write fast", 1, 1, 1, ""],
        ["lock.info", commands::info, "readonly fast", 1, 1, 1, ""],
        ["lock.apply", replication::apply, "write deny-script", 1, 1, 1, ""],
        ["lock.clock", replication::clock, "write deny-script", 0, 0, 0, ""],
    ],
    configurations: [
        i64: [
            ["max-ttl", &config::MAX_TTL, 0, 0, i64::MAX, ConfigurationFlags::DEFAULT, None],
            ["max-waiters", &config::MAX_WAITERS, 0, 0, i64::MAX, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
