//! Locks with several holders (`SHARED` holds and `LIMIT n` semaphores, beside exclusive
//! locks) survive what a deployment goes through with every holder: its token, its own
//! deadline and its own fence, the lock's mode and limit. Restarts from RDB and AOF (with and
//! without the RDB preamble, before and after BGREWRITEAOF), a replica that mirrors them and
//! is promoted, DUMP/RESTORE, MIGRATE, RENAME, MOVE, cluster slot migration; COPY is refused.
//!
//! Each test keeps a model of what it granted: for every holder its token, its fence and the
//! bounds of its deadline (the local clock before and after the command, plus the ttl: the
//! server runs on the same clock). `check` compares LOCK.INFO and PTTL with the model, and
//! `drain` renews and releases the holders one by one by their tokens, latest deadline first,
//! so that each step shows the deadline and the fence of the holders that remain: a holder
//! loaded with a wrong deadline, fence or token shows up there.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

// ---------------------------------------------------------------------------------------
// Requests

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Exclusive,
    Shared,
    Limit(u32),
}

impl Mode {
    fn args(self) -> Vec<Vec<u8>> {
        match self {
            Mode::Exclusive => vec![],
            Mode::Shared => vec![b"SHARED".to_vec()],
            Mode::Limit(n) => vec![b"LIMIT".to_vec(), n.to_string().into_bytes()],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            _ => "shared",
        }
    }

    fn limit(self) -> Option<i64> {
        match self {
            Mode::Limit(n) => Some(i64::from(n)),
            _ => None,
        }
    }
}

fn now_ms() -> i64 {
    now_us() / 1000
}

fn refs(args: &[Vec<u8>]) -> Vec<&[u8]> {
    args.iter().map(Vec::as_slice).collect()
}

/// `LOCK.ACQUIRE key ttl TOKEN token [BLOCK timeout] [SHARED | LIMIT n]`.
fn acquire_args(
    key: &[u8],
    ttl: u64,
    token: &[u8],
    mode: Mode,
    block: Option<u64>,
) -> Vec<Vec<u8>> {
    let mut args = vec![
        b"LOCK.ACQUIRE".to_vec(),
        key.to_vec(),
        ttl.to_string().into_bytes(),
        b"TOKEN".to_vec(),
        token.to_vec(),
    ];
    if let Some(timeout) = block {
        args.push(b"BLOCK".to_vec());
        args.push(timeout.to_string().into_bytes());
    }
    args.extend(mode.args());
    args
}

/// One ACQUIRE without BLOCK: Ok(Some(fence)) when granted, Ok(None) for null, Err(text) for
/// an error reply.
fn try_take(
    con: &mut redis::Connection,
    key: &[u8],
    ttl: u64,
    token: &[u8],
    mode: Mode,
) -> Result<Option<i64>, String> {
    let args = acquire_args(key, ttl, token, mode, None);
    try_call(con, &refs(&args)).map(|v| {
        grant(&v).map(|(got, fence)| {
            assert_eq!(got, token, "the grant names the caller's token");
            fence
        })
    })
}

/// A new connection that has sent a blocking ACQUIRE (its reply not read yet).
fn blocked(srv: &Server, key: &[u8], ttl: u64, token: &[u8], mode: Mode, timeout: u64) -> Raw {
    let mut raw = srv.raw();
    raw.send(&refs(&acquire_args(key, ttl, token, mode, Some(timeout))));
    raw
}

