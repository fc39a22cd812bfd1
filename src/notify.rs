//! Keyspace notifications of the module class (`notify-keyspace-events` with `d`, plus `K` or
//! `E`), one per lock event, so tools can watch locks like any key.

use redis_module::{raw, Context, NotifyEvent, RedisString};

use crate::blocking;

pub const ACQUIRED: &str = "lock.acquired";
pub const RENEWED: &str = "lock.renewed";
pub const RELEASED: &str = "lock.released";
pub const EXPIRED: &str = "lock.expired";
pub const HANDED_OFF: &str = "lock.handed-off";

pub fn event(ctx: &Context, event: &str, key: &RedisString) {
    // Expiries the server found while opening keys (its unlink callback cannot notify) come
    // first, so watchers see them in order.
    if let Some(selected) = unsafe { raw::RedisModule_GetSelectedDb } {
        for expired in blocking::take_expired(unsafe { selected(ctx.ctx) }) {
            let name = RedisString::create_from_slice(ctx.ctx, &expired);
            ctx.notify_keyspace_event(NotifyEvent::MODULE, EXPIRED, &name);
        }
    }
    ctx.notify_keyspace_event(NotifyEvent::MODULE, event, key);
}
