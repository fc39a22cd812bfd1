//! A held lock of the async API and its watchdog task.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conn::{query, Backend};
use crate::error::{timed_out, Failure, Result};
use crate::options::Request;
use crate::timing::{lock, release_result, Core, LostReason, Step};

/// What a held lock shares with its watchdog task.
pub(crate) struct Shared {
    backend: Arc<Backend>,
    core: Core,
    lost_tx: watch::Sender<bool>,
    /// The connection for RENEW (the pinned one of an ephemeral hold). Its async mutex also
    /// makes `release` wait for a RENEW in flight.
    con: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

/// A granted lock. It is its own guard: dropped without [`Held::release`], it stops its
/// watchdog and releases in the background (best effort, on the runtime that acquired it).
pub struct Held {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Handle>,
    finished: bool,
}

/// A grant as the acquire loop got it.
pub(crate) struct Grant {
    pub fence: i64,
    pub confirmed: Instant,
    pub con: Option<MultiplexedConnection>,
}

impl Held {
    pub(crate) fn start(backend: Arc<Backend>, req: &Request, grant: Grant) -> Held {
        let pause = backend.settings.retry_pause;
        let (lost_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            backend,
            core: Core::new(req, grant.fence, grant.confirmed, pause),
            lost_tx,
            con: tokio::sync::Mutex::new(grant.con),
        });
        let (stop, stop_rx) = watch::channel(false);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let task = runtime
            .as_ref()
            .map(|rt| rt.spawn(watchdog(shared.clone(), stop_rx)));
        Held {
            shared,
            stop,
            task,
            runtime,
            finished: false,
        }
    }

    crate::timing::held_accessors!();

    /// Resolves when the hold is lost (never after a release).
    pub async fn lost(&self) {
        let mut rx = self.shared.lost_tx.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// The lost signal as a watch channel: `true` once lost.
    pub fn lost_watch(&self) -> watch::Receiver<bool> {
        self.shared.lost_tx.subscribe()
    }

    /// One RENEW now (for `watchdog(false)`), bounded by the time left to the safe deadline:
    /// true if renewed; false (and the lost signal fires) if the server refused it, or if it was
    /// already lost or released.
    pub async fn renew(&self) -> Result<bool> {
        self.shared.renew().await
    }

    /// Stop the watchdog (waiting for a RENEW in flight), then `LOCK.RELEASE`: true only if
    /// the server answered 1. False if it was lost (a best-effort release is still sent). Errs
    /// only if the server could not be reached within the retry budget (the lock then ends by
    /// its ttl).
    ///
    /// The release runs as a task of its own: dropping this future does not stop it.
    pub async fn release(mut self) -> Result<bool> {
        self.finished = true;
        let release = self.begin_release();
        match &self.runtime {
            Some(rt) => rt.spawn(release).await.unwrap_or(Ok(false)),
            None => release.await,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let release = self.begin_release();
        if let Some(rt) = &self.runtime {
            rt.spawn(async move {
                let _ = release.await;
            });
        }
    }
}

crate::timing::held_debug!(Held);

impl Held {
    /// From now on no RENEW is sent (the watchdog's and `renew()` find it released); the
    /// rest of the release, to run.
    fn begin_release(&mut self) -> impl std::future::Future<Output = Result<bool>> + 'static {
        let was_held = lock(&self.shared.core.hold).begin_release();
        let _ = self.stop.send(true);
        finish(self.shared.clone(), self.task.take(), was_held)
    }
}

/// Wait for the watchdog to end, then release.
async fn finish(shared: Arc<Shared>, task: Option<JoinHandle<()>>, was_held: bool) -> Result<bool> {
    if let Some(task) = task {
        let _ = task.await;
    }
    // Any RENEW in flight (manual too) ends before the RELEASE.
    let mut con = shared.con.lock().await;
    let release = shared.core.release_cmd();
    let budget = shared.backend.settings.retry_budget;
    let reply = match (shared.core.req.ephemeral, con.take()) {
        // Only the pinned connection releases what it holds (closed when dropped here); if it
        // broke, the server has ended the hold already.
        (true, Some(mut pinned)) => query(&mut pinned, &release, Some(budget)).await,
        (true, None) => return Ok(false),
        (false, _) => {
            drop(con);
            shared
                .backend
                .plain(&shared.core.req.key, &release, budget)
                .await
                .map_err(Failure::Fatal)
        }
    };
    release_result(reply, was_held, shared.core.req.ephemeral)
}

impl Shared {
    fn lose(&self, reason: LostReason) -> bool {
        let news = lock(&self.core.hold).lose(reason);
        if news {
            self.lost_tx.send_replace(true);
        }
        news
    }

    fn check_deadline(&self) {
        if lock(&self.core.hold).check_deadline(Instant::now()) {
            self.lost_tx.send_replace(true);
        }
    }

    /// One RENEW on the hold's own connection, bounded by the time left.
    async fn renew(&self) -> Result<bool> {
        let mut con = self.con.lock().await;
        let (left, news) = lock(&self.core.hold).renew_window(Instant::now());
        self.signal(news);
        let Some(left) = left else {
            return Ok(false);
        };
        let mut c = match con.take() {
            Some(c) => c,
            None if self.core.req.ephemeral => {
                self.lose(LostReason::ConnectionClosed);
                return Ok(false);
            }
            None => {
                let opening = self.backend.dedicated(&self.core.req.key);
                match tokio::time::timeout(left, opening).await {
                    Ok(Ok((c, _))) => c,
                    Ok(Err(f)) => return Err(self.backend.not_sent(&self.core, f)),
                    Err(_) => return Err(self.backend.not_sent(&self.core, timed_out(left))),
                }
            }
        };
        // Opening the connection took some of the time left: the reply may take the rest.
        let safe_deadline = lock(&self.core.hold).lease.safe_deadline();
        let sent = Instant::now();
        let within = safe_deadline.saturating_duration_since(sent);
        if within.is_zero() {
            *con = Some(c);
            return Err(lock(&self.core.hold).not_sent(timed_out(left)));
        }
        let outcome = self.core.renewed(
            sent,
            query(&mut c, &self.core.renew_cmd(), Some(within)).await,
        );
        self.signal(outcome.news);
        if outcome.forget_owners {
            self.backend.forget_owners();
        } else {
            *con = Some(c);
        }
        outcome.result
    }

    fn signal(&self, news: bool) {
        if news {
            self.lost_tx.send_replace(true);
        }
    }
}

/// Renew while held; when lost at the local deadline, release by token.
async fn watchdog(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    renew_until_lost(&shared, &mut stop).await;
    if shared.core.req.ephemeral && lock(&shared.core.hold).lost.is_some() {
        // Lost: close the pinned connection (which also ends the hold on the server).
        drop(shared.con.lock().await.take());
    }
    if lock(&shared.core.hold).lost_locally() {
        let budget = shared.backend.settings.retry_budget;
        let _ = shared
            .backend
            .plain(&shared.core.req.key, &shared.core.release_cmd(), budget)
            .await;
    }
}

/// Renew until stopped, released or lost; at the safe deadline, fire the lost signal.
async fn renew_until_lost(shared: &Shared, stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let step = {
            let hold = lock(&shared.core.hold);
            if hold.released || hold.lost.is_some() {
                return;
            }
            hold.lease.next(Instant::now())
        };
        match step {
            Step::Lost => {
                shared.lose(LostReason::Deadline);
                return;
            }
            Step::Sleep(until) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = stop.changed() => return,
                }
            }
            Step::Renew(_) => {
                if let Ok(false) = shared.renew().await {
                    return;
                }
            }
        }
    }
}