/// Like `blocked`, then wait until the primary has queued it (so the order is known).
fn queue(
    srv: &Server,
    con: &mut redis::Connection,
    key: &[u8],
    ttl: u64,
    token: &[u8],
    mode: Mode,
) -> Raw {
    let before = lock_info(con, key).map_or(0, |i| i.waiters);
    let raw = blocked(srv, key, ttl, token, mode, 0);
    wait_for("the waiter to queue", || {
        lock_info(con, key).map_or(0, |i| i.waiters) == before + 1
    });
    raw
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn dump(con: &mut redis::Connection, key: &[u8]) -> Option<Vec<u8>> {
    match call(con, &[b"DUMP", key]) {
        Value::Nil => None,
        Value::BulkString(payload) => Some(payload),
        other => panic!("DUMP: {other:?}"),
    }
}

fn wait_rewrite_done(con: &mut redis::Connection) {
    wait_for("AOF rewrite", || {
        info_field(con, "persistence", "aof_rewrite_in_progress").as_deref() == Some("0")
            && info_field(con, "persistence", "aof_rewrite_scheduled").as_deref() == Some("0")
    });
}

// ---------------------------------------------------------------------------------------
// LOCK.INFO

/// LOCK.INFO with every field of a lock with holders, or None when the lock is free.
fn lock_info(con: &mut redis::Connection, key: &[u8]) -> Option<LockInfo> {
    lock_info_of(con, key)
}

// ---------------------------------------------------------------------------------------
// The model

/// Milliseconds of rounding allowed between the local clock and the server's.
const SLACK: i64 = 5;

#[derive(Clone, Debug)]
struct Holder {
    token: Vec<u8>,
    fence: i64,
    /// The deadline (Unix ms) lies in lo..=hi.
    lo: i64,
    hi: i64,
}

#[derive(Clone, Debug)]
struct Lock {
    key: Vec<u8>,
    mode: Mode,
    holders: Vec<Holder>,
    /// The highest fence ever granted on this lock, released holders' too.
    top: i64,
}

impl Lock {
    fn new(key: &str, mode: Mode) -> Self {
        Lock {
            key: key.as_bytes().to_vec(),
            mode,
            holders: Vec::new(),
            top: 0,
        }
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }

    fn max_fence(&self) -> i64 {
        self.holders.iter().map(|h| h.fence).max().unwrap()
    }

    fn holder(&mut self, token: &[u8]) -> &mut Holder {
        let name = self.name();
        self.holders
            .iter_mut()
            .find(|h| h.token == token)
            .unwrap_or_else(|| panic!("{name}: no holder {token:?} in the model"))
    }

    /// A grant the server made to a waiter (or a loaded one): record it.
    fn granted(&mut self, token: &[u8], fence: i64, ttl: i64, lo: i64, hi: i64) {
        assert!(
            fence > self.top,
            "{}: fence {fence} not above {}",
            self.name(),
            self.top
        );
        self.top = fence;
        self.holders.push(Holder {
            token: token.to_vec(),
            fence,
            lo: lo + ttl,
            hi: hi + ttl,
        });
    }
}

fn top_fence(locks: &[Lock]) -> i64 {
    locks.iter().map(|l| l.top).max().unwrap()
}

/// Acquire in the lock's mode (a new holder, or an idempotent retry of one); returns the fence.
fn add(con: &mut redis::Connection, lock: &mut Lock, token: &[u8], ttl: u64) -> i64 {
    let lo = now_ms();
    let fence = try_take(con, &lock.key, ttl, token, lock.mode)
        .unwrap_or_else(|e| panic!("{}: {e}", lock.name()))
        .unwrap_or_else(|| panic!("{}: {token:?} was not granted", lock.name()));
    let hi = now_ms();
    let ttl = ttl as i64;
    if lock.holders.iter().any(|h| h.token == token) {
        let holder = lock.holder(token);
        assert_eq!(holder.fence, fence, "a retry keeps the fence");
        (holder.lo, holder.hi) = (lo + ttl, hi + ttl);
    } else {
        lock.granted(token, fence, ttl, lo, hi);
    }
    fence
}

/// A new holder without TOKEN: the server makes the token (32 lowercase hex characters),
/// which replicas and the AOF must receive as it is.
fn add_generated(con: &mut redis::Connection, lock: &mut Lock, ttl: u64) -> i64 {
    let ttl_arg = ttl.to_string();
    let mut args = vec![
        b"LOCK.ACQUIRE".to_vec(),
        lock.key.clone(),
        ttl_arg.into_bytes(),
    ];
    args.extend(lock.mode.args());
    let lo = now_ms();
    let reply = call(con, &refs(&args));
    let hi = now_ms();
    let (token, fence) = grant(&reply).expect("granted");
    assert!(
        token.len() == 32 && token.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
        "{token:?}"
    );
    lock.granted(&token, fence, ttl as i64, lo, hi);
    fence
}

fn renew(con: &mut redis::Connection, lock: &mut Lock, token: &[u8], ttl: u64) {
    let lo = now_ms();
    let ttl_arg = ttl.to_string();
    let reply = int(call(
        con,
        &[b"LOCK.RENEW", &lock.key, token, ttl_arg.as_bytes()],
    ));
    let hi = now_ms();
    assert_eq!(reply, 1, "{}: RENEW by {token:?}", lock.name());
    let holder = lock.holder(token);
    (holder.lo, holder.hi) = (lo + ttl as i64, hi + ttl as i64);
}

fn release(con: &mut redis::Connection, lock: &mut Lock, token: &[u8]) {
    let reply = int(call(con, &[b"LOCK.RELEASE", &lock.key, token]));
    assert_eq!(reply, 1, "{}: RELEASE by {token:?}", lock.name());
    lock.holders.retain(|h| h.token != token);
}

/// The lock's fence, holders, mode, limit, ttl (LOCK.INFO) and PTTL are what the model says.
fn check(con: &mut redis::Connection, lock: &Lock) {
    let name = lock.name();
    let q0 = now_ms();
    let info = lock_info(con, &lock.key);
    let pttl = int(call(con, &[b"PTTL", &lock.key]));
    let q1 = now_ms();
    if lock.holders.is_empty() {
        assert_eq!(info, None, "{name} should be free");
        assert_eq!(pttl, -2, "{name}: the key of a free lock is gone");
        return;
    }
    let info = info.unwrap_or_else(|| panic!("{name} is free; expected {lock:?}"));
    assert_eq!(info.fence, lock.max_fence(), "{name}: fence of {info:?}");
    assert_eq!(
        info.holders,
        lock.holders.len() as i64,
        "{name}: holders of {info:?}"
    );
    assert_eq!(info.mode, lock.mode.name(), "{name}: mode of {info:?}");
    assert_eq!(info.limit, lock.mode.limit(), "{name}: limit of {info:?}");
    let lo = lock.holders.iter().map(|h| h.lo).max().unwrap() - q1 - SLACK;
    let hi = lock.holders.iter().map(|h| h.hi).max().unwrap() - q0 + SLACK;
    assert!(
        (lo..=hi).contains(&info.ttl),
        "{name}: LOCK.INFO ttl {} not in {lo}..={hi} (the latest holder's deadline)",
        info.ttl
    );
    assert!(
        (lo..=hi).contains(&pttl),
        "{name}: PTTL {pttl} not in {lo}..={hi} (the latest holder's deadline)"
    );
}

/// Requests the lock must refuse as its mode and limit say: a stranger in another mode or
/// with another limit, a holder in the other mode, a stranger beyond the limit. None changes
/// anything.
fn check_kinds(con: &mut redis::Connection, lock: &Lock) {
    let name = lock.name();
    let key = lock.key.clone();
    let holder = lock.holders[0].token.clone();
    let stranger = b"kind-probe".to_vec();
    let refused = |con: &mut redis::Connection, token: &[u8], mode: Mode| {
        try_take(con, &key, 1000, token, mode).unwrap_err()
    };
    match lock.mode {
        Mode::Exclusive => {
            for mode in [Mode::Exclusive, Mode::Shared, Mode::Limit(3)] {
                let reply = try_take(con, &key, 1000, &stranger, mode);
                assert_eq!(reply, Ok(None), "{name}: {mode:?} on an exclusive lock");
            }
            let err = refused(con, &holder, Mode::Shared);
            assert!(
                err.starts_with("ERR this token holds the lock exclusively"),
                "{name}: {err}"
            );
        }
        Mode::Shared => {
            let reply = try_take(con, &key, 1000, &stranger, Mode::Exclusive);
            assert_eq!(reply, Ok(None), "{name}: exclusive on a shared lock");
            let err = refused(con, &stranger, Mode::Limit(4));
            assert!(
                err.starts_with("ERR the lock is shared without a limit"),
                "{name}: {err}"
            );
            let err = refused(con, &holder, Mode::Exclusive);
            assert!(
                err.starts_with("ERR this token holds the lock shared"),
                "{name}: {err}"
            );
        }
        Mode::Limit(n) => {
            let reply = try_take(con, &key, 1000, &stranger, Mode::Exclusive);
            assert_eq!(reply, Ok(None), "{name}: exclusive on a LIMIT lock");
            let prefix = format!("ERR the lock is shared with LIMIT {n}");
            let other = if n < 1_000_000 { n + 1 } else { n - 1 };
            for mode in [Mode::Shared, Mode::Limit(other)] {
                let err = refused(con, &stranger, mode);
                assert!(
                    err.starts_with(&prefix)
                        && !err[prefix.len()..].starts_with(|c: char| c.is_ascii_digit()),
                    "{name}: {mode:?}: {err}"
                );
            }
            if lock.holders.len() == n as usize {
                let reply = try_take(con, &key, 1000, &stranger, lock.mode);
                assert_eq!(reply, Ok(None), "{name}: all {n} permits are taken");
            }
            let err = refused(con, &holder, Mode::Exclusive);
            assert!(
                err.starts_with("ERR this token holds the lock shared"),
                "{name}: {err}"
            );
        }
    }
    check(con, lock);
}

/// Every holder's token works (a stranger's does not): one by one, the latest deadline
/// first, each holder renews and then releases its hold, checking the deadline and fence of
/// those left after each step; at the end the key is gone.
fn drain(con: &mut redis::Connection, lock: &mut Lock) {
    let key = lock.key.clone();
    let name = lock.name();
    assert_eq!(
        int(call(con, &[b"LOCK.RELEASE", &key, b"stranger"])),
        0,
        "{name}"
    );
    assert_eq!(
        int(call(con, &[b"LOCK.RENEW", &key, b"stranger", b"1000"])),
        0,
        "{name}"
    );
    check(con, lock);
    while !lock.holders.is_empty() {
        let latest = lock.holders.iter().max_by_key(|h| h.hi).unwrap();
        let token = latest.token.clone();
        renew(con, lock, &token, 300_000);
        check(con, lock);
        release(con, lock, &token);
        check(con, lock);
    }
    assert_eq!(int(call(con, &[b"EXISTS", &key])), 0, "{name}");
}

/// After a restart, promotion, restore or move: every lock is as the model says and refuses
/// what its mode refuses; new grants (on `fresh_key`, and a new shared holder) get fences
/// above every fence granted before; then every holder's token releases its hold.
fn check_all(con: &mut redis::Connection, locks: &mut [Lock], fresh_key: &str) {
    for lock in locks.iter() {
        check(con, lock);
    }
    for lock in locks.iter().filter(|l| !l.holders.is_empty()) {
        check_kinds(con, lock);
    }
    let top = top_fence(locks);
    let fresh = try_take(con, fresh_key.as_bytes(), 5000, b"fresh", Mode::Exclusive)
        .unwrap()
        .expect("a fresh lock is granted");
    assert!(fresh > top, "new fence {fresh} <= {top}");
    if let Some(shared) = locks
        .iter_mut()
        .find(|l| l.mode == Mode::Shared && !l.holders.is_empty())
    {
        let late = add(con, shared, b"late-reader", 30_000);
        assert!(late > fresh, "{late} <= {fresh}");
    }
    for lock in locks.iter_mut().filter(|l| !l.holders.is_empty()) {
        drain(con, lock);
    }
    call(con, &[b"LOCK.RELEASE", fresh_key.as_bytes(), b"fresh"]);
}

fn token(prefix: &str, name: &str) -> Vec<u8> {
    [prefix.as_bytes(), b"-", name.as_bytes(), b"\x00\xff"].concat()
}

/// Three locks: `sh` with four shared holders (one with a token the server made), `sem`
/// (LIMIT 2) with both permits taken, and `ex` held exclusively. Deadlines are out of grant
/// order, so the highest fence is not the latest deadline. Fences rise with every grant.
fn populate(con: &mut redis::Connection, prefix: &str) -> Vec<Lock> {
    let mut sh = Lock::new(&format!("{prefix}:sh"), Mode::Shared);
    let mut sem = Lock::new(&format!("{prefix}:sem"), Mode::Limit(2));
    let mut ex = Lock::new(&format!("{prefix}:ex"), Mode::Exclusive);
    let mut fences = Vec::new();
    for (name, ttl) in [("r1", 90_000), ("r2", 120_000), ("r3", 60_000)] {
        fences.push(add(con, &mut sh, &token(prefix, name), ttl));
    }
    for (name, ttl) in [("s1", 100_000), ("s2", 70_000)] {
        fences.push(add(con, &mut sem, &token(prefix, name), ttl));
    }
    fences.push(add(con, &mut ex, &token(prefix, "e1"), 80_000));
    fences.push(add_generated(con, &mut sh, 75_000));
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "every grant draws a higher fence: {fences:?}"
    );
    for lock in [&sh, &sem, &ex] {
        check(con, lock);
    }
    vec![sh, sem, ex]
}

