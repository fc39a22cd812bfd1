//! Fault injection on real servers: contention with expiries and abrupt disconnects checked
//! against a fenced resource, failover with lost writes, kill -9 with an AOF, a primary's clock
//! running ahead and a clock stepped back (libfaketime on the server process), mutated RESTORE
//! payloads, and random argument vectors in every calling context.
//!
//! `LOCK_CHAOS_SCALE` (default 1) multiplies client counts, iterations and durations
//! (`LOCK_CHAOS_SCALE=10` is the long soak); `LOCK_CHAOS_SEED` repeats a run's random choices
//! (each test prints the seed it used).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------
// Scale, randomness, counters, timing

fn scale() -> f64 {
    std::env::var("LOCK_CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// `n` times the scale, at least 1.
fn scaled(n: usize) -> usize {
    ((n as f64 * scale()).round() as usize).max(1)
}

fn scaled_ms(ms: u64) -> Duration {
    Duration::from_millis(((ms as f64) * scale()).round().max(1.0) as u64)
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = std::env::var("LOCK_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_us() as u64);
        eprintln!("LOCK_CHAOS_SEED={seed} LOCK_CHAOS_SCALE={}", scale());
        seed
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64, one stream per thread or purpose.
struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Self {
        Rng(splitmix(seed() ^ splitmix(stream)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Named counters shared by client threads, printed at the end of a test.
#[derive(Default)]
struct Counts(Mutex<Vec<(String, usize)>>);

impl Counts {
    fn add(&self, name: &str, n: usize) {
        let mut counts = self.0.lock().unwrap();
        match counts.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v += n,
            None => counts.push((name.to_string(), n)),
        }
    }

    fn bump(&self, name: &str) {
        self.add(name, 1);
    }

    fn get(&self, name: &str) -> usize {
        let counts = self.0.lock().unwrap();
        counts
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| *v)
    }

    fn print(&self, test: &str) {
        let counts = self.0.lock().unwrap();
        let text: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("[{test}] on {}: {}", server_binary(), text.join(" "));
    }
}

/// Failed checks, collected from client threads so that every one gets reported.
#[derive(Default)]
struct Violations(Mutex<Vec<String>>);

impl Violations {
    fn add(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    fn assert_none(&self, test: &str) {
        let v = self.0.lock().unwrap();
        assert!(
            v.is_empty(),
            "[{test}] {} violations on {}, the first ones:\n{}",
            v.len(),
            server_binary(),
            v.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

/// Slack for the server's whole-millisecond clock and its deadline checks (µs).
const SLACK_US: i64 = 5_000;

fn sleep_until_us(t: i64) {
    let left = t - now_us();
    if left > 0 {
        thread::sleep(Duration::from_micros(left as u64));
    }
}

fn refs(args: &[Vec<u8>]) -> Vec<&[u8]> {
    args.iter().map(Vec::as_slice).collect()
}

/// A call that may meet a server killed under it: None when the connection failed.
fn call_or_gone(con: &mut redis::Connection, args: &[&[u8]]) -> Option<Value> {
    match command(args).query::<Value>(con) {
        Ok(v) => Some(v),
        Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => None,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

/// A connection whose replies may take 10 s at most (no test waits for longer), or None if
/// the server is gone.
fn connect(port: u16) -> Option<redis::Connection> {
    let con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_connection()
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(con)
}

fn conn(srv: &Server) -> redis::Connection {
    connect(srv.port).expect("cannot connect to the server")
}

fn acquire_args(key: &str, ttl_ms: u64, token: &str) -> Vec<Vec<u8>> {
    vec![
        b"LOCK.ACQUIRE".to_vec(),
        key.as_bytes().to_vec(),
        ttl_ms.to_string().into_bytes(),
        b"TOKEN".to_vec(),
        token.as_bytes().to_vec(),
    ]
}

fn wait_replica_link(replica: &Server) {
    let mut con = conn(replica);
    wait_for("the replica link", || {
        info_field(&mut con, "replication", "master_link_status").as_deref() == Some("up")
    });
}

fn blocked_clients(con: &mut redis::Connection) -> i64 {
    info_field(con, "clients", "blocked_clients")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

// ---------------------------------------------------------------------------------------
// 1. A fenced resource under contention, expiries and abrupt disconnects

const CONTENDED_KEYS: usize = 3;

/// An in-test resource guarded by the lock: a write from a new holder is accepted only if
/// its fence is strictly above every fence accepted before; the holder of that highest fence
/// may go on writing.
#[derive(Default)]
struct Resource {
    highest: i64,
    /// The fences of the holders it accepted, in order.
    accepted: Vec<i64>,
}

/// What a grant was asked as: the locks of the exclusive run are exclusive; in the shared run,
/// `contended:0` and `contended:2` are read/write locks and `contended:1` a semaphore.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Exclusive,
    Shared,
    Permit,
}

/// The semaphore's permits in the shared run.
const PERMITS: usize = 3;

/// One grant as its client saw it; times are Unix µs on the test's clock, the one the
/// server's fences and deadlines follow (same machine).
#[derive(Clone, Debug)]
struct Held {
    key: usize,
    kind: Kind,
    token: String,
    fence: i64,
    sent: i64,
    received: i64,
    /// The lock was held at least until then: the server's deadline is no earlier, or a
    /// successful RELEASE sent then freed it no earlier.
    held_until: i64,
    /// The server's deadline is no later than this.
    latest_end: i64,
}

struct Contention {
    resources: Vec<Mutex<Resource>>,
    grants: Mutex<Vec<Held>>,
    counts: Counts,
    violations: Violations,
}

impl Contention {
    /// Write to the resource with the grant's fence. A holder that certainly still holds
    /// the lock must be accepted: nobody else can have been granted a higher fence yet.
    fn write(&self, held: &Held) -> bool {
        let mut resource = self.resources[held.key].lock().unwrap();
        let now = now_us();
        let accepted = held.fence >= resource.highest;
        if accepted {
            if held.fence > resource.highest {
                resource.highest = held.fence;
                resource.accepted.push(held.fence);
            }
            self.counts.bump("writes_accepted");
        } else {
            self.counts.bump("writes_rejected");
            if now < held.held_until - SLACK_US {
                self.violations.add(format!(
                    "a write by a certain holder was rejected: {held:?}, resource at fence {}, \
                     {} µs before the holder's earliest end",
                    resource.highest,
                    held.held_until - now
                ));
            }
        }
        accepted
    }

    /// RENEW (with `ttl`) or RELEASE (without) by the holder; updates what is known about
    /// its end. Sent after the latest possible deadline, it must answer 0.
    fn renew_or_release(&self, con: &mut redis::Connection, held: &mut Held, renew: Option<u64>) {
        let key = format!("contended:{}", held.key);
        let token = held.token.clone();
        let ttl = renew.map(|t| t.to_string());
        let mut args: Vec<&[u8]> = vec![b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()];
        if let Some(ttl) = &ttl {
            args[0] = b"LOCK.RENEW";
            args.push(ttl.as_bytes());
        }
        let sent = now_us();
        let answer = int(call(con, &args));
        let received = now_us();
        let what = if renew.is_some() { "renew" } else { "release" };
        if sent > held.latest_end + SLACK_US {
            self.counts.bump("expired_holder_calls");
            if answer != 0 {
                self.violations.add(format!(
                    "{what} answered {answer} {} µs after the latest deadline: {held:?}",
                    sent - held.latest_end
                ));
            }
        }
        match (answer, renew) {
            (1, Some(ttl)) => {
                held.held_until = sent + ttl as i64 * 1000;
                held.latest_end = received + ttl as i64 * 1000;
                self.counts.bump("renewed");
            }
            (1, None) => {
                held.held_until = held.held_until.min(sent);
                held.latest_end = held.latest_end.min(received);
                self.counts.bump("released");
            }
            _ => {
                held.latest_end = held.latest_end.min(received);
                self.counts.bump(if renew.is_some() {
                    "renew_answered_0"
                } else {
                    "release_answered_0"
                });
            }
        }
    }
}

/// How a client of the shared run asks for `key`: readers and writers (1 in 4) on the
/// read/write locks, permits of the semaphore.
fn kind_for(rng: &mut Rng, key: usize, kinds: bool) -> Kind {
    match (kinds, key) {
        (false, _) => Kind::Exclusive,
        (true, 1) => Kind::Permit,
        (true, _) if rng.chance(25) => Kind::Exclusive,
        (true, _) => Kind::Shared,
    }
}

/// `kinds`: the shared run (see `Kind`), else every grant exclusive.
fn contend(srv: &Server, shared: &Contention, client: usize, until: Instant, kinds: bool) {
    let mut rng = Rng::new(1000 + client as u64 + if kinds { 500 } else { 0 });
    let mut con = conn(srv);
    for _ in 0..scaled(5000) {
        if Instant::now() >= until {
            break;
        }
        let key = rng.below(CONTENDED_KEYS as u64) as usize;
        let name = format!("contended:{key}");
        let ttl = rng.range(30, 100);
        if rng.chance(8) {
            // A waiter that disconnects before any reply.
            let raw = blocked_client(srv, &name, ttl, &format!("gone-{client}"), 0);
            thread::sleep(Duration::from_micros(rng.below(3000)));
            drop(raw);
            shared.counts.bump("waiting_disconnects");
            continue;
        }
        let token = format!("c{client}-{}", rng.next());
        let kind = kind_for(&mut rng, key, kinds);
        let mut args = acquire_args(&name, ttl, &token);
        match kind {
            Kind::Exclusive => {}
            Kind::Shared => args.push(b"SHARED".to_vec()),
            Kind::Permit => {
                args.push(b"LIMIT".to_vec());
                args.push(PERMITS.to_string().into_bytes());
            }
        }
        if rng.chance(75) {
            args.push(b"BLOCK".to_vec());
            args.push(rng.range(50, 300).to_string().into_bytes());
        }
        let sent = now_us();
        let reply = call(&mut con, &refs(&args));
        let received = now_us();
        let Some((got, fence)) = grant(&reply) else {
            shared.counts.bump("null_replies");
            continue;
        };
        assert_eq!(got, token.as_bytes());
        let mut held = Held {
            key,
            kind,
            token,
            fence,
            sent,
            received,
            held_until: sent + ttl as i64 * 1000,
            latest_end: received + ttl as i64 * 1000,
        };
        shared.counts.bump("grants");
        if fence < sent - SLACK_US {
            shared.violations.add(format!(
                "a fence below the wall clock at the request: {held:?}"
            ));
        }
        // Only exclusive holders write; readers and permit holders only hold.
        let writes = kind == Kind::Exclusive;
        if writes {
            shared.write(&held);
        }
        match rng.below(100) {
            0..=9 => {
                // The holder's connection drops without a release.
                drop(con);
                con = conn(srv);
                shared.counts.bump("holding_disconnects");
            }
            10..=21 => {
                // The holder stalls past its deadline: someone else may take the lock, its
                // late write is rejected if they wrote, and its RENEW and RELEASE answer 0.
                sleep_until_us(held.latest_end + SLACK_US + 1000);
                if writes && !shared.write(&held) {
                    shared.counts.bump("stale_writes_rejected");
                }
                shared.renew_or_release(&mut con, &mut held, Some(ttl));
                shared.renew_or_release(&mut con, &mut held, None);
                shared.counts.bump("stalled_holders");
            }
            _ => {
                if rng.chance(40) {
                    shared.renew_or_release(&mut con, &mut held, Some(rng.range(30, 100)));
                    if writes {
                        shared.write(&held);
                    }
                }
                thread::sleep(Duration::from_micros(rng.below(2000)));
                if writes {
                    shared.write(&held);
                }
                shared.renew_or_release(&mut con, &mut held, None);
            }
        }
        shared.grants.lock().unwrap().push(held);
    }
}

/// After the run: fences are unique and follow real time server-wide, and no grant of a
/// lock came before an earlier holder's certain end.
fn check_grants(grants: &mut [Held], violations: &Violations) {
    grants.sort_by_key(|g| g.fence);
    for pair in grants.windows(2) {
        if pair[0].fence == pair[1].fence {
            violations.add(format!("two grants, one fence: {pair:?}"));
        }
    }
    // A grant received before another was requested must have the lower fence.
    let mut first_received_above = i64::MAX;
    for g in grants.iter().rev() {
        if first_received_above < g.sent - 1000 {
            violations.add(format!(
                "a grant with a higher fence was received {} µs before this one was requested: \
                 {g:?}",
                g.sent - first_received_above
            ));
        }
        first_received_above = first_received_above.min(g.received);
    }
    for key in 0..CONTENDED_KEYS {
        if grants
            .iter()
            .any(|g| g.key == key && g.kind != Kind::Exclusive)
        {
            check_shared_holds(grants, key, violations);
            continue;
        }
        let mut longest: Option<&Held> = None;
        for g in grants.iter().filter(|g| g.key == key) {
            // The grant happened no later than its reply, and no later than its fence
            // (a fence is at least the server's clock reading at the grant).
            let granted_by = g.received.min(g.fence);
            if let Some(earlier) = longest {
                if granted_by < earlier.held_until - SLACK_US {
                    violations.add(format!(
                        "two holders at once, {} µs of overlap:\n  {earlier:?}\n  {g:?}",
                        earlier.held_until - granted_by
                    ));
                }
            }
            if longest.is_none_or(|l| g.held_until > l.held_until) {
                longest = Some(g);
            }
        }
    }
}

/// The holds of a lock with shared holders: an exclusive hold overlaps no other, and no more
/// than `PERMITS` permits are held at once. A hold counts from when it was certainly granted
/// (its reply, or its fence) to when it certainly still held (`held_until`).
fn check_shared_holds(grants: &[Held], key: usize, violations: &Violations) {
    let holds: Vec<(i64, i64, &Held)> = grants
        .iter()
        .filter(|g| g.key == key)
        .map(|g| (g.received.min(g.fence), g.held_until - SLACK_US, g))
        .filter(|(from, to, _)| from < to)
        .collect();
    for (i, &(from, to, g)) in holds.iter().enumerate() {
        let overlapping = holds
            .iter()
            .enumerate()
            .filter(|&(j, &(f, t, _))| j != i && f < to && from < t);
        for (_, &(_, _, other)) in overlapping {
            if g.kind == Kind::Exclusive {
                violations.add(format!(
                    "an exclusive hold beside another:\n  {g:?}\n  {other:?}"
                ));
            }
        }
        if g.kind == Kind::Permit {
            // The permits certainly held when this one was granted.
            let at_once = 1 + holds
                .iter()
                .enumerate()
                .filter(|&(j, &(f, t, _))| j != i && f <= from && from < t)
                .count();
            if at_once > PERMITS {
                violations.add(format!("{at_once} permits held at once, at {g:?}"));
            }
        }
    }
}

fn lock_stat(con: &mut redis::Connection, name: &str) -> usize {
    info_field(con, "lock", &format!("lock_{name}"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 16+ clients on three locks, each granted with TOKEN and mostly BLOCK, writing to a fenced
/// resource, renewing, stalling past the deadline, releasing, and dropping connections
/// while waiting and while holding.
#[test]
fn a_fenced_resource_stays_consistent_under_contention_expiry_and_disconnects() {
    run_contention("fenced resource", false);
}

/// The same faults on two read/write locks (readers SHARED, a quarter writers) and a
/// semaphore of 3 permits: no writer ever beside another holder, never more than 3 permits,
/// fences unique and rising, the writers' fenced resource consistent.
#[test]
fn shared_holds_stay_consistent_under_contention_expiry_and_disconnects() {
    run_contention("shared holds", true);
}

fn run_contention(test: &'static str, kinds: bool) {
    let srv = Server::start();
    let shared = Contention {
        resources: (0..CONTENDED_KEYS).map(|_| Mutex::default()).collect(),
        grants: Mutex::default(),
        counts: Counts::default(),
        violations: Violations::default(),
    };
    let until = Instant::now() + scaled_ms(if kinds { 12_000 } else { 20_000 });
    thread::scope(|s| {
        for client in 0..scaled(16) {
            let (srv, shared) = (&srv, &shared);
            s.spawn(move || contend(srv, shared, client, until, kinds));
        }
    });
    let mut con = conn(&srv);
    wait_for("no blocked clients", || blocked_clients(&mut con) == 0);
    assert_eq!(lock_stat(&mut con, "waiting"), 0);
    let mut grants = std::mem::take(&mut *shared.grants.lock().unwrap());
    check_grants(&mut grants, &shared.violations);
    for resource in &shared.resources {
        let accepted = &resource.lock().unwrap().accepted;
        assert!(accepted.windows(2).all(|w| w[0] < w[1]));
    }
    let counts = &shared.counts;
    for stat in ["acquired", "handed_off", "expired", "timeouts", "contended"] {
        counts.add(&format!("server_{stat}"), lock_stat(&mut con, stat));
    }
    counts.add("grant_fences_checked", grants.len());
    if kinds {
        for (name, kind) in [
            ("shared_grants", Kind::Shared),
            ("permit_grants", Kind::Permit),
        ] {
            counts.add(name, grants.iter().filter(|g| g.kind == kind).count());
        }
    }
    counts.print(test);
    shared.violations.assert_none(test);
    assert!(grants.len() > 100, "only {} grants", grants.len());
    let mut exercised = vec![
        "server_handed_off",
        "waiting_disconnects",
        "holding_disconnects",
        "stalled_holders",
        "expired_holder_calls",
        "writes_rejected",
    ];
    if kinds {
        exercised.extend(["shared_grants", "permit_grants"]);
    }
    for what in exercised {
        assert!(
            counts.get(what) > 0,
            "no {what}: the run did not exercise it"
        );
    }
    srv.assert_alive();
}

// ---------------------------------------------------------------------------------------
// 2. Failover with lost writes (and 4a: the old primary's clock ahead)

/// A lock granted to a client, as it saw it.
#[derive(Clone, Debug)]
struct Granted {
    key: String,
    token: String,
    fence: i64,
    sent: i64,
    received: i64,
    ttl_ms: i64,
    /// Requested after the replica's link was cut: never replicated.
    after_cut: bool,
    /// A permit of a `LIMIT 1` lock (a shared hold) rather than an exclusive lock.
    permit: bool,
}

/// ACQUIRE as `acquire_args` does, as a permit of a `LIMIT 1` lock when `permit`.
fn acquire_args_as(key: &str, ttl_ms: u64, token: &str, permit: bool) -> Vec<Vec<u8>> {
    let mut args = acquire_args(key, ttl_ms, token);
    if permit {
        args.extend([b"LIMIT".to_vec(), b"1".to_vec()]);
    }
    args
}

/// One client taking (and often releasing) locks from a pool of keys on `port` until
/// `stop`, or until the server is gone.
fn load_client(
    port: u16,
    prefix: &str,
    client: u64,
    stop: &AtomicBool,
    cut: &AtomicBool,
) -> Vec<Granted> {
    let mut rng = Rng::new(2000 + client);
    let mut out = Vec::new();
    let Some(mut con) = connect(port) else {
        return out;
    };
    let until = Instant::now() + scaled_ms(60_000);
    for n in 0..scaled(100_000) {
        if stop.load(Ordering::SeqCst) || Instant::now() > until {
            break;
        }
        let slot = rng.below(256);
        let key = format!("{prefix}:{slot}");
        // Half the keys are LIMIT 1 locks, taken as permits (shared holds).
        let permit = slot >= 128;
        let token = format!("{prefix}-{client}-{n}");
        let ttl_ms = rng.range(100, 600) as i64;
        let after_cut = cut.load(Ordering::SeqCst);
        let sent = now_us();
        let args = acquire_args_as(&key, ttl_ms as u64, &token, permit);
        let Some(reply) = call_or_gone(&mut con, &refs(&args)) else {
            break;
        };
        let received = now_us();
        let Some((_, fence)) = grant(&reply) else {
            continue;
        };
        out.push(Granted {
            key: key.clone(),
            token: token.clone(),
            fence,
            sent,
            received,
            ttl_ms,
            after_cut,
            permit,
        });
        if rng.chance(50) {
            let release = [b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()];
            if call_or_gone(&mut con, &release).is_none() {
                break;
            }
        }
    }
    out
}

/// Locks whose grant the replica acknowledged (`WAIT 1` answered 1), until the link is cut.
fn acked_client(port: u16, prefix: &str, stop: &AtomicBool, cut: &AtomicBool) -> Vec<Granted> {
    let mut out = Vec::new();
    let Some(mut con) = connect(port) else {
        return out;
    };
    let until = Instant::now() + scaled_ms(60_000);
    for n in 0..scaled(10_000) {
        if stop.load(Ordering::SeqCst) || cut.load(Ordering::SeqCst) || Instant::now() > until {
            break;
        }
        let key = format!("{prefix}:acked:{n}");
        let token = format!("acked-{n}");
        let ttl_ms = 1500;
        // Every other grant is a shared hold: the permit of a LIMIT 1 lock.
        let permit = n % 2 == 1;
        let sent = now_us();
        let args = acquire_args_as(&key, ttl_ms, &token, permit);
        let Some(reply) = call_or_gone(&mut con, &refs(&args)) else {
            break;
        };
        let received = now_us();
        let (_, fence) = grant(&reply).expect("a fresh key is free");
        // A generous WAIT: on a loaded 2-core machine a replica can lag some 300 ms.
        match call_or_gone(&mut con, &[b"WAIT", b"1", b"1000"]) {
            Some(Value::Int(n)) if n >= 1 => out.push(Granted {
                key,
                token,
                fence,
                sent,
                received,
                ttl_ms: ttl_ms as i64,
                after_cut: false,
                permit,
            }),
            Some(_) => {}
            None => break,
        }
        thread::sleep(Duration::from_millis(10));
    }
    out
}

/// Grants the replica acknowledged stay held on the promoted replica until their deadline:
/// other tokens get null until then, and the lock after it (with a fence above `highest_old`).
/// Deadlines are in the old primary's clock, `clock_ahead_us` ahead of the replica's.
fn check_acked(
    con: &mut redis::Connection,
    acked: &[Granted],
    clock_ahead_us: i64,
    highest_old: i64,
    counts: &Counts,
    violations: &Violations,
) {
    for g in acked {
        if now_us() < g.sent + g.ttl_ms * 1000 - SLACK_US {
            let fence = fence_of(con, g.key.as_bytes());
            if fence != Some(g.fence) {
                violations.add(format!(
                    "an acknowledged grant is not kept: {g:?}, LOCK.INFO fence {fence:?}"
                ));
            }
        }
    }
    let mut pending: Vec<&Granted> = acked.iter().collect();
    let start = Instant::now();
    while !pending.is_empty() && start.elapsed() < Duration::from_secs(20) {
        pending.retain(|g| {
            let held_until = g.sent + g.ttl_ms * 1000;
            let latest_end = g.received + clock_ahead_us + g.ttl_ms * 1000;
            let intruder = format!("intruder-{}", g.token);
            let sent = now_us();
            let reply = call(
                con,
                &refs(&acquire_args_as(&g.key, 1000, &intruder, g.permit)),
            );
            match grant(&reply) {
                Some((_, fence)) if sent < held_until - SLACK_US => {
                    violations.add(format!(
                        "an acknowledged grant went to another token (fence {fence}) {} µs \
                         before its deadline: {g:?}",
                        held_until - sent
                    ));
                    false
                }
                Some((_, fence)) => {
                    if fence <= highest_old {
                        violations.add(format!(
                            "the lock of an expired acknowledged grant was granted again with \
                             fence {fence} <= {highest_old}: {g:?}"
                        ));
                    }
                    counts.bump("acked_taken_after_deadline");
                    false
                }
                None if sent > latest_end + SLACK_US + 100_000 => {
                    violations.add(format!(
                        "an acknowledged grant is still held {} µs after its deadline: {g:?}",
                        sent - latest_end
                    ));
                    false
                }
                None => {
                    counts.bump("acked_refused_to_others");
                    true
                }
            }
        });
        thread::sleep(Duration::from_millis(100));
    }
    if !pending.is_empty() {
        violations.add(format!("{} acknowledged grants never freed", pending.len()));
    }
}

/// A port where nothing answers: a replica told to follow it stops following its primary.
fn dead_port() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    (listener, port)
}

/// One failover: a replica follows `primary` while clients take locks; its link is cut and
/// the primary keeps granting (those writes are lost); the primary is killed under load, the
/// replica promoted, and the clients move to it. Returns the promoted replica and the
/// highest fence granted so far.
fn failover_round(
    primary: &mut Server,
    clock_ahead_us: i64,
    round: usize,
    highest_before: i64,
    counts: &Counts,
    violations: &Violations,
) -> (Server, i64) {
    let port = primary.port.to_string();
    let replica = Server::start_with(&[], &["--replicaof", "127.0.0.1", &port]);
    wait_replica_link(&replica);
    let mut pcon = conn(primary);
    let mut rcon = conn(&replica);
    let prefix = format!("round{round}");
    let (stop, cut) = (AtomicBool::new(false), AtomicBool::new(false));
    let (_listener, dead) = dead_port();
    let (old, acked) = thread::scope(|s| {
        let (prefix, stop, cut, port) = (&prefix, &stop, &cut, primary.port);
        let loads: Vec<_> = (0..scaled(4) as u64)
            .map(|c| s.spawn(move || load_client(port, prefix, c, stop, cut)))
            .collect();
        let acked = s.spawn(move || acked_client(port, prefix, stop, cut));
        thread::sleep(scaled_ms(800));
        call(&mut rcon, &[b"REPLICAOF", b"127.0.0.1", dead.as_bytes()]);
        wait_for("the primary to lose its replica", || {
            info_field(&mut pcon, "replication", "connected_slaves").as_deref() == Some("0")
        });
        cut.store(true, Ordering::SeqCst);
        thread::sleep(scaled_ms(300));
        primary.kill();
        stop.store(true, Ordering::SeqCst);
        let old: Vec<Granted> = loads.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (old, acked.join().unwrap())
    });
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    counts.bump("failovers");
    let highest_old = old
        .iter()
        .chain(&acked)
        .map(|g| g.fence)
        .max()
        .unwrap_or(0)
        .max(highest_before);
    let after_cut: Vec<&Granted> = old.iter().filter(|g| g.after_cut).collect();
    let lost = after_cut
        .iter()
        .filter(|g| fence_of(&mut rcon, g.key.as_bytes()) != Some(g.fence))
        .count();
    assert!(
        lost > 0,
        "round {round}: the cut lost no write ({} grants after it)",
        after_cut.len()
    );
    assert!(
        !acked.is_empty(),
        "round {round}: no grant was acknowledged by the replica"
    );
    counts.add("old_primary_grants", old.len() + acked.len());
    counts.add("grants_after_cut", after_cut.len());
    counts.add("lost_grants", lost);
    counts.add("acked_grants", acked.len());

    // The clients move to the promoted replica, on the same keys.
    let stop = AtomicBool::new(false);
    let new: Vec<Granted> = thread::scope(|s| {
        let (prefix, stop, port) = (&prefix, &stop, replica.port);
        let loads: Vec<_> = (0..scaled(4) as u64)
            .map(|c| s.spawn(move || load_client(port, prefix, 100 + c, stop, stop)))
            .collect();
        let started = Instant::now();
        check_acked(
            &mut rcon,
            &acked,
            clock_ahead_us,
            highest_old,
            counts,
            violations,
        );
        thread::sleep(scaled_ms(500).saturating_sub(started.elapsed()));
        stop.store(true, Ordering::SeqCst);
        loads.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        !new.is_empty(),
        "round {round}: no grant on the promoted replica"
    );
    counts.add("new_primary_fences_checked", new.len());
    let reissued: Vec<&Granted> = new.iter().filter(|g| g.fence <= highest_old).collect();
    if let Some(first) = reissued.first() {
        violations.add(format!(
            "round {round}: {} of {} fences granted by the promoted replica are <= {highest_old}, \
             the highest the old primary granted ({} µs below it at worst; the old primary's \
             clock ran {clock_ahead_us} µs ahead); the first: {first:?}",
            reissued.len(),
            new.len(),
            highest_old - reissued.iter().map(|g| g.fence).min().unwrap()
        ));
    }
    let highest = new.iter().map(|g| g.fence).max().unwrap().max(highest_old);
    (replica, highest)
}

#[test]
fn failover_with_lost_writes_never_reissues_a_fence_or_an_acknowledged_lock() {
    const TEST: &str = "failover";
    let (counts, violations) = (Counts::default(), Violations::default());
    let mut primary = Server::start();
    let mut highest = 0;
    for round in 0..scaled(4) {
        let (promoted, h) = failover_round(&mut primary, 0, round, highest, &counts, &violations);
        primary = promoted;
        highest = h;
    }
    primary.assert_alive();
    counts.print(TEST);
    violations.assert_none(TEST);
}

// ---------------------------------------------------------------------------------------
// 4. Clocks: libfaketime on the server process

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Why libfaketime cannot run this server binary, if it cannot: `--version` under it, with
/// a bound (a server linked against a shared jemalloc hangs at start, wolfcw/libfaketime#130).
fn faketime_unusable() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let mut child = Command::new(server_binary())
                .arg("--version")
                .envs([
                    ("LD_PRELOAD", FAKETIME_LIB),
                    ("FAKETIME", "+1"),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot start the server binary");
            let start = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if start.elapsed() > Duration::from_secs(5) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                thread::sleep(Duration::from_millis(20));
            };
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            match status {
                Some(s) if s.success() && !stderr.contains("libfaketime") => None,
                Some(s) => Some(format!(
                    "`--version` under libfaketime failed ({s}): {stderr}"
                )),
                None => Some(format!(
                    "the binary hangs at start under libfaketime (a known clash with a \
                     dynamically linked jemalloc, wolfcw/libfaketime#130): {}",
                    stderr.lines().next().unwrap_or("")
                )),
            }
        })
        .clone()
}

/// The environment that runs a server with its wall clock moved by `offset` seconds
/// (libfaketime's relative form, "+2" or "-3"); its monotonic clock is left alone. Checked on
/// a server of its own: its `TIME` and the module's fence clock must both have moved. None,
/// after saying why, where libfaketime cannot move them on this server binary.
fn faketime(test: &str, offset: &'static str) -> Option<[(&'static str, &'static str); 3]> {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "libfaketime is missing ({FAKETIME_LIB}): apt-get install libfaketime"
    );
    let skip = |reason: &str| eprintln!("[{test}] SKIPPED on {}: {reason}", server_binary());
    if let Some(reason) = faketime_unusable() {
        skip(&reason);
        return None;
    }
    let env = [
        ("LD_PRELOAD", FAKETIME_LIB),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let offset_us = offset.parse::<i64>().unwrap() * 1_000_000;
    let probe = Server::start_in_env(new_dir(), &[], &[], &env);
    assert_clock_offset(&probe, offset_us);
    let moved = acquire(&mut conn(&probe), "probe", 1, "probe").unwrap() - now_us();
    if (moved - offset_us).abs() > 500_000 {
        skip(&format!(
            "libfaketime moves the server's clock by {offset} s but not the module's fence \
             clock ({moved} µs): the server loads modules with RTLD_DEEPBIND, so the module's \
             own clock_gettime calls bind to libc, not to the preloaded libfaketime"
        ));
        return None;
    }
    Some(env)
}

/// The server's `TIME` is `offset_us` off the test's clock (libfaketime took effect).
fn assert_clock_offset(srv: &Server, offset_us: i64) {
    let Value::Array(parts) = call(&mut conn(srv), &[b"TIME"]) else {
        panic!("TIME")
    };
    let field = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).unwrap().parse::<i64>().unwrap(),
        other => panic!("TIME: {other:?}"),
    };
    let server_us = field(&parts[0]) * 1_000_000 + field(&parts[1]);
    let off = server_us - now_us();
    assert!(
        (off - offset_us).abs() < 500_000,
        "libfaketime did not take effect: the server's clock is {off} µs off, not {offset_us}"
    );
}

/// 4a. The old primary's clock runs 2 s ahead, its replica's is right: its fences run ahead
/// of the replica's clock, and the promoted replica must still not grant any fence at or
/// below one the old primary granted, including the grants lost with the cut link.
#[test]
fn a_primary_clock_running_ahead_does_not_let_the_promoted_replica_reissue_fences() {
    const TEST: &str = "clock ahead failover";
    let Some(env) = faketime(TEST, "+2") else {
        return;
    };
    let (counts, violations) = (Counts::default(), Violations::default());
    let mut primary = Server::start_in_env(new_dir(), &[], &[], &env);
    assert_clock_offset(&primary, 2_000_000);
    let (promoted, _) = failover_round(&mut primary, 2_000_000, 0, 0, &counts, &violations);
    promoted.assert_alive();
    counts.print(TEST);
    violations.assert_none(TEST);
}

// ---------------------------------------------------------------------------------------
// 3. kill -9 and restart with an AOF

/// Locks a client holds (key, token, fence), keys it freed, the highest fence it saw.
#[derive(Default)]
struct Taken {
    held: Vec<(String, String, i64)>,
    gone: Vec<String>,
    highest: i64,
}

impl Taken {
    fn merge(&mut self, other: Taken) {
        self.held.extend(other.held);
        self.gone.extend(other.gone);
        self.highest = self.highest.max(other.highest);
    }
}

fn release(con: &mut redis::Connection, key: &str, token: &str) -> i64 {
    int(call(
        con,
        &[b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()],
    ))
}

/// One client's locks: most held, some renewed, some released, some handed to a waiter.
fn take_locks(srv: &Server, prefix: &str, n: usize) -> Taken {
    let mut con = conn(srv);
    let mut taken = Taken::default();
    for i in 0..n {
        let key = format!("{prefix}:{i}");
        let token = format!("{prefix}-{i}\x00\u{ff}");
        let fence = acquire(&mut con, &key, 600_000, &token).unwrap();
        taken.highest = taken.highest.max(fence);
        match i % 5 {
            0 => {
                assert_eq!(release(&mut con, &key, &token), 1);
                taken.gone.push(key);
            }
            1 => {
                let renew = [b"LOCK.RENEW", key.as_bytes(), token.as_bytes(), b"900000"];
                assert_eq!(int(call(&mut con, &renew)), 1);
                taken.held.push((key, token, fence));
            }
            2 => {
                // A hand-off is a grant too, and must be in the AOF.
                let waiter = format!("waiter-{token}");
                let mut raw = blocked_client(srv, &key, 600_000, &waiter, 10_000);
                wait_for("the waiter to queue", || waiters(&mut con, &key) == 1);
                assert_eq!(release(&mut con, &key, &token), 1);
                let (got, handed) = grant(&raw.value()).expect("handed off");
                assert_eq!(got, waiter.as_bytes());
                assert!(handed > fence);
                taken.highest = handed;
                taken.held.push((key, waiter, handed));
            }
            _ => taken.held.push((key, token, fence)),
        }
    }
    taken
}

/// Every held lock is back with its token (RENEW answers 1) and fence; freed ones are free.
fn check_restored(con: &mut redis::Connection, taken: &Taken) {
    for (key, token, fence) in &taken.held {
        assert_eq!(fence_of(con, key.as_bytes()), Some(*fence), "{key}");
        let renew = [b"LOCK.RENEW", key.as_bytes(), token.as_bytes(), b"600000"];
        assert_eq!(int(call(con, &renew)), 1, "{key}: the owner's RENEW");
        assert_eq!(acquire(con, key, 1000, "intruder"), None, "{key}");
    }
    for key in &taken.gone {
        assert_eq!(info(con, key.as_bytes()), None, "{key}");
    }
}

fn kill_and_restart_with_aof(fsync: &str, preamble: &str) {
    let test = format!("aof appendfsync={fsync} aof-use-rdb-preamble={preamble}");
    let config = [
        "--appendonly",
        "yes",
        "--appendfsync",
        fsync,
        "--aof-use-rdb-preamble",
        preamble,
    ];
    let mut srv = Server::start_with(&[], &config);
    let mut taken = Taken::default();
    let counts = Counts::default();
    for cycle in 0..scaled(3) {
        let batches: Vec<Taken> = thread::scope(|s| {
            let srv = &srv;
            let handles: Vec<_> = (0..4)
                .map(|t| s.spawn(move || take_locks(srv, &format!("aof{cycle}-{t}"), scaled(25))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        batches.into_iter().for_each(|b| taken.merge(b));
        if fsync == "everysec" {
            // Past the next fsync (written data survives kill -9 anyway; a power loss would not).
            thread::sleep(Duration::from_millis(2200));
        }
        srv.kill();
        srv.restart();
        counts.bump("kill9_restarts");
        let mut con = conn(&srv);
        check_restored(&mut con, &taken);
        let fresh_key = format!("fresh{cycle}");
        let fresh = acquire(&mut con, &fresh_key, 600_000, "fresh").unwrap();
        assert!(fresh > taken.highest, "{fresh} <= {}", taken.highest);
        counts.add("locks_checked", taken.held.len());
        counts.add("freed_checked", taken.gone.len());
        taken.held.push((fresh_key, "fresh".into(), fresh));
        taken.highest = fresh;
    }
    srv.assert_alive();
    counts.print(&test);
}

#[test]
fn locks_survive_kill_9_with_appendfsync_always_and_rdb_preamble() {
    kill_and_restart_with_aof("always", "yes");
}

#[test]
fn locks_survive_kill_9_with_appendfsync_always_and_plain_aof() {
    kill_and_restart_with_aof("always", "no");
}

#[test]
fn locks_survive_kill_9_with_appendfsync_everysec_and_rdb_preamble() {
    kill_and_restart_with_aof("everysec", "yes");
}

#[test]
fn locks_survive_kill_9_with_appendfsync_everysec_and_plain_aof() {
    kill_and_restart_with_aof("everysec", "no");
}

// ---------------------------------------------------------------------------------------
// 4b. A clock stepped back across a crash that lost the AOF's newest writes

/// The files of the server's AOF directory and their sizes.
fn aof_sizes(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("appendonlydir"))
        .expect("the AOF directory")
        .map(|e| {
            let e = e.unwrap();
            (e.path(), e.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files
}

/// `kill -9` alone loses nothing an everysec AOF was handed (the server writes it before
/// replying; only fsync waits). A power loss loses what was not synced yet: cutting the files
/// back to the sizes they had at a moment does the same.
#[test]
fn a_clock_stepped_back_after_a_crash_that_lost_aof_writes_does_not_reissue_fences() {
    const TEST: &str = "clock stepped back";
    let Some(back) = faketime(TEST, "-3") else {
        return;
    };
    let config = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--auto-aof-rewrite-percentage",
        "0",
    ];
    let mut srv = Server::start_with(&[], &config);
    let kept = take_locks(&srv, "kept", scaled(60));
    thread::sleep(Duration::from_millis(1100));
    let synced = aof_sizes(&srv.dir);
    let lost = take_locks(&srv, "lost", scaled(60));
    srv.kill();
    let grown = aof_sizes(&srv.dir);
    assert_eq!(
        grown.len(),
        synced.len(),
        "the AOF was rewritten: {grown:?}"
    );
    assert!(
        grown.iter().zip(&synced).any(|(g, s)| g.1 > s.1),
        "nothing to lose"
    );
    for (path, len) in &synced {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(*len)
            .unwrap();
    }
    srv.set_env(&back);
    srv.restart();
    assert_clock_offset(&srv, -3_000_000);
    let mut con = conn(&srv);
    let highest = kept.highest.max(lost.highest);
    // The synced locks are back; the lost ones are free.
    let mut survived = Taken {
        highest,
        ..Taken::default()
    };
    survived.held = kept.held.clone();
    survived.gone = kept.gone.clone();
    survived
        .gone
        .extend(lost.held.iter().map(|(key, _, _)| key.clone()));
    check_restored(&mut con, &survived);
    let mut reissued = Vec::new();
    let new_keys = lost
        .held
        .iter()
        .map(|(key, _, fence)| (key.clone(), *fence));
    for (key, fence) in new_keys.chain([("fresh".to_string(), 0)]) {
        let f = acquire(&mut con, &key, 600_000, "after-crash").unwrap();
        if f <= highest {
            reissued.push((key, fence, f));
        }
    }
    let counts = Counts::default();
    counts.add("fences_before_crash", kept.held.len() + lost.held.len());
    counts.add("lost_locks", lost.held.len());
    counts.add("new_fences_checked", lost.held.len() + 1);
    counts.print(TEST);
    assert!(
        reissued.is_empty(),
        "{} of {} new fences are <= {highest}, the highest granted before the crash (key, \
         its lost fence, the new fence): {:?}",
        reissued.len(),
        lost.held.len() + 1,
        &reissued[..reissued.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------
// 5. Mutated RESTORE payloads

/// Fences above this do not fit a lock (2^62 - 1).
const MAX_FENCE: i64 = (1 << 62) - 1;

/// Fence values for the fence field of a payload: ordinary, an hour and two days ahead,
/// centuries ahead, and at and around the largest fence a lock can hold.
fn special_fences() -> Vec<u64> {
    let now = now_us() as u64;
    let day = 86_400_000_000u64;
    vec![
        0,
        1,
        now,
        now + 3_600_000_000,
        now + 2 * day,
        now + 36_500 * day,
        MAX_FENCE as u64 - 1,
        MAX_FENCE as u64,
        MAX_FENCE as u64 + 1,
        1 << 63,
        u64::MAX,
    ]
}

/// Deadline values (signed Unix ms) for the deadline field.
fn special_deadlines() -> Vec<u64> {
    let now = now_us() / 1000;
    [
        0,
        1,
        -1,
        i64::MIN,
        i64::MAX,
        i64::MAX - 1,
        now - 1000,
        now + 1000,
        now + 1_000_000_000_000,
    ]
    .iter()
    .map(|d| *d as u64)
    .collect()
}

/// A DUMP body of a lock ends with `02 81 <deadline, 8 bytes> 02 81 <fence, 8 bytes> 00`:
/// each an unsigned module field in the 64-bit length encoding, then the end marker.
const FENCE_AT_END: usize = 9;
const DEADLINE_AT_END: usize = 19;

fn put_u64(body: &mut [u8], from_end: usize, value: u64) {
    if body.len() > from_end {
        let at = body.len() - from_end;
        body[at..at + 8].copy_from_slice(&value.to_be_bytes());
    }
}

/// Length encodings for the token's length byte: small, 14-bit, 32-bit, 64-bit, and the
/// special (integer and LZF) string encodings.
const LENGTH_ENCODINGS: [&[u8]; 14] = [
    &[0x00],
    &[0x01],
    &[0x02],
    &[0x3f],
    &[0x40, 0x00],
    &[0x41, 0x00],
    &[0x41, 0x01],
    &[0x7f, 0xff],
    &[0x80, 0x00, 0x10, 0x00, 0x00],
    &[0x80, 0xff, 0xff, 0xff, 0xff],
    &[0x81, 0, 0, 0, 1, 0, 0, 0, 0],
    &[0xc0, 0x2a],
    &[0xc2, 0x01, 0x02, 0x03, 0x04],
    &[0xc3, 0x05, 0x10],
];
const SPECIAL_BYTES: [u8; 12] = [0, 1, 2, 5, 0x3f, 0x40, 0x7f, 0x80, 0x81, 0xc0, 0xc3, 0xff];

/// One random mutation (sometimes two or three) of one of the bodies; never the first byte,
/// the value's RDB type, so that a payload that loads is a lock or nothing.
fn mutate(rng: &mut Rng, bodies: &[Vec<u8>]) -> (Vec<u8>, &'static str) {
    let mut body = rng.pick(bodies).clone();
    let rounds = if rng.chance(20) { rng.range(2, 3) } else { 1 };
    let mut kind = "";
    for _ in 0..rounds {
        let len = body.len() as u64;
        if len < 2 {
            break;
        }
        let at = rng.range(1, len - 1) as usize;
        kind = match rng.below(10) {
            0 => {
                for _ in 0..rng.range(1, 4) {
                    let at = rng.range(1, len - 1) as usize;
                    body[at] ^= 1 << rng.below(8);
                }
                "flip"
            }
            1 => {
                body[at] = *rng.pick(&SPECIAL_BYTES);
                "byte"
            }
            2 => {
                body.truncate(at);
                "truncate"
            }
            3 => {
                let n = rng.range(1, 40) as usize;
                body.extend(rng.bytes(n));
                "extend"
            }
            4 => {
                let n = rng.range(1, 16) as usize;
                let bytes = rng.bytes(n);
                body.splice(at..at, bytes);
                "insert"
            }
            5 => {
                let end = (at + rng.range(1, 16) as usize).min(body.len());
                body.drain(at..end);
                "delete"
            }
            6 => {
                let other = rng.pick(bodies);
                let from = rng.below(other.len() as u64) as usize;
                body.truncate(at);
                body.extend_from_slice(&other[from..]);
                "splice"
            }
            7 => {
                // The token's length: after the type, the module id and the string opcode.
                let encoding = rng.pick(&LENGTH_ENCODINGS).to_vec();
                let end = body.len().min(12);
                body.splice(11.min(end)..end, encoding);
                "token length"
            }
            8 => {
                put_u64(&mut body, FENCE_AT_END, *rng.pick(&special_fences()));
                "fence"
            }
            _ => {
                put_u64(&mut body, DEADLINE_AT_END, *rng.pick(&special_deadlines()));
                "deadline"
            }
        };
    }
    (body, kind)
}

/// The RESTORE campaign on one server, and what it found.
struct Restores {
    con: redis::Connection,
    version: Vec<u8>,
    n: usize,
    /// The highest fence restored or granted so far: new grants must exceed it.
    highest: i64,
    kept: Vec<String>,
    exhausted: Vec<String>,
    counts: Counts,
    violations: Violations,
}

impl Restores {
    fn restore(&mut self, body: &[u8], kind: &str) {
        self.n += 1;
        let key = format!("restored:{}", self.n);
        let payload = signed_dump(body, &self.version);
        let ttl: &[u8] = if self.n.is_multiple_of(5) {
            b"60000"
        } else {
            b"0"
        };
        let args = [b"RESTORE", key.as_bytes(), ttl, &payload];
        self.counts.bump("payloads_restored");
        match try_call(&mut self.con, &args) {
            Ok(Value::Okay) => {
                self.counts.bump("payloads_accepted");
                self.counts.bump(&format!("accepted_by_{kind}"));
                self.check_accepted(&key, kind);
            }
            Ok(other) => self.violation(format!("RESTORE ({kind}) answered {other:?}")),
            Err(e) => {
                self.counts.bump("payloads_refused");
                if !e.starts_with("ERR") {
                    self.violation(format!("RESTORE ({kind}) refused with {e}"));
                }
                if int(call(&mut self.con, &[b"EXISTS", key.as_bytes()])) != 0 {
                    self.violation(format!("a refused RESTORE ({kind}) left {key}"));
                }
                self.probe(&format!("refused ({kind})"), true);
            }
        }
        if self.n.is_multiple_of(100) {
            let _: String = redis::cmd("PING").query(&mut self.con).unwrap();
        }
    }

    fn violation(&self, what: String) {
        self.violations.add(what);
    }

    fn check_new_fence(&mut self, fence: i64, after: &str) {
        if fence <= self.highest {
            self.violation(format!(
                "a grant after a restore {after} has fence {fence} <= {}",
                self.highest
            ));
        }
        self.highest = fence;
    }

    /// A grant on another key: above every fence seen; and after a refused RESTORE, no
    /// higher than the clock allows (a refused payload changes nothing, the fence clock
    /// included).
    fn probe(&mut self, after: &str, refused: bool) {
        let args = [&b"LOCK.ACQUIRE"[..], b"probe", b"1000", b"TOKEN", b"prober"];
        let reply = try_call(&mut self.con, &args);
        let now = now_us();
        match reply {
            Ok(reply @ Value::Array(_)) => {
                let (_, fence) = grant(&reply).unwrap();
                if refused && fence > (self.highest + 1).max(now) + 1000 {
                    self.violation(format!(
                        "a RESTORE {after} raised the fence clock from {} to {}",
                        self.highest,
                        fence - 1
                    ));
                }
                self.check_new_fence(fence, after);
            }
            Err(e) if e.contains("exhausted") => {
                if refused && self.highest < MAX_FENCE {
                    self.violation(format!(
                        "a RESTORE {after} exhausted the fence clock (it was at {})",
                        self.highest
                    ));
                }
                self.exhausted.push(format!("after a restore {after}: {e}"));
            }
            other => self.violation(format!("ACQUIRE after a restore {after}: {other:?}")),
        }
        call(&mut self.con, &[b"DEL", b"probe"]);
    }

    /// Whatever RESTORE accepted behaves as a lock.
    fn check_accepted(&mut self, key: &str, kind: &str) {
        let k = key.as_bytes();
        let kind_of: String = redis::cmd("TYPE").arg(k).query(&mut self.con).unwrap();
        if kind_of == "none" {
            // A restored lock whose deadline has passed: its key expires at once, whatever
            // ttl RESTORE gave it, because the lock's deadline decides.
            self.probe(&format!("accepted and expired ({kind})"), false);
            return;
        }
        if kind_of != "fencelock" {
            self.violation(format!("RESTORE ({kind}) made a {kind_of}"));
            return;
        }
        let held = info(&mut self.con, k);
        if let Some((fence, _, waiters)) = held {
            if !(0..=MAX_FENCE).contains(&fence) || waiters != 0 {
                self.violation(format!(
                    "restored ({kind}): fence {fence}, waiters {waiters}"
                ));
            }
            self.highest = self.highest.max(fence);
        }
        let wrong: &[u8] = b"not-the-owner\xfe";
        for args in [
            &[&b"LOCK.RELEASE"[..], k, wrong][..],
            &[b"LOCK.RENEW", k, wrong, b"1000"],
        ] {
            let answer = try_call(&mut self.con, args);
            if answer != Ok(Value::Int(0)) {
                self.violation(format!("{args:?} on a restored lock ({kind}): {answer:?}"));
            }
        }
        // Someone else's ACQUIRE: null while the lock is held; once free, a grant above every
        // fence seen (a restored fence raises the clock). Every tenth restored lock is kept
        // as it is, for the save and load at the end.
        let keep = self.n % 10 == 3;
        if !keep {
            let intruder = [&b"LOCK.ACQUIRE"[..], k, b"1000", b"TOKEN", wrong];
            match try_call(&mut self.con, &intruder) {
                Ok(Value::Nil) if held.is_some() => {}
                Ok(reply @ Value::Array(_)) if held.is_none() => {
                    let (_, fence) = grant(&reply).unwrap();
                    self.check_new_fence(fence, kind);
                }
                Err(e) if e.contains("exhausted") => {
                    self.exhausted
                        .push(format!("on a restored lock ({kind}): {e}"));
                }
                other => self.violation(format!(
                    "someone else's ACQUIRE on a restored lock ({kind}, held: {held:?}): {other:?}"
                )),
            }
            call(&mut self.con, &[b"DEL", k]);
        } else {
            self.kept.push(key.to_string());
        }
        self.probe(&format!("accepted ({kind})"), false);
    }
}

/// Real DUMP payloads of locks (short, 32-hex, UUID, long and 256-byte tokens), mutated
/// thousands of times and re-signed with a valid CRC-64 so that the server hands them to the
/// module: the server survives, a payload that loads behaves as a lock, and the server still
/// grants new locks afterwards (a restored fence must not exhaust the fence clock).
#[test]
fn mutated_restore_payloads_never_crash_the_server_and_load_only_as_locks() {
    const TEST: &str = "mutated RESTORE";
    let srv = Server::start();
    let mut con = conn(&srv);
    let mut rng = Rng::new(5);
    let tokens: Vec<Option<Vec<u8>>> = vec![
        Some(b"abc".to_vec()),
        None,
        Some(b"123e4567-e89b-12d3-a456-426614174000".to_vec()),
        Some(rng.bytes(200)),
        Some(vec![b'z'; 256]),
    ];
    let mut bodies = Vec::new();
    let mut version = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let key = format!("source:{i}");
        let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", key.as_bytes(), b"600000"];
        if let Some(token) = token {
            args.extend([&b"TOKEN"[..], token]);
        }
        grant(&call(&mut con, &args)).unwrap();
        let Value::BulkString(dump) = call(&mut con, &[b"DUMP", key.as_bytes()]) else {
            panic!("no dump of {key}")
        };
        let (body, footer) = dump.split_at(dump.len() - 10);
        version = footer[..2].to_vec();
        assert_eq!(signed_dump(body, &version), dump);
        let n = body.len();
        assert_eq!(
            (
                body[n - 21],
                body[n - 20],
                body[n - 11],
                body[n - 10],
                body[n - 1]
            ),
            (2, 0x81, 2, 0x81, 0),
            "the layout of a lock's DUMP body changed: {body:?}"
        );
        bodies.push(body.to_vec());
    }
    // Shared locks (encoding 2): a SHARED lock of three holders and a LIMIT 2 lock of two,
    // whose last holder's deadline and fence end the payload as an exclusive lock's do.
    /// A shared source lock: its key, its holders' tokens, and the mode options.
    type Source<'a> = (&'a str, &'a [&'a [u8]], &'a [&'a str]);
    let shared_sources: [Source; 2] = [
        (
            "source:shared",
            &[
                b"r1",
                b"0123456789abcdef0123456789abcdef",
                b"123e4567-e89b-12d3-a456-426614174000",
            ],
            &["SHARED"],
        ),
        ("source:limit", &[b"p1", b"p2"], &["LIMIT", "2"]),
    ];
    for (key, tokens, mode) in shared_sources {
        for token in tokens {
            let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", key.as_bytes(), b"600000"];
            args.extend([&b"TOKEN"[..], token]);
            args.extend(mode.iter().map(|m| m.as_bytes()));
            grant(&call(&mut con, &args)).unwrap();
        }
        let Value::BulkString(dump) = call(&mut con, &[b"DUMP", key.as_bytes()]) else {
            panic!("no dump of {key}")
        };
        let body = &dump[..dump.len() - 10];
        let n = body.len();
        assert_eq!(
            (body[n - 21], body[n - 11], body[n - 1]),
            (2, 2, 0),
            "the layout of a shared lock's DUMP body changed: {body:?}"
        );
        bodies.push(body.to_vec());
    }
    // Labeled locks (the kinds 2 and 3 of encoding 2), which end with their labels: only
    // randomly mutated, below.
    let mut labeled = Vec::new();
    let labeled_sources: [&[&[u8]]; 3] = [
        &[b"META", b"10.0.0.7:8080"],
        &[b"LIMIT", b"3", b"META", b""],
        &[b"LIMIT", b"3", b"TOKEN", b"second"],
    ];
    for (i, options) in labeled_sources.iter().enumerate() {
        let key: &[u8] = if i == 0 {
            b"source:labeled"
        } else {
            b"source:labeled-limit"
        };
        let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", key, b"600000"];
        args.extend(options.iter());
        grant(&call(&mut con, &args)).unwrap();
    }
    for key in [&b"source:labeled"[..], b"source:labeled-limit"] {
        let Value::BulkString(dump) = call(&mut con, &[b"DUMP", key]) else {
            panic!("no dump of {key:?}")
        };
        labeled.push(dump[..dump.len() - 10].to_vec());
    }
    let highest = fence_of(&mut con, b"source:labeled-limit").unwrap();
    let mut run = Restores {
        con,
        version,
        n: 0,
        highest,
        kept: Vec::new(),
        exhausted: Vec::new(),
        counts: Counts::default(),
        violations: Violations::default(),
    };
    // Every special deadline and fence (in rising order) in every payload, also with the
    // module's end marker broken (the server refuses those after the module has read the
    // fence), then random mutations.
    for deadline in special_deadlines() {
        for body in &bodies {
            let mut b = body.clone();
            put_u64(&mut b, DEADLINE_AT_END, deadline);
            run.restore(&b, "deadline");
        }
    }
    for fence in special_fences() {
        for body in &bodies {
            let mut b = body.clone();
            put_u64(&mut b, FENCE_AT_END, fence);
            *b.last_mut().unwrap() = 1;
            run.restore(&b, "fence, no end marker");
            *b.last_mut().unwrap() = 0;
            run.restore(&b, "fence");
        }
    }
    for _ in 0..scaled(50_000) {
        let pool = if rng.chance(25) { &labeled } else { &bodies };
        let (body, kind) = mutate(&mut rng, pool);
        run.restore(&body, kind);
    }
    srv.assert_alive();
    // What was restored also survives a save and load: a lock held for a while yet is
    // back with its fence; others are free or gone.
    let before: Vec<_> = (run.kept.iter())
        .map(|key| lock_info_of(&mut run.con, key.as_bytes()))
        .collect();
    assert_eq!(call(&mut run.con, &[b"DEBUG", b"RELOAD"]), Value::Okay);
    srv.assert_alive();
    for (key, before) in run.kept.iter().zip(before) {
        let kind_of: String = redis::cmd("TYPE").arg(key).query(&mut run.con).unwrap();
        assert!(
            ["fencelock", "none"].contains(&kind_of.as_str()),
            "{key}: {kind_of}"
        );
        if let Some(before) = before.filter(|b| b.ttl > 60_000) {
            let (fence, ttl) = (before.fence, before.ttl);
            let after = fence_of(&mut run.con, key.as_bytes());
            if before.mode == "exclusive" {
                assert_eq!(after, Some(fence), "{key} (ttl {ttl}) after DEBUG RELOAD");
            } else {
                // The key's ttl is its latest holder's; the holder of the highest fence may
                // have a shorter deadline, passed meanwhile.
                assert!(
                    after.is_some_and(|after| after <= fence),
                    "{key} (ttl {ttl}, fence {fence}) after DEBUG RELOAD: {after:?}"
                );
            }
        }
    }
    run.counts.add("kept_through_debug_reload", run.kept.len());
    run.counts.add("acquire_exhausted", run.exhausted.len());
    run.counts.print(TEST);
    let after = try_call(&mut run.con, &[b"LOCK.ACQUIRE", b"after-campaign", b"1000"]);
    assert!(
        matches!(after, Ok(Value::Array(_))),
        "ACQUIRE on a new key after the RESTORE campaign: {after:?}; {} ACQUIREs failed, the \
         first {:?}; violations: {:?}",
        run.exhausted.len(),
        run.exhausted.first(),
        run.violations.0.lock().unwrap().first()
    );
    assert!(run.exhausted.is_empty(), "{:?}", run.exhausted.first());
    run.violations.assert_none(TEST);
}

// ---------------------------------------------------------------------------------------
// 6. Random argument vectors, in every calling context

const SENTINELS: usize = 4;
const PLAYGROUND: usize = 6;

#[derive(Clone, Copy, Debug)]
enum Target {
    /// Keys the well-formed calls play with.
    Play(usize),
    /// Locks held for an hour by a known owner: no call here may change them.
    Sentinel(usize),
    /// A string key.
    Plain,
    /// A key that never exists.
    Ghost,
}

fn key_name(target: Target) -> Vec<u8> {
    match target {
        Target::Play(i) => format!("play:{i}\x00\u{e9}").into_bytes(),
        Target::Sentinel(i) => format!("sentinel:{i}").into_bytes(),
        Target::Plain => b"plain".to_vec(),
        Target::Ghost => b"ghost".to_vec(),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Context {
    Plain,
    Multi,
    Eval,
    Fcall,
}

/// What the contract says a call answers.
#[derive(Clone, Debug)]
enum Expect {
    /// Malformed (or an internal command): an error reply, nothing changed.
    Error,
    /// `[token, fence]` or null; `token` None: a server-made token.
    Grant(usize, Option<Vec<u8>>),
    Null,
    ZeroOrOne,
    Zero,
    WrongType,
    /// LOCK.INFO of a play key: null or the fence of its last grant.
    InfoOf(usize),
    InfoFence(i64),
    /// LOCK.HOLDERS of a play key: null or one holder, with the fence of its last grant.
    HoldersOf(usize),
    /// LOCK.HOLDERS of a sentinel: one holder with this fence.
    HoldersFence(i64),
}

const VALID_TTLS: [&[u8]; 9] = [
    b"1",
    b"2",
    b"10",
    b"100",
    b"5000",
    b"60000",
    b"3600000",
    b"1000000000000",
    b"1000000000000000",
];
const BAD_TTLS: [&[u8]; 17] = [
    b"0",
    b"-1",
    b"-100",
    b"abc",
    b"",
    b"1.5",
    b"+5",
    b" 5",
    b"5 ",
    b"0x10",
    b"1e3",
    b"9223372036854775807",
    b"9223372036854775806",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"99999999999999999999",
    b"\x00",
];
/// Timeouts for a plain call, which really waits: short.
const PLAIN_TIMEOUTS: [&[u8]; 4] = [b"1", b"2", b"5", b"10"];
/// Timeouts where BLOCK is a single attempt (MULTI, scripts, functions).
const SINGLE_ATTEMPT_TIMEOUTS: [&[u8]; 5] = [b"0", b"1", b"10", b"100000", b"1000000000"];
const BAD_TIMEOUTS: [&[u8]; 7] = [
    b"-1",
    b"abc",
    b"",
    b"1.5",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"18446744073709551616",
];
const UNKNOWN_OPTIONS: [&[u8]; 10] = [
    b"NX",
    b"PX",
    b"EX",
    b"KEEPTTL",
    b"TOKENS",
    b"BLOCKING",
    b"TTL",
    b"",
    b"\x00",
    b"T0KEN",
];
const BAD_LIMITS: [&[u8]; 8] = [
    b"0",
    b"-1",
    b"1000001",
    b"x",
    b"",
    b"1.5",
    b"4294967297",
    b"+3",
];
const INTERNAL_WORDS: [&[u8]; 14] = [
    b"ghost",
    b"tok",
    b"0",
    b"1",
    b"-1",
    b"99999999999999999",
    b"4611686018427387903",
    b"9223372036854775807",
    b"",
    // Holders as sent since 0.4, and near misses.
    b"1:4611686018427387903:tok",
    b"9223372036854775807:1:",
    b"::",
    b"SHARED",
    b"LIMIT",
];
/// Owners that come back, so that retries by the same token happen.
const OWNERS: [&[u8]; 5] = [
    b"a",
    b"owner",
    b"x\x00y",
    b"0123456789abcdef0123456789abcdef",
    b"123e4567-e89b-12d3-a456-426614174000",
];

struct Argv {
    rng: Rng,
    /// (owner token, fence) of each sentinel.
    sentinels: Vec<(Vec<u8>, i64)>,
    /// The last grant of each play key.
    last: Vec<Option<(Vec<u8>, i64)>>,
    highest: i64,
    counts: Counts,
    violations: Violations,
}

impl Argv {
    fn option(&mut self, name: &str) -> Vec<u8> {
        name.bytes()
            .map(|b| {
                if self.rng.chance(50) {
                    b.to_ascii_lowercase()
                } else {
                    b
                }
            })
            .collect()
    }

    fn valid_token(&mut self) -> Vec<u8> {
        match self.rng.below(4) {
            0 => self.rng.pick(&OWNERS).to_vec(),
            1 => {
                let n = self.rng.range(1, 15) as usize;
                self.rng.bytes(n)
            }
            2 => vec![b'q'; 256],
            _ => {
                let n = self.rng.range(16, 256) as usize;
                self.rng.bytes(n)
            }
        }
    }

    fn bad_token(&mut self) -> Vec<u8> {
        match self.rng.below(3) {
            0 => Vec::new(),
            1 => vec![b't'; 257],
            _ => {
                let n = self.rng.range(258, 2000) as usize;
                self.rng.bytes(n)
            }
        }
    }

    fn target(&mut self) -> Target {
        match self.rng.below(10) {
            0..=4 => Target::Play(self.rng.below(PLAYGROUND as u64) as usize),
            5..=7 => Target::Sentinel(self.rng.below(SENTINELS as u64) as usize),
            8 => Target::Plain,
            _ => Target::Ghost,
        }
    }

    /// A token for `target` that is not its owner's (for sentinels), or any.
    fn token_for(&mut self, target: Target) -> Vec<u8> {
        loop {
            let token = self.valid_token();
            match target {
                Target::Sentinel(i) if token == self.sentinels[i].0 => continue,
                _ => return token,
            }
        }
    }

    /// TOKEN and BLOCK options in random order and case, each at most once.
    fn options(&mut self, token: Option<Vec<u8>>, context: Context) -> Vec<Vec<u8>> {
        let mut parts: Vec<Vec<Vec<u8>>> = Vec::new();
        if let Some(token) = token {
            parts.push(vec![self.option("TOKEN"), token]);
        }
        if self.rng.chance(40) {
            let timeout = if context == Context::Plain {
                self.rng.pick(&PLAIN_TIMEOUTS)
            } else {
                self.rng.pick(&SINGLE_ATTEMPT_TIMEOUTS)
            };
            parts.push(vec![self.option("BLOCK"), timeout.to_vec()]);
        }
        if self.rng.chance(50) {
            parts.reverse();
        }
        parts.concat()
    }

    /// `EPHEMERAL` and `META value` or neither, in random order and case; whether EPHEMERAL
    /// is among them.
    fn hold_options(&mut self) -> (Vec<Vec<u8>>, bool) {
        let mut parts: Vec<Vec<Vec<u8>>> = Vec::new();
        let ephemeral = self.rng.chance(20);
        if ephemeral {
            parts.push(vec![self.option("EPHEMERAL")]);
        }
        if self.rng.chance(20) {
            let n = *self.rng.pick(&[0usize, 1, 13, 1024]);
            parts.push(vec![self.option("META"), self.rng.bytes(n)]);
        }
        if self.rng.chance(50) {
            parts.reverse();
        }
        (parts.concat(), ephemeral)
    }

    /// A well-formed call and what it must answer.
    fn well_formed(&mut self, context: Context) -> (Vec<Vec<u8>>, Expect) {
        let mut target = self.target();
        let command = self.rng.below(5);
        if command == 0 && matches!(target, Target::Ghost) {
            target = Target::Play(0); // an ACQUIRE would create the ghost
        }
        let key = key_name(target);
        let ttl = self.rng.pick(&VALID_TTLS).to_vec();
        match command {
            0 => {
                let token = self.rng.chance(70).then(|| self.token_for(target));
                let mut args = vec![b"LOCK.ACQUIRE".to_vec(), key, ttl];
                args.extend(self.options(token.clone(), context));
                let (hold, ephemeral) = self.hold_options();
                args.extend(hold);
                let in_script = matches!(context, Context::Eval | Context::Fcall);
                let expect = match target {
                    // A script cannot bind a hold to a connection: refused, whatever the key.
                    _ if ephemeral && in_script => Expect::Error,
                    Target::Play(i) => Expect::Grant(i, token),
                    Target::Sentinel(_) => Expect::Null,
                    Target::Plain => Expect::WrongType,
                    Target::Ghost => unreachable!(),
                };
                (args, expect)
            }
            1 | 2 => {
                let token = self.token_for(target);
                let mut args = vec![b"LOCK.RELEASE".to_vec(), key, token];
                if command == 1 {
                    args[0] = b"LOCK.RENEW".to_vec();
                    args.push(ttl);
                }
                let expect = match target {
                    Target::Play(_) => Expect::ZeroOrOne,
                    Target::Sentinel(_) | Target::Ghost => Expect::Zero,
                    Target::Plain => Expect::WrongType,
                };
                (args, expect)
            }
            4 => {
                let expect = match target {
                    Target::Play(i) => Expect::HoldersOf(i),
                    Target::Sentinel(i) => Expect::HoldersFence(self.sentinels[i].1),
                    Target::Ghost => Expect::Null,
                    Target::Plain => Expect::WrongType,
                };
                (vec![b"LOCK.HOLDERS".to_vec(), key], expect)
            }
            _ => {
                let expect = match target {
                    Target::Play(i) => Expect::InfoOf(i),
                    Target::Sentinel(i) => Expect::InfoFence(self.sentinels[i].1),
                    Target::Ghost => Expect::Null,
                    Target::Plain => Expect::WrongType,
                };
                (vec![b"LOCK.INFO".to_vec(), key], expect)
            }
        }
    }

    /// A call with exactly one thing wrong (or an internal command): it must be refused.
    fn malformed(&mut self, context: Context) -> Vec<Vec<u8>> {
        let target = self.target();
        let key = key_name(target);
        let owner = match target {
            Target::Sentinel(i) if self.rng.chance(50) => self.sentinels[i].0.clone(),
            _ => self.token_for(target),
        };
        let ttl = self.rng.pick(&VALID_TTLS).to_vec();
        let bad_ttl = self.rng.pick(&BAD_TTLS).to_vec();
        let acquire =
            |rest: Vec<Vec<u8>>| [vec![b"LOCK.ACQUIRE".to_vec(), key.clone()], rest].concat();
        match self.rng.below(27) {
            0 => vec![b"LOCK.ACQUIRE".to_vec()],
            24 => {
                // A label over 1024 bytes, or META without its value.
                let mut args = acquire(vec![ttl]);
                args.extend(self.options(Some(owner), context));
                args.push(self.option("META"));
                if self.rng.chance(50) {
                    args.push(vec![b'm'; 1025 + self.rng.below(100) as usize]);
                }
                args
            }
            25 => {
                // EPHEMERAL twice, or META twice.
                let mut args = acquire(vec![ttl]);
                args.extend(self.options(Some(owner), context));
                if self.rng.chance(50) {
                    args.extend([self.option("EPHEMERAL"), self.option("EPHEMERAL")]);
                } else {
                    let meta = self.option("META");
                    args.extend([meta.clone(), b"a".to_vec(), meta, b"b".to_vec()]);
                }
                args
            }
            26 => {
                // LOCK.HOLDERS without its key, or with more.
                let mut args = vec![b"LOCK.HOLDERS".to_vec()];
                if self.rng.chance(50) {
                    args.extend([key, owner]);
                }
                args
            }
            20 => {
                // A bad LIMIT, with any other options.
                let bad = self.rng.pick(&BAD_LIMITS).to_vec();
                let mut args = acquire(vec![ttl, self.option("LIMIT"), bad]);
                args.extend(self.options(Some(owner), context));
                args
            }
            21 => {
                // SHARED and LIMIT together, in either order.
                let mut parts = [
                    vec![self.option("SHARED")],
                    vec![self.option("LIMIT"), b"3".to_vec()],
                ];
                if self.rng.chance(50) {
                    parts.reverse();
                }
                let mut args = acquire(vec![ttl]);
                args.extend(parts.concat());
                args.extend(self.options(Some(owner), context));
                args
            }
            22 => {
                // SHARED twice, LIMIT twice, or LIMIT without its value.
                let mut args = acquire(vec![ttl]);
                args.extend(self.options(Some(owner), context));
                match self.rng.below(3) {
                    0 => args.extend([self.option("SHARED"), self.option("SHARED")]),
                    1 => args.extend([
                        self.option("LIMIT"),
                        b"2".to_vec(),
                        self.option("LIMIT"),
                        b"2".to_vec(),
                    ]),
                    _ => args.push(self.option("LIMIT")),
                }
                args
            }
            23 => {
                // The shared-holder effect, from an ordinary client.
                let mut args = vec![b"LOCK.DROP".to_vec()];
                for _ in 0..self.rng.below(4) {
                    args.push(self.rng.pick(&INTERNAL_WORDS).to_vec());
                }
                args
            }
            1 => acquire(vec![]),
            2 => {
                let mut args = acquire(vec![bad_ttl]);
                args.extend(self.options(Some(owner), context));
                args
            }
            3 => acquire(vec![ttl, self.option("TOKEN"), self.bad_token()]),
            4 => {
                let mut args = acquire(vec![ttl]);
                args.extend(self.options(None, context));
                let name = if self.rng.chance(50) {
                    "TOKEN"
                } else {
                    "BLOCK"
                };
                args.push(self.option(name));
                args
            }
            5 => {
                let timeout = self.rng.pick(&BAD_TIMEOUTS).to_vec();
                acquire(vec![
                    ttl,
                    self.option("BLOCK"),
                    timeout,
                    self.option("TOKEN"),
                    owner,
                ])
            }
            6 => {
                let other = self.valid_token();
                acquire(vec![
                    ttl,
                    self.option("TOKEN"),
                    owner,
                    self.option("TOKEN"),
                    other,
                ])
            }
            7 => acquire(vec![
                ttl,
                self.option("BLOCK"),
                b"1".to_vec(),
                self.option("BLOCK"),
                b"1".to_vec(),
            ]),
            8 => {
                let mut args = acquire(vec![ttl]);
                args.extend(self.options(Some(owner), context));
                let unknown = loop {
                    let word = match self.rng.below(2) {
                        0 => self.rng.pick(&UNKNOWN_OPTIONS).to_vec(),
                        _ => {
                            let n = self.rng.range(1, 8) as usize;
                            self.rng.bytes(n)
                        }
                    };
                    let known = [
                        &b"TOKEN"[..],
                        b"BLOCK",
                        b"SHARED",
                        b"LIMIT",
                        b"EPHEMERAL",
                        b"META",
                    ];
                    if !known.iter().any(|k| word.eq_ignore_ascii_case(k)) {
                        break word;
                    }
                };
                args.push(unknown);
                if self.rng.chance(50) {
                    args.push(b"1".to_vec());
                }
                args
            }
            9 => {
                let mut args = vec![b"LOCK.RENEW".to_vec(), key, owner, ttl, b"x".to_vec()];
                args.truncate(self.rng.below(4) as usize + 1);
                if args.len() == 4 {
                    args.push(b"extra".to_vec());
                }
                args
            }
            10 => vec![b"LOCK.RENEW".to_vec(), key, owner, bad_ttl],
            11 => vec![b"LOCK.RENEW".to_vec(), key, self.bad_token(), ttl],
            12 => {
                let mut args = vec![b"LOCK.RELEASE".to_vec(), key, owner, b"x".to_vec()];
                if self.rng.chance(50) {
                    args.truncate(self.rng.below(2) as usize + 1);
                }
                args
            }
            13 => vec![b"LOCK.RELEASE".to_vec(), key, self.bad_token()],
            14 => {
                let mut args = vec![b"LOCK.INFO".to_vec()];
                if self.rng.chance(50) {
                    args.push(key);
                    args.push(owner);
                }
                args
            }
            15..=17 => {
                let mut args = vec![b"LOCK.APPLY".to_vec()];
                if self.rng.chance(50) {
                    // A plausible effect: a lock with a far fence on a key that never exists.
                    // In the form sent since 0.4 or the one before.
                    let deadline = (now_us() / 1000 + 1_000_000).to_string();
                    let fence = "4611686018427387000";
                    if self.rng.chance(50) {
                        args.extend([
                            b"ghost".to_vec(),
                            format!("{deadline}:{fence}:tok").into_bytes(),
                        ]);
                    } else {
                        args.extend([
                            b"ghost".to_vec(),
                            b"tok".to_vec(),
                            deadline.into_bytes(),
                            fence.as_bytes().to_vec(),
                        ]);
                    }
                } else {
                    for _ in 0..self.rng.below(6) {
                        args.push(self.rng.pick(&INTERNAL_WORDS).to_vec());
                    }
                }
                args
            }
            _ => {
                let mut args = vec![b"LOCK.CLOCK".to_vec()];
                for _ in 0..self.rng.below(3) {
                    args.push(self.rng.pick(&INTERNAL_WORDS).to_vec());
                }
                args
            }
        }
    }

    fn call(&mut self, context: Context) -> (Vec<Vec<u8>>, Expect) {
        if self.rng.chance(50) {
            self.counts.bump("well_formed");
            self.well_formed(context)
        } else {
            self.counts.bump("malformed");
            (self.malformed(context), Expect::Error)
        }
    }

    /// Check one reply against what was expected; follows the play keys' grants.
    fn check(&mut self, args: &[Vec<u8>], expect: &Expect, got: Result<Value, String>) {
        let ok = match (expect, &got) {
            (Expect::Error, Err(e)) => e.starts_with("ERR ") || e.starts_with("WRONGTYPE "),
            (Expect::WrongType, Err(e)) => e.starts_with("WRONGTYPE "),
            (Expect::Null, Ok(Value::Nil)) => true,
            (Expect::Zero, Ok(Value::Int(0))) => true,
            (Expect::ZeroOrOne, Ok(Value::Int(0 | 1))) => true,
            (Expect::InfoFence(f), Ok(v)) => info_reply(v.clone()).map(|i| i.0) == Some(*f),
            (Expect::HoldersOf(_), Ok(Value::Nil)) => true,
            (Expect::HoldersOf(i), Ok(Value::Array(entries))) => {
                let last = self.last[*i].as_ref().map(|l| l.1);
                entries.len() == 1 && holder_fence(&entries[0]).is_some_and(|f| Some(f) == last)
            }
            (Expect::HoldersFence(f), Ok(Value::Array(entries))) => {
                entries.len() == 1 && holder_fence(&entries[0]) == Some(*f)
            }
            (Expect::InfoOf(i), Ok(v)) => {
                let fence = info_reply(v.clone()).map(|i| i.0);
                fence.is_none() || fence == self.last[*i].as_ref().map(|l| l.1)
            }
            (Expect::Grant(_, _), Ok(Value::Nil)) => true,
            (Expect::Grant(i, token), Ok(Value::Array(items))) => match items.as_slice() {
                [Value::BulkString(t), Value::Int(fence)] => self.granted(*i, token, t, *fence),
                _ => false,
            },
            _ => false,
        };
        self.counts.bump(if got.is_ok() {
            "replies"
        } else {
            "error_replies"
        });
        if !ok {
            let shown: Vec<String> = args
                .iter()
                .map(|a| String::from_utf8_lossy(&a[..a.len().min(40)]).into_owned())
                .collect();
            self.violations
                .add(format!("{shown:?}: expected {expect:?}, got {got:?}"));
        }
    }

    /// A grant on a play key: the asked or a server-made token; the same fence as the last
    /// grant only for the same token (an idempotent retry), otherwise above every fence.
    fn granted(&mut self, i: usize, asked: &Option<Vec<u8>>, token: &[u8], fence: i64) -> bool {
        let token_ok = match asked {
            Some(asked) => asked == token,
            None => token.len() == 32 && token.iter().all(|b| b"0123456789abcdef".contains(b)),
        };
        let fence_ok = match &self.last[i] {
            Some((t, f)) if *f == fence => t == token,
            _ => fence > self.highest,
        };
        self.counts.bump("grants");
        self.highest = self.highest.max(fence);
        self.last[i] = Some((token.to_vec(), fence));
        token_ok && fence_ok
    }
}

/// The fence of one LOCK.HOLDERS entry (RESP2 flat array or RESP3 map).
fn holder_fence(entry: &Value) -> Option<i64> {
    let pairs = info_pairs(entry.clone())?;
    match info_field_of(&pairs, "fence")? {
        Value::Int(fence) => Some(fence),
        _ => None,
    }
}

/// The locks and keys no call may change, as DEBUG DIGEST-VALUE sees them.
fn untouched(con: &mut redis::Connection) -> Value {
    let mut args: Vec<Vec<u8>> = vec![b"DEBUG".to_vec(), b"DIGEST-VALUE".to_vec()];
    args.extend((0..SENTINELS).map(|i| key_name(Target::Sentinel(i))));
    args.extend([key_name(Target::Plain), key_name(Target::Ghost)]);
    call(con, &refs(&args))
}

/// MULTI, the calls, EXEC: each call's reply, or None where it did not run because a call
/// was refused while queueing (its error is its reply, and EXEC answers EXECABORT).
fn run_transaction(
    con: &mut redis::Connection,
    batch: &[(Vec<Vec<u8>>, Expect)],
) -> Vec<Option<Result<Value, String>>> {
    assert_eq!(call(con, &[b"MULTI"]), Value::Okay);
    let queued: Vec<Result<Value, String>> = (batch.iter())
        .map(|(args, _)| try_call(con, &refs(args)))
        .collect();
    // Not `query`, which turns the first error inside the reply into the reply.
    let exec = redis::ConnectionLike::req_command(con, &redis::cmd("EXEC"));
    if queued.iter().any(Result::is_err) {
        let exec = reply_or_error(exec);
        assert!(
            matches!(&exec, Err(e) if e.starts_with("EXECABORT")),
            "{exec:?}"
        );
        return queued.into_iter().map(|q| q.err().map(Err)).collect();
    }
    match exec.unwrap() {
        Value::Array(items) => items
            .into_iter()
            .map(|v| Some(reply_or_error(Ok(v))))
            .collect(),
        other => panic!("EXEC: {other:?}"),
    }
}

const PCALL: &[u8] = b"return redis.pcall(unpack(ARGV))";

/// Thousands of random calls to every LOCK command, well-formed (valid-looking: right arity,
/// numbers near the limits, tokens of 1 and 256 bytes, options in any case and order) and
/// malformed (one thing wrong: arity, ttl 0/-1/overflowing, tokens of 0 or 257+ bytes,
/// unknown or repeated options, bad timeouts) plus the internal LOCK.APPLY and LOCK.CLOCK, as
/// plain calls, inside MULTI/EXEC, EVAL (`redis.pcall`) and FCALL: each answers per the
/// contract, the malformed ones change nothing, and the server stays up.
#[test]
fn random_argument_vectors_in_every_context_answer_per_contract() {
    const TEST: &str = "random argv";
    let srv = Server::start();
    let mut con = conn(&srv);
    call(&mut con, &[b"SET", b"plain", b"value"]);
    let library = format!(
        "#!lua name=chaos\nredis.register_function('chaos_pcall', function(keys, args) {} end)",
        "return redis.pcall(unpack(args))"
    );
    call(
        &mut con,
        &[b"FUNCTION", b"LOAD", b"REPLACE", library.as_bytes()],
    );
    let mut sentinels = Vec::new();
    for i in 0..SENTINELS {
        let owner = format!("sentinel-owner-{i}");
        let key = key_name(Target::Sentinel(i));
        let fence = acquire(
            &mut con,
            std::str::from_utf8(&key).unwrap(),
            3_600_000,
            &owner,
        )
        .unwrap();
        sentinels.push((owner.into_bytes(), fence));
    }
    let mut run = Argv {
        rng: Rng::new(6),
        highest: sentinels.iter().map(|s| s.1).max().unwrap(),
        sentinels,
        last: vec![None; PLAYGROUND],
        counts: Counts::default(),
        violations: Violations::default(),
    };
    let snapshot = untouched(&mut con);
    let total = scaled(50_000);
    let mut calls = 0;
    while calls < total {
        let context = *run.rng.pick(&[
            Context::Plain,
            Context::Plain,
            Context::Multi,
            Context::Eval,
            Context::Fcall,
        ]);
        let batch: Vec<(Vec<Vec<u8>>, Expect)> = (0..if context == Context::Multi {
            run.rng.range(1, 6)
        } else {
            1
        })
            .map(|_| run.call(context))
            .collect();
        calls += batch.len();
        run.counts
            .add(&format!("calls_{context:?}").to_lowercase(), batch.len());
        // None: not run (a transaction aborted by a call refused while queueing).
        let replies: Vec<Option<Result<Value, String>>> = match context {
            Context::Plain => vec![Some(try_call(&mut con, &refs(&batch[0].0)))],
            Context::Eval | Context::Fcall => {
                let (head, name): (&[u8], &[u8]) = if context == Context::Eval {
                    (b"EVAL", PCALL)
                } else {
                    (b"FCALL", b"chaos_pcall")
                };
                let mut args = vec![head, name, b"0"];
                args.extend(refs(&batch[0].0));
                vec![Some(try_call(&mut con, &args))]
            }
            Context::Multi => run_transaction(&mut con, &batch),
        };
        assert_eq!(replies.len(), batch.len());
        for ((args, expect), got) in batch.iter().zip(replies) {
            match got {
                Some(got) => run.check(args, expect, got),
                None => run.counts.bump("not_run_in_aborted_multi"),
            }
        }
        let now = untouched(&mut con);
        if now != snapshot {
            run.violations.add(format!(
                "{batch:?} changed the sentinels, the string key or the ghost"
            ));
            break;
        }
        if calls % 500 < batch.len() {
            // Start the play keys afresh now and then (a huge ttl keeps them held).
            let mut del: Vec<Vec<u8>> = vec![b"DEL".to_vec()];
            del.extend((0..PLAYGROUND).map(|i| key_name(Target::Play(i))));
            call(&mut con, &refs(&del));
            run.last = vec![None; PLAYGROUND];
            srv.assert_alive();
        }
    }
    srv.assert_alive();
    wait_for("no blocked clients", || blocked_clients(&mut con) == 0);
    // LOCK.APPLY and LOCK.CLOCK with far fences did not raise the fence clock.
    let fresh = acquire(&mut con, "fresh", 1000, "me").unwrap();
    assert!(
        fresh > run.highest && fresh < now_us() + 3_600_000_000,
        "{fresh}"
    );
    for (i, (owner, fence)) in run.sentinels.iter().enumerate() {
        let key = key_name(Target::Sentinel(i));
        assert_eq!(fence_of(&mut con, &key), Some(*fence));
        assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", &key, owner])), 1);
    }
    run.counts.print(TEST);
    run.violations.assert_none(TEST);
}
