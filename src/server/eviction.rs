//! Eviction watch. A lock the server evicts is a lock silently lost, so ACQUIRE refuses while
//! eviction is possible (a maxmemory with any policy but noeviction), and the operator is told
//! in the log at load and whenever a config change makes eviction possible or impossible again.

use std::ffi::c_void;

use redis_module::{raw, Context, ContextFlags};

use crate::ffi::{guard, subscribe};
use crate::server::state;

const WARNING: &str = "maxmemory is set with an eviction policy: the server may evict lock keys \
and lose locks silently, so LOCK.ACQUIRE is refused until maxmemory-policy is noeviction \
(or maxmemory is 0)";

/// Log the current state at load and follow config changes from then on.
pub fn watch(ctx: &Context) {
    report(ctx, true);
    if subscribe::subscribe(ctx, raw::REDISMODULE_EVENT_CONFIG, on_config_change).is_err() {
        ctx.log_warning("could not follow config changes: eviction warnings only at load");
    }
}

unsafe extern "C" fn on_config_change(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    guard::callback((), || report(&Context::new(ctx), false));
}

fn report(ctx: &Context, at_load: bool) {
    let possible = ctx.get_flags().contains(ContextFlags::EVICTED);
    let before = state::set_eviction_possible(possible);
    if possible && (at_load || !before) {
        ctx.log_warning(WARNING);
    } else if !possible && before {
        ctx.log_notice("eviction is no longer possible: LOCK.ACQUIRE accepts locks again");
    }
}
