//! The lock's Redis data type: how a lock value is saved, loaded, rewritten into the AOF,
//! measured, digested and freed, plus the module-wide aux data (the fence clock) in RDB files.
//!
//! COPY is refused by leaving the `copy` callback out: a grant is unique, and a copy would be
//! a second lock with the same owner and fence. The server answers
//! "ERR not supported for this module key".

use std::ffi::c_void;
use std::os::raw::{c_char, c_int, c_longlong};
use std::sync::atomic::Ordering;

use lock_core::codec::{self, CURRENT_VERSION};
use lock_core::compact::INLINE_TEXT_MAX;
use lock_core::effect::Effect;
use lock_core::fence::Observed;
use lock_core::lock::Lock;
use lock_core::meta::Meta;
use lock_core::shared::SharedLock;
use lock_core::value::{self, Held, Labeled, Value};
use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::ffi::api::string_bytes;
use crate::ffi::rdb::Io;
use crate::ffi::{clock, guard, key, propagate};
use crate::observe::config;
use crate::observe::stats::{count, uncount, STATS};
use crate::server::state::{self, Replacing};
use crate::server::{fences, runner};

/// `TYPE key` answers this; it is exactly 9 characters, as the server requires.
pub const TYPE_NAME: &str = "fencelock";

pub static LOCK_TYPE: RedisType = RedisType::new(
    TYPE_NAME,
    CURRENT_VERSION,
    raw::RedisModuleTypeMethods {
        // Version 4 is what Redis 7.0 knows; Valkey reads it too.
        version: 4,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: Some(defrag),
        mem_usage2: None,
        free_effort2: None,
        unlink2: Some(unlink),
        copy2: None,
        aux_save2: None,
    },
);

/// Register the type with the server (at load), and give its handle to the key helpers.
pub fn register(ctx: &redis_module::Context) -> bool {
    if LOCK_TYPE.create_data_type(ctx.ctx).is_err() {
        return false;
    }
    key::set_lock_type(*LOCK_TYPE.raw_type.borrow());
    true
}

/// The value behind the server's pointer.
///
/// SAFETY: the server passes values of this type only, made by `Value::into_raw`, and none is
/// borrowed elsewhere during a type callback.
fn value_of<'a>(raw: *const c_void) -> Option<Held<'a>> {
    unsafe { value::held(raw.cast_mut()) }
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    guard::callback((), || {
        if let Some(held) = value_of(value) {
            codec::encode_value(&held, &mut Io(rdb));
        }
    })
}

/// Every encoding version ever written loads (the server passes the value's own version).
unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    guard::callback(std::ptr::null_mut(), || {
        let mut io = Io(rdb);
        let mut value = match codec::decode_value(encver, &mut io) {
            Ok(value) => value,
            Err(e) => {
                io.log(&format!(
                    "a lock value could not be loaded (encoding version {encver}): {e}"
                ));
                return std::ptr::null_mut();
            }
        };
        let fence = value.held().highest_fence();
        if !fences::fence_within_reach(fence) {
            if io.restoring_on_primary() {
                // A crafted or foreign payload must not poison the fence clock (and through
                // RESTORE's replication, the replicas'): the server answers "Bad data format".
                io.log(&format!(
                    "RESTORE refused a lock whose fence {fence} is more than \
                     lock.fence-max-ahead ({} ms) ahead of this server's clock",
                    config::FENCE_MAX_AHEAD.load(Ordering::Relaxed)
                ));
                return std::ptr::null_mut();
            }
            io.log(&fences::capped_message(fence));
        }
        // A loaded lock raises the clock: no later grant may undercut it. A restored one does
        // so only once the server has taken the whole payload (its `restore` keyspace event):
        // a RESTORE refused after this callback must change nothing.
        if io.loading() {
            fences::observe_fence(fence);
            if value.held().holders_expire_first() {
                if let Some(id) = io.lock_id() {
                    state::update(|s| s.loaded_shared.push(id));
                }
            }
        }
        count(&STATS.locks);
        value.into_raw()
    })
}

/// The lock as the effect commands that recreate it (one per shared holder), so AOF files
/// without an RDB preamble restore tokens, deadlines and fences exactly.
unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    guard::callback((), || {
        let mut buf = [0u8; INLINE_TEXT_MAX];
        match value_of(value) {
            Some(Held::Exclusive(lock, meta)) => {
                propagate::emit_aof(aof, key, &Effect::apply(lock, meta, &mut buf));
            }
            Some(Held::Shared(shared)) => {
                for (holder, meta) in shared.entries() {
                    let effect = Effect::share(holder, shared.limit(), meta, &mut buf);
                    propagate::emit_aof(aof, key, &effect);
                }
            }
            None => {}
        }
    })
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    guard::callback(0, || match value_of(value) {
        Some(Held::Exclusive(lock, None)) => std::mem::size_of::<Lock>() + lock.heap_bytes(),
        Some(Held::Exclusive(lock, Some(meta))) => {
            std::mem::size_of::<Labeled>() + lock.heap_bytes() + meta.heap_bytes()
        }
        Some(Held::Shared(shared)) => std::mem::size_of::<SharedLock>() + shared.heap_bytes(),
        None => 0,
    })
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    guard::callback((), || {
        let Some(held) = value_of(value) else {
            return;
        };
        let (Some(add_buffer), Some(add_long), Some(end)) = (unsafe {
            (
                raw::RedisModule_DigestAddStringBuffer,
                raw::RedisModule_DigestAddLongLong,
                raw::RedisModule_DigestEndSequence,
            )
        }) else {
            return;
        };
        // One sequence per holder (the server combines sequences regardless of order), and
        // for a shared lock one with its limit.
        let holder = |(lock, meta): (&Lock, Option<&Meta>)| {
            let mut buf = [0u8; INLINE_TEXT_MAX];
            let token = lock.token(&mut buf);
            unsafe {
                add_buffer(md, token.as_ptr().cast::<c_char>().cast_mut(), token.len());
                add_long(md, lock.deadline_ms);
                add_long(md, lock.fence() as c_longlong);
                if let Some(meta) = meta {
                    let meta = meta.as_bytes();
                    add_buffer(md, meta.as_ptr().cast::<c_char>().cast_mut(), meta.len());
                }
                end(md);
            }
        };
        match held {
            Held::Exclusive(lock, meta) => holder((lock, meta)),
            Held::Shared(shared) => {
                let limit = shared.limit().map_or(-1, c_longlong::from);
                unsafe {
                    add_long(md, limit);
                    end(md);
                }
                shared.entries().for_each(holder);
            }
        }
    })
}

