//! In a cluster, whether this node still serves a key.

use lock_core::{LockError, LockResult};
use redis_module::{Context, ContextFlags, RedisString};

use crate::ffi::api::api;

/// Linux's errno for "network is down", which RM_Call sets when the cluster is down.
const ENETDOWN: i32 = 100;

/// Ok outside a cluster, or when this node serves `key`; otherwise the error its waiters get
/// (TRYAGAIN, or CLUSTERDOWN). A module's RM_Call goes through the cluster's routing check,
/// which fails for a key this node would redirect.
pub fn served_here(ctx: &Context, key: &[u8]) -> LockResult<()> {
    if !ctx.get_flags().contains(ContextFlags::CLUSTER) {
        return Ok(());
    }
    let call = api!(RedisModule_Call)?;
    let free_reply = api!(RedisModule_FreeCallReply)?;
    let key = RedisString::create_from_slice(ctx.ctx, key);
    // SAFETY: "s" takes one RedisModuleString; the reply, if any, is freed at once.
    let reply = unsafe { call(ctx.ctx, c"EXISTS".as_ptr(), c"s".as_ptr(), key.inner) };
    if !reply.is_null() {
        unsafe { free_reply(reply) };
        return Ok(());
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(ENETDOWN) => Err(LockError::ClusterDown),
        _ => Err(LockError::SlotMoved),
    }
}
