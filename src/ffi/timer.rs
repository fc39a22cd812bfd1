//! The server's timers, on a context the caller gives (the module's own detached context,
//! as timers outlive the commands that start them).

use std::ffi::c_void;
use std::time::Duration;

use lock_core::handoff::TimerId;
use redis_module::{raw, Context};

use crate::ffi::clock;

/// Timers never wait longer than this; one that fires early just re-arms.
const MAX_TIMER: Duration = Duration::from_secs(24 * 60 * 60);

/// Call `callback` with `data` after `period`. The callback is a function item, which takes
/// no room: `stop` frees what the timer holds as the data alone.
pub fn start<F, T: 'static>(ctx: &Context, period: Duration, callback: F, data: T) -> TimerId
where
    F: FnOnce(&Context, T),
{
    ctx.create_timer(period, callback, data)
}

/// Stop a timer started with data of type `T`, which is dropped. False if it had fired or
/// never existed (nothing to stop).
pub fn stop<T>(ctx: &Context, timer: TimerId) -> bool {
    ctx.stop_timer::<T>(timer).is_ok()
}

/// How long a timer waits for something `left` away: whole milliseconds (the timers' unit)
/// rounded up, so it never fires early, and at most MAX_TIMER (one that fires early re-arms).
pub fn period(left: Duration) -> Duration {
    let ms = u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
    Duration::from_millis(ms).min(MAX_TIMER)
}

/// The period of a timer for Unix time `at` (ms); zero if that has passed.
pub fn until(at: i64) -> Duration {
    let now = clock::now_ms().unwrap_or(at);
    period(Duration::from_millis(
        u64::try_from(at.saturating_sub(now)).unwrap_or(0),
    ))
}

/// Have the event loop wake up now, so that a timer started from code the server runs just
/// before it sleeps (where it frees clients that closed) fires at once, not at the loop's next
/// tick (up to 1000/hz ms later). A one-shot event wakes the loop; its callback has nothing
/// to do, the loop then runs the timers that are due.
pub fn wake_event_loop() {
    if let Some(add) = unsafe { raw::RedisModule_EventLoopAddOneShot } {
        // SAFETY: a plain call with a callback that ignores its null data.
        unsafe { add(Some(nothing), std::ptr::null_mut()) };
    }
}

unsafe extern "C" fn nothing(_data: *mut c_void) {}