/// Changes to `populate`'s locks, and four more locks: in `sh` a holder released, one
/// renewed (now the latest), one expired by itself; in `sem` a permit released and taken by
/// another; `ex` renewed; `gone`, whose holders all expire; `handoff-x`, whose two shared
/// holders leave and hand it to an exclusive waiter; `handoff-s`, whose exclusive holder
/// hands it to two LIMIT 2 waiters at once; `handoff-e`, a LIMIT 1 lock whose holder expires
/// and hands its permit to a waiter.
fn mutate(srv: &Server, con: &mut redis::Connection, locks: &mut Vec<Lock>, prefix: &str) {
    let tok = |name: &str| token(prefix, name);
    release(con, &mut locks[0], &tok("r1"));
    renew(con, &mut locks[0], &tok("r3"), 150_000);
    add(con, &mut locks[0], &tok("r4"), 300);
    release(con, &mut locks[1], &tok("s1"));
    add(con, &mut locks[1], &tok("s3"), 110_000);
    renew(con, &mut locks[2], &tok("e1"), 95_000);

    let mut gone = Lock::new(&format!("{prefix}:gone"), Mode::Limit(3));
    add(con, &mut gone, &tok("g1"), 300);
    add(con, &mut gone, &tok("g2"), 250);

    let mut hx = Lock::new(&format!("{prefix}:handoff-x"), Mode::Shared);
    add(con, &mut hx, &tok("h1"), 60_000);
    add(con, &mut hx, &tok("h2"), 50_000);
    let mut waiter = queue(srv, con, &hx.key, 85_000, &tok("hw"), Mode::Exclusive);
    release(con, &mut hx, &tok("h1"));
    assert!(
        waiter.reply_within(Duration::from_millis(50)).is_none(),
        "a shared holder is left"
    );
    let lo = now_ms();
    release(con, &mut hx, &tok("h2"));
    let (got, fence) = grant(&waiter.value()).expect("the waiter is granted");
    assert_eq!(got, tok("hw"));
    hx.mode = Mode::Exclusive;
    hx.granted(&got, fence, 85_000, lo, now_ms());

    let mut hs = Lock::new(&format!("{prefix}:handoff-s"), Mode::Exclusive);
    add(con, &mut hs, &tok("x"), 60_000);
    let mut w1 = queue(srv, con, &hs.key, 75_000, &tok("p1"), Mode::Limit(2));
    let mut w2 = queue(srv, con, &hs.key, 65_000, &tok("p2"), Mode::Limit(2));
    let lo = now_ms();
    release(con, &mut hs, &tok("x"));
    let (t1, f1) = grant(&w1.value()).expect("the first waiter is granted");
    let (t2, f2) = grant(&w2.value()).expect("the second waiter is granted");
    let hi = now_ms();
    assert_eq!(
        (t1.as_slice(), t2.as_slice()),
        (&tok("p1")[..], &tok("p2")[..])
    );
    hs.mode = Mode::Limit(2);
    hs.granted(&t1, f1, 75_000, lo, hi);
    hs.granted(&t2, f2, 65_000, lo, hi);

    // A single permit handed to a waiter when its holder expires.
    let mut he = Lock::new(&format!("{prefix}:handoff-e"), Mode::Limit(1));
    add(con, &mut he, &tok("e-short"), 300);
    let lo = now_ms();
    let mut waiter = blocked(srv, &he.key, 70_000, &tok("e-w"), Mode::Limit(1), 0);
    let (got, fence) = grant(&waiter.value()).expect("granted when the holder expires");
    assert_eq!(got, tok("e-w"));
    he.holders.clear();
    he.granted(&got, fence, 70_000, lo, now_ms());

    // The short holds end on their own.
    let sh_key = locks[0].key.clone();
    let left = locks[0].holders.len() as i64 - 1;
    wait_for("the short shared holder to expire", || {
        lock_info(con, &sh_key).map(|i| i.holders) == Some(left)
    });
    locks[0].holders.retain(|h| h.token != tok("r4"));
    wait_for("the short semaphore to expire", || {
        int(call(con, &[b"EXISTS", &gone.key])) == 0
    });
    gone.holders.clear();
    locks.extend([gone, hx, hs, he]);
    for lock in locks.iter() {
        check(con, lock);
    }
}

/// Short-lived holders' tokens: short, so that DUMP payloads hold them as they are (RDB
/// compresses strings over 20 bytes), which shows whether a value still has the holder.
const DOWN: &[u8] = b"zz-down-7";
const BRIEF: &[u8] = b"zz-brief-3";

/// Two LIMIT 2 locks, each with a long holder and a short one: in `down` the short one
/// (DOWN, 1 s) is to end while the server is stopped or the lock is in transit, in `brief`
/// the short one (BRIEF, 4 s) after the restart or move.
fn short_lived(con: &mut redis::Connection, prefix: &str) -> (Lock, Lock) {
    let down = down_lock(con, prefix);
    let mut brief = Lock::new(&format!("{prefix}:brief"), Mode::Limit(2));
    add(con, &mut brief, b"brief-long", 60_000);
    add(con, &mut brief, BRIEF, 4_000);
    (down, brief)
}

fn down_lock(con: &mut redis::Connection, prefix: &str) -> Lock {
    let mut down = Lock::new(&format!("{prefix}:down"), Mode::Limit(2));
    add(con, &mut down, b"down-long", 60_000);
    add(con, &mut down, DOWN, 1_000);
    down
}

