//! The module's one state, owned here: the fence clock, the hand-off machine (waiters, grants
//! in flight, timers, deferred work), the bindings of ephemeral holds to their connections,
//! and the few facts the callbacks share. It lives on the
//! server's main thread, where every command, callback, timer and event runs.
//!
//! Two kinds of values live elsewhere, for the server's sake: the counters of `INFO lock`
//! (atomics, as the type's `free` can run on a background thread) and the settings (statics
//! the server's config API writes to directly), with the one fact derived from them here,
//! whether eviction is possible.
//!
//! The state is only ever borrowed for pure work, never across a call into the server, which
//! could call back into the module. A borrow that finds the state busy is a bug: it is logged,
//! the update does not happen, and the caller gets an error or the safe answer its query names.

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use lock_core::bindings::Bindings;
use lock_core::fence::FenceClock;
use lock_core::handoff::HandOff;
use lock_core::queue::LockId;
use lock_core::{LockError, LockResult};
use redis_module::{raw, Context};

use crate::ffi::api::api;
use crate::ffi::block::Blocked;

pub struct State {
    pub fence: FenceClock,
    pub handoff: HandOff<Blocked>,
    /// Which connection each ephemeral hold ends with (on a primary; never saved).
    pub bindings: Bindings,
    /// Since when (Unix ms) this server serves clients: while it loads data it does not, and a
    /// lock whose deadline passed before it served (while the server was down, or during the
    /// load) did not expire in its care, so it is neither counted nor notified as expired.
    pub serving_since_ms: i64,
    /// Redis 7.0: lock keys whose `expire` event waits for the 0 ms timer.
    pub expiry_after_command: Vec<LockId>,
    /// Shared locks of several holders loaded from a file or a full sync: looked at when the
    /// load ends, so their holders leave at their deadlines.
    pub loaded_shared: Vec<LockId>,
}

impl State {
    fn new() -> Self {
        State {
            fence: FenceClock::new(),
            handoff: HandOff::new(),
            bindings: Bindings::new(),
            serving_since_ms: i64::MAX,
            expiry_after_command: Vec::new(),
            loaded_shared: Vec::new(),
        }
    }

    /// Nobody waits for any lock and no hold is bound to a connection: a lock key that goes
    /// leaves nothing to serve or unbind.
    pub fn quiet(&self) -> bool {
        !self.handoff.anyone_waiting() && self.bindings.is_empty()
    }
}

/// The state's one home: a static rather than a thread-local, whose every access from a
/// `cdylib` is a call into the dynamic linker (about a tenth of the module's own cost per
/// command, over the few borrows a command makes). `busy` does what a `RefCell`'s flag does.
struct Home {
    busy: Cell<bool>,
    state: UnsafeCell<Option<State>>,
    /// What `replacing_live` is doing: read by the unlink callback without a borrow.
    replacing: Cell<Replacing>,
}

// SAFETY: the server calls this module's commands, callbacks, timers and events on its main
// thread, one at a time, and the module starts no thread of its own. The one callback the
// server may run elsewhere, the type's `free` (lazy freeing), never touches the state.
unsafe impl Sync for Home {}

static STATE: Home = Home {
    busy: Cell::new(false),
    state: UnsafeCell::new(None),
    replacing: Cell::new(Replacing::No),
};

/// Ends a borrow of the state, also when the borrower panics (the panic guards catch it, and
/// the next command must find the state free).
struct Borrow;

impl Drop for Borrow {
    fn drop(&mut self) {
        STATE.busy.set(false);
    }
}

thread_local! {
    /// The module's own context for timers and logs outside any command, made once at load.
    /// Beside the state rather than in it, so a failed borrow can still be logged.
    static DETACHED: Cell<*mut raw::RedisModuleCtx> = const { Cell::new(ptr::null_mut()) };
}

/// Make the module's detached context (at load).
pub fn init(ctx: &Context) -> LockResult<()> {
    let detached = api!(RedisModule_GetDetachedThreadSafeContext)?;
    // SAFETY: called during module load on the main thread.
    DETACHED.with(|cell| cell.set(unsafe { detached(ctx.ctx) }));
    Ok(())
}

/// The module's own context, for timers started outside a command (the unlink callback, a
/// blocked client's callbacks) and for logging there.
pub fn detached() -> Option<Context> {
    let ctx = DETACHED.with(Cell::get);
    (!ctx.is_null()).then(|| Context::new(ctx))
}

