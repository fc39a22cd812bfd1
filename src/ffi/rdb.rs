//! Reading and writing values through the server's RDB IO (RDB files, DUMP/RESTORE payloads,
//! full syncs), for the core's codec; and what an RDB callback can learn of its context.

use std::ffi::CString;

use lock_core::codec::{ValueReader, ValueWriter};
use redis_module::raw;

use crate::ffi::api::string_bytes;

/// The server's IO handle of one value or aux field being loaded or saved.
pub struct Io(pub *mut raw::RedisModuleIO);

impl ValueReader for Io {
    fn bytes(&mut self) -> Option<Vec<u8>> {
        raw::load_string_buffer(self.0)
            .ok()
            .map(|buffer| buffer.as_ref().to_vec())
    }

    fn signed(&mut self) -> Option<i64> {
        raw::load_signed(self.0).ok()
    }

    fn unsigned(&mut self) -> Option<u64> {
        raw::load_unsigned(self.0).ok()
    }
}

impl ValueWriter for Io {
    fn bytes(&mut self, bytes: &[u8]) {
        raw::save_slice(self.0, bytes);
    }

    fn signed(&mut self, value: i64) {
        raw::save_signed(self.0, value);
    }

    fn unsigned(&mut self, value: u64) {
        raw::save_unsigned(self.0, value);
    }
}

impl Io {
    /// Whether this value arrives by RESTORE (or a slot import) on a primary, which may refuse
    /// it, rather than from a file, a full sync or the replication stream, which must load
    /// whole.
    pub fn restoring_on_primary(&self) -> bool {
        self.flags().is_some_and(|flags| {
            flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
                && flags & raw::REDISMODULE_CTX_FLAGS_LOADING == 0
        })
    }

    /// Whether the server is loading data (a file, a full sync, DEBUG RELOAD), not restoring
    /// one key.
    pub fn loading(&self) -> bool {
        self.flags()
            .is_none_or(|flags| flags & raw::REDISMODULE_CTX_FLAGS_LOADING != 0)
    }

    /// The key whose value is being loaded, where the server says.
    pub fn lock_id(&self) -> Option<lock_core::queue::LockId> {
        let (name_of, db_of) = unsafe {
            (
                raw::RedisModule_GetKeyNameFromIO?,
                raw::RedisModule_GetDbIdFromIO?,
            )
        };
        // SAFETY: the IO handle is live for this callback; so is the name it gives.
        let key = unsafe { string_bytes(name_of(self.0)) }?.to_vec();
        let db = unsafe { db_of(self.0) };
        Some(lock_core::queue::LockId { db, key })
    }

    /// The context flags seen from inside an RDB callback.
    fn flags(&self) -> Option<u32> {
        let (context_of, flags_of) = unsafe {
            (
                raw::RedisModule_GetContextFromIO?,
                raw::RedisModule_GetContextFlags?,
            )
        };
        // SAFETY: the IO handle is live for this callback; its context lives as long.
        let ctx = unsafe { context_of(self.0) };
        (!ctx.is_null()).then(|| unsafe { flags_of(ctx) } as u32)
    }

    /// A warning in the server log, from inside an RDB callback.
    pub fn log(&self, message: &str) {
        let Some(log) = (unsafe { raw::RedisModule_LogIOError }) else {
            return;
        };
        let Ok(text) = CString::new(format!("lock: {message}")) else {
            return;
        };
        // SAFETY: "%s" with one C string; both live for the call.
        unsafe { log(self.0, c"warning".as_ptr(), c"%s".as_ptr(), text.as_ptr()) };
    }
}