/// Wait until `token`'s deadline in `lock` has passed, and take it out of the model.
fn outlive(lock: &mut Lock, token: &[u8]) {
    let hi = lock.holder(token).hi;
    while now_ms() <= hi + 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    lock.holders.retain(|h| h.token != token);
}

/// DOWN's deadline passed while the server was stopped (or the lock in transit): it is not
/// counted (LOCK.INFO, PTTL), and its permit is free for a new holder. (That it also leaves
/// the value is `a_holder_that_expired_while_stopped_leaves_the_value`.)
fn down_is_gone(con: &mut redis::Connection, down: &mut Lock) {
    check(con, down);
    add(con, down, b"down-new", 50_000);
    check(con, down);
}

/// After a restart or move: BRIEF leaves `brief` on its own at its deadline and hands its
/// permit to a waiter queued for it (when there is time to queue one first).
/// The end of every move or restart test: the holder gone while the server was down is gone,
/// the brief one expires on its own here, and every lock checks out, with fresh grants above.
fn after_the_move(
    srv: &Server,
    con: &mut redis::Connection,
    mut locks: Vec<Lock>,
    mut down: Lock,
    mut brief: Lock,
) {
    down_is_gone(con, &mut down);
    brief_expires_by_itself(srv, con, &mut brief);
    locks.extend([down, brief]);
    check_all(con, &mut locks, "fresh");
    srv.assert_alive();
}

fn brief_expires_by_itself(srv: &Server, con: &mut redis::Connection, brief: &mut Lock) {
    let short = brief.holder(BRIEF).clone();
    if now_ms() + 1_000 < short.lo {
        check(con, brief);
        assert!(contains(&dump(con, &brief.key).unwrap(), BRIEF));
        let lo = now_ms();
        let mut waiter = queue(srv, con, &brief.key, 50_000, b"brief-w", brief.mode);
        let (got, fence) = grant(&waiter.value()).expect("granted at the short deadline");
        let hi = now_ms();
        assert!(
            hi + SLACK >= short.lo,
            "granted before the holder's deadline"
        );
        assert_eq!(got, b"brief-w");
        brief.holders.retain(|h| h.token != BRIEF);
        brief.granted(&got, fence, 50_000, lo.max(short.lo), hi);
    } else {
        eprintln!("slow machine: no waiter queued for {}", brief.name());
        wait_for("the short holder to leave the value", || {
            !contains(&dump(con, &brief.key).unwrap(), BRIEF)
        });
        brief.holders.retain(|h| h.token != BRIEF);
        add(con, brief, b"brief-w", 50_000);
    }
    assert!(
        !contains(&dump(con, &brief.key).unwrap(), BRIEF),
        "the expired holder left the value"
    );
    check(con, brief);
}

// ---------------------------------------------------------------------------------------
// Restarts

#[test]
fn every_holder_survives_a_restart_from_rdb() {
    let mut srv = Server::start();
    let mut con = srv.conn();
    let mut locks = populate(&mut con, "rdb");
    mutate(&srv, &mut con, &mut locks, "rdb");
    let (mut down, brief) = short_lived(&mut con, "rdb");
    srv.shutdown_save();
    outlive(&mut down, DOWN);
    srv.restart();
    after_the_move(&srv, &mut srv.conn(), locks, down, brief);
}

fn aof_restart(preamble: &str, rewrite: bool) {
    let mut srv = Server::start_with_aof(preamble);
    let mut con = srv.conn();
    wait_rewrite_done(&mut con);
    let mut locks = populate(&mut con, "before");
    mutate(&srv, &mut con, &mut locks, "before");
    if rewrite {
        call(&mut con, &[b"BGREWRITEAOF"]);
        wait_rewrite_done(&mut con);
    }
    // What follows lands after the rewrite, in the incremental file, also on older locks.
    let mut after = populate(&mut con, "after");
    mutate(&srv, &mut con, &mut after, "after");
    renew(&mut con, &mut locks[1], &token("before", "s2"), 130_000);
    release(&mut con, &mut locks[0], &token("before", "r2"));
    add(&mut con, &mut locks[0], &token("before", "r5"), 40_000);
    locks.extend(after);
    for lock in &locks {
        check(&mut con, lock);
    }
    let (mut down, brief) = short_lived(&mut con, "short");
    srv.kill();
    outlive(&mut down, DOWN);
    srv.restart();
    after_the_move(&srv, &mut srv.conn(), locks, down, brief);
}

#[test]
fn every_holder_survives_a_restart_from_aof_with_rdb_preamble() {
    aof_restart("yes", true);
}

#[test]
fn every_holder_survives_a_restart_from_a_plain_aof() {
    aof_restart("no", false);
}

#[test]
fn every_holder_survives_a_restart_from_a_plain_aof_after_bgrewriteaof() {
    aof_restart("no", true);
}

/// DEBUG RELOAD (a save and load in place) keeps every holder; a waiter queued across it is
/// answered when the holders leave (granted, or told with an error), and the server stays up.
#[test]
fn debug_reload_keeps_every_holder_and_answers_its_waiters() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut locks = populate(&mut con, "reload");
    let key = locks[0].key.clone();
    let mut waiter = queue(&srv, &mut con, &key, 50_000, b"reload-w", Mode::Exclusive);
    assert_eq!(call(&mut con, &[b"DEBUG", b"RELOAD"]), Value::Okay);
    for lock in &locks {
        check(&mut con, lock);
    }
    let lo = now_ms();
    let tokens: Vec<Vec<u8>> = locks[0].holders.iter().map(|h| h.token.clone()).collect();
    for token in tokens {
        release(&mut con, &mut locks[0], &token);
    }
    let reply = waiter
        .reply_within(Duration::from_secs(5))
        .expect("the waiter is answered once the lock is free");
    match redis::parse_redis_value(&reply) {
        Ok(v @ Value::Array(_)) => {
            let (got, fence) = grant(&v).unwrap();
            assert_eq!(got, b"reload-w");
            locks[0].mode = Mode::Exclusive;
            locks[0].granted(&got, fence, 50_000, lo, now_ms());
        }
        other => {
            let text = String::from_utf8_lossy(&reply).into_owned();
            assert!(
                text.starts_with('-'),
                "neither a grant nor an error: {other:?}"
            );
        }
    }
    check_all(&mut con, &mut locks, "fresh");
    srv.assert_alive();
}

