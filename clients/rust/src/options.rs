//! What a caller asks for ([`LockOptions`], [`Settings`]), its token, ([`LockOptions`], [`Settings`]) and its check before anything is
//! sent: a [`Request`] holds only valid, whole-millisecond values.

use std::time::Duration;

use crate::error::{Error, Result};

/// How long `acquire` waits for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// One attempt, no waiting (connection errors are still retried within the retry budget).
    #[default]
    No,
    /// Wait up to this long, queued on the server (`BLOCK ms`).
    For(Duration),
    /// Wait without limit (`BLOCK 0`).
    Forever,
}

/// The options of one acquire (a builder: `LockOptions::new().ttl(..).wait(..)`).
#[derive(Debug, Clone)]
pub struct LockOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) wait: Wait,
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) shared: bool,
    pub(crate) limit: Option<u32>,
    pub(crate) ephemeral: bool,
    pub(crate) meta: Option<Vec<u8>>,
    pub(crate) watchdog: bool,
    pub(crate) renew_every: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: None,
            wait: Wait::No,
            token: None,
            shared: false,
            limit: None,
            ephemeral: false,
            meta: None,
            watchdog: true,
            renew_every: None,
        }
    }
}

impl LockOptions {
    /// The defaults: the `Locks`' ttl, no waiting, a random token, exclusive, watchdog on.
    pub fn new() -> Self {
        Self::default()
    }
    /// The lease (whole milliseconds on the server; the default is [`Settings::ttl`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Wait up to `wait` for the lock (server-side `BLOCK`).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Wait::For(wait);
        self
    }
    /// Wait without limit (`BLOCK 0`).
    pub fn wait_forever(mut self) -> Self {
        self.wait = Wait::Forever;
        self
    }
    /// Set the waiting mode.
    pub fn waiting(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }
    /// Your own owner token (1 to 256 bytes) instead of 16 random bytes in hex.
    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = Some(token.into());
        self
    }
    /// A shared hold (`SHARED`: the readers of a read/write lock).
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }
    /// A permit of a counting semaphore of `n` (`LIMIT n`; every caller of a lock must use the
    /// same `n`).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }
    /// The hold ends when its connection closes (`EPHEMERAL`); it gets a connection of its own.
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }
    /// A public label shown by `LOCK.HOLDERS` (at most 1024 bytes).
    pub fn meta(mut self, meta: impl Into<Vec<u8>>) -> Self {
        self.meta = Some(meta.into());
        self
    }
    /// Renew in the background while held (default on). Off: the lost signal still fires at
    /// the safe deadline; call `renew()` yourself.
    pub fn watchdog(mut self, on: bool) -> Self {
        self.watchdog = on;
        self
    }
    /// How often the watchdog renews (default ttl/3).
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }
}

/// Settings of a `Locks`, for every acquire it makes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The ttl when the options give none (30 s).
    pub ttl: Duration,
    /// The clock drift margin factor: `margin = ttl * drift + 2 ms` (0.01).
    pub drift: f64,
    /// How long non-waiting calls (one attempt, RELEASE) retry connection errors (1 s).
    pub retry_budget: Duration,
    /// How much longer than a `BLOCK` the client waits for its reply (1 s).
    pub wait_grace: Duration,
    /// The pause between retries on a new connection (50 ms).
    pub retry_pause: Duration,
    /// How long opening a connection may take (1 s).
    pub connect_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl: Duration::from_secs(30),
            drift: 0.01,
            retry_budget: Duration::from_secs(1),
            wait_grace: Duration::from_secs(1),
            retry_pause: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// The mode of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Exclusive,
    Shared,
    Limit(u32),
}

/// A checked acquire: every value valid, times in whole milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub key: Vec<u8>,
    pub token: Vec<u8>,
    pub ttl: Duration,
    pub ttl_ms: u64,
    pub margin: Duration,
    pub wait: Wait,
    pub mode: Mode,
    pub ephemeral: bool,
    pub meta: Option<Vec<u8>>,
    /// None: no watchdog.
    pub renew_every: Option<Duration>,
}

/// The largest ttl accepted: far below any overflow of `Instant` or the server's clock.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn invalid<T>(what: impl Into<String>) -> Result<T> {
    Err(Error::InvalidInput(what.into()))
}

