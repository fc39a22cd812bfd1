//! Walking a database's keys a few at a time (`RedisModule_Scan`), for work that must look at
//! every lock once (after a promotion), without blocking the server for the whole keyspace.

use std::ffi::c_void;
use std::os::raw::c_int;

use lock_core::value::{self, Held};
use lock_core::{LockError, LockResult};
use redis_module::{raw, Context};

use crate::ffi::api::{api, string_bytes};
use crate::ffi::key::lock_type;

/// A scan of one database; the server's cursor is freed when it is dropped.
pub struct Scan {
    pub db: i32,
    cursor: *mut raw::RedisModuleScanCursor,
}

impl Scan {
    pub fn new(db: i32) -> LockResult<Self> {
        let create = api!(RedisModule_ScanCursorCreate)?;
        // SAFETY: a plain allocation by the server.
        let cursor = unsafe { create() };
        if cursor.is_null() {
            return Err(LockError::Internal("no scan cursor".into()));
        }
        Ok(Self { db, cursor })
    }

    /// Select this scan's database on `ctx`; false when the server has no such database.
    pub fn select(&self, ctx: &Context) -> LockResult<bool> {
        let select = api!(RedisModule_SelectDb)?;
        // SAFETY: ctx is live for this call.
        Ok(unsafe { select(ctx.ctx, self.db) } == raw::REDISMODULE_OK as c_int)
    }

    /// One step of the scan over the selected database: `found` gets the name of each lock key
    /// visited whose value `wanted` accepts. False once the database is done.
    pub fn step(
        &mut self,
        ctx: &Context,
        wanted: fn(&Held) -> bool,
        found: &mut Vec<Vec<u8>>,
    ) -> LockResult<bool> {
        let scan = api!(RedisModule_Scan)?;
        let mut visit = Visit { wanted, found };
        // SAFETY: the callback runs inside this call, with `visit` alive.
        let more = unsafe {
            scan(
                ctx.ctx,
                self.cursor,
                Some(on_key),
                (&mut visit as *mut Visit).cast(),
            )
        };
        Ok(more != 0)
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        if let Some(destroy) = unsafe { raw::RedisModule_ScanCursorDestroy } {
            // SAFETY: the cursor was made by `new` and is freed once.
            unsafe { destroy(self.cursor) };
        }
    }
}

struct Visit<'a> {
    wanted: fn(&Held) -> bool,
    found: &'a mut Vec<Vec<u8>>,
}

unsafe extern "C" fn on_key(
    _ctx: *mut raw::RedisModuleCtx,
    name: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    data: *mut c_void,
) {
    crate::ffi::guard::callback((), || {
        let (Some(key_type), Some(type_of), Some(value_of)) = (unsafe {
            (
                raw::RedisModule_KeyType,
                raw::RedisModule_ModuleTypeGetType,
                raw::RedisModule_ModuleTypeGetValue,
            )
        }) else {
            return;
        };
        // SAFETY: the server passes the key it opened for this visit, or null, and the
        // `Visit` that `step` handed it.
        if key.is_null() || name.is_null() {
            return;
        }
        let is_lock = unsafe { key_type(key) } as isize == raw::REDISMODULE_KEYTYPE_MODULE
            && unsafe { type_of(key) } == lock_type();
        if !is_lock {
            return;
        }
        let Some(visit) = (unsafe { data.cast::<Visit>().as_mut() }) else {
            return;
        };
        // SAFETY: a value of this type, made by `Value::into_raw`; only read here.
        let Some(held) = (unsafe { value::held(value_of(key)) }) else {
            return;
        };
        if (visit.wanted)(&held) {
            // SAFETY: the server's name of the visited key, live for this visit.
            if let Some(name) = unsafe { string_bytes(name) } {
                visit.found.push(name.to_vec());
            }
        }
    })
}
