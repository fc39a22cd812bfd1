//! The clock side of a lock, without any I/O: when an acquire retries or gives up
//! ([`Acquisition`]), the safe deadline and what the watchdog does next ([`Lease`]), and the
//! state of a hold ([`Hold`]). Both APIs drive these the same way.

use std::fmt;
use std::time::{Duration, Instant};

use redis::Value;

use crate::error::{Error, Failure, Result};
use crate::options::{Request, Wait};
use crate::proto;

/// Why a hold was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// LOCK.RENEW answered 0: released, expired, deleted or taken by someone else.
    RenewalRefused,
    /// No renewal was confirmed before the safe deadline (the server may still hold it).
    Deadline,
    /// The connection of an ephemeral hold closed: the server ended the hold.
    ConnectionClosed,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::RenewalRefused => {
                "renewal refused: the lock was released, expired, deleted or taken"
            }
            LostReason::Deadline => "no renewal confirmed before the safe deadline",
            LostReason::ConnectionClosed => {
                "connection closed: the server ended the ephemeral hold"
            }
        })
    }
}

/// `base + d`, or an error where the clock cannot go that far.
pub(crate) fn later(base: Instant, d: Duration) -> Result<Instant> {
    base.checked_add(d)
        .ok_or_else(|| Error::InvalidInput(format!("{d:?} from now is past the clock's range")))
}

/// `budget` from now, or a year from now where the clock cannot go that far (a budget is
/// the caller's setting: never a panic).
pub(crate) fn soon(budget: Duration) -> Instant {
    let now = Instant::now();
    later(now, budget)
        .or_else(|_| later(now, Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// The retry rule of every call: after a failure worth a retry at `now`, the `pause` before
/// the next try, or None where no more than the pause is left before `deadline` (None: no
/// deadline).
pub(crate) fn pause_before_retry(
    deadline: Option<Instant>,
    now: Instant,
    pause: Duration,
) -> Option<Duration> {
    match deadline.map(|d| d.saturating_duration_since(now)) {
        Some(left) if left <= pause => None,
        _ => Some(pause),
    }
}

/// After `failure` of a call with `deadline`: the pause before the next try, or the error to
/// raise (a final one at once; one worth a retry when the time is up).
pub(crate) fn after_failure(
    failure: Failure,
    deadline: Option<Instant>,
    pause: Duration,
) -> Result<Duration> {
    match failure {
        Failure::Fatal(e) => Err(e),
        Failure::Retry(e) => pause_before_retry(deadline, Instant::now(), pause).ok_or(e),
    }
}

/// `BLOCK` milliseconds for `remaining`: rounded up, at least 1.
pub(crate) fn block_ms(remaining: Duration) -> u64 {
    let ms =
        remaining.as_millis() + u128::from(!remaining.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms.max(1)).unwrap_or(u64::MAX)
}

/// One attempt of an acquire: the `BLOCK` to send and how long to wait for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub block_ms: Option<u64>,
    /// None: wait for the reply without limit.
    pub read_timeout: Option<Duration>,
}

/// The retry rules of one acquire.
#[derive(Debug, Clone)]
pub(crate) struct Acquisition {
    wait: Wait,
    /// None: wait forever.
    deadline: Option<Instant>,
    grace: Duration,
    pause: Duration,
    ttl: Duration,
}

/// Check an acquire's options and start its clock.
pub(crate) fn prepare(
    key: &[u8],
    opts: crate::options::LockOptions,
    settings: &crate::options::Settings,
) -> Result<(Request, Acquisition)> {
    let req = Request::new(key, opts, settings)?;
    let acq = Acquisition::start(
        Instant::now(),
        &req,
        settings.retry_budget,
        settings.wait_grace,
        settings.retry_pause,
    )?;
    Ok((req, acq))
}

impl Acquisition {
    pub(crate) fn start(
        now: Instant,
        req: &Request,
        retry_budget: Duration,
        grace: Duration,
        pause: Duration,
    ) -> Result<Acquisition> {
        let deadline = match req.wait {
            Wait::No => Some(later(now, retry_budget)?),
            Wait::For(w) => Some(later(now, w)?),
            Wait::Forever => None,
        };
        // The safe deadline of a grant, and its release, must be representable.
        later(now, req.ttl.saturating_mul(2))?;
        Ok(Acquisition {
            wait: req.wait,
            deadline,
            grace,
            pause,
            ttl: req.ttl,
        })
    }

    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(now))
    }

    /// The attempt to send at `now`.
    pub(crate) fn attempt(&self, now: Instant) -> Attempt {
        let remaining = self.remaining(now);
        match (self.wait, remaining) {
            (Wait::No, left) => Attempt {
                block_ms: None,
                read_timeout: Some(left.unwrap_or(self.pause).max(self.pause)),
            },
            (_, None) => Attempt {
                block_ms: Some(0),
                read_timeout: None,
            },
            (_, Some(left)) => {
                let ms = block_ms(left);
                Attempt {
                    block_ms: Some(ms),
                    read_timeout: Some(
                        Duration::from_millis(ms)
                            .saturating_add(self.grace)
                            .saturating_add(self.ttl),
                    ),
                }
            }
        }
    }

    /// After a failed attempt at `now`: the pause before the next one, or None to give up.
    pub(crate) fn retry_after(&self, now: Instant) -> Option<Duration> {
        pause_before_retry(self.deadline, now, self.pause)
    }

    /// After `failure`: the pause before the next attempt, or the error to raise.
    pub(crate) fn after(&self, failure: Failure) -> Result<Duration> {
        after_failure(failure, self.deadline, self.pause)
    }

    /// Whether a grant whose reply took `sent..received` must be confirmed by a RENEW at once
    /// (its reply took more than a third of the ttl, so the send time says little).
    pub(crate) fn needs_confirming(&self, sent: Instant, received: Instant) -> bool {
        received.saturating_duration_since(sent) > self.ttl / 3
    }
}

