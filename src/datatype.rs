//! The lock's Redis data type: how a lock value is saved, loaded, rewritten into the AOF,
//! measured, digested and freed, plus the module-wide aux data (the fence clock) in RDB files.
//!
//! COPY is refused by leaving the `copy` callback out: a grant is unique, and a copy would be
//! a second lock with the same owner and fence. The server answers
//! "ERR not supported for this module key".

use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int, c_longlong};
use std::sync::atomic::Ordering;

use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::blocking;
use crate::clock;
use crate::config;
use crate::fence::{Observed, FENCE};
use crate::guard;
use crate::key;
use crate::lock::{Lock, INLINE_TEXT_MAX};
use crate::replication::APPLY_COMMAND;
use crate::stats::{self, count, uncount, STATS};
use crate::token::Token;

/// `TYPE key` answers this; it is exactly 9 characters, as the server requires.
pub const TYPE_NAME: &str = "fencelock";

/// Version 1: token (string), deadline in Unix ms (signed), fence (unsigned).
pub const ENCODING_VERSION: i32 = 1;

pub static LOCK_TYPE: RedisType = RedisType::new(
    TYPE_NAME,
    ENCODING_VERSION,
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

/// The server's handle of the type, for key type checks and SetValue.
pub fn lock_type() -> *mut raw::RedisModuleType {
    *LOCK_TYPE.raw_type.borrow()
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    guard::callback((), || {
        // SAFETY: the server passes a value of this type, a Box<Lock>.
        let Some(lock) = (unsafe { value.cast::<Lock>().as_ref() }) else {
            return;
        };
        let mut buf = [0u8; INLINE_TEXT_MAX];
        raw::save_slice(rdb, lock.token(&mut buf));
        raw::save_signed(rdb, lock.deadline_ms);
        raw::save_unsigned(rdb, lock.fence());
    })
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    guard::callback(std::ptr::null_mut(), || {
        if encver != ENCODING_VERSION {
            return std::ptr::null_mut();
        }
        let Some(lock) = load_lock(rdb) else {
            log_io(
                rdb,
                "a lock value could not be loaded: truncated or corrupt data, an empty or \
                 over-long token, or a fence above 2^62-1",
            );
            return std::ptr::null_mut();
        };
        let fence = lock.fence();
        if !clock::fence_within_reach(fence) {
            if restoring_on_primary(rdb) {
                // A crafted or foreign payload must not poison the fence clock (and through
                // RESTORE's replication, the replicas'): the server answers "Bad data format".
                log_io(
                    rdb,
                    &format!(
                        "RESTORE refused a lock whose fence {fence} is more than \
                         lock.fence-max-ahead ({} ms) ahead of this server's clock",
                        config::FENCE_MAX_AHEAD.load(Ordering::Relaxed)
                    ),
                );
                return std::ptr::null_mut();
            }
            log_io(rdb, &clock::capped_message(fence));
        }
        // A loaded lock raises the clock: no later grant may undercut it. A restored one does
        // so only once the server has taken the whole payload (its `restore` keyspace event):
        // a RESTORE refused after this callback must change nothing.
        if loading(rdb) {
            clock::observe_fence(fence);
        }
        count(&STATS.locks);
        Box::into_raw(Box::new(lock)).cast()
    })
}

/// Whether this value arrives by RESTORE (or a slot import) on a primary, which may refuse it,
/// rather than from a file, a full sync or the replication stream, which must load whole.
fn restoring_on_primary(rdb: *mut raw::RedisModuleIO) -> bool {
    io_flags(rdb).is_some_and(|flags| {
        flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
            && flags & raw::REDISMODULE_CTX_FLAGS_LOADING == 0
    })
}

/// Whether the server is loading data (a file, a full sync, DEBUG RELOAD), not restoring one
/// key.
fn loading(rdb: *mut raw::RedisModuleIO) -> bool {
    io_flags(rdb).is_none_or(|flags| flags & raw::REDISMODULE_CTX_FLAGS_LOADING != 0)
}

/// The context flags seen from inside an RDB callback.
fn io_flags(rdb: *mut raw::RedisModuleIO) -> Option<u32> {
    let (context_of, flags_of) = unsafe {
        (
            raw::RedisModule_GetContextFromIO?,
            raw::RedisModule_GetContextFlags?,
        )
    };
    // SAFETY: rdb is the live IO handle of this load; its context lives as long.
    let ctx = unsafe { context_of(rdb) };
    (!ctx.is_null()).then(|| unsafe { flags_of(ctx) } as u32)
}

/// A warning in the server log, from inside an RDB callback.
fn log_io(rdb: *mut raw::RedisModuleIO, message: &str) {
    let Some(log) = (unsafe { raw::RedisModule_LogIOError }) else {
        return;
    };
    let Ok(text) = CString::new(format!("lock: {message}")) else {
        return;
    };
    // SAFETY: "%s" with one C string; both live for the call.
    unsafe { log(rdb, c"warning".as_ptr(), c"%s".as_ptr(), text.as_ptr()) };
}

fn load_lock(rdb: *mut raw::RedisModuleIO) -> Option<Lock> {
    let token = raw::load_string_buffer(rdb).ok()?;
    let token = Token::parse(token.as_ref()).ok()?;
    let deadline_ms = raw::load_signed(rdb).ok()?;
    let fence = raw::load_unsigned(rdb).ok()?;
    Lock::new(&token, deadline_ms, fence).ok()
}

/// The lock as the effect command that recreates it, so AOF files without an RDB preamble
/// restore token, deadline and fence exactly.
unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    guard::callback((), || {
        // SAFETY: the server passes a value of this type.
        let Some(lock) = (unsafe { value.cast::<Lock>().as_ref() }) else {
            return;
        };
        let Some(emit) = (unsafe { raw::RedisModule_EmitAOF }) else {
            return;
        };
        let mut buf = [0u8; INLINE_TEXT_MAX];
        let token = lock.token(&mut buf);
        // SAFETY: "sbll" is a RedisModuleString, a buffer with its length, two long longs.
        unsafe {
            emit(
                aof,
                APPLY_COMMAND.as_ptr(),
                c"sbll".as_ptr(),
                key,
                token.as_ptr().cast::<c_char>(),
                token.len(),
                lock.deadline_ms as c_longlong,
                lock.fence() as c_longlong,
            )
        };
    })
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    guard::callback(0, || {
        // SAFETY: the server passes a value of this type.
        unsafe { value.cast::<Lock>().as_ref() }
            .map_or(0, |lock| std::mem::size_of::<Lock>() + lock.heap_bytes())
    })
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    guard::callback((), || {
        // SAFETY: the server passes a value of this type.
        let Some(lock) = (unsafe { value.cast::<Lock>().as_ref() }) else {
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
        let mut buf = [0u8; INLINE_TEXT_MAX];
        let token = lock.token(&mut buf);
        unsafe {
            add_buffer(md, token.as_ptr().cast::<c_char>().cast_mut(), token.len());
            add_long(md, lock.deadline_ms);
            add_long(md, lock.fence() as c_longlong);
            end(md);
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
        // SAFETY: value points at the key's value, a Box<Lock> allocated by the server's
        // allocator (the module's global allocator); DefragAlloc frees what it moves.
        unsafe {
            let moved = defrag_alloc(ctx, *value);
            if !moved.is_null() {
                *value = moved;
            }
            if let Some(lock) = (*value).cast::<Lock>().as_mut() {
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
            // SAFETY: every value of this type is a Box<Lock> handed over in LockKey::store
            // or rdb_load, and the server frees each once.
            drop(unsafe { Box::from_raw(value.cast::<Lock>()) });
            uncount(&STATS.locks);
        }
    })
}

/// A lock key left its database (DEL, UNLINK, overwrite, expiry, RENAME, MOVE, MIGRATE):
/// clients waiting for it are served once the server has finished.
unsafe extern "C" fn unlink(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    guard::callback((), || {
        let (Some(db_of), Some(name_of), Some(bytes_of)) = (unsafe {
            (
                raw::RedisModule_GetDbIdFromOptCtx,
                raw::RedisModule_GetKeyNameFromOptCtx,
                raw::RedisModule_StringPtrLen,
            )
        }) else {
            return;
        };
        // SAFETY: the server passes a live key context; the name outlives this call.
        let (db, name) = unsafe { (db_of(ctx), name_of(ctx)) };
        if name.is_null() {
            return;
        }
        let mut len = 0;
        let bytes = unsafe { bytes_of(name, &mut len) };
        if bytes.is_null() {
            return;
        }
        let name = unsafe { std::slice::from_raw_parts(bytes.cast::<u8>(), len) };
        // SAFETY: the server passes the value being unlinked, one of ours.
        let expired = !key::replacing_live()
            && unsafe { value.cast::<Lock>().as_ref() }.is_some_and(|lock| {
                clock::now_ms().is_ok_and(|now| !lock.is_live(now))
                    && stats::expired_while_serving(lock.deadline_ms)
            });
        blocking::key_removed(db, name, expired);
    })
}

/// The fence clock travels in every RDB file (and AOF preamble, and full resync), so a
/// restart or a new replica never issues a fence below one already issued.
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    guard::callback((), || {
        if when == raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
            raw::save_unsigned(rdb, FENCE.last());
        }
    })
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, when: c_int) -> c_int {
    guard::callback(raw::REDISMODULE_ERR as c_int, || {
        if encver != ENCODING_VERSION || when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
            return raw::REDISMODULE_ERR as c_int;
        }
        match raw::load_unsigned(rdb) {
            Ok(last) => {
                if clock::observe_fence(last) == Observed::Capped {
                    log_io(rdb, &clock::capped_message(last));
                }
                raw::REDISMODULE_OK as c_int
            }
            Err(_) => raw::REDISMODULE_ERR as c_int,
        }
    })
}

const _: () = assert!(TYPE_NAME.len() == 9);