/// A holder whose deadline passed while the server was stopped, the lock in transit or the
/// primary down leaves the value on its own, as every expired holder does ("removed by the
/// primary on its own within a few ms of its deadline"): after a restart from RDB and from
/// AOF, a RESTORE, and a promotion. Each path is tried, and all that fail are reported.
#[test]
fn a_holder_that_expired_while_stopped_leaves_the_value() {
    let mut failures = Vec::new();
    let mut verdict = |path: &str, con: &mut redis::Connection, down: &Lock| {
        check(con, down);
        let start = std::time::Instant::now();
        while contains(&dump(con, &down.key).unwrap(), DOWN) {
            if start.elapsed() > Duration::from_secs(3) {
                failures.push(format!(
                    "{path}: the expired holder is still in the value (DUMP) 3 s later"
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let mut srv = Server::start();
    let mut down = down_lock(&mut srv.conn(), "rdb");
    srv.shutdown_save();
    outlive(&mut down, DOWN);
    srv.restart();
    verdict("restart from RDB", &mut srv.conn(), &down);

    let mut srv = Server::start_with(&[], &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut down = down_lock(&mut srv.conn(), "aof");
    srv.kill();
    outlive(&mut down, DOWN);
    srv.restart();
    verdict("restart from AOF", &mut srv.conn(), &down);

    let srv = Server::start();
    let mut con = srv.conn();
    let mut down = down_lock(&mut con, "restore");
    let payload = dump(&mut con, &down.key).unwrap();
    outlive(&mut down, DOWN);
    down.key = b"restored".to_vec();
    call(&mut con, &[b"RESTORE", &down.key, b"0", &payload]);
    verdict("RESTORE", &mut con, &down);

    let mut primary = Server::start();
    let mut pcon = primary.conn();
    let replica = primary.replica(&[]);
    let mut rcon = replica.conn();
    let mut down = down_lock(&mut pcon, "failover");
    replica_caught_up(&mut pcon);
    primary.kill();
    outlive(&mut down, DOWN);
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    verdict("promotion", &mut rcon, &down);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Replication

/// The replica has what the primary has: the model on both, the same LOCK.INFO but for the
/// waiters (they queue on the primary only) and, when `digests`, the same DEBUG DIGEST-VALUE
/// of every key and DEBUG DIGEST.
fn mirrored(
    pcon: &mut redis::Connection,
    rcon: &mut redis::Connection,
    locks: &[Lock],
    digests: bool,
) {
    replica_caught_up(pcon);
    for lock in locks {
        check(pcon, lock);
        check(rcon, lock);
        let name = lock.name();
        match (lock_info(pcon, &lock.key), lock_info(rcon, &lock.key)) {
            (None, None) => {}
            (Some(p), Some(r)) => {
                assert_eq!(
                    (p.fence, p.holders, &p.mode, p.limit),
                    (r.fence, r.holders, &r.mode, r.limit),
                    "{name}: primary {p:?}, replica {r:?}"
                );
                assert!(
                    (p.ttl - r.ttl).abs() < 1000,
                    "{name}: primary {p:?}, replica {r:?}"
                );
            }
            (p, r) => panic!("{name}: primary {p:?}, replica {r:?}"),
        }
        if digests {
            let digest =
                |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST-VALUE", &lock.key]);
            assert_eq!(digest(pcon), digest(rcon), "{name}: DEBUG DIGEST-VALUE");
        }
    }
    if digests {
        let digest = |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST"]);
        assert_eq!(digest(pcon), digest(rcon), "DEBUG DIGEST");
    }
}

#[test]
fn a_replica_mirrors_every_holder_and_keeps_them_when_promoted() {
    let mut primary = Server::start();
    let mut pcon = primary.conn();
    // These reach the replica by full sync, the rest through the replication stream.
    let mut locks = populate(&mut pcon, "sync");
    let replica = primary.replica(&[]);
    let mut rcon = replica.conn();
    mirrored(&mut pcon, &mut rcon, &locks, true);
    locks.extend(populate(&mut pcon, "stream"));
    mirrored(&mut pcon, &mut rcon, &locks, true);

    // Renewals, releases, retries.
    renew(&mut pcon, &mut locks[0], &token("sync", "r3"), 150_000);
    release(&mut pcon, &mut locks[1], &token("sync", "s1"));
    add(&mut pcon, &mut locks[1], &token("sync", "s3"), 110_000);
    add(&mut pcon, &mut locks[3], &token("stream", "r1"), 140_000);
    release(&mut pcon, &mut locks[3], &token("stream", "r2"));
    renew(&mut pcon, &mut locks[5], &token("stream", "e1"), 99_000);
    mirrored(&mut pcon, &mut rcon, &locks, true);

    // A holder whose deadline passes: the primary removes it by itself (nothing reads the
    // lock but DUMP), and the replica follows.
    let short: &[u8] = b"zz-short-9";
    let key = locks[3].key.clone();
    let before = lock_info(&mut pcon, &key).unwrap().holders;
    let deadline = now_ms() + 1_500;
    add(&mut pcon, &mut locks[3], short, 1_500);
    replica_caught_up(&mut pcon);
    let on_replica = lock_info(&mut rcon, &key).unwrap().holders;
    if now_ms() < deadline - 200 {
        assert_eq!(
            on_replica,
            before + 1,
            "the short holder reached the replica"
        );
    }
    wait_for("the primary to drop the expired holder", || {
        !contains(&dump(&mut pcon, &key).unwrap(), short)
    });
    wait_for("the replica to drop the expired holder", || {
        !contains(&dump(&mut rcon, &key).unwrap(), short)
    });
    locks[3].holders.retain(|h| h.token != short);
    mirrored(&mut pcon, &mut rcon, &locks, true);

    // Hand-offs: the exclusive holder leaves and two shared waiters get the lock at once; the
    // exclusive waiter behind them gets it when the first is released and the second expires.
    let mut ho = Lock::new("stream:handoff", Mode::Exclusive);
    add(&mut pcon, &mut ho, b"ho-x", 60_000);
    let mut w1 = queue(&primary, &mut pcon, &ho.key, 70_000, b"ho-w1", Mode::Shared);
    let mut w2 = queue(&primary, &mut pcon, &ho.key, 2_000, b"ho-w2", Mode::Shared);
    let mut w3 = queue(
        &primary,
        &mut pcon,
        &ho.key,
        40_000,
        b"ho-w3",
        Mode::Exclusive,
    );
    let lo = now_ms();
    release(&mut pcon, &mut ho, b"ho-x");
    let (t1, f1) = grant(&w1.value()).expect("the first shared waiter is granted");
    let (t2, f2) = grant(&w2.value()).expect("the second shared waiter is granted");
    let hi = now_ms();
    assert_eq!(
        (t1.as_slice(), t2.as_slice()),
        (&b"ho-w1"[..], &b"ho-w2"[..])
    );
    let info = lock_info(&mut pcon, &ho.key).unwrap();
    assert_eq!(
        (info.holders, info.mode.as_str(), info.waiters),
        (2, "shared", 1),
        "{info:?}"
    );
    assert!(w3.reply_within(Duration::from_millis(50)).is_none());
    let lo3 = now_ms();
    ho.mode = Mode::Shared;
    ho.granted(&t1, f1, 70_000, lo, hi);
    ho.granted(&t2, f2, 2_000, lo, hi);
    release(&mut pcon, &mut ho, b"ho-w1");
    let (t3, f3) = grant(&w3.value()).expect("the exclusive waiter is granted");
    assert_eq!(t3, b"ho-w3");
    ho.holders.clear();
    ho.mode = Mode::Exclusive;
    ho.granted(&t3, f3, 40_000, lo3, now_ms());
    locks.push(ho);
    // A permit of the semaphore handed to a waiter.
    let mut w4 = queue(
        &primary,
        &mut pcon,
        &locks[4].key,
        45_000,
        b"sem-w4",
        Mode::Limit(2),
    );
    let lo = now_ms();
    release(&mut pcon, &mut locks[4], &token("stream", "s2"));
    let (t4, f4) = grant(&w4.value()).expect("the semaphore's waiter is granted");
    assert_eq!(t4, b"sem-w4");
    locks[4].granted(&t4, f4, 45_000, lo, now_ms());
    mirrored(&mut pcon, &mut rcon, &locks, true);

    // The replica refuses writes to the locks.
    for args in [
        acquire_args(&locks[0].key, 1000, b"x", Mode::Shared, None),
        acquire_args(&locks[4].key, 1000, b"x", Mode::Limit(2), None),
    ] {
        let err = try_call(&mut rcon, &refs(&args)).unwrap_err();
        assert!(err.starts_with("READONLY"), "{err}");
    }
    let err = call_err(
        &mut rcon,
        &[b"LOCK.RELEASE", &locks[0].key, &token("sync", "r2")],
    );
    assert!(err.starts_with("READONLY"), "{err}");

    // Failover: the primary dies, the replica is promoted with every holder. A holder whose
    // deadline passes in between is not counted on the replica, and the promoted replica
    // removes it; one whose deadline comes after the promotion expires there by itself.
    let (mut down, brief) = short_lived(&mut pcon, "failover");
    replica_caught_up(&mut pcon);
    primary.kill();
    outlive(&mut down, DOWN);
    check(&mut rcon, &down);
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    after_the_move(&replica, &mut rcon, locks, down, brief);
}

/// A replica with its own AOF records the effects it receives for every holder: restarted
/// on its own after both servers died, it has them all (read-only, as a replica), and once
/// promoted their tokens work and new fences are higher.
#[test]
fn a_replica_records_every_holder_in_its_own_aof() {
    let mut primary = Server::start();
    let mut pcon = primary.conn();
    let mut replica = primary.replica(&["--appendonly", "yes", "--appendfsync", "always"]);
    wait_rewrite_done(&mut replica.conn());
    let mut locks = populate(&mut pcon, "raof");
    mutate(&primary, &mut pcon, &mut locks, "raof");
    replica_caught_up(&mut pcon);
    primary.kill();
    replica.kill();
    replica.restart();
    let mut rcon = replica.conn();
    for lock in &locks {
        check(&mut rcon, lock);
    }
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    check_all(&mut rcon, &mut locks, "fresh");
}

/// A primary restarted with a holder whose deadline passed while it was stopped, and a
/// replica that syncs from it: both show the same lock and digests, before and after writes
/// to that lock (a new permit, a renewal, a release).
#[test]
fn a_replica_of_a_primary_restarted_after_a_holder_expired_stays_identical() {
    let mut primary = Server::start();
    let mut pcon = primary.conn();
    let mut down = down_lock(&mut pcon, "restarted");
    let mut sh = Lock::new("restarted:sh", Mode::Shared);
    add(&mut pcon, &mut sh, b"reader-long", 60_000);
    add(&mut pcon, &mut sh, DOWN, 1_000);
    primary.shutdown_save();
    outlive(&mut down, DOWN);
    outlive(&mut sh, DOWN);
    primary.restart();
    let mut pcon = primary.conn();
    let replica = primary.replica(&[]);
    let mut rcon = replica.conn();
    let mut locks = vec![down, sh];
    mirrored(&mut pcon, &mut rcon, &locks, true);
    add(&mut pcon, &mut locks[0], b"down-new", 50_000);
    renew(&mut pcon, &mut locks[1], b"reader-long", 70_000);
    mirrored(&mut pcon, &mut rcon, &locks, true);
    release(&mut pcon, &mut locks[0], b"down-long");
    add(&mut pcon, &mut locks[1], b"reader-new", 40_000);
    mirrored(&mut pcon, &mut rcon, &locks, true);
    primary.kill();
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    check_all(&mut rcon, &mut locks, "fresh");
}

// ---------------------------------------------------------------------------------------
// DUMP/RESTORE, MIGRATE, RENAME, MOVE, COPY, TYPE, MEMORY USAGE

/// A server whose fence clock is an hour ahead of wall time (raised by a lock loaded from a
/// hand-written AOF): its fences are above any other server's clock, so only a fence clock
/// raised by what it receives lets another server grant above them.
fn ahead_server() -> Server {
    let dir = new_dir();
    let aof = aof_with_locks(
        &[("clock:raiser", "tok")],
        600_000,
        now_us() + 3_600_000_000,
    );
    std::fs::write(dir.join("appendonly.aof"), aof).unwrap();
    let srv = Server::start_in(dir, &[], &["--appendonly", "yes"]);
    assert!(
        lock_info(&mut srv.conn(), b"clock:raiser").is_some(),
        "{}",
        srv.log()
    );
    srv
}

/// Every fence in `locks` is far ahead of the wall clock.
fn assert_ahead(locks: &[Lock]) {
    let ahead = now_us() + 3_000_000_000;
    for lock in locks {
        for h in &lock.holders {
            assert!(
                h.fence > ahead,
                "{}: fence {} not ahead",
                lock.name(),
                h.fence
            );
        }
    }
}

#[test]
fn dump_and_restore_carry_every_holder_and_raise_the_fence_clock() {
    let source = ahead_server();
    let mut scon = source.conn();
    let locks = populate(&mut scon, "d");
    let (mut down, brief) = short_lived(&mut scon, "d");
    assert_ahead(&locks);
    let payloads: Vec<Vec<u8>> = locks
        .iter()
        .map(|l| dump(&mut scon, &l.key).expect("a lock key"))
        .collect();
    let target = Server::start();
    let mut tcon = target.conn();
    // Over a string, with REPLACE.
    call(&mut tcon, &[b"SET", &locks[0].key, b"in the way"]);
    let err = call_err(&mut tcon, &[b"RESTORE", &locks[0].key, b"0", &payloads[0]]);
    assert!(err.starts_with("BUSYKEY"), "{err}");
    call(
        &mut tcon,
        &[b"RESTORE", &locks[0].key, b"0", &payloads[0], b"REPLACE"],
    );
    // With ABSTTL a few seconds from now: the key still expires with the latest holder.
    let soon = (now_ms() + 5_000).to_string();
    call(
        &mut tcon,
        &[
            b"RESTORE",
            &locks[1].key,
            soon.as_bytes(),
            &payloads[1],
            b"ABSTTL",
        ],
    );
    // Over another lock with other holders, with REPLACE: only the restored holders are left.
    let mut other = Lock::new("d:ex", Mode::Shared);
    add(&mut tcon, &mut other, b"previous", 60_000);
    let pttl = int(call(&mut scon, &[b"PTTL", &locks[2].key])).to_string();
    call(
        &mut tcon,
        &[
            b"RESTORE",
            &locks[2].key,
            pttl.as_bytes(),
            &payloads[2],
            b"REPLACE",
        ],
    );
    assert_eq!(
        int(call(&mut tcon, &[b"LOCK.RELEASE", b"d:ex", b"previous"])),
        0
    );
    // DUMP does not take the locks from the source.
    for lock in &locks {
        check(&mut scon, lock);
    }
    // Restored after one holder's deadline: that holder is gone.
    let down_payload = dump(&mut scon, &down.key).unwrap();
    let brief_payload = dump(&mut scon, &brief.key).unwrap();
    call(&mut tcon, &[b"RESTORE", &brief.key, b"0", &brief_payload]);
    outlive(&mut down, DOWN);
    call(&mut tcon, &[b"RESTORE", &down.key, b"0", &down_payload]);
    after_the_move(&target, &mut tcon, locks, down, brief);
}

#[test]
fn migrate_carries_every_holder_to_another_server() {
    let source = ahead_server();
    let mut scon = source.conn();
    let mut locks = populate(&mut scon, "m");
    let (_, brief) = short_lived(&mut scon, "m");
    locks.push(brief);
    assert_ahead(&locks);
    let target = Server::start();
    let keys: Vec<&[u8]> = locks[..4].iter().map(|l| &l.key[..]).collect();
    let reply = migrate(&mut scon, target.port, &keys);
    assert_eq!(reply, Value::Okay);
    for lock in &locks {
        assert_eq!(int(call(&mut scon, &[b"EXISTS", &lock.key])), 0);
    }
    let mut tcon = target.conn();
    let mut brief = locks.pop().unwrap();
    brief_expires_by_itself(&target, &mut tcon, &mut brief);
    locks.push(brief);
    check_all(&mut tcon, &mut locks, "fresh");
}

#[test]
fn rename_and_move_keep_every_holder() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut locks = populate(&mut con, "n");
    // A waiter on the old name: renaming the key away frees the lock there, as for an
    // exclusive lock, and the waiter is granted a new lock under the old name.
    let mut waiter = queue(
        &srv,
        &mut con,
        b"n:sh",
        30_000,
        b"rename-w",
        Mode::Exclusive,
    );
    let top = top_fence(&locks);
    let lo = now_ms();
    call(&mut con, &[b"RENAME", b"n:sh", b"n:sh-renamed"]);
    locks[0].key = b"n:sh-renamed".to_vec();
    let (got, fence) = grant(&waiter.value()).expect("the waiter on the old name is granted");
    assert_eq!(got, b"rename-w");
    assert!(fence > top, "{fence} <= {top}");
    let mut at_old_name = Lock::new("n:sh", Mode::Exclusive);
    at_old_name.granted(&got, fence, 30_000, lo, now_ms());
    // Onto a key that exists: RENAME replaces it.
    call(&mut con, &[b"SET", b"n:target", b"replaced"]);
    call(&mut con, &[b"RENAME", b"n:sem", b"n:target"]);
    locks[1].key = b"n:target".to_vec();
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"n:sem"])), 0);
    for lock in &locks {
        check(&mut con, lock);
    }
    // A waiter for a permit of the semaphore, which MOVE takes to another database.
    let mut waiter = queue(
        &srv,
        &mut con,
        b"n:target",
        20_000,
        b"move-w",
        Mode::Limit(2),
    );
    let lo = now_ms();
    for lock in &locks {
        assert_eq!(int(call(&mut con, &[b"MOVE", &lock.key, b"1"])), 1);
    }
    let (got, fence) = grant(&waiter.value()).expect("the waiter in database 0 is granted");
    assert_eq!(got, b"move-w");
    let mut left_behind = Lock::new("n:target", Mode::Limit(2));
    left_behind.granted(&got, fence, 20_000, lo, now_ms());
    for lock in [&mut at_old_name, &mut left_behind] {
        check(&mut con, lock);
        drain(&mut con, lock);
    }
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 0);
    call(&mut con, &[b"SELECT", b"1"]);
    check_all(&mut con, &mut locks, "fresh");
}

#[test]
fn copy_of_a_lock_with_several_holders_is_refused_and_changes_nothing() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut locks = populate(&mut con, "c");
    call(&mut con, &[b"SET", b"c:dest", b"kept"]);
    let digest = call(&mut con, &[b"DEBUG", b"DIGEST"]);
    for lock in &locks {
        let copy = [lock.key.as_slice(), b":copy"].concat();
        for args in [
            &[&b"COPY"[..], &lock.key, &copy][..],
            &[b"COPY", &lock.key, b"c:dest", b"REPLACE"],
            &[b"COPY", &lock.key, &lock.key, b"DB", b"1"],
        ] {
            let err = call_err(&mut con, args);
            assert!(err.starts_with("ERR"), "{}: {err}", lock.name());
        }
        assert_eq!(int(call(&mut con, &[b"EXISTS", &copy])), 0);
        check(&mut con, lock);
    }
    let kept: String = redis::cmd("GET").arg("c:dest").query(&mut con).unwrap();
    assert_eq!(kept, "kept");
    assert_eq!(call(&mut con, &[b"DEBUG", b"DIGEST"]), digest);
    call(&mut con, &[b"SELECT", b"1"]);
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 0);
    call(&mut con, &[b"SELECT", b"0"]);
    for lock in &mut locks {
        drain(&mut con, lock);
    }
}