/// The next exchange of an attempt: one command on the attempt's connection, or the end.
#[derive(Debug)]
pub(crate) enum Exchange {
    Send {
        cmd: redis::Cmd,
        /// None: wait for the reply without limit.
        timeout: Option<Duration>,
    },
    Granted {
        fence: i64,
        /// The send time of the command that confirmed the grant.
        confirmed: Instant,
    },
    NotGranted,
}

/// One attempt of an acquire, without I/O: the ACQUIRE, then (for a grant whose reply came
/// late) the RENEW that confirms it, on the same connection.
pub(crate) struct AttemptFlow<'a> {
    req: &'a Request,
    acq: &'a Acquisition,
    confirm_within: Duration,
    /// The fence of a grant waiting for its confirming RENEW.
    fence: Option<i64>,
}

impl<'a> AttemptFlow<'a> {
    pub(crate) fn new(req: &'a Request, acq: &'a Acquisition, confirm_within: Duration) -> Self {
        AttemptFlow {
            req,
            acq,
            confirm_within,
            fence: None,
        }
    }

    /// The ACQUIRE of this attempt.
    pub(crate) fn first(&self, now: Instant) -> Exchange {
        let attempt = self.acq.attempt(now);
        Exchange::Send {
            cmd: proto::acquire_cmd(self.req, attempt.block_ms),
            timeout: attempt.read_timeout,
        }
    }

    /// The reply to the command sent at `sent`: what comes next.
    pub(crate) fn reply(
        &mut self,
        sent: Instant,
        reply: std::result::Result<Value, Failure>,
    ) -> std::result::Result<Exchange, Failure> {
        let v = reply?;
        if let Some(fence) = self.fence {
            let renewed = proto::parse_flag(&v).map_err(Failure::Fatal)?;
            // RENEW answered 0: the grant is already gone.
            return Ok(if renewed {
                Exchange::Granted {
                    fence,
                    confirmed: sent,
                }
            } else {
                Exchange::NotGranted
            });
        }
        let Some(fence) = proto::parse_grant(&v, &self.req.token).map_err(Failure::Fatal)? else {
            return Ok(Exchange::NotGranted);
        };
        if self.acq.needs_confirming(sent, Instant::now()) {
            self.fence = Some(fence);
            return Ok(Exchange::Send {
                cmd: proto::renew_cmd(&self.req.key, &self.req.token, self.req.ttl_ms),
                timeout: Some(self.confirm_within),
            });
        }
        Ok(Exchange::Granted {
            fence,
            confirmed: sent,
        })
    }
}

