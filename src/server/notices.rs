//! Lock events in the order they happened: expiries the server found while opening keys (its
//! unlink callback cannot notify) go out before the next event, so watchers see them in order.

use std::ffi::CStr;

use redis_module::{Context, RedisString};

use crate::ffi::api;
use crate::observe::notify::{publish, EXPIRED};
use crate::server::state;

#[inline(always)]
pub fn event(ctx: &Context, event: &CStr, key: &RedisString) {
    // Most events find none waiting: then the server is not asked for the database.
    if state::with(|s| s.handoff.expired_pending()).unwrap_or(true) {
        if let Ok(db) = api::selected_db(ctx) {
            let expired = state::with(|s| s.handoff.take_expired(db)).unwrap_or_default();
            for lock in expired {
                let name = RedisString::create_from_slice(ctx.ctx, &lock.key);
                publish(ctx, EXPIRED, &name);
            }
        }
    }
    publish(ctx, event, key);
}
