//! A held lock of the blocking API, its watchdog thread and its lost signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Connection;

use super::conn::{query, Backend};
use crate::error::{Failure, Result};
use crate::options::Request;
use crate::timing::{lock, release_result, Core, LostReason, Step};

/// What a held lock shares with its watchdog thread and its lost signals.
pub(crate) struct Shared {
    backend: Arc<Backend>,
    core: Core,
    /// Notified when the hold is lost or the watchdog must stop.
    changed: Condvar,
    stop: AtomicBool,
    /// The connection for RENEW (the pinned one of an ephemeral hold). Its mutex also makes
    /// `release` wait for a RENEW in flight.
    con: Mutex<Option<Connection>>,
}

/// A granted lock. It is its own guard: dropped without [`Held::release`], it stops its
/// watchdog and releases (best effort, bounded by the retry budget).
pub struct Held {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    finished: bool,
}

/// The lost signal of a [`Held`]: set when the hold is lost (never after a release). Cheap
/// to clone and to hand to other threads.
#[derive(Clone)]
pub struct LostSignal {
    shared: Arc<Shared>,
}

pub(crate) struct Grant {
    pub fence: i64,
    pub confirmed: Instant,
    pub con: Option<Connection>,
}

impl Held {
    pub(crate) fn start(backend: Arc<Backend>, req: &Request, grant: Grant) -> Result<Held> {
        let pause = backend.settings.retry_pause;
        let shared = Arc::new(Shared {
            backend,
            core: Core::new(req, grant.fence, grant.confirmed, pause),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            con: Mutex::new(grant.con),
        });
        // The thread renews (unless `watchdog(false)`) and, at the safe deadline, sends the
        // release by token; the signal itself reads the clock whenever it is asked.
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("fencelock-watchdog".into())
            .spawn(move || watchdog(&worker));
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                drop(Held {
                    shared,
                    thread: None,
                    finished: false,
                });
                return Err(crate::error::Error::InvalidInput(format!(
                    "cannot start the watchdog thread: {e}"
                )));
            }
        };
        Ok(Held {
            shared,
            thread,
            finished: false,
        })
    }

    crate::timing::held_accessors!();

    /// The lost signal, to check or wait on (also from other threads).
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            shared: self.shared.clone(),
        }
    }

    /// One RENEW now (for `watchdog(false)`), bounded by the time left to the safe deadline:
    /// true if renewed; false (and the lost signal fires) if the server refused it, or if it was
    /// already lost or released.
    pub fn renew(&self) -> Result<bool> {
        self.shared.renew()
    }

    /// Stop the watchdog (waiting for a RENEW in flight), then `LOCK.RELEASE`: true only if
    /// the server answered 1. False if it was lost (a best-effort release is still sent). Errs
    /// only if the server could not be reached within the retry budget (the lock then ends by
    /// its ttl).
    pub fn release(mut self) -> Result<bool> {
        self.finish()
    }

    fn finish(&mut self) -> Result<bool> {
        self.finished = true;
        // From now on no RENEW is sent (the watchdog's and `renew()` find it released).
        let was_held = {
            let mut hold = lock(&self.shared.core.hold);
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.changed.notify_all();
            hold.begin_release()
        };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let shared = &self.shared;
        // Any RENEW in flight (manual too) ends before the RELEASE.
        let mut con = lock(&shared.con);
        let release = shared.core.release_cmd();
        let budget = shared.backend.settings.retry_budget;
        let ephemeral = shared.core.req.ephemeral;
        let reply = if !ephemeral {
            drop(con);
            shared
                .backend
                .plain(&shared.core.req.key, &release, budget)
                .map_err(Failure::Fatal)
        } else if let Some(mut pinned) = con.take() {
            // Only the pinned connection releases what it holds (it is closed when dropped
            // here).
            query(&mut pinned, &release, Some(budget))
        } else {
            // Its connection broke: the server has ended the hold already.
            return Ok(false);
        };
        release_result(reply, was_held, ephemeral)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish();
        }
    }
}

crate::timing::held_debug!(Held);

impl LostSignal {
    /// Whether the hold is lost (its safe deadline passed without a confirmed renewal, a
    /// renewal was refused, or its ephemeral connection closed).
    pub fn is_lost(&self) -> bool {
        self.shared.check_deadline();
        lock(&self.shared.core.hold).lost.is_some()
    }