#[test]
fn type_memory_usage_and_digest_of_locks_with_several_holders() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut sh = Lock::new("mem", Mode::Shared);
    let usage = |con: &mut redis::Connection| {
        int(call(con, &[b"MEMORY", b"USAGE", b"mem", b"SAMPLES", b"0"]))
    };
    let digest = |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST-VALUE", b"mem"]);
    let long_token = |i: usize| format!("{i:03}-{}", "t".repeat(96)).into_bytes();
    add(&mut con, &mut sh, &long_token(0), 60_000);
    let one = usage(&mut con);
    assert!(one > 100, "one holder with a 100-byte token: {one}");
    let mut last = one;
    let mut last_digest = digest(&mut con);
    for i in 1..8 {
        add(&mut con, &mut sh, &long_token(i), 60_000 + i as u64 * 1000);
        let now = usage(&mut con);
        assert!(now >= last, "{i} holders: {now} < {last}");
        last = now;
        let d = digest(&mut con);
        assert_ne!(d, last_digest, "the digest covers every holder");
        last_digest = d;
    }
    assert!(
        last >= one + 7 * 100,
        "8 holders with 100-byte tokens use {last}, one uses {one}"
    );
    // The digest covers each holder's deadline, not only the latest.
    renew(&mut con, &mut sh, &long_token(0), 30_000);
    assert_ne!(
        digest(&mut con),
        last_digest,
        "a renewal changes the digest"
    );
    let kind: String = redis::cmd("TYPE").arg("mem").query(&mut con).unwrap();
    assert_eq!(kind, "fencelock");
    let mut sem = Lock::new("mem:sem", Mode::Limit(2));
    add(&mut con, &mut sem, b"p", 60_000);
    let kind: String = redis::cmd("TYPE").arg("mem:sem").query(&mut con).unwrap();
    assert_eq!(kind, "fencelock");
    assert!(int(call(&mut con, &[b"MEMORY", b"USAGE", b"mem:sem"])) > 0);
    let err = call_err(&mut con, &[b"GET", b"mem"]);
    assert!(err.starts_with("WRONGTYPE"), "{err}");
    check(&mut con, &sh);
    drain(&mut con, &mut sh);
    drain(&mut con, &mut sem);
}