/// Whole milliseconds of `d`, rounded to the nearest.
pub(crate) fn round_ms(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 >= 500_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

impl Request {
    pub(crate) fn new(key: &[u8], opts: LockOptions, settings: &Settings) -> Result<Request> {
        let ttl = opts.ttl.unwrap_or(settings.ttl);
        let ttl_ms = round_ms(ttl);
        if ttl_ms == 0 {
            return invalid(format!(
                "ttl {ttl:?} rounds to 0 ms: it must be 1 ms or more"
            ));
        }
        if ttl > MAX_TTL {
            return invalid(format!("ttl {ttl:?} is too large"));
        }
        let ttl = Duration::from_millis(ttl_ms);
        if !(settings.drift.is_finite() && (0.0..0.5).contains(&settings.drift)) {
            return invalid(format!(
                "drift {} must be from 0 to less than 0.5",
                settings.drift
            ));
        }
        let margin = ttl
            .mul_f64(settings.drift)
            .checked_add(Duration::from_millis(2))
            .unwrap_or(Duration::MAX);
        if margin >= ttl {
            return invalid(format!(
                "ttl {ttl:?} is not longer than its safety margin {margin:?} (ttl * drift + 2 ms)"
            ));
        }
        let mode = match (opts.shared, opts.limit) {
            (true, Some(_)) => {
                return invalid("shared and limit cannot be combined: a limit is itself shared")
            }
            (true, None) => Mode::Shared,
            (false, Some(n)) if (1..=1_000_000).contains(&n) => Mode::Limit(n),
            (false, Some(n)) => return invalid(format!("limit {n} must be from 1 to 1000000")),
            (false, None) => Mode::Exclusive,
        };
        let token = match opts.token {
            Some(t) if t.is_empty() || t.len() > 256 => {
                return invalid(format!("token must be 1 to 256 bytes, got {}", t.len()))
            }
            Some(t) => t,
            None => new_token(),
        };
        if let Some(meta) = &opts.meta {
            if meta.len() > 1024 {
                return invalid(format!(
                    "meta must be at most 1024 bytes, got {}",
                    meta.len()
                ));
            }
        }
        if let Wait::For(w) = opts.wait {
            if w > MAX_TTL {
                return invalid(format!("wait {w:?} is too large; use Wait::Forever"));
            }
        }
        let renew_every = match (opts.watchdog, opts.renew_every) {
            (false, _) => None,
            (true, None) => Some(ttl / 3),
            (true, Some(every)) if every.is_zero() || every >= ttl - margin => {
                return invalid(format!(
                    "renew_every {every:?} must be more than 0 and less than the ttl minus its \
                     margin ({:?})",
                    ttl - margin
                ))
            }
            (true, Some(every)) => Some(every),
        };
        Ok(Request {
            key: key.to_vec(),
            token,
            ttl,
            ttl_ms,
            margin,
            wait: opts.wait,
            mode,
            ephemeral: opts.ephemeral,
            meta: opts.meta,
            renew_every,
        })
    }

    /// Whether attempts go over a connection of their own (waits and ephemeral holds).
    pub(crate) fn dedicated(&self) -> bool {
        self.ephemeral || self.wait != Wait::No
    }
}

/// 16 random bytes as 32 lowercase hex characters.
fn new_token() -> Vec<u8> {
    let bytes: [u8; 16] = rand::random();
    bytes
        .iter()
        .flat_map(|b| {
            let hex = b"0123456789abcdef";
            [hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(opts: LockOptions) -> Result<Request> {
        Request::new(b"k", opts, &Settings::default())
    }

    fn refused(opts: LockOptions, words: &str) {
        match check(opts) {
            Err(Error::InvalidInput(text)) => assert!(text.contains(words), "{text}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tokens_are_32_hex_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn defaults() {
        let r = check(LockOptions::new()).unwrap();
        assert_eq!(r.ttl_ms, 30_000);
        assert_eq!(r.margin, Duration::from_millis(302));
        assert_eq!(r.renew_every, Some(Duration::from_secs(10)));
        assert_eq!(r.token.len(), 32);
        assert_eq!(r.mode, Mode::Exclusive);
        assert!(!r.dedicated());
        assert!(check(LockOptions::new().wait(Duration::ZERO))
            .unwrap()
            .dedicated());
        assert!(check(LockOptions::new().ephemeral()).unwrap().dedicated());
    }

    #[test]
    fn ttl_rounds_to_whole_ms() {
        assert_eq!(round_ms(Duration::from_micros(1499)), 1);
        assert_eq!(round_ms(Duration::from_micros(1500)), 2);
        assert_eq!(round_ms(Duration::from_secs(u64::MAX)), u64::MAX);
        refused(
            LockOptions::new().ttl(Duration::from_micros(400)),
            "rounds to 0",
        );
        refused(LockOptions::new().ttl(Duration::ZERO), "rounds to 0");
        refused(LockOptions::new().ttl(Duration::from_millis(2)), "margin");
        refused(LockOptions::new().ttl(Duration::MAX), "too large");
        let r = check(LockOptions::new().ttl(Duration::from_micros(300_400))).unwrap();
        assert_eq!((r.ttl_ms, r.ttl), (300, Duration::from_millis(300)));
    }

    #[test]
    fn bad_input_is_refused() {
        refused(LockOptions::new().shared().limit(3), "cannot be combined");
        refused(LockOptions::new().limit(0), "limit 0");
        refused(LockOptions::new().limit(1_000_001), "limit");
        refused(LockOptions::new().token(""), "token");
        refused(LockOptions::new().token(vec![b'x'; 257]), "token");
        refused(LockOptions::new().meta(vec![b'x'; 1025]), "meta");
        refused(
            LockOptions::new().renew_every(Duration::ZERO),
            "renew_every",
        );
        refused(
            LockOptions::new()
                .ttl(Duration::from_secs(1))
                .renew_every(Duration::from_secs(1)),
            "renew_every",
        );
        refused(LockOptions::new().wait(Duration::MAX), "Forever");
        let bad_drift = Settings {
            drift: f64::NAN,
            ..Settings::default()
        };
        assert!(Request::new(b"k", LockOptions::new(), &bad_drift).is_err());
    }

    #[test]
    fn options_are_kept() {
        let r = check(
            LockOptions::new()
                .limit(3)
                .token("me")
                .meta("m")
                .ephemeral()
                .watchdog(false)
                .wait_forever(),
        )
        .unwrap();
        assert_eq!(r.mode, Mode::Limit(3));
        assert_eq!(r.token, b"me");
        assert_eq!(r.meta.as_deref(), Some(&b"m"[..]));
        assert!(r.ephemeral);
        assert_eq!(r.renew_every, None);
        assert_eq!(r.wait, Wait::Forever);
        assert_eq!(
            check(LockOptions::new().shared()).unwrap().mode,
            Mode::Shared
        );
    }
}