/// The attempt loop of an acquire, the same in both APIs (`AttemptFlow` decides, the API's
/// connections carry): expanded inside `impl Locks` of each, with `{async} {.await}
/// tokio::time::sleep` or `{} {} std::thread::sleep`. The names it uses (`Grant`, `query`,
/// `self.backend`...) are those of the API that expands it.
macro_rules! attempt_loop {
    ({$($kw:tt)*} {$($aw:tt)*} $sleep:path) => {
        /// Attempts until a grant, a null, a final error or the deadline. `waiting` keeps
        /// the wait connection of the attempt in progress; one left there was abandoned
        /// (settled here before a retry, by the give-up otherwise).
        $($kw)* fn attempts(
            &self,
            req: &Request,
            acq: &Acquisition,
            waiting: &crate::giveup::Waiting,
        ) -> Result<Option<Grant>> {
            loop {
                match self.attempt(req, acq, waiting)$($aw)* {
                    Ok(outcome) => return Ok(outcome),
                    Err(failure) => {
                        self.backend.forget_owners();
                        // Retry once the server has let go of the last wait connection: a
                        // grant it made to that one is then found by the retry (same token)
                        // as an idempotent re-grant, not waited behind. (One it could not be
                        // asked about stays, for the give-up.)
                        let abandoned = crate::timing::lock(waiting).clone();
                        if let Some(abandoned) = abandoned {
                            let retrying = matches!(failure, Failure::Retry(_))
                                && acq.retry_after(Instant::now()).is_some();
                            if retrying && self.backend.settle(&abandoned)$($aw)* {
                                *crate::timing::lock(waiting) = None;
                            }
                        }
                        // After the settling: the time it took counts.
                        let pause = acq.after(failure)?;
                        $sleep(pause)$($aw)*;
                    }
                }
            }
        }

        /// One attempt on its connection: a connection of its own for waits and ephemeral
        /// holds (a wait's learns its id first), else the plain one.
        $($kw)* fn attempt(
            &self,
            req: &Request,
            acq: &Acquisition,
            waiting: &crate::giveup::Waiting,
        ) -> std::result::Result<Option<Grant>, Failure> {
            let budget = self.backend.settings.retry_budget;
            let mut con = match req.dedicated() {
                true => {
                    let (mut con, client) = self.backend.dedicated(&req.key)$($aw)*?;
                    if req.wait != crate::options::Wait::No {
                        let id = self.backend.wait_id(&mut con)$($aw)*?;
                        *crate::timing::lock(waiting) =
                            Some(crate::giveup::Abandoned { client, id });
                    }
                    Some(con)
                }
                false => None,
            };
            let mut flow = AttemptFlow::new(req, acq, budget);
            let mut next = flow.first(Instant::now());
            loop {
                let (cmd, timeout) = match next {
                    Exchange::Send { cmd, timeout } => (cmd, timeout),
                    Exchange::NotGranted => {
                        *crate::timing::lock(waiting) = None;
                        return Ok(None);
                    }
                    Exchange::Granted { fence, confirmed } => {
                        *crate::timing::lock(waiting) = None;
                        return Ok(Some(Grant {
                            fence,
                            confirmed,
                            con,
                        }));
                    }
                };
                let sent = Instant::now();
                let reply = match con.as_mut() {
                    Some(c) => query(c, &cmd, timeout)$($aw)*,
                    None => {
                        let within = timeout.unwrap_or(budget);
                        self.backend.plain_once(&req.key, &cmd, within)$($aw)*
                    }
                };
                next = flow.reply(sent, reply)?;
            }
        }
    };
}
pub(crate) use attempt_loop;

/// What the watchdog does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing until then (or until told to stop).
    Sleep(Instant),
    /// Send a RENEW now, waiting at most this long for its reply.
    Renew(Duration),
    /// The safe deadline passed.
    Lost,
}

