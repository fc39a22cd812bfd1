//! Looking up server API functions, and the few plain calls every layer needs.

use std::os::raw::c_int;

use lock_core::queue::LockId;
use lock_core::{LockError, LockResult};
use redis_module::{raw, Context, RedisString};

/// A server API function, or an `Internal` error if this server lacks it (never a panic:
/// functions missing on the running server are `None`).
macro_rules! api {
    ($name:ident) => {
        unsafe { redis_module::raw::$name }.ok_or_else(|| {
            lock_core::LockError::Internal(concat!(stringify!($name), " is missing").into())
        })
    };
}
pub(crate) use api;

/// The bytes of a server string (a key name the server hands a callback), or None for null.
///
/// # Safety
/// `s` is null or a live `RedisModuleString` that outlives `'a`.
pub unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> Option<&'a [u8]> {
    let bytes_of = unsafe { raw::RedisModule_StringPtrLen }?;
    if s.is_null() {
        return None;
    }
    let mut len = 0;
    // SAFETY: `s` is a live string, as the caller promised.
    let bytes = unsafe { bytes_of(s, &mut len) };
    (!bytes.is_null()).then(|| unsafe { std::slice::from_raw_parts(bytes.cast::<u8>(), len) })
}

/// The database the context's client has selected.
pub fn selected_db(ctx: &Context) -> LockResult<i32> {
    let selected = api!(RedisModule_GetSelectedDb)?;
    // SAFETY: ctx is live for this call.
    Ok(unsafe { selected(ctx.ctx) })
}

/// The lock under `key` in the client's selected database.
pub fn lock_id(ctx: &Context, key: &RedisString) -> LockResult<LockId> {
    Ok(LockId {
        db: selected_db(ctx)?,
        key: key.as_slice().to_vec(),
    })
}

/// Select the lock's database and name its key (from a timer or a job, which have no client
/// of their own).
pub fn open_name(ctx: &Context, id: &LockId) -> LockResult<RedisString> {
    let select = api!(RedisModule_SelectDb)?;
    // SAFETY: ctx is live for this call.
    if unsafe { select(ctx.ctx, id.db) } != raw::REDISMODULE_OK as c_int {
        return Err(LockError::Internal(format!("no database {}", id.db)));
    }
    Ok(RedisString::create_from_slice(ctx.ctx, &id.key))
}

/// While clients are paused (CLIENT PAUSE, a failover) the data set must not change: the
/// server asserts that nothing is propagated then, so timers and events must wait.
pub fn clients_paused() -> bool {
    unsafe { raw::RedisModule_AvoidReplicaTraffic }.is_some_and(|avoid| unsafe { avoid() } != 0)
}
