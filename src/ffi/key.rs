//! One lock under one Redis key: opening it, reading and writing the lock value (of either
//! kind), keeping the key's expiry equal to the lock's latest holder deadline, and deleting it
//! when the lock is freed.

use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

use lock_core::value::{self, Held, Value};
use lock_core::{LockError, LockResult};
use redis_module::{raw, Context, RedisString};

use crate::ffi::api::api;
use crate::observe::stats::{count, STATS};

pub struct LockKey {
    ctx: *mut raw::RedisModuleCtx,
    name: *mut raw::RedisModuleString,
    /// None when the key was opened for reading and does not exist.
    key: Option<NonNull<raw::RedisModuleKey>>,
    /// The key's value as the server holds it (null: none), read once at opening and kept up
    /// to date by `store` and `delete`, the only writers while the handle is open.
    value: *mut std::ffi::c_void,
    /// Opened for writing, and nothing has set the key's expiry or deleted it since: the
    /// expiry is checked when the handle closes.
    check_expiry: bool,
}

/// The server's handle of the lock data type, set once when the module registers it.
static LOCK_TYPE: AtomicPtr<raw::RedisModuleType> = AtomicPtr::new(ptr::null_mut());

pub fn set_lock_type(handle: *mut raw::RedisModuleType) {
    LOCK_TYPE.store(handle, Ordering::Relaxed);
}

pub fn lock_type() -> *mut raw::RedisModuleType {
    LOCK_TYPE.load(Ordering::Relaxed)
}

pub enum Mode {
    Read,
    Write,
    /// Read without side effects where the server allows it: no access-time or frequency
    /// touch, no key-miss event or statistics, and (Redis 7.2+, Valkey) no deletion of a key
    /// found expired.
    Peek,
}

/// The open flags of `Mode::Peek` that this server knows.
fn peek_flags() -> u32 {
    let quiet = raw::REDISMODULE_OPEN_KEY_NOTOUCH
        | raw::REDISMODULE_OPEN_KEY_NONOTIFY
        | raw::REDISMODULE_OPEN_KEY_NOSTATS
        | raw::REDISMODULE_OPEN_KEY_NOEXPIRE;
    let known = match unsafe { raw::RedisModule_GetOpenKeyModesAll } {
        // SAFETY: a plain query of the server.
        Some(modes) => (unsafe { modes() }) as u32,
        // Redis 7.0 knows NOTOUCH, and nothing tells it more.
        None => raw::REDISMODULE_OPEN_KEY_NOTOUCH,
    };
    raw::REDISMODULE_READ | (quiet & known)
}

impl LockKey {
    /// Open `name`; WRONGTYPE if it holds anything but a lock.
    #[inline(always)]
    pub fn open(ctx: &Context, name: &RedisString, mode: Mode) -> LockResult<Self> {
        let open_key = api!(RedisModule_OpenKey)?;
        let flags = match mode {
            Mode::Read => raw::REDISMODULE_READ,
            Mode::Write => raw::REDISMODULE_READ | raw::REDISMODULE_WRITE,
            Mode::Peek => peek_flags(),
        };
        // SAFETY: ctx and name are live for this command call.
        let key = unsafe { open_key(ctx.ctx, name.inner, flags as c_int) };
        let mut this = Self {
            ctx: ctx.ctx,
            name: name.inner,
            key: NonNull::new(key.cast()),
            value: ptr::null_mut(),
            check_expiry: matches!(mode, Mode::Write),
        };
        this.check_type()?;
        if let Some(key) = this.key {
            let get_value = api!(RedisModule_ModuleTypeGetValue)?;
            // SAFETY: key is an open key handle, of this type or empty.
            this.value = unsafe { get_value(key.as_ptr()) };
        }
        Ok(this)
    }

    /// The key's expiry is the lock's deadline, so the key goes when the lock ends, not before
    /// or after. A handle opened for writing puts it back where something moved it, when it
    /// closes, unless the command set the expiry itself (most do, so most pay nothing): the
    /// keyspace events of EXPIRE, PERSIST and RESTORE open the key for just that
    /// (`keyspace.rs`), and every LOCK write command checks again. (A past deadline makes the
    /// server drop the key by its own expiry.)
    fn resync_expiry(&mut self) {
        let Some(key) = self.key else { return };
        // SAFETY: see `held`; the value is this type's or null.
        let Some(deadline) = (unsafe { value::held(self.value) }).and_then(|h| h.deadline()) else {
            return;
        };
        let (Some(get_abs_expire), Some(set_abs_expire)) =
            (unsafe { raw::RedisModule_GetAbsExpire }, unsafe {
                raw::RedisModule_SetAbsExpire
            })
        else {
            return;
        };
        // SAFETY: key is an open key handle holding a lock.
        if unsafe { get_abs_expire(key.as_ptr()) } != deadline {
            unsafe { set_abs_expire(key.as_ptr(), deadline) };
        }
    }

