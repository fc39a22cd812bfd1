//! Keyspace notifications of the module class (`notify-keyspace-events` with `d`, plus `K` or
//! `E`), one per lock event, so tools can watch locks like any key.

use std::ffi::CStr;

use redis_module::{raw, Context, NotifyEvent, RedisString};

use crate::blocking;

pub const ACQUIRED: &CStr = c"lock.acquired";
pub const RENEWED: &CStr = c"lock.renewed";
pub const RELEASED: &CStr = c"lock.released";
pub const EXPIRED: &CStr = c"lock.expired";
pub const HANDED_OFF: &CStr = c"lock.handed-off";

pub fn event(ctx: &Context, event: &CStr, key: &RedisString) {
    // Expiries the server found while opening keys (its unlink callback cannot notify) come
    // first, so watchers see them in order.
    if let Some(selected) = unsafe { raw::RedisModule_GetSelectedDb } {
        for expired in blocking::take_expired(unsafe { selected(ctx.ctx) }) {
            let name = RedisString::create_from_slice(ctx.ctx, &expired);
            publish(ctx, EXPIRED, &name);
        }
    }
    publish(ctx, event, key);
}

fn publish(ctx: &Context, event: &CStr, key: &RedisString) {
    if let Some(notify) = unsafe { raw::RedisModule_NotifyKeyspaceEvent } {
        // SAFETY: ctx and key are live for this call; the event name is a static C string.
        unsafe {
            notify(
                ctx.ctx,
                NotifyEvent::MODULE.bits(),
                event.as_ptr(),
                key.inner,
            )
        };
    }
}