    /// Why it was lost, if it was.
    pub fn reason(&self) -> Option<LostReason> {
        self.shared.check_deadline();
        lock(&self.shared.core.hold).lost
    }

    /// Wait up to `timeout` for the loss: true if lost.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let end = Instant::now().checked_add(timeout);
        let mut hold = lock(&self.shared.core.hold);
        loop {
            let now = Instant::now();
            if hold.check_deadline(now) {
                self.shared.changed.notify_all();
            }
            if hold.lost.is_some() {
                return true;
            }
            if end.is_some_and(|end| end <= now) {
                return false;
            }
            // A released hold is never lost: only the timeout ends the wait.
            let deadline = (!hold.released).then(|| hold.lease.safe_deadline());
            let until = match (end, deadline) {
                (Some(end), Some(deadline)) => end.min(deadline),
                (Some(at), None) | (None, Some(at)) => at,
                (None, None) => now + Duration::from_secs(3600),
            };
            hold = self
                .shared
                .changed
                .wait_timeout(hold, until.saturating_duration_since(now))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

impl Shared {
    fn lose(&self, reason: LostReason) -> bool {
        let news = lock(&self.core.hold).lose(reason);
        if news {
            self.changed.notify_all();
        }
        news
    }

    fn check_deadline(&self) {
        if lock(&self.core.hold).check_deadline(Instant::now()) {
            self.changed.notify_all();
        }
    }

    /// One RENEW on the hold's own connection, bounded by the time left.
    fn renew(&self) -> Result<bool> {
        let mut slot = lock(&self.con);
        let (left, news) = lock(&self.core.hold).renew_window(Instant::now());
        if news {
            self.changed.notify_all();
        }
        if left.is_none() {
            return Ok(false);
        }
        if slot.is_none() && self.core.req.ephemeral {
            self.lose(LostReason::ConnectionClosed);
            return Ok(false);
        }
        if slot.is_none() {
            let (con, _) = self
                .backend
                .dedicated(&self.core.req.key)
                .map_err(|f| self.backend.not_sent(&self.core, f))?;
            *slot = Some(con);
        }
        let Some(con) = slot.as_mut() else {
            return Ok(false);
        };
        // Opening the connection took some of the time left.
        let safe_deadline = lock(&self.core.hold).lease.safe_deadline();
        let sent = Instant::now();
        let within = safe_deadline.saturating_duration_since(sent);
        let outcome = self
            .core
            .renewed(sent, query(con, &self.core.renew_cmd(), Some(within)));
        if outcome.news {
            self.changed.notify_all();
        }
        // A connection that broke is replaced; so is one that timed out, unless an ephemeral
        // hold is bound to it (the sync connection skips the late reply).
        if outcome.forget_owners || (!self.core.req.ephemeral && outcome.result.is_err()) {
            *slot = None;
            self.backend.forget_owners();
        }
        outcome.result
    }
}

/// Renew while held; when lost at the local deadline, release by token.
fn watchdog(shared: &Shared) {
    renew_until_lost(shared);
    if shared.core.req.ephemeral && lock(&shared.core.hold).lost.is_some() {
        // Lost: close the pinned connection (which also ends the hold on the server).
        drop(lock(&shared.con).take());
    }
    if lock(&shared.core.hold).lost_locally() {
        let budget = shared.backend.settings.retry_budget;
        let _ = shared
            .backend
            .plain(&shared.core.req.key, &shared.core.release_cmd(), budget);
    }
}

/// Renew until stopped, released or lost; at the safe deadline, fire the lost signal.
fn renew_until_lost(shared: &Shared) {
    loop {
        let step = {
            let hold = lock(&shared.core.hold);
            if shared.stop.load(Ordering::SeqCst) || hold.released || hold.lost.is_some() {
                return;
            }
            match hold.lease.next(Instant::now()) {
                Step::Sleep(until) => {
                    let wait = until.saturating_duration_since(Instant::now());
                    let _ = shared.changed.wait_timeout(hold, wait);
                    continue;
                }
                step => step,
            }
        };
        if step == Step::Lost {
            shared.lose(LostReason::Deadline);
            return;
        }
        if let Ok(false) = shared.renew() {
            return;
        }
    }
}
