//! Wall-clock readings. Deadlines use the server's own millisecond clock, the one Redis
//! expires keys by; fences use Unix time in microseconds. A command takes the time the server
//! read when the command started (`command_us`); timers, callbacks and hand-offs read the
//! clock.

use std::time::{SystemTime, UNIX_EPOCH};

use lock_core::LockResult;
use redis_module::raw;

use crate::ffi::api::api;

/// The time the running command started, in Unix microseconds: the server's own reading
/// (`RedisModule_CachedMicroseconds`, Redis 7.2+ and Valkey), the one it judges the keys'
/// expiry by during the command, so a command reads no clock of its own. Inside `MULTI` or a
/// script it is the time the transaction or script started, as for the server's own
/// commands. Redis 7.0 has no such reading: there the clock is read.
///
/// Only for command handlers: elsewhere (timers, callbacks) the reading can be a whole event
/// loop iteration old.
#[inline(always)]
pub fn command_us() -> u64 {
    // SAFETY: the function pointer is filled in by the server at load, if it has one.
    match unsafe { raw::RedisModule_CachedMicroseconds } {
        Some(cached) => u64::try_from(unsafe { cached() }).unwrap_or(0),
        None => now_us(),
    }
}

/// `command_us` in milliseconds.
#[inline(always)]
pub fn command_ms() -> i64 {
    ms_of(command_us())
}

pub fn now_ms() -> LockResult<i64> {
    let milliseconds = api!(RedisModule_Milliseconds)?;
    // SAFETY: the function pointer is filled in by the server at load.
    Ok(unsafe { milliseconds() })
}

/// Microseconds since the Unix epoch; 0 if the clock reads before 1970 (the fence clock's
/// `last + 1` still keeps fences rising then).
#[inline(always)]
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        // Whole seconds times a million, not `as_micros`: that multiplies in 128 bits.
        .map(|d| {
            d.as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(d.subsec_micros()))
        })
        .unwrap_or(0)
}

/// The Unix milliseconds of a `now_us` reading: the same wall clock the server's own
/// millisecond clock reads (`RedisModule_Milliseconds`), so a command that needs both a
/// deadline and a fence reads the clock once.
#[inline(always)]
pub fn ms_of(now_us: u64) -> i64 {
    // Below 2^63 for any u64 over 1000.
    (now_us / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_of_is_the_millisecond_of_a_reading_and_never_negative() {
        assert_eq!(ms_of(1_733_000_000_123_999), 1_733_000_000_123);
        assert_eq!(ms_of(999), 0);
        assert!(ms_of(u64::MAX) > 0);
        let unix_ms = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
        };
        let before = unix_ms().unwrap();
        let read = ms_of(now_us()) as u128;
        let after = unix_ms().unwrap();
        assert!(
            (before..=after).contains(&read),
            "{before} <= {read} <= {after}"
        );
    }
}
