//! Blocked clients as the server offers them: block one with its callbacks, unblock it with
//! its reply's private data, and read that data back in the callbacks.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::ptr;

use lock_core::{LockError, LockResult};
use redis_module::{raw, Context};

use crate::ffi::api::api;

/// A blocked client's handle, as the server gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blocked(pub *mut raw::RedisModuleBlockedClient);

pub type ReplyCallback = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    *mut *mut raw::RedisModuleString,
    c_int,
) -> c_int;
pub type FreeCallback = unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut c_void);
pub type DisconnectCallback =
    unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut raw::RedisModuleBlockedClient);

/// What the server calls for a blocked client: `reply` once it is unblocked (if it is still
/// connected), `timeout` on CLIENT UNBLOCK, `free` when it is done with the private data, and
/// `disconnect` if the client goes away while blocked.
pub struct Callbacks {
    pub reply: ReplyCallback,
    pub timeout: ReplyCallback,
    pub free: FreeCallback,
    pub disconnect: DisconnectCallback,
}

/// Block the command's client. The server is given no timeout: the module times waits itself.
pub fn block(ctx: &Context, callbacks: &Callbacks) -> LockResult<Blocked> {
    let block_client = api!(RedisModule_BlockClient)?;
    let set_disconnect = api!(RedisModule_SetDisconnectCallback)?;
    // SAFETY: called from a command on the main thread; the callbacks live as long as the module.
    let handle = unsafe {
        block_client(
            ctx.ctx,
            Some(callbacks.reply),
            Some(callbacks.timeout),
            Some(callbacks.free),
            0,
        )
    };
    if handle.is_null() {
        return Err(LockError::Internal(
            "the server could not block the client".into(),
        ));
    }
    unsafe { set_disconnect(handle, Some(callbacks.disconnect)) };
    Ok(Blocked(handle))
}

/// Hand a blocked client back to the server with the private data its reply callback will
/// read (None: no reply is due, the client is gone or was answered already). Each handle is
/// unblocked exactly once.
pub fn unblock<T>(handle: Blocked, data: Option<Box<T>>) -> LockResult<()> {
    let unblock_client = api!(RedisModule_UnblockClient)?;
    let data = data.map_or(ptr::null_mut(), |data| Box::into_raw(data).cast());
    // SAFETY: the caller unblocks each handle once; the server owns `data` from here and hands
    // it to the free callback.
    unsafe { unblock_client(handle.0, data) };
    Ok(())
}

/// The private data given to `unblock`, from inside the reply callback.
///
/// # Safety
/// Every client the caller blocks must be unblocked with data of type `T`.
pub unsafe fn private_data<'a, T>(ctx: &Context) -> Option<&'a mut T> {
    let get = unsafe { raw::RedisModule_GetBlockedClientPrivateData }?;
    unsafe { get(ctx.ctx).cast::<T>().as_mut() }
}

/// The private data handed to the free callback, taken back.
///
/// # Safety
/// `data` is what the server passes the free callback of a client unblocked with a `T`.
pub unsafe fn take_private_data<T>(data: *mut c_void) -> Option<Box<T>> {
    (!data.is_null()).then(|| unsafe { Box::from_raw(data.cast::<T>()) })
}

/// The handle of the client whose timeout callback runs.
pub fn handle_of(ctx: &Context) -> Option<Blocked> {
    let get = unsafe { raw::RedisModule_GetBlockedClientHandle }?;
    // SAFETY: ctx is the context of the timeout callback.
    let handle = unsafe { get(ctx.ctx) };
    (!handle.is_null()).then_some(Blocked(handle))
}