/// A granted lease on the local monotonic clock: the safe deadline and the renewal timer.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// ttl minus the margin: how long after a confirmed send time the hold is safe.
    life: Duration,
    renew_every: Option<Duration>,
    pause: Duration,
    safe_deadline: Instant,
    next_renew: Option<Instant>,
}

impl Lease {
    /// A lease confirmed by a command sent at `confirmed`.
    pub(crate) fn new(confirmed: Instant, req: &Request, pause: Duration) -> Lease {
        let life = req.ttl.saturating_sub(req.margin);
        let mut lease = Lease {
            life,
            renew_every: req.renew_every,
            pause,
            safe_deadline: confirmed,
            next_renew: None,
        };
        lease.confirmed(confirmed);
        lease
    }

    /// The instant the hold stops being safe to use unless renewed.
    pub(crate) fn safe_deadline(&self) -> Instant {
        self.safe_deadline
    }

    /// A RENEW sent at `sent` was answered 1.
    pub(crate) fn confirmed(&mut self, sent: Instant) {
        // An Instant that far in the future cannot be represented: keep the earlier deadline
        // (the safe side).
        let deadline = sent.checked_add(self.life).unwrap_or(self.safe_deadline);
        self.safe_deadline = self.safe_deadline.max(deadline);
        self.next_renew = self.renew_every.and_then(|every| sent.checked_add(every));
    }

    /// A RENEW failed at `now` without an answer: try again shortly.
    pub(crate) fn failed(&mut self, now: Instant) {
        if self.renew_every.is_some() {
            self.next_renew = now.checked_add(self.pause);
        }
    }

    pub(crate) fn next(&self, now: Instant) -> Step {
        if now >= self.safe_deadline {
            return Step::Lost;
        }
        match self.next_renew {
            Some(at) if now >= at => Step::Renew(self.safe_deadline - now),
            Some(at) => Step::Sleep(at.min(self.safe_deadline)),
            None => Step::Sleep(self.safe_deadline),
        }
    }
}

/// The state of a hold, as both APIs keep it behind a mutex.
#[derive(Debug)]
pub(crate) struct Hold {
    pub lease: Lease,
    pub lost: Option<LostReason>,
    pub released: bool,
}

impl Hold {
    pub(crate) fn new(lease: Lease) -> Hold {
        Hold {
            lease,
            lost: None,
            released: false,
        }
    }

    /// Mark it lost for `reason`; true if that is news (not lost or released before).
    pub(crate) fn lose(&mut self, reason: LostReason) -> bool {
        if self.lost.is_some() || self.released {
            return false;
        }
        self.lost = Some(reason);
        true
    }

    /// Mark it lost if the safe deadline has passed; true if that is news.
    pub(crate) fn check_deadline(&mut self, now: Instant) -> bool {
        now >= self.lease.safe_deadline() && self.lose(LostReason::Deadline)
    }

    /// Neither released nor lost, and its safe deadline not passed.
    pub(crate) fn is_held(&self, now: Instant) -> bool {
        !self.released && self.lost.is_none() && now < self.lease.safe_deadline()
    }

    /// Before a RENEW at `now`: how long its reply may take (the time left to the safe
    /// deadline), or None if it is no longer held; and whether it was just found lost.
    pub(crate) fn renew_window(&mut self, now: Instant) -> (Option<Duration>, bool) {
        let news = self.check_deadline(now);
        let left = self.is_held(now).then(|| self.lease.safe_deadline() - now);
        (left, news)
    }