/// Active defragmentation (`activedefrag yes`, on servers built with the defrag-aware jemalloc,
/// such as Redis 8): the lock and a heap token move to less fragmented memory.
unsafe extern "C" fn defrag(
    ctx: *mut raw::RedisModuleDefragCtx,
    _key: *mut raw::RedisModuleString,
    value: *mut *mut c_void,
) -> c_int {
    guard::callback(0, || {
        let Some(defrag_alloc) = (unsafe { raw::RedisModule_DefragAlloc }) else {
            return 0;
        };
        // SAFETY: value points at the key's value, allocated by the server's allocator (the
        // module's global allocator); DefragAlloc frees what it moves. The maps of a shared
        // lock are left where they are.
        unsafe {
            let (at, tagged) = value::allocation(*value);
            let moved = defrag_alloc(ctx, at);
            if !moved.is_null() {
                *value = tagged(moved);
            }
            if let Some(Held::Exclusive(lock, _)) = value_of(*value) {
                lock.defrag_token(|bytes| defrag_alloc(ctx, bytes.cast()).cast());
            }
        }
        0
    })
}

/// May run on a background thread (FLUSHALL ASYNC, UNLINK): it only drops the box.
unsafe extern "C" fn free(value: *mut c_void) {
    guard::callback((), || {
        if !value.is_null() {
            // SAFETY: every value of this type was made by `Value::into_raw` in LockKey::store
            // or rdb_load, and the server frees each once.
            drop(unsafe { Value::from_raw(value) });
            uncount(&STATS.locks);
        }
    })
}

/// A lock key left its database (DEL, UNLINK, overwrite, expiry, RENAME, MOVE, MIGRATE):
/// clients waiting for it are served once the server has finished.
unsafe extern "C" fn unlink(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    // The module's own release of a live lock with nobody waiting and nothing bound: nothing
    // to count, notify, serve or unbind (nearly every RELEASE comes here).
    match state::replacing() {
        Replacing::LiveQuiet => {}
        replacing => unlink_in_use(ctx, value, replacing == Replacing::Live),
    }
}

/// `unlink` of a lock key that may leave work behind; `replacing_live`: the module is
/// replacing or deleting it, live (`state::replacing_live`).
#[inline(never)]
fn unlink_in_use(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void, replacing_live: bool) {
    guard::callback((), || {
        let (serving_since, quiet) =
            state::with(|s| (s.serving_since_ms, s.quiet())).unwrap_or((i64::MAX, false));
        // The module replacing or deleting a live lock by another way than a quiet release
        // (a grant over it, a take-back), with nobody waiting and nothing bound: nothing to
        // count, notify or serve.
        if replacing_live && quiet {
            return;
        }
        let (Some(db_of), Some(name_of)) = (unsafe {
            (
                raw::RedisModule_GetDbIdFromOptCtx,
                raw::RedisModule_GetKeyNameFromOptCtx,
            )
        }) else {
            return;
        };
        // SAFETY: the server passes a live key context; the name outlives this call.
        let (db, name) = unsafe { (db_of(ctx), name_of(ctx)) };
        let Some(name) = (unsafe { string_bytes(name) }) else {
            return;
        };
        // Holders that expired in this server's care (a shared lock's last ones).
        let expired = match value_of(value) {
            Some(held) if !replacing_live => {
                let ended = clock::now_ms().is_ok_and(|now| !held.is_live(now))
                    && held.deadline().is_some_and(|d| d >= serving_since);
                match held {
                    _ if !ended => 0,
                    Held::Exclusive(..) => 1,
                    Held::Shared(shared) => shared.len(),
                }
            }
            _ => 0,
        };
        runner::key_removed(db, name, expired);
    })
}

/// The fence clock travels in every RDB file (and AOF preamble, and full resync), so a
/// restart or a new replica never issues a fence below one already issued.
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    guard::callback((), || {
        if when == raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
            codec::encode_clock(fences::last_fence(), &mut Io(rdb));
        }
    })
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, when: c_int) -> c_int {
    guard::callback(raw::REDISMODULE_ERR as c_int, || {
        if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
            return raw::REDISMODULE_ERR as c_int;
        }
        let mut io = Io(rdb);
        match codec::decode_clock(encver, &mut io) {
            Ok(last) => {
                if fences::observe_fence(last) == Observed::Capped {
                    io.log(&fences::capped_message(last));
                }
                raw::REDISMODULE_OK as c_int
            }
            Err(e) => {
                io.log(&format!("the fence clock could not be loaded: {e}"));
                raw::REDISMODULE_ERR as c_int
            }
        }
    })
}

const _: () = assert!(TYPE_NAME.len() == 9);