    #[inline(always)]
    fn check_type(&self) -> LockResult<()> {
        let Some(key) = self.key else { return Ok(()) };
        let key_type = api!(RedisModule_KeyType)?;
        let get_type = api!(RedisModule_ModuleTypeGetType)?;
        // SAFETY: key is an open key handle.
        let kind = unsafe { key_type(key.as_ptr()) } as isize;
        if kind == raw::REDISMODULE_KEYTYPE_EMPTY {
            return Ok(());
        }
        if kind == raw::REDISMODULE_KEYTYPE_MODULE
            && unsafe { get_type(key.as_ptr()) } == lock_type()
        {
            return Ok(());
        }
        Err(LockError::WrongType)
    }

    /// The lock stored here, expired or not; None if the key is empty.
    pub fn held(&mut self) -> LockResult<Option<Held<'_>>> {
        // SAFETY: check_type proved the value, if any, is one of ours, made by
        // `Value::into_raw`; the borrow ends with this handle's.
        Ok(unsafe { value::held(self.value) })
    }

    /// Store `value` (replacing what was there) with the key expiring at its latest deadline.
    #[inline(always)]
    pub fn store(&mut self, value: Value) -> LockResult<()> {
        let key = self.writable()?;
        let set_value = api!(RedisModule_ModuleTypeSetValue)?;
        let raw = value.into_raw();
        // SAFETY: on success the server owns the value and frees it through the type's `free`.
        let replaced = unsafe { set_value(key.as_ptr(), lock_type(), raw) };
        if replaced != raw::REDISMODULE_OK as c_int {
            drop(unsafe { Value::from_raw(raw) });
            return Err(LockError::Internal("could not store the lock value".into()));
        }
        self.value = raw;
        count(&STATS.locks);
        self.follow_deadline()
    }

    /// Put `value` in place of the lock stored here, as the same lock changed (a new label):
    /// unlike `store`, the server sees no key replaced (no unlink callback, no new expiry).
    pub fn replace(&mut self, value: Value) -> LockResult<()> {
        let key = self.writable()?;
        let replace_value = api!(RedisModule_ModuleTypeReplaceValue)?;
        let raw = value.into_raw();
        let mut old = ptr::null_mut();
        // SAFETY: the key holds a value of this type; on success the server owns `raw` and
        // hands back the old value, which is ours to free.
        let replaced = unsafe { replace_value(key.as_ptr(), lock_type(), raw, &mut old) };
        if replaced != raw::REDISMODULE_OK as c_int {
            drop(unsafe { Value::from_raw(raw) });
            return Err(LockError::Internal(
                "could not replace the lock value".into(),
            ));
        }
        if !old.is_null() {
            drop(unsafe { Value::from_raw(old) });
        }
        self.value = raw;
        self.follow_deadline()
    }

    /// After a holder's deadline moved, or a shared holder came or went: the key expires at
    /// the lock's latest holder deadline.
    #[inline(always)]
    pub fn follow_deadline(&mut self) -> LockResult<()> {
        let deadline = self
            .held()?
            .and_then(|held| held.deadline())
            .ok_or_else(|| LockError::Internal("no lock to follow".into()))?;
        self.expire_at(deadline)
    }

    #[inline(always)]
    fn expire_at(&mut self, deadline_ms: i64) -> LockResult<()> {
        let key = self.writable()?;
        let set_abs_expire = api!(RedisModule_SetAbsExpire)?;
        // SAFETY: key is open for writing and holds a value.
        if unsafe { set_abs_expire(key.as_ptr(), deadline_ms) } != raw::REDISMODULE_OK as c_int {
            return Err(LockError::Internal("could not set the key's expiry".into()));
        }
        self.check_expiry = false;
        self.signal_modified()
    }

    /// Free the lock: the key goes.
    #[inline(always)]
    pub fn delete(&mut self) -> LockResult<()> {
        let key = self.writable()?;
        let delete_key = api!(RedisModule_DeleteKey)?;
        // SAFETY: key is open for writing.
        let deleted = unsafe { delete_key(key.as_ptr()) };
        if deleted != raw::REDISMODULE_OK as c_int {
            return Err(LockError::Internal("could not delete the key".into()));
        }
        self.value = ptr::null_mut();
        self.check_expiry = false;
        self.signal_modified()
    }

    /// The module turned implicit signalling off so that WATCH is touched only by a real change.
    fn signal_modified(&self) -> LockResult<()> {
        let signal = api!(RedisModule_SignalModifiedKey)?;
        // SAFETY: ctx and name are live for this command call.
        unsafe { signal(self.ctx, self.name) };
        Ok(())
    }

    fn writable(&self) -> LockResult<NonNull<raw::RedisModuleKey>> {
        self.key
            .ok_or_else(|| LockError::Internal("key not open for writing".into()))
    }
}

impl Drop for LockKey {
    fn drop(&mut self) {
        if self.check_expiry {
            self.resync_expiry();
        }
        if let (Some(key), Some(close)) = (self.key, unsafe { raw::RedisModule_CloseKey }) {
            // SAFETY: key was opened by this handle and is closed once.
            unsafe { close(key.as_ptr()) };
        }
    }
}