// ---------------------------------------------------------------------------------------
// The encoding

/// RESTORE of the module's own encoding of a lock with several holders gives back exactly
/// that lock: the same DUMP payload and digest, every holder, the mode and the limit.
#[test]
fn a_dump_of_a_lock_with_several_holders_restores_exactly() {
    let a = Server::start();
    let mut acon = a.conn();
    let mut locks = populate(&mut acon, "e");
    let mut sem5 = Lock::new("e:sem5", Mode::Limit(5));
    add(&mut acon, &mut sem5, b"p1", 60_000);
    add(&mut acon, &mut sem5, b"p2", 50_000);
    let mut many = Lock::new("e:many", Mode::Shared);
    for i in 0..50u64 {
        add(
            &mut acon,
            &mut many,
            format!("reader-{i}").as_bytes(),
            40_000 + i * 100,
        );
    }
    let mut wide = Lock::new("e:wide", Mode::Limit(1_000_000));
    add(&mut acon, &mut wide, b"w1", 60_000);
    locks.extend([sem5, many, wide]);
    let b = Server::start();
    let mut bcon = b.conn();
    for lock in &locks {
        let payload = dump(&mut acon, &lock.key).unwrap();
        call(&mut bcon, &[b"RESTORE", &lock.key, b"0", &payload]);
        assert_eq!(
            dump(&mut bcon, &lock.key).unwrap(),
            payload,
            "{}: DUMP of the restored lock",
            lock.name()
        );
        let digest =
            |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST-VALUE", &lock.key]);
        assert_eq!(digest(&mut acon), digest(&mut bcon), "{}", lock.name());
        check(&mut bcon, lock);
    }
    // The LIMIT 5 lock keeps its limit: three more permits, not a fourth.
    let sem5 = &mut locks[3];
    assert_eq!(lock_info(&mut bcon, &sem5.key).unwrap().limit, Some(5));
    let err = try_take(&mut bcon, &sem5.key, 1000, b"p9", Mode::Limit(4)).unwrap_err();
    assert!(
        err.starts_with("ERR the lock is shared with LIMIT 5"),
        "{err}"
    );
    for p in [&b"p3"[..], b"p4", b"p5"] {
        add(&mut bcon, sem5, p, 30_000);
    }
    assert_eq!(
        try_take(&mut bcon, &sem5.key, 1000, b"p6", Mode::Limit(5)),
        Ok(None)
    );
    // So does the largest limit.
    let wide = &mut locks[5];
    assert_eq!(
        lock_info(&mut bcon, &wide.key).unwrap().limit,
        Some(1_000_000)
    );
    add(&mut bcon, wide, b"w2", 30_000);
    check_all(&mut bcon, &mut locks, "fresh");
    b.assert_alive();
}

