//! In a cluster, whether this node still serves a key, and whether it is sending slots away.

use lock_core::{LockError, LockResult};
use redis_module::{Context, ContextFlags, RedisString, RedisValue};

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

/// Whether this node is exporting slots with Valkey 9's atomic slot migration (`CLUSTER
/// MIGRATESLOTS`) that has not ended. While it is, a replicated command without a key (such
/// as `LOCK.CLOCK`) fails the migration ("A module replicated a cross-slot command"). False
/// outside a cluster and on servers without `CLUSTER GETSLOTMIGRATIONS`.
pub fn exporting_slots(ctx: &Context) -> bool {
    if !ctx.get_flags().contains(ContextFlags::CLUSTER) {
        return false;
    }
    let Ok(RedisValue::Array(migrations)) = ctx.call("CLUSTER", &["GETSLOTMIGRATIONS"]) else {
        return false;
    };
    migrations.iter().any(|migration| {
        let RedisValue::Array(fields) = migration else {
            return false;
        };
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| text(&pair[0]).as_deref() == Some(name))
                .and_then(|pair| pair.get(1).and_then(text))
        };
        let ended = ["success", "failed", "cancelled", "canceled"];
        field("operation").is_some_and(|op| op.eq_ignore_ascii_case("export"))
            && field("state").is_none_or(|state| !ended.contains(&state.as_str()))
    })
}

fn text(value: &RedisValue) -> Option<String> {
    match value {
        RedisValue::SimpleString(s) => Some(s.clone()),
        RedisValue::BulkString(s) => Some(s.clone()),
        RedisValue::StringBuffer(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RedisValue::BulkRedisString(s) => Some(s.to_string_lossy()),
        _ => None,
    }
}
