//! Keyspace notifications of the module class (`notify-keyspace-events` with `d`, plus `K` or
//! `E`), one per lock event, so tools can watch locks like any key.

use std::ffi::CStr;

use redis_module::{raw, Context, NotifyEvent, RedisString};

pub const ACQUIRED: &CStr = c"lock.acquired";
pub const RENEWED: &CStr = c"lock.renewed";
pub const RELEASED: &CStr = c"lock.released";
pub const EXPIRED: &CStr = c"lock.expired";
pub const HANDED_OFF: &CStr = c"lock.handed-off";

/// Publish `event` for `key` in the context's selected database.
pub fn publish(ctx: &Context, event: &CStr, key: &RedisString) {
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