    /// The outcome of a RENEW sent at `sent`.
    pub(crate) fn renewed(
        &mut self,
        sent: Instant,
        reply: std::result::Result<Value, Failure>,
        ephemeral: bool,
    ) -> Renewal {
        let mut out = Renewal {
            result: Ok(false),
            news: false,
            forget_owners: false,
        };
        match reply.map(|v| proto::parse_flag(&v)) {
            Ok(Ok(true)) => {
                self.lease.confirmed(sent);
                out.result = Ok(true);
            }
            Ok(Ok(false)) => out.news = self.lose(LostReason::RenewalRefused),
            Ok(Err(e)) | Err(Failure::Fatal(e)) => {
                self.lease.failed(Instant::now());
                out.result = Err(e);
            }
            // A late reply is dropped; the connection stays (an ephemeral hold is bound to it).
            Err(Failure::Retry(Error::Timeout(t))) => {
                self.lease.failed(Instant::now());
                out.result = Err(Error::Timeout(t));
            }
            Err(Failure::Retry(e)) => {
                out.forget_owners = true;
                if ephemeral {
                    out.news = self.lose(LostReason::ConnectionClosed);
                } else {
                    self.lease.failed(Instant::now());
                }
                out.result = Err(e);
            }
        }
        out
    }

    /// A RENEW could not be sent (no connection): retry shortly.
    pub(crate) fn not_sent(&mut self, f: Failure) -> Error {
        self.lease.failed(Instant::now());
        f.into_error()
    }

    /// Lost at the local safe deadline and not released: the server may still hold it (a
    /// RENEW paused on its way), so it deserves a release by token.
    pub(crate) fn lost_locally(&self) -> bool {
        self.lost == Some(LostReason::Deadline) && !self.released
    }

    /// A release begins: from now on it is not held. True if it was held until now.
    pub(crate) fn begin_release(&mut self) -> bool {
        let was = !self.released && self.lost.is_none();
        self.released = true;
        was
    }
}

/// What the held locks of both APIs keep: the request that was granted, its fence, and the
/// state of the hold.
#[derive(Debug)]
pub(crate) struct Core {
    pub req: Request,
    pub fence: i64,
    pub hold: std::sync::Mutex<Hold>,
}

impl Core {
    /// A hold of `req` granted with `fence`, confirmed by a command sent at `confirmed`.
    pub(crate) fn new(req: &Request, fence: i64, confirmed: Instant, pause: Duration) -> Core {
        Core {
            req: req.clone(),
            fence,
            hold: std::sync::Mutex::new(Hold::new(Lease::new(confirmed, req, pause))),
        }
    }

    /// Apply the outcome of a RENEW sent at `sent`.
    pub(crate) fn renewed(
        &self,
        sent: Instant,
        reply: std::result::Result<Value, Failure>,
    ) -> Renewal {
        lock(&self.hold).renewed(sent, reply, self.req.ephemeral)
    }

    /// `LOCK.RENEW` of this hold.
    pub(crate) fn renew_cmd(&self) -> redis::Cmd {
        proto::renew_cmd(&self.req.key, &self.req.token, self.req.ttl_ms)
    }

    /// `LOCK.RELEASE` of this hold.
    pub(crate) fn release_cmd(&self) -> redis::Cmd {
        proto::release_cmd(&self.req.key, &self.req.token)
    }
}

/// The read-only methods of a held lock, the same in both APIs: `self.shared.core` is its
/// [`Core`], and `self.shared.check_deadline()` fires its lost signal if the safe deadline
/// has passed.
macro_rules! held_accessors {
    () => {
        /// The lock's name (its key).
        pub fn name(&self) -> &[u8] {
            &self.shared.core.req.key
        }

        /// The owner token sent with every command of this hold.
        pub fn token(&self) -> &[u8] {
            &self.shared.core.req.token
        }

        /// The fencing number of this grant: pass it to the resource you protect.
        pub fn fence(&self) -> i64 {
            self.shared.core.fence
        }

        /// The lease asked for.
        pub fn ttl(&self) -> std::time::Duration {
            self.shared.core.req.ttl
        }

        /// Not released, not lost, and its safe deadline not passed.
        pub fn is_held(&self) -> bool {
            $crate::timing::lock(&self.shared.core.hold).is_held(std::time::Instant::now())
        }

        /// Why it was lost, if it was.
        pub fn lost_reason(&self) -> Option<$crate::timing::LostReason> {
            self.shared.check_deadline();
            $crate::timing::lock(&self.shared.core.hold).lost
        }

        /// The instant it stops being safe to use unless renewed (monotonic clock): the send
        /// time of the last confirmed ACQUIRE or RENEW, plus the ttl, minus the margin.
        pub fn safe_deadline(&self) -> std::time::Instant {
            $crate::timing::lock(&self.shared.core.hold)
                .lease
                .safe_deadline()
        }
    };
}
pub(crate) use held_accessors;

