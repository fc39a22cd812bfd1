//! The `INFO lock` section: what the module holds and counts. Field names get the module's
//! prefix from the server (`lock_keys`, `lock_waiting`, ...).

use std::ffi::CStr;
use std::os::raw::c_int;

use redis_module::raw;

use crate::ffi::guard;
use crate::observe::stats::{get, STATS};
use crate::server::state;

/// Replace the registration macro's handler with this one.
pub fn register(ctx: *mut raw::RedisModuleCtx) -> bool {
    let Some(register) = (unsafe { raw::RedisModule_RegisterInfoFunc }) else {
        return false;
    };
    // SAFETY: called during module load with the load context.
    unsafe { register(ctx, Some(section)) == raw::REDISMODULE_OK as c_int }
}

unsafe extern "C" fn section(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    guard::callback((), || {
        let (Some(add_section), Some(add_field)) = (unsafe {
            (
                raw::RedisModule_InfoAddSection,
                raw::RedisModule_InfoAddFieldULongLong,
            )
        }) else {
            return;
        };
        let waiting = u64::try_from(state::total_waiters()).unwrap_or(u64::MAX);
        let (bound, connections) = state::with(|s| (s.bindings.len(), s.bindings.clients()))
            .map(|(b, c)| {
                let n = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                (n(b), n(c))
            })
            .unwrap_or((0, 0));
        let fields: [(&CStr, u64); 12] = [
            (c"keys", get(&STATS.locks)),
            (c"waiting", waiting),
            (c"acquired", get(&STATS.acquired)),
            (c"contended", get(&STATS.contended)),
            (c"renewed", get(&STATS.renewed)),
            (c"released", get(&STATS.released)),
            (c"expired", get(&STATS.expired)),
            (c"handed_off", get(&STATS.handed_off)),
            (c"timeouts", get(&STATS.timeouts)),
            (c"ephemeral_holds", bound),
            (c"ephemeral_connections", connections),
            (c"closed_releases", get(&STATS.closed_releases)),
        ];
        // SAFETY: ctx is the server's info context for this call; names are static.
        unsafe {
            // NULL: the section is named after the module, "lock".
            add_section(ctx, std::ptr::null());
            for (name, value) in fields {
                add_field(ctx, name.as_ptr(), value);
            }
        }
    })
}