/// A warning in the server log from anywhere (the detached context names the module).
pub fn log_warning(message: &str) {
    if let Some(ctx) = detached() {
        ctx.log_warning(message);
    }
}

/// Run `f` on the state. Fails, after logging why, only if the state is already borrowed.
#[inline(always)]
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> LockResult<R> {
    if STATE.busy.replace(true) {
        return Err(re_entered());
    }
    let _borrow = Borrow;
    // SAFETY: only the main thread gets here (see `Home`), and `busy` makes this the one
    // reference to the state until `_borrow` ends it.
    let state = match unsafe { &mut *STATE.state.get() } {
        Some(state) => state,
        empty => first_use(empty),
    };
    Ok(f(state))
}

#[cold]
fn re_entered() -> LockError {
    log_warning(
        "lock: internal error: the module's state was re-entered; an update was lost \
         (please report this)",
    );
    LockError::Internal("module state re-entered".into())
}

#[cold]
fn first_use(empty: &mut Option<State>) -> &mut State {
    empty.insert(State::new())
}

/// `with` for updates whose caller has nothing to do on failure (already logged by `with`).
pub fn update(f: impl FnOnce(&mut State)) {
    with(f).unwrap_or_default()
}

/// Nobody waits for any lock and no hold is bound to a connection. If the state cannot be
/// read: false, so the caller takes the careful path.
#[inline(always)]
pub fn quiet() -> bool {
    with(|s| s.quiet()).unwrap_or(false)
}

/// What the module's own write of a lock key tells the type's unlink callback, which the
/// write brings.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Replacing {
    /// Not the module's write of a live lock: an expiry, a `DEL`, an overwrite.
    No,
    /// The module replaces or deletes a lock it found live (a release, a take-back, a grant
    /// over it): not an expiry, even if the clock passed its deadline meanwhile.
    Live,
    /// `Live`, while nobody waits and nothing is bound: nothing to count, notify, serve or
    /// unbind (nearly every RELEASE).
    LiveQuiet,
}

/// Run `write`, the module's own replacement or deletion of a live lock (`quiet`: while the
/// state is `quiet`), telling the unlink callback so through `replacing`, which it reads
/// without borrowing the state.
#[inline(always)]
pub fn replacing_live<R>(quiet: bool, write: impl FnOnce() -> R) -> R {
    /// Ends the write's mark also when `write` panics.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            STATE.replacing.set(Replacing::No);
        }
    }
    STATE.replacing.set(match quiet {
        true => Replacing::LiveQuiet,
        false => Replacing::Live,
    });
    let _reset = Reset;
    write()
}

/// What the module's write running now, if any, does (`replacing_live`).
#[inline(always)]
pub fn replacing() -> Replacing {
    STATE.replacing.get()
}

/// Whether any client waits for any lock. If the state cannot be read: true, so the caller
/// takes the careful path.
#[inline(always)]
pub fn anyone_waiting() -> bool {
    with(|s| s.handoff.anyone_waiting()).unwrap_or(true)
}

/// Whether clients wait for the lock `id`. If the state cannot be read: false (no hand-off is
/// attempted; the waiters are served at the holder's deadline by its timer).
pub fn has_waiters(id: &LockId) -> bool {
    with(|s| s.handoff.has_waiters(id)).unwrap_or(false)
}

/// How many clients wait for the lock `id` (0 if the state cannot be read).
pub fn waiters(id: &LockId) -> usize {
    with(|s| s.handoff.waiters(id)).unwrap_or(0)
}

/// How many clients wait, over all locks (0 if the state cannot be read).
pub fn total_waiters() -> usize {
    with(|s| s.handoff.total_waiters()).unwrap_or(0)
}

/// Whether the server may evict keys (maxmemory with a policy other than noeviction), as the
/// last config event left it. An atomic beside the state rather than in it: every ACQUIRE
/// reads it, and it is a fact about the settings, not about locks.
static EVICTION_POSSIBLE: AtomicBool = AtomicBool::new(false);

pub fn eviction_possible() -> bool {
    EVICTION_POSSIBLE.load(Ordering::Relaxed)
}

/// Record whether eviction is possible now; whether it was before.
pub fn set_eviction_possible(possible: bool) -> bool {
    EVICTION_POSSIBLE.swap(possible, Ordering::Relaxed)
}

/// Whether some grant's delivery is open. If the state cannot be read: true, so a retry or
/// renewal still marks its owner seen.
pub fn grants_unsettled() -> bool {
    with(|s| s.handoff.unsettled()).unwrap_or(true)
}
