//! The commands: LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE and LOCK.INFO (`locks`), and the
//! effect commands LOCK.APPLY and LOCK.CLOCK that replicas and AOF replay run (`effects`).

pub mod effects;
pub mod locks;

use lock_core::{LockError, LockResult};
use redis_module::RedisString;

/// The key (argv[1]) and the arguments after it.
fn key_and_rest<'a>(
    args: &'a [RedisString],
    command: &'static str,
) -> LockResult<(&'a RedisString, Vec<&'a [u8]>)> {
    match args {
        [_, key, rest @ ..] => Ok((key, rest.iter().map(RedisString::as_slice).collect())),
        _ => Err(LockError::WrongArity(command)),
    }
}