/// `Debug` for a held lock type of either API (name, fence, whether held; never the token).
macro_rules! held_debug {
    ($held:ty) => {
        impl std::fmt::Debug for $held {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Held")
                    .field("name", &String::from_utf8_lossy(&self.shared.core.req.key))
                    .field("fence", &self.shared.core.fence)
                    .field("held", &self.is_held())
                    .finish()
            }
        }
    };
}
pub(crate) use held_debug;

/// What a RENEW's outcome means for the hold and its connection.
#[derive(Debug)]
pub(crate) struct Renewal {
    pub result: Result<bool>,
    /// It was found lost just now: fire the lost signal.
    pub news: bool,
    /// The connection is broken: open another one next time, looking the key's owner up
    /// again (cluster).
    pub forget_owners: bool,
}

/// The result of `release()` from the reply of its RELEASE (`was_held`: not lost before).
/// A connection error on an ephemeral hold's own connection means the server has ended it.
pub(crate) fn release_result(
    reply: std::result::Result<Value, Failure>,
    was_held: bool,
    ephemeral: bool,
) -> Result<bool> {
    match reply {
        Ok(v) => Ok(was_held && proto::parse_flag(&v)?),
        Err(Failure::Retry(_)) if ephemeral || !was_held => Ok(false),
        Err(Failure::Fatal(_)) if !was_held => Ok(false),
        Err(f) => Err(f.into_error()),
    }
}