/// Every truncation of the DUMP payload of a lock with several holders, with a valid
/// checksum so the server hands it to the module: refused, or a lock that answers; the server
/// stays up.
#[test]
fn truncated_payloads_of_a_shared_lock_are_refused_without_crashing() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut sem = Lock::new("k", Mode::Limit(3));
    for t in [&b"first-token"[..], b"second", b"third-token-longer"] {
        add(&mut con, &mut sem, t, 60_000);
    }
    let payload = dump(&mut con, b"k").unwrap();
    let refused = restore_truncations(&mut con, &payload, |con| {
        call(con, &[b"LOCK.INFO", b"cut"]);
    });
    let cuts = payload.len() - 11;
    assert!(refused > cuts / 2, "{refused} of {cuts}");
    check(&mut con, &sem);
    srv.assert_alive();
}

// ---------------------------------------------------------------------------------------
// Cluster slot migration

/// A hash tag whose slot node 0 serves.
fn tag_on_first_node(cluster: &Cluster) -> (String, u16) {
    let mut con = cluster.nodes[0].conn();
    (0..)
        .map(|i| format!("{{shared{i}}}"))
        .map(|tag| {
            let slot = key_slot(&mut con, tag.as_bytes());
            (tag, slot)
        })
        .find(|(_, slot)| cluster.owner(*slot) == 0)
        .unwrap()
}

/// `populate`'s three locks and a `brief` one under `tag`, made on a server whose fences are
/// far ahead and restored on node 0 (which raises its fence clock); then a waiter queued on
/// each of the first three.
fn locks_with_waiters_on_node_0(cluster: &Cluster, tag: &str) -> (Vec<Lock>, Vec<Raw>) {
    let ahead = ahead_server();
    let mut acon = ahead.conn();
    let mut locks = populate(&mut acon, tag);
    let (_, brief) = short_lived(&mut acon, tag);
    locks.push(brief);
    assert_ahead(&locks);
    let node = &cluster.nodes[0];
    let mut con = node.conn();
    for lock in &locks {
        let payload = dump(&mut acon, &lock.key).unwrap();
        call(&mut con, &[b"RESTORE", &lock.key, b"0", &payload]);
        check(&mut con, lock);
    }
    let waiters = vec![
        queue(
            node,
            &mut con,
            &locks[0].key,
            10_000,
            b"w-x",
            Mode::Exclusive,
        ),
        queue(
            node,
            &mut con,
            &locks[1].key,
            10_000,
            b"w-p",
            Mode::Limit(2),
        ),
        queue(node, &mut con, &locks[2].key, 10_000, b"w-s", Mode::Shared),
    ];
    (locks, waiters)
}

/// The exclusive waiter told TRYAGAIN asks the new owner again and queues there: it is
/// granted when the moved shared holders have all left (by their tokens), with a fence above
/// theirs.
fn retry_on_target(target: &Server, con: &mut redis::Connection, sh: &mut Lock) {
    let mut waiter = queue(target, con, &sh.key, 20_000, b"w-x", Mode::Exclusive);
    let top = sh.top;
    while sh.holders.len() > 1 {
        let token = sh
            .holders
            .iter()
            .max_by_key(|h| h.hi)
            .unwrap()
            .token
            .clone();
        release(con, sh, &token);
        check(con, sh);
        assert!(waiter.reply_within(Duration::from_millis(20)).is_none());
    }
    let token = sh.holders[0].token.clone();
    let lo = now_ms();
    release(con, sh, &token);
    let (got, fence) = grant(&waiter.value()).expect("granted when the holders have left");
    assert_eq!(got, b"w-x");
    assert!(fence > top, "{fence} <= {top}");
    sh.mode = Mode::Exclusive;
    sh.granted(&got, fence, 20_000, lo, now_ms());
    check(con, sh);
}

#[test]
fn locks_with_several_holders_moved_by_migrate_keep_them_all() {
    let cluster = Cluster::start(3);
    let (tag, slot) = tag_on_first_node(&cluster);
    let (mut locks, mut waiting) = locks_with_waiters_on_node_0(&cluster, &tag);
    let (source, target) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut src = source.conn();
    let mut dst = target.conn();
    cluster.start_moving(slot, 0, 1);
    let keys: Vec<&[u8]> = locks[..4].iter().map(|l| &l.key[..]).collect();
    let reply = migrate(&mut src, target.port, &keys);
    assert_eq!(reply, Value::Okay);
    let port = target.port;
    // The waiters are told to retry, as for an exclusive lock.
    for raw in &mut waiting {
        let reply = String::from_utf8(raw.read_reply()).unwrap();
        assert!(reply.starts_with("-TRYAGAIN"), "{reply}");
    }
    // Mid-migration the source sends clients on with ASK.
    let args = acquire_args(&locks[0].key, 1000, b"x", Mode::Shared, None);
    let err = try_call(&mut src, &refs(&args)).unwrap_err();
    assert!(
        err.starts_with(&format!("ASK {slot} 127.0.0.1:{port}")),
        "{err}"
    );
    cluster.finish_moving(slot, 1);
    assert_eq!(cluster.owner(slot), 1);
    assert_eq!(int(call(&mut src, &[b"DBSIZE"])), 0);
    brief_expires_by_itself(target, &mut dst, &mut locks[3]);
    retry_on_target(target, &mut dst, &mut locks[0]);
    check_all(&mut dst, &mut locks, &format!("{tag}:fresh"));
    assert_source_left_alone(&mut src);
}

/// Valkey 9's atomic slot migration moves the slot with every holder of its locks.
#[test]
fn locks_with_several_holders_moved_by_cluster_migrateslots_keep_them_all() {
    if !is_valkey() {
        return; // CLUSTER MIGRATESLOTS is Valkey 9's; Redis has only the MIGRATE path.
    }
    let cluster = Cluster::start(3);
    let (tag, slot) = tag_on_first_node(&cluster);
    let (mut locks, mut waiting) = locks_with_waiters_on_node_0(&cluster, &tag);
    let mut src = cluster.nodes[0].conn();
    cluster.migrate_slot(slot, 0, 1);
    for raw in &mut waiting {
        let reply = String::from_utf8(raw.read_reply()).unwrap();
        assert!(reply.starts_with("-TRYAGAIN"), "{reply}");
    }
    wait_for("the source to drop the slot's keys", || {
        int(call(&mut src, &[b"DBSIZE"])) == 0
    });
    let mut dst = cluster.nodes[1].conn();
    brief_expires_by_itself(&cluster.nodes[1], &mut dst, &mut locks[3]);
    retry_on_target(&cluster.nodes[1], &mut dst, &mut locks[0]);
    check_all(&mut dst, &mut locks, &format!("{tag}:fresh"));
}