/// A std mutex's guard, also after a panic elsewhere (every critical section of this crate
/// leaves its data consistent).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{LockOptions, Settings};

    const MS: Duration = Duration::from_millis(1);

    fn request(opts: LockOptions) -> Request {
        Request::new(b"k", opts.ttl(900 * MS), &Settings::default()).unwrap()
    }

    #[test]
    fn budgets_never_overflow_the_clock() {
        assert!(soon(Duration::MAX) > Instant::now());
        assert!(soon(Duration::ZERO) <= Instant::now());
    }

    #[test]
    fn no_renew_once_a_release_began() {
        let t0 = Instant::now();
        let req = request(LockOptions::new());
        let mut hold = Hold::new(Lease::new(t0, &req, 50 * MS));
        assert!(hold.renew_window(t0).0.is_some());
        assert!(hold.begin_release());
        assert!(!hold.is_held(t0));
        assert_eq!(hold.renew_window(t0), (None, false));
        // A RENEW in flight when it began, answered 0: never "lost" after a release.
        assert!(!hold.renewed(t0, Ok(Value::Int(0)), false).news);
        assert_eq!(hold.lost, None);
        assert!(!hold.begin_release());
    }

    #[test]
    fn block_rounds_up() {
        assert_eq!(block_ms(Duration::ZERO), 1);
        assert_eq!(block_ms(Duration::from_micros(1)), 1);
        assert_eq!(block_ms(Duration::from_micros(1001)), 2);
        assert_eq!(block_ms(2000 * MS), 2000);
        assert_eq!(block_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn attempts_and_retries() {
        let now = Instant::now();
        let grace = 1000 * MS;
        let pause = 50 * MS;
        let no_wait = request(LockOptions::new());
        let a = Acquisition::start(now, &no_wait, 1000 * MS, grace, pause).unwrap();
        assert_eq!(a.attempt(now).block_ms, None);
        assert_eq!(a.attempt(now).read_timeout, Some(1000 * MS));
        assert_eq!(a.retry_after(now + 900 * MS), Some(pause));
        assert_eq!(a.retry_after(now + 960 * MS), None);

        let waits = request(LockOptions::new().wait(Duration::from_micros(2_500_300)));
        let a = Acquisition::start(now, &waits, 1000 * MS, grace, pause).unwrap();
        assert_eq!(
            a.attempt(now),
            Attempt {
                block_ms: Some(2501),
                read_timeout: Some((2501 + 1000 + 900) * MS)
            }
        );
        assert_eq!(a.attempt(now + 2400 * MS).block_ms, Some(101));
        assert_eq!(a.attempt(now + 9000 * MS).block_ms, Some(1));
        assert_eq!(a.retry_after(now + 2400 * MS), Some(pause));
        assert_eq!(a.retry_after(now + 2460 * MS), None);

        let forever = request(LockOptions::new().wait_forever());
        let a = Acquisition::start(now, &forever, 1000 * MS, grace, pause).unwrap();
        assert_eq!(
            a.attempt(now),
            Attempt {
                block_ms: Some(0),
                read_timeout: None
            }
        );
        assert_eq!(a.retry_after(now + 1_000_000 * MS), Some(pause));
        assert!(!a.needs_confirming(now, now + 300 * MS));
        assert!(a.needs_confirming(now, now + 301 * MS));
    }

    #[test]
    fn safe_deadline_and_watchdog_steps() {
        let req = request(LockOptions::new());
        assert_eq!(req.margin, Duration::from_micros(11_000));
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, &req, 50 * MS);
        let safe = t0 + Duration::from_micros(889_000);
        assert_eq!(lease.safe_deadline(), safe);
        assert_eq!(lease.next(t0), Step::Sleep(t0 + 300 * MS));
        assert_eq!(
            lease.next(t0 + 300 * MS),
            Step::Renew(Duration::from_micros(589_000))
        );
        lease.failed(t0 + 400 * MS);
        assert_eq!(lease.next(t0 + 410 * MS), Step::Sleep(t0 + 450 * MS));
        lease.failed(t0 + 880 * MS);
        assert_eq!(lease.next(t0 + 880 * MS), Step::Sleep(safe));
        assert_eq!(lease.next(safe), Step::Lost);
        lease.confirmed(t0 + 500 * MS);
        assert_eq!(lease.safe_deadline(), safe + 500 * MS);
        assert_eq!(lease.next(t0 + 500 * MS), Step::Sleep(t0 + 800 * MS));
        // An older confirmation never moves the deadline back.
        lease.confirmed(t0 + 100 * MS);
        assert_eq!(lease.safe_deadline(), safe + 500 * MS);
    }

    #[test]
    fn without_watchdog_only_the_deadline() {
        let req = request(LockOptions::new().watchdog(false));
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, &req, 50 * MS);
        assert_eq!(lease.next(t0), Step::Sleep(lease.safe_deadline()));
        lease.failed(t0);
        assert_eq!(lease.next(t0), Step::Sleep(lease.safe_deadline()));
        lease.confirmed(t0 + 200 * MS);
        assert_eq!(
            lease.next(t0 + 300 * MS),
            Step::Sleep(t0 + 200 * MS + Duration::from_micros(889_000))
        );
    }

    fn grant(token: &str, fence: i64) -> std::result::Result<Value, Failure> {
        Ok(Value::Array(vec![
            Value::BulkString(token.as_bytes().to_vec()),
            Value::Int(fence),
        ]))
    }

    fn is_send(e: &Exchange, name: &str) -> bool {
        matches!(e, Exchange::Send { cmd, .. }
            if cmd.args_iter().next() == Some(redis::Arg::Simple(name.as_bytes())))
    }

    #[test]
    fn attempt_flow_confirms_late_grants() {
        let req = request(LockOptions::new().token("t").wait(5000 * MS));
        let now = Instant::now();
        let acq = Acquisition::start(now, &req, 1000 * MS, 1000 * MS, 50 * MS).unwrap();
        // A prompt grant: confirmed by its own send time.
        let mut flow = AttemptFlow::new(&req, &acq, 1000 * MS);
        assert!(is_send(&flow.first(now), "LOCK.ACQUIRE"));
        let sent = Instant::now();
        match flow.reply(sent, grant("t", 7)).unwrap() {
            Exchange::Granted { fence, confirmed } => assert_eq!((fence, confirmed), (7, sent)),
            other => panic!("{other:?}"),
        }
        // A late one (sent more than ttl/3 ago): a RENEW confirms it, or finds it gone.
        for (renewed, granted) in [(1, true), (0, false)] {
            let mut flow = AttemptFlow::new(&req, &acq, 1000 * MS);
            let next = flow.reply(now - 400 * MS, grant("t", 8)).unwrap();
            assert!(is_send(&next, "LOCK.RENEW"));
            let renew_sent = Instant::now();
            match flow.reply(renew_sent, Ok(Value::Int(renewed))).unwrap() {
                Exchange::Granted { fence, confirmed } => {
                    assert!(granted);
                    assert_eq!((fence, confirmed), (8, renew_sent));
                }
                Exchange::NotGranted => assert!(!granted),
                other => panic!("{other:?}"),
            }
        }
        let mut flow = AttemptFlow::new(&req, &acq, 1000 * MS);
        assert!(matches!(
            flow.reply(now, Ok(Value::Nil)).unwrap(),
            Exchange::NotGranted
        ));
        assert!(matches!(
            flow.reply(now, grant("someone-else", 9)),
            Err(Failure::Fatal(Error::Protocol(_)))
        ));
        // Retries: a connection error waits a pause, a server error is final.
        assert_eq!(
            acq.after(Failure::Retry(Error::Timeout(MS))).unwrap(),
            50 * MS
        );
        assert!(matches!(
            acq.after(Failure::Fatal(Error::InvalidInput("x".into()))),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn renewal_outcomes() {
        let t0 = Instant::now();
        let req = request(LockOptions::new());
        let mut hold = Hold::new(Lease::new(t0, &req, 50 * MS));
        let ok = hold.renewed(t0 + 100 * MS, Ok(Value::Int(1)), false);
        assert!(ok.result.unwrap() && !ok.news && !ok.forget_owners);
        assert_eq!(
            hold.lease.safe_deadline(),
            t0 + 100 * MS + Duration::from_micros(889_000)
        );
        let timeout = hold.renewed(t0, Err(Failure::Retry(Error::Timeout(MS))), true);
        assert!(timeout.result.is_err() && !timeout.forget_owners && hold.lost.is_none());
        let io: redis::RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        let broken = hold.renewed(t0, Err(crate::error::classify(io.clone())), false);
        assert!(broken.forget_owners && !broken.news && hold.lost.is_none());
        let ephemeral = hold.renewed(t0, Err(crate::error::classify(io)), true);
        assert!(ephemeral.news);
        assert_eq!(hold.lost, Some(LostReason::ConnectionClosed));

        let mut refused = Hold::new(Lease::new(t0, &req, 50 * MS));
        assert!(refused.renewed(t0, Ok(Value::Int(0)), false).news);
        assert_eq!(refused.lost, Some(LostReason::RenewalRefused));
        assert_eq!(refused.renew_window(t0), (None, false));
        assert!(!refused.begin_release());
    }

    #[test]
    fn release_results() {
        let io = || {
            let e: redis::RedisError =
                std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
            Err(crate::error::classify(e))
        };
        assert!(release_result(Ok(Value::Int(1)), true, false).unwrap());
        assert!(!release_result(Ok(Value::Int(0)), true, false).unwrap());
        assert!(!release_result(Ok(Value::Int(1)), false, false).unwrap());
        assert!(release_result(io(), true, false).is_err());
        assert!(!release_result(io(), false, false).unwrap());
        assert!(!release_result(io(), true, true).unwrap());
    }

    #[test]
    fn hold_states() {
        let req = request(LockOptions::new());
        let t0 = Instant::now();
        let mut hold = Hold::new(Lease::new(t0, &req, 50 * MS));
        assert!(hold.is_held(t0));
        assert!(!hold.check_deadline(t0));
        assert!(!hold.is_held(t0 + 889 * MS));
        assert!(hold.check_deadline(t0 + 889 * MS));
        assert_eq!(hold.lost, Some(LostReason::Deadline));
        assert!(!hold.lose(LostReason::RenewalRefused));
        let mut released = Hold::new(Lease::new(t0, &req, 50 * MS));
        released.released = true;
        assert!(!released.lose(LostReason::RenewalRefused));
        assert!(!released.is_held(t0));
        assert!(LostReason::Deadline.to_string().contains("safe deadline"));
    }
}
