//! Shared holds (`SHARED`) and counting semaphores (`LIMIT n`) on a real server: many holders
//! per lock, each with its own token, deadline and fence; one FIFO queue across modes.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;

type Con = redis::Connection;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A server with the module, and a connection to it.
fn start() -> (Server, Con) {
    let srv = Server::start();
    let con = srv.conn();
    (srv, con)
}

/// `start`, with `k` held exclusively by `writer` for 60 s.
fn start_with_writer() -> (Server, Con) {
    let (srv, mut con) = start();
    acquire(&mut con, "k", 60_000, "writer").unwrap();
    (srv, con)
}

/// `LOCK.ACQUIRE key ttl TOKEN token opts...` as arguments.
fn acquire_args(key: &str, ttl: u64, token: &str, opts: &[&str]) -> Vec<Vec<u8>> {
    let mut args = vec![
        b"LOCK.ACQUIRE".to_vec(),
        key.as_bytes().to_vec(),
        ttl.to_string().into_bytes(),
        b"TOKEN".to_vec(),
        token.as_bytes().to_vec(),
    ];
    args.extend(opts.iter().map(|o| o.as_bytes().to_vec()));
    args
}

fn refs(args: &[Vec<u8>]) -> Vec<&[u8]> {
    args.iter().map(Vec::as_slice).collect()
}

/// `LOCK.ACQUIRE key ttl TOKEN token opts...` in RESP, to pipeline.
fn acquire_resp(key: &str, ttl: u64, token: &str, opts: &[&str]) -> Vec<u8> {
    resp(&refs(&acquire_args(key, ttl, token, opts)))
}

/// `LOCK.ACQUIRE key ttl TOKEN token opts...`: the fence, None for null, or the error text.
fn try_acq(
    con: &mut Con,
    key: &str,
    ttl: u64,
    token: &str,
    opts: &[&str],
) -> Result<Option<i64>, String> {
    let args = acquire_args(key, ttl, token, opts);
    try_call(con, &refs(&args)).map(|v| {
        grant(&v).map(|(got, fence)| {
            assert_eq!(got, token.as_bytes(), "the reply names the caller's token");
            fence
        })
    })
}

fn acq(con: &mut Con, key: &str, ttl: u64, token: &str, opts: &[&str]) -> Option<i64> {
    try_acq(con, key, ttl, token, opts).unwrap_or_else(|e| panic!("{key} {token} {opts:?}: {e}"))
}

fn acq_err(con: &mut Con, key: &str, ttl: u64, token: &str, opts: &[&str]) -> String {
    match try_acq(con, key, ttl, token, opts) {
        Err(e) => e,
        Ok(r) => panic!("expected an error for {key} {token} {opts:?}, got {r:?}"),
    }
}

fn shared(con: &mut Con, key: &str, ttl: u64, token: &str) -> Option<i64> {
    acq(con, key, ttl, token, &["SHARED"])
}

fn limited(con: &mut Con, key: &str, ttl: u64, token: &str, n: u32) -> Option<i64> {
    acq(con, key, ttl, token, &["LIMIT", &n.to_string()])
}

fn release(con: &mut Con, key: &str, token: &str) -> i64 {
    int(call(
        con,
        &[b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()],
    ))
}

fn renew(con: &mut Con, key: &str, token: &str, ttl: u64) -> i64 {
    let ttl = ttl.to_string();
    int(call(
        con,
        &[
            b"LOCK.RENEW",
            key.as_bytes(),
            token.as_bytes(),
            ttl.as_bytes(),
        ],
    ))
}

fn pttl(con: &mut Con, key: &str) -> i64 {
    int(call(con, &[b"PTTL", key.as_bytes()]))
}

fn exists(con: &mut Con, key: &str) -> bool {
    int(call(con, &[b"EXISTS", key.as_bytes()])) == 1
}

fn blocked_clients(con: &mut Con) -> i64 {
    info_field(con, "clients", "blocked_clients")
        .unwrap()
        .parse()
        .unwrap()
}

/// What LOCK.INFO shows but the ttl (which runs down by itself).
type State = (i64, i64, Option<i64>, String, i64);

trait Settled {
    fn state(&self) -> State;
}

impl Settled for LockInfo {
    fn state(&self) -> State {
        (
            self.fence,
            self.holders,
            self.limit,
            self.mode.clone(),
            self.waiters,
        )
    }
}

fn lock_info(con: &mut Con, key: &str) -> Option<LockInfo> {
    lock_info_of(con, key.as_bytes())
}

fn state(con: &mut Con, key: &str) -> Option<State> {
    lock_info(con, key).map(|i| i.state())
}

fn holders(con: &mut Con, key: &str) -> i64 {
    lock_info(con, key).map_or(0, |i| i.holders)
}

const EXCLUSIVE_FIELDS: [&str; 5] = ["fence", "holders", "mode", "ttl", "waiters"];
const LIMIT_FIELDS: [&str; 6] = ["fence", "holders", "limit", "mode", "ttl", "waiters"];

fn send_acq(raw: &mut Raw, key: &str, ttl: u64, token: &str, opts: &[&str]) {
    raw.send(&refs(&acquire_args(key, ttl, token, opts)));
}

/// A new connection that has sent `LOCK.ACQUIRE key ttl TOKEN token opts...` (`opts` has
/// the BLOCK), returned once the server has queued it: LOCK.INFO's waiters went up by one.
fn queue(srv: &Server, con: &mut Con, key: &str, ttl: u64, token: &str, opts: &[&str]) -> Raw {
    queue_with_id(srv, con, key, ttl, token, opts).0
}

/// `queue`, with the connection's CLIENT ID.
fn queue_with_id(
    srv: &Server,
    con: &mut Con,
    key: &str,
    ttl: u64,
    token: &str,
    opts: &[&str],
) -> (Raw, String) {
    let before = waiters(con, key);
    let mut raw = srv.raw();
    let id = raw.client_id();
    send_acq(&mut raw, key, ttl, token, opts);
    wait_for(&format!("{token} to queue on {key}"), || {
        waiters(con, key) == before + 1
    });
    (raw, id)
}

/// `readers` (token, ttl) queue for shared holds of `key` behind `holder`, which then
/// releases: each reader is granted.
fn release_to_readers(
    srv: &Server,
    con: &mut Con,
    (key, holder): (&str, &str),
    readers: &[(&str, u64)],
) {
    let sh = &["BLOCK", "0", "SHARED"][..];
    let mut queued: Vec<Raw> = readers
        .iter()
        .map(|&(token, ttl)| queue(srv, con, key, ttl, token, sh))
        .collect();
    assert_eq!(release(con, key, holder), 1);
    for (raw, (token, _)) in queued.iter_mut().zip(readers) {
        granted_to(raw, token);
    }
}

/// A new connection that has sent `LOCK.ACQUIRE key 60000 TOKEN token opts...` (not waiting
/// for it to queue).
fn blocked_client_opts(srv: &Server, key: &str, token: &str, opts: &[&str]) -> Raw {
    let mut raw = srv.raw();
    send_acq(&mut raw, key, 60_000, token, opts);
    raw
}

/// The grant a blocked connection receives, which must be for `token`: its fence.
fn granted_to(raw: &mut Raw, token: &str) -> i64 {
    let reply = raw.value();
    let (got, fence) = grant(&reply).unwrap_or_else(|| panic!("{token} got null"));
    assert_eq!(got, token.as_bytes());
    fence
}

fn nothing_yet(raw: &mut Raw) -> bool {
    raw.reply_within(Duration::from_millis(50)).is_none()
}

fn stat(con: &mut Con, name: &str) -> u64 {
    info_lock_stat(con, name)
}

/// LOCK.INFO of `key` shows `(fence, holders, limit, mode, waiters)`.
fn assert_state(con: &mut Con, key: &str, want: (i64, i64, Option<i64>, &str, i64)) {
    let (fence, holders, limit, mode, waiters) = want;
    let want = (fence, holders, limit, mode.to_string(), waiters);
    assert_eq!(state(con, key), Some(want), "{key}");
}

/// After an error: the lock at `key` shows what it showed before, and its deadline did not
/// move (PTTL at most what it was).
fn assert_unchanged(
    con: &mut Con,
    key: &str,
    before: &Option<State>,
    pttl_before: i64,
    what: &str,
) {
    assert_eq!(&state(con, key), before, "{what} changed the lock");
    let now = pttl(con, key);
    assert!(
        now <= pttl_before,
        "{what} moved the deadline: {now} > {pttl_before}"
    );
}

/// Each of `requests` (ACQUIRE options, space-separated) for `token` on `key` is an error
/// that starts with `expected`, and leaves the lock as it was (see `assert_unchanged`).
fn assert_each_refused(
    con: &mut Con,
    (key, token): (&str, &str),
    requests: &[&str],
    expected: &str,
    what: &str,
) {
    let before = state(con, key);
    let p = pttl(con, key);
    for request in requests {
        let opts: Vec<&str> = request.split_whitespace().collect();
        let err = acq_err(con, key, 60_000, token, &opts);
        assert!(err.starts_with(expected), "{opts:?}: {err}");
        assert_unchanged(con, key, &before, p, what);
    }
}

/// `CLIENT UNBLOCK id how` (`TIMEOUT` or `ERROR`): 1 if it was blocked.
fn unblock(con: &mut Con, id: &str, how: &str) -> i64 {
    int(call(
        con,
        &[b"CLIENT", b"UNBLOCK", id.as_bytes(), how.as_bytes()],
    ))
}

/// A waiter leaves the queue `how`: its BLOCK times out ("timeout"), its connection closes
/// ("disconnect"), or CLIENT UNBLOCK ends its wait ("unblock": TIMEOUT, "unblock-error":
/// ERROR). What it was answered is checked.
fn leave_queue(con: &mut Con, mut waiter: Raw, id: &str, how: &str) {
    match how {
        "timeout" => assert_eq!(waiter.read_reply(), b"$-1\r\n"),
        "disconnect" => drop(waiter),
        "unblock" => {
            assert_eq!(unblock(con, id, "TIMEOUT"), 1);
            assert_eq!(waiter.read_reply(), b"$-1\r\n");
        }
        "unblock-error" => {
            assert_eq!(unblock(con, id, "ERROR"), 1);
            let reply = String::from_utf8(waiter.read_reply()).unwrap();
            assert!(reply.starts_with("-UNBLOCKED"), "{reply}");
        }
        _ => panic!("no way to leave: {how}"),
    }
}

/// Try `check` every `every` until it passes; fail with its last complaint once `limit` has
/// passed.
fn poll_until(limit: Duration, every: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    while let Err(complaint) = check() {
        assert!(start.elapsed() < limit, "{complaint}");
        sleep(every);
    }
}

/// A small deterministic random source (xorshift64*), one per client thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// One grant as a client saw it, as an interval the real hold surely covered: from when the
/// grant's reply arrived (the server granted it before) to when RELEASE was sent, or to the
/// deadline counted from when the request was sent (the server's deadline is later).
#[derive(Clone, Copy, Debug)]
struct Hold {
    client: usize,
    exclusive: bool,
    start: Instant,
    end: Instant,
    fence: i64,
}

fn overlap(a: &Hold, b: &Hold) -> bool {
    a.start < b.end && b.start < a.end
}

fn describe(h: &Hold, base: Instant) -> String {
    format!(
        "client {} {} fence {} [{:.1} ms, {:.1} ms]",
        h.client,
        if h.exclusive { "exclusive" } else { "shared" },
        h.fence,
        h.start.duration_since(base).as_secs_f64() * 1000.0,
        h.end.duration_since(base).as_secs_f64() * 1000.0
    )
}

/// No exclusive hold overlaps any other hold.
fn assert_exclusive_holds_overlap_nothing(holds: &[Hold], base: Instant) {
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            assert!(
                !((a.exclusive || b.exclusive) && overlap(a, b)),
                "holds overlap: {} and {}",
                describe(a, base),
                describe(b, base)
            );
        }
    }
}

/// The most holds that overlap at one instant.
fn max_overlap(holds: &[Hold]) -> usize {
    let mut events: Vec<(Instant, i32)> = holds
        .iter()
        .filter(|h| h.start < h.end)
        .flat_map(|h| [(h.start, 1), (h.end, -1)])
        .collect();
    // At the same instant an end comes before a start: touching intervals do not overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

fn assert_distinct_fences(holds: &[Hold]) {
    let mut fences: Vec<i64> = holds.iter().map(|h| h.fence).collect();
    fences.sort_unstable();
    let n = fences.len();
    fences.dedup();
    assert_eq!(fences.len(), n, "every grant has its own fence");
}

/// What the random clients of a contention test do.
#[derive(Clone, Copy)]
enum Mix {
    /// Readers (SHARED) and writers (exclusive) at random.
    ReadWrite,
    /// All take a permit of `LIMIT n`.
    Permits(u32),
}

#[derive(Default)]
struct Outcome {
    holds: Vec<Hold>,
    timeouts: usize,
    killed: usize,
}

/// `clients` threads, each on its own connection, contend for `key` for `run_for`: a blocking
/// ACQUIRE with a random timeout, a short hold, RELEASE. Now and then a client drops its
/// connection while it waits, or while it holds (the hold then lasts until its deadline).
/// Meanwhile LOCK.INFO is sampled: an exclusive lock never shows more than one holder, a
/// semaphore never more than its limit.
fn contend(
    srv: &Server,
    key: &'static str,
    clients: usize,
    run_for: Duration,
    mix: Mix,
) -> Outcome {
    let stop = Instant::now() + run_for;
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let port = srv.port;
            std::thread::spawn(move || {
                let mut rng = Rng::new(client as u64 + 1);
                let mut raw = Raw::connect(port);
                let mut out = Outcome::default();
                let mut n = 0;
                while Instant::now() < stop {
                    n += 1;
                    let token = format!("c{client}-{n}");
                    let (exclusive, mut opts) = match mix {
                        Mix::ReadWrite if rng.below(10) < 4 => (true, vec![]),
                        Mix::ReadWrite => (false, vec!["SHARED".to_string()]),
                        Mix::Permits(limit) => (false, vec!["LIMIT".into(), limit.to_string()]),
                    };
                    let kind = rng.below(12);
                    let ttl: u64 = if kind < 2 { 300 } else { 1000 };
                    opts.extend(["BLOCK".to_string(), (200 + rng.below(600)).to_string()]);
                    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
                    let sent = Instant::now();
                    // The server's deadline is its millisecond clock plus ttl: up to 1 ms before
                    // `sent + ttl` (2 ms, for the two clocks' readings).
                    let deadline = sent + Duration::from_millis(ttl - 2);
                    let hold = |start, end, fence| Hold {
                        client,
                        exclusive,
                        start,
                        end,
                        fence,
                    };
                    send_acq(&mut raw, key, ttl, &token, &opts);
                    if kind == 0 {
                        // Gone while waiting (unless it was granted by then: then it drops a hold).
                        sleep(Duration::from_millis(5 + rng.below(30)));
                        if let Some(reply) = raw.reply_within(Duration::from_millis(1)) {
                            let reply = redis::parse_redis_value(&reply).unwrap();
                            if let Some((_, fence)) = grant(&reply) {
                                out.killed += 1;
                                out.holds.push(hold(Instant::now(), deadline, fence));
                            }
                        }
                        raw = Raw::connect(port);
                        continue;
                    }
                    let reply = raw.value();
                    let start = Instant::now();
                    let Some((got, fence)) = grant(&reply) else {
                        out.timeouts += 1;
                        continue;
                    };
                    assert_eq!(got, token.as_bytes());
                    if kind == 1 {
                        // Gone while holding: the hold ends at its deadline.
                        out.killed += 1;
                        out.holds.push(hold(start, deadline, fence));
                        raw = Raw::connect(port);
                        continue;
                    }
                    sleep(Duration::from_millis(2 + rng.below(25)));
                    let released = Instant::now();
                    let reply = raw.cmd(&[b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()]);
                    let answered = Instant::now();
                    if reply == b":0\r\n" {
                        // Only a hold whose deadline passed may be gone (2 ms for the server's
                        // millisecond clock).
                        assert!(
                            answered + Duration::from_millis(2) >= deadline,
                            "{token}: RELEASE answered 0 before its deadline"
                        );
                    } else {
                        assert_eq!(reply, b":1\r\n", "{token}");
                    }
                    out.holds.push(hold(start, released.min(deadline), fence));
                }
                out
            })
        })
        .collect();
    let mut con = srv.conn();
    let mut samples = 0;
    while Instant::now() < stop {
        if let Some(i) = lock_info(&mut con, key) {
            samples += 1;
            match mix {
                Mix::ReadWrite if i.mode == "exclusive" => {
                    assert_eq!(i.holders, 1, "{i:?}")
                }
                Mix::ReadWrite => {
                    assert_eq!(i.mode, "shared", "{i:?}");
                    assert_eq!(i.limit, None, "{i:?}");
                }
                Mix::Permits(limit) => {
                    assert_eq!(i.mode, "shared", "{i:?}");
                    assert_eq!(i.limit, Some(i64::from(limit)), "{i:?}");
                    assert!(i.holders <= i64::from(limit), "{i:?}");
                }
            }
            assert!(i.holders >= 1, "{i:?}");
        }
        sleep(Duration::from_millis(10));
    }
    assert!(samples > 0, "LOCK.INFO never saw the lock held");
    let mut all = Outcome::default();
    for t in threads {
        let out = t.join().unwrap();
        all.holds.extend(out.holds);
        all.timeouts += out.timeouts;
        all.killed += out.killed;
    }
    // Dropped holds end at their deadlines, and the lock with them.
    // (A waiter whose connection was dropped may still be queued until the server reads the
    // close, and may take the lock for a moment: wait for both to settle.)
    wait_for("the last holds to end", || {
        blocked_clients(&mut con) == 0 && !exists(&mut con, key)
    });
    assert_eq!(lock_info(&mut con, key), None);
    all
}

/// Keyspace events of the module class on ("KEd"), and a connection subscribed to every
/// `lock.*` event of db 0.
fn subscribe_lock_events(srv: &Server) -> Raw {
    call(
        &mut srv.conn(),
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEd"],
    );
    let mut sub = srv.raw();
    sub.cmd(&[b"PSUBSCRIBE", b"__keyevent@0__:lock.*"]);
    sub
}

/// The next `n` lock events: (event, key).
fn next_events(sub: &mut Raw, n: usize) -> Vec<(String, String)> {
    let mut events = Vec::new();
    while events.len() < n {
        let reply = sub
            .reply_within(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("only {events:?} of {n} events came"));
        events.extend(keyevent(&reply));
    }
    events
}

fn assert_events(sub: &mut Raw, key: &str, expected: &[&str]) {
    let events = next_events(sub, expected.len());
    let got: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(got, expected);
    assert!(events.iter().all(|(_, k)| k == key), "{events:?}");
}

// ---------------------------------------------------------------------------------------
// SHARED
// ---------------------------------------------------------------------------------------

#[test]
fn shared_holders_coexist_each_with_its_own_token_deadline_and_fence() {
    let (_srv, mut con) = start();
    let before = now_us();
    let fa = shared(&mut con, "k", 10_000, "reader-a").unwrap();
    // Each shared grant's fence comes from the server's clock (in microseconds), like any.
    assert!(fa >= before, "{fa} < {before}");
    let fb = shared(&mut con, "k", 30_000, "reader-b").unwrap();
    let fc = shared(&mut con, "k", 20_000, "reader-c").unwrap();
    // BLOCK on a shared lock nobody waits for: granted at once.
    let fd = acq(&mut con, "k", 5_000, "reader-d", &["BLOCK", "0", "SHARED"]).unwrap();
    assert!(fa < fb && fb < fc && fc < fd, "{fa} {fb} {fc} {fd}");
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!(i.fields, EXCLUSIVE_FIELDS, "no limit field without LIMIT");
    assert_eq!((i.holders, i.mode.as_str(), i.limit), (4, "shared", None));
    assert_eq!((i.fence, i.waiters), (fd, 0), "the highest fence");
    assert!(
        i.ttl > 28_000 && i.ttl <= 30_000,
        "the latest deadline: {}",
        i.ttl
    );
    let p = pttl(&mut con, "k");
    assert!(p > 28_000 && p <= 30_000, "{p}");
    // One key, whatever the number of holders.
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 1);
    let kind: String = redis::cmd("TYPE").arg("k").query(&mut con).unwrap();
    assert_eq!(kind, "fencelock");
    let err = call_err(&mut con, &[b"GET", b"k"]);
    assert!(err.starts_with("WRONGTYPE"), "{err}");
    assert!(
        try_call(&mut con, &[b"COPY", b"k", b"k2"]).is_err(),
        "COPY is refused"
    );
    assert!(!exists(&mut con, "k2"));

    // No exclusive hold while any shared holder lives.
    assert_eq!(acquire(&mut con, "k", 1000, "writer"), None);
    assert_eq!(
        call(&mut con, &[b"LOCK.ACQUIRE", b"k", b"1000"]),
        Value::Nil
    );

    // RENEW acts on its own holder.
    assert_eq!(renew(&mut con, "k", "reader-a", 40_000), 1);
    let p = pttl(&mut con, "k");
    assert!(p > 38_000 && p <= 40_000, "{p}");
    assert_eq!(renew(&mut con, "k", "nobody", 50_000), 0);
    assert_eq!(
        lock_info(&mut con, "k").unwrap().state(),
        (fd, 4, None, "shared".into(), 0)
    );

    // RELEASE too: the others stay, and PTTL follows the latest deadline left.
    assert_eq!(release(&mut con, "k", "reader-a"), 1);
    assert_eq!(release(&mut con, "k", "reader-a"), 0);
    assert_eq!(renew(&mut con, "k", "reader-a", 1000), 0);
    let p = pttl(&mut con, "k");
    assert!(p > 28_000 && p <= 30_000, "b's deadline: {p}");
    assert_eq!(holders(&mut con, "k"), 3);
    assert_eq!(release(&mut con, "k", "reader-d"), 1);
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!(
        (i.fence, i.holders),
        (fc, 2),
        "the highest fence among the live holders"
    );
    assert_eq!(release(&mut con, "k", "reader-b"), 1);
    let p = pttl(&mut con, "k");
    assert!(p > 18_000 && p <= 20_000, "c's deadline: {p}");
    assert_eq!(acquire(&mut con, "k", 1000, "writer"), None);
    assert_eq!(renew(&mut con, "k", "reader-c", 20_000), 1);
    // The last holder leaves: the key goes.
    assert_eq!(release(&mut con, "k", "reader-c"), 1);
    assert!(!exists(&mut con, "k"));
    assert_eq!(lock_info(&mut con, "k"), None);
    let fw = acquire(&mut con, "k", 1000, "writer").unwrap();
    assert!(fw > fd);
}

#[test]
fn an_exclusive_holder_holds_back_shared_requests() {
    let (_srv, mut con) = start();
    let fx = acquire(&mut con, "k", 10_000, "writer").unwrap();
    assert_eq!(shared(&mut con, "k", 1000, "reader"), None);
    assert_eq!(limited(&mut con, "k", 1000, "reader", 3), None);
    assert_eq!(
        call(&mut con, &[b"LOCK.ACQUIRE", b"k", b"1000", b"SHARED"]),
        Value::Nil
    );
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!(i.fields, EXCLUSIVE_FIELDS);
    assert_eq!(i.state(), (fx, 1, None, "exclusive".into(), 0));
    // The refusals changed nothing.
    assert!(pttl(&mut con, "k") <= 10_000);
    assert_eq!(release(&mut con, "k", "reader"), 0);
    assert_eq!(release(&mut con, "k", "writer"), 1);
    // Free again: shared requests are granted, with or without a token of their own.
    let fr = shared(&mut con, "k", 10_000, "reader").unwrap();
    assert!(fr > fx);
    let (token, fs) = grant(&call(
        &mut con,
        &[b"LOCK.ACQUIRE", b"k", b"10000", b"SHARED"],
    ))
    .unwrap();
    assert_eq!(token.len(), 32, "a server token");
    assert!(token
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
    assert!(fs > fr);
    assert_eq!(holders(&mut con, "k"), 2);
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", &token])), 1);
    assert_eq!(holders(&mut con, "k"), 1);
}

#[test]
fn a_retry_in_the_same_mode_keeps_the_fence_and_moves_only_its_own_deadline() {
    let (srv, mut con) = start();
    let fa = shared(&mut con, "k", 1_000, "a").unwrap();
    let fb = shared(&mut con, "k", 5_000, "b").unwrap();
    sleep(Duration::from_millis(20));
    assert_eq!(shared(&mut con, "k", 60_000, "a"), Some(fa));
    let p = pttl(&mut con, "k");
    assert!(p > 58_000 && p <= 60_000, "a's deadline moved: {p}");
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!((i.fence, i.holders), (fb, 2), "one holder per token");
    // b's deadline did not move with a's.
    assert_eq!(release(&mut con, "k", "a"), 1);
    assert_eq!(
        renew(&mut con, "k", "a", 1000),
        0,
        "one RELEASE frees: not reentrant"
    );
    let p = pttl(&mut con, "k");
    assert!(p > 3_000 && p <= 5_000, "b's own deadline: {p}");

    // With a waiter queued, and with BLOCK: a retry answers at once, queues nothing.
    let mut writer = queue(&srv, &mut con, "k", 10_000, "writer", &["BLOCK", "0"]);
    assert_eq!(
        acq(&mut con, "k", 30_000, "b", &["BLOCK", "0", "SHARED"]),
        Some(fb)
    );
    assert_eq!(acq(&mut con, "k", 30_000, "b", &["SHARED"]), Some(fb));
    let p = pttl(&mut con, "k");
    assert!(p > 28_000 && p <= 30_000, "{p}");
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!((i.fence, i.holders, i.waiters), (fb, 1, 1));
    assert!(nothing_yet(&mut writer));
    assert_eq!(release(&mut con, "k", "b"), 1);
    assert!(granted_to(&mut writer, "writer") > fb);

    // LIMIT: the same token with the same limit is the same holder.
    let f1 = limited(&mut con, "sem", 1_000, "p1", 2).unwrap();
    assert_eq!(limited(&mut con, "sem", 20_000, "p1", 2), Some(f1));
    assert_eq!(
        acq(
            &mut con,
            "sem",
            20_000,
            "p1",
            &["LIMIT", "2", "BLOCK", "100"]
        ),
        Some(f1)
    );
    let i = lock_info(&mut con, "sem").unwrap();
    assert_eq!(i.state(), (f1, 1, Some(2), "shared".into(), 0));
    assert!(i.ttl > 18_000, "{i:?}");
    // Still one permit free.
    assert!(limited(&mut con, "sem", 1_000, "p2", 2).is_some());
    assert_eq!(limited(&mut con, "sem", 1_000, "p3", 2), None);
}

#[test]
fn the_same_token_in_the_other_mode_is_an_error_and_changes_nothing() {
    let (_srv, mut con) = start();
    shared(&mut con, "k", 5_000, "a").unwrap();
    shared(&mut con, "k", 5_000, "b").unwrap();
    let held_shared = "ERR this token holds the lock shared";
    assert_each_refused(
        &mut con,
        ("k", "a"),
        &["", "BLOCK 0", "BLOCK 100"],
        held_shared,
        "an exclusive retry of a shared holder",
    );
    // A permit holder asking for an exclusive hold.
    limited(&mut con, "sem", 5_000, "s", 2).unwrap();
    assert_each_refused(
        &mut con,
        ("sem", "s"),
        &[""],
        held_shared,
        "an exclusive retry of a permit holder",
    );
    // An exclusive holder asking for a shared hold or a permit.
    acquire(&mut con, "x", 5_000, "w").unwrap();
    assert_each_refused(
        &mut con,
        ("x", "w"),
        &["SHARED", "LIMIT 3", "SHARED BLOCK 0", "BLOCK 0 LIMIT 1"],
        "ERR this token holds the lock exclusively",
        "a shared retry of an exclusive holder",
    );
    // Every holder is still there, as it was.
    assert_eq!(release(&mut con, "k", "a"), 1);
    assert_eq!(release(&mut con, "k", "b"), 1);
    assert_eq!(release(&mut con, "sem", "s"), 1);
    assert_eq!(release(&mut con, "x", "w"), 1);
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 0);
    assert_eq!(blocked_clients(&mut con), 0);
}

// ---------------------------------------------------------------------------------------
// LIMIT n
// ---------------------------------------------------------------------------------------

#[test]
fn limit_n_admits_at_most_n_holders() {
    let (_srv, mut con) = start();
    let f1 = limited(&mut con, "sem", 10_000, "p1", 3).unwrap();
    let f2 = limited(&mut con, "sem", 10_000, "p2", 3).unwrap();
    let f3 = limited(&mut con, "sem", 10_000, "p3", 3).unwrap();
    assert!(f1 < f2 && f2 < f3);
    assert_eq!(limited(&mut con, "sem", 10_000, "p4", 3), None);
    assert_eq!(acquire(&mut con, "sem", 10_000, "writer"), None);
    let i = lock_info(&mut con, "sem").unwrap();
    assert_eq!(i.fields, LIMIT_FIELDS);
    assert_eq!(i.state(), (f3, 3, Some(3), "shared".into(), 0));
    // A permit comes back on release.
    assert_eq!(release(&mut con, "sem", "p2"), 1);
    let f4 = limited(&mut con, "sem", 10_000, "p4", 3).unwrap();
    assert!(f4 > f3);
    assert_eq!(limited(&mut con, "sem", 10_000, "p5", 3), None);
    assert_eq!(holders(&mut con, "sem"), 3);
    // LIMIT 1: one holder at a time.
    assert!(limited(&mut con, "one", 1000, "a", 1).is_some());
    assert_eq!(limited(&mut con, "one", 1000, "b", 1), None);
    // The largest limit.
    assert!(limited(&mut con, "big", 1000, "a", 1_000_000).is_some());
    assert!(limited(&mut con, "big", 1000, "b", 1_000_000).is_some());
    let i = lock_info(&mut con, "big").unwrap();
    assert_eq!((i.holders, i.limit), (2, Some(1_000_000)));
}

#[test]
fn a_limit_that_disagrees_with_the_lock_is_an_error_and_changes_nothing() {
    let (srv, mut con) = start();
    // The holders' limit.
    limited(&mut con, "sem", 10_000, "p1", 3).unwrap();
    assert_each_refused(
        &mut con,
        ("sem", "other"),
        &[
            "SHARED",
            "LIMIT 4",
            "LIMIT 2",
            "LIMIT 4 BLOCK 0",
            "SHARED BLOCK 0",
        ],
        "ERR the lock is shared with LIMIT 3",
        "a mismatched limit",
    );
    // A shared lock without a limit.
    shared(&mut con, "rw", 10_000, "r1").unwrap();
    assert_each_refused(
        &mut con,
        ("rw", "other"),
        &["LIMIT 1", "LIMIT 5 BLOCK 0"],
        "ERR the lock is shared without a limit",
        "a limit on a SHARED lock",
    );

    // An exclusive holder alone sets no limit: any shared request gets null.
    acquire(&mut con, "q", 10_000, "writer").unwrap();
    assert_eq!(shared(&mut con, "q", 1000, "other"), None);
    assert_eq!(limited(&mut con, "q", 1000, "other", 7), None);
    // With no shared holder, the shared requests waiting in the queue set the limit.
    let (mut waiter, id) = queue_with_id(
        &srv,
        &mut con,
        "q",
        10_000,
        "w",
        &["LIMIT", "2", "BLOCK", "0"],
    );
    assert_each_refused(
        &mut con,
        ("q", "other"),
        &["SHARED", "LIMIT 5", "SHARED BLOCK 0", "LIMIT 1 BLOCK 0"],
        "ERR the lock is shared with LIMIT 2",
        "a limit other than the waiters'",
    );
    // A matching one is no error: null, the lock is held.
    assert_eq!(limited(&mut con, "q", 1000, "other", 2), None);
    // Once no shared request waits, that limit is gone.
    assert_eq!(unblock(&mut con, &id, "TIMEOUT"), 1);
    assert_eq!(waiter.read_reply(), b"$-1\r\n");
    assert_eq!(waiters(&mut con, "q"), 0);
    assert_eq!(shared(&mut con, "q", 1000, "other"), None);
    assert_eq!(limited(&mut con, "q", 1000, "other", 5), None);

    // Once the last holder with a limit leaves, the lock goes and its limit with it.
    assert_eq!(release(&mut con, "sem", "p1"), 1);
    assert!(!exists(&mut con, "sem"));
    shared(&mut con, "sem", 10_000, "r").unwrap();
    assert_eq!(lock_info(&mut con, "sem").unwrap().limit, None);
    let err = acq_err(&mut con, "sem", 1000, "other", &["LIMIT", "3"]);
    assert!(
        err.starts_with("ERR the lock is shared without a limit"),
        "{err}"
    );
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn invalid_limits_and_option_combinations_are_errors_that_change_nothing() {
    let (_srv, mut con) = start();
    shared(&mut con, "held", 10_000, "r").unwrap();
    let before = state(&mut con, "held");
    let p = pttl(&mut con, "held");
    let bad_values = ["0", "-1", "1000001", "x", "1.5", "", "99999999999999999999"];
    let mut cases: Vec<(Vec<String>, String)> = bad_values
        .iter()
        .map(|v| {
            (
                vec!["LIMIT".to_string(), v.to_string()],
                format!("ERR invalid LIMIT '{v}': must be a whole number from 1 to 1000000"),
            )
        })
        .collect();
    let combined = "ERR SHARED and LIMIT cannot be combined";
    for (opts, expected) in [
        (&["SHARED", "LIMIT", "2"][..], combined),
        (&["LIMIT", "2", "SHARED"], combined),
        (&["shared", "BLOCK", "0", "limit", "3"], combined),
        (
            &["SHARED", "SHARED"],
            "ERR option SHARED given more than once",
        ),
        (
            &["SHARED", "BLOCK", "0", "shared"],
            "ERR option SHARED given more than once",
        ),
        (
            &["LIMIT", "2", "LIMIT", "2"],
            "ERR option LIMIT given more than once",
        ),
        (
            &["LIMIT", "2", "limit", "3"],
            "ERR option LIMIT given more than once",
        ),
        (&["LIMIT"], "ERR option LIMIT needs a value"),
        (&["BLOCK", "0", "LIMIT"], "ERR option LIMIT needs a value"),
    ] {
        cases.push((
            opts.iter().map(|s| s.to_string()).collect(),
            expected.to_string(),
        ));
    }
    for (opts, expected) in &cases {
        let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
        for key in ["free", "held"] {
            let err = acq_err(&mut con, key, 60_000, "t", &opts);
            assert!(err.starts_with(expected.as_str()), "{key} {opts:?}: {err}");
        }
        assert!(!exists(&mut con, "free"), "{opts:?} created a lock");
        assert_unchanged(&mut con, "held", &before, p, &format!("{opts:?}"));
    }
    assert_eq!(blocked_clients(&mut con), 0);

    // Options are case-insensitive and in any order.
    for (command, token) in [
        ("LOCK.ACQUIRE ci 10000 shared TOKEN a", "a"),
        ("LOCK.ACQUIRE ci 10000 BlOcK 0 Shared token b", "b"),
        ("LOCK.ACQUIRE sem 10000 limit 2 TOKEN x", "x"),
        ("LOCK.ACQUIRE sem 10000 block 10 LiMiT 2 TOKEN y", "y"),
    ] {
        let args: Vec<&[u8]> = command.split(' ').map(str::as_bytes).collect();
        let (t, _) = grant(&call(&mut con, &args)).unwrap();
        assert_eq!(t, token.as_bytes(), "{command}");
    }
    assert_eq!(holders(&mut con, "ci"), 2);
    let i = lock_info(&mut con, "sem").unwrap();
    assert_eq!((i.holders, i.limit), (2, Some(2)));
}

#[test]
fn lock_info_shows_mode_holders_and_limit_in_resp2_and_resp3_but_never_a_token() {
    let (srv, mut con) = start();
    let mut con3 = srv.conn_resp3();
    let fx = acquire(&mut con, "x", 10_000, "tok-exclusive").unwrap();
    shared(&mut con, "s", 10_000, "tok-shared-1").unwrap();
    let fs = shared(&mut con, "s", 20_000, "tok-shared-2").unwrap();
    limited(&mut con, "l", 10_000, "tok-limit-1", 5).unwrap();
    limited(&mut con, "l", 10_000, "tok-limit-2", 5).unwrap();
    let fl = limited(&mut con, "l", 10_000, "tok-limit-3", 5).unwrap();
    let _waiter = queue(
        &srv,
        &mut con,
        "x",
        10_000,
        "tok-waiter",
        &["SHARED", "BLOCK", "0"],
    );
    let expect: [(&str, &[&str], State, i64); 3] = [
        (
            "x",
            &EXCLUSIVE_FIELDS,
            (fx, 1, None, "exclusive".into(), 1),
            10_000,
        ),
        (
            "s",
            &EXCLUSIVE_FIELDS,
            (fs, 2, None, "shared".into(), 0),
            20_000,
        ),
        (
            "l",
            &LIMIT_FIELDS,
            (fl, 3, Some(5), "shared".into(), 0),
            10_000,
        ),
    ];
    for (key, fields, state, ttl) in &expect {
        let resp2 = call(&mut con, &[b"LOCK.INFO", key.as_bytes()]);
        assert!(matches!(resp2, Value::Array(_)), "{resp2:?}");
        let resp3 = call(&mut con3, &[b"LOCK.INFO", key.as_bytes()]);
        assert!(matches!(resp3, Value::Map(_)), "{resp3:?}");
        for reply in [resp2, resp3] {
            let i = parse_lock_info(reply).unwrap();
            assert_eq!(&i.fields, fields, "{key}");
            assert_eq!(&i.state(), state, "{key}");
            assert!(i.ttl > ttl - 2_000 && i.ttl <= *ttl, "{key}: {i:?}");
        }
    }
    // The wire form, and no token in it.
    let mut raw2 = srv.raw();
    let mut raw3 = srv.raw();
    assert!(raw3.cmd(&[b"HELLO", b"3"]).starts_with(b"%"));
    for (key, head2, head3) in [
        ("x", "*10\r\n", "%5\r\n"),
        ("s", "*10\r\n", "%5\r\n"),
        ("l", "*12\r\n", "%6\r\n"),
    ] {
        let r2 = raw2.cmd(&[b"LOCK.INFO", key.as_bytes()]);
        let r3 = raw3.cmd(&[b"LOCK.INFO", key.as_bytes()]);
        assert!(
            r2.starts_with(head2.as_bytes()),
            "{}",
            String::from_utf8_lossy(&r2)
        );
        assert!(
            r3.starts_with(head3.as_bytes()),
            "{}",
            String::from_utf8_lossy(&r3)
        );
        for r in [&r2, &r3] {
            let text = String::from_utf8_lossy(r);
            assert!(!text.contains("tok-"), "a token shows: {text}");
            assert!(text.contains("$4\r\nmode\r\n"), "{text}");
        }
    }
    // Free: null in both.
    assert_eq!(call(&mut con, &[b"LOCK.INFO", b"free"]), Value::Nil);
    assert_eq!(call(&mut con3, &[b"LOCK.INFO", b"free"]), Value::Nil);
    assert_eq!(raw3.cmd(&[b"LOCK.INFO", b"free"]), b"_\r\n");
}

#[test]
fn each_holder_expires_on_its_own_and_the_key_goes_with_the_last() {
    let (_srv, mut con) = start();
    let fb = shared(&mut con, "k", 2_000, "b").unwrap();
    let fa = shared(&mut con, "k", 200, "a").unwrap();
    assert!(fa > fb);
    let p = pttl(&mut con, "k");
    assert!(p > 1_000 && p <= 2_000, "the latest deadline: {p}");
    // a's deadline passes: a is gone, b stays.
    wait_for("a to expire", || holders(&mut con, "k") == 1);
    let b_alone = (fb, 1, None, "shared".into(), 0);
    assert_eq!(state(&mut con, "k"), Some(b_alone), "b's fence now");
    assert_eq!(renew(&mut con, "k", "a", 1000), 0);
    assert_eq!(release(&mut con, "k", "a"), 0);
    wait_for("a's expiry to count", || stat(&mut con, "expired") == 1);
    assert!(pttl(&mut con, "k") > 0);
    // PTTL follows b's deadline down when b renews for less.
    assert_eq!(renew(&mut con, "k", "b", 300), 1);
    let p = pttl(&mut con, "k");
    assert!(p > 0 && p <= 300, "{p}");
    wait_for("b to expire", || !exists(&mut con, "k"));
    assert_eq!(lock_info(&mut con, "k"), None);
    wait_for("b's expiry to count", || stat(&mut con, "expired") == 2);
    assert_eq!(stat(&mut con, "keys"), 0);

    // An exclusive hold whose deadline has passed holds nothing back.
    call(&mut con, &[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"0"]);
    let fx = acquire(&mut con, "x", 50, "writer").unwrap();
    sleep(Duration::from_millis(60));
    let fr = shared(&mut con, "x", 10_000, "reader").unwrap();
    assert!(fr > fx);
    assert_state(&mut con, "x", (fr, 1, None, "shared", 0));
    assert_eq!(renew(&mut con, "x", "writer", 1000), 0);
    call(&mut con, &[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"1"]);

    // A permit whose holder expires comes back.
    limited(&mut con, "sem", 500, "p1", 2).unwrap();
    limited(&mut con, "sem", 60_000, "p2", 2).unwrap();
    assert_eq!(limited(&mut con, "sem", 60_000, "p3", 2), None);
    wait_for("p1's permit to come back", || {
        limited(&mut con, "sem", 60_000, "p3", 2).is_some()
    });
    let i = lock_info(&mut con, "sem").unwrap();
    assert_eq!((i.holders, i.limit), (2, Some(2)));
    assert_eq!(renew(&mut con, "sem", "p1", 1000), 0);
    assert_eq!(renew(&mut con, "sem", "p2", 60_000), 1);
}

/// The server-wide guards of ACQUIRE apply to shared requests too: ttl checks and
/// `lock.max-ttl`, and the refusal while the server may evict keys.
#[test]
fn ttl_checks_max_ttl_and_the_eviction_guard_apply_to_shared_requests() {
    let (_srv, mut con) = start();
    shared(&mut con, "held", 60_000, "r").unwrap();
    limited(&mut con, "sem", 60_000, "p", 2).unwrap();
    let before = (state(&mut con, "held"), state(&mut con, "sem"));
    let check = |con: &mut Con, ttl: &str, what: &str| {
        for (key, opts) in [
            ("held", &["SHARED"][..]),
            ("sem", &["LIMIT", "2"]),
            ("free", &["SHARED"]),
        ] {
            let mut args = vec![b"LOCK.ACQUIRE".to_vec(), key.into(), ttl.into()];
            args.extend(opts.iter().map(|o| o.as_bytes().to_vec()));
            let err = try_call(con, &refs(&args)).expect_err(what);
            assert!(
                err.starts_with("ERR") && err.contains(what),
                "{key} ttl {ttl}: {err}"
            );
        }
    };
    for ttl in ["0", "-1", "x", "1.5"] {
        check(&mut con, ttl, "ttl");
    }
    call(&mut con, &[b"CONFIG", b"SET", b"lock.max-ttl", b"1000"]);
    check(&mut con, "2000", "max-ttl");
    call(&mut con, &[b"CONFIG", b"SET", b"lock.max-ttl", b"0"]);
    call(&mut con, &[b"CONFIG", b"SET", b"maxmemory", b"1gb"]);
    call(
        &mut con,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"],
    );
    check(&mut con, "1000", "noeviction");
    // Holders can still renew and release.
    assert_eq!(renew(&mut con, "held", "r", 60_000), 1);
    assert_eq!(renew(&mut con, "sem", "p", 60_000), 1);
    assert_eq!((state(&mut con, "held"), state(&mut con, "sem")), before);
    assert!(!exists(&mut con, "free"));
    assert_eq!(release(&mut con, "sem", "p"), 1);
    call(
        &mut con,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction"],
    );
    assert!(shared(&mut con, "held", 1000, "r2").is_some());
}

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

#[test]
fn one_fifo_queue_across_modes_where_nobody_overtakes() {
    let (srv, mut con) = start();
    let k = "k";
    let sh = &["BLOCK", "0", "SHARED"][..];
    let f1 = shared(&mut con, k, 60_000, "s1").unwrap();
    let f2 = shared(&mut con, k, 60_000, "s2").unwrap();
    let mut x = queue(&srv, &mut con, k, 60_000, "x", &["BLOCK", "0"]);
    // A shared request that could be granted does not overtake the waiting writer: without
    // BLOCK it gets null, with BLOCK it queues (and here times out).
    assert_eq!(shared(&mut con, k, 60_000, "late"), None);
    assert_eq!(
        acq(&mut con, k, 60_000, "late", &["SHARED", "BLOCK", "100"]),
        None
    );
    assert_eq!(waiters(&mut con, k), 1);
    let mut r1 = queue(&srv, &mut con, k, 60_000, "r1", sh);
    let mut r2 = queue(&srv, &mut con, k, 60_000, "r2", sh);
    let mut r3 = queue(&srv, &mut con, k, 2_000, "r3", sh);
    let mut y = queue(&srv, &mut con, k, 60_000, "y", &["BLOCK", "0"]);
    let mut r4 = queue(&srv, &mut con, k, 60_000, "r4", sh);
    assert_eq!(waiters(&mut con, k), 6);
    assert!(
        nothing_yet(&mut r1),
        "r1 waits behind x although only readers hold"
    );

    // x waits for every shared holder to leave.
    assert_eq!(release(&mut con, k, "s1"), 1);
    assert!(nothing_yet(&mut x));
    assert_eq!(holders(&mut con, k), 1);
    assert_eq!(release(&mut con, k, "s2"), 1);
    let fx = granted_to(&mut x, "x");
    assert!(fx > f1 && fx > f2);
    assert_state(&mut con, k, (fx, 1, None, "exclusive", 5));
    assert!(nothing_yet(&mut r1));

    // x leaves: the three readers at the head are granted at once, y and r4 wait.
    let released_x = Instant::now();
    assert_eq!(release(&mut con, k, "x"), 1);
    let fr1 = granted_to(&mut r1, "r1");
    let fr2 = granted_to(&mut r2, "r2");
    let fr3 = granted_to(&mut r3, "r3");
    assert!(fx < fr1 && fr1 < fr2 && fr2 < fr3, "{fx} {fr1} {fr2} {fr3}");
    // A reader granted by hand-off retries: the same grant, though others wait.
    assert_eq!(shared(&mut con, k, 60_000, "r1"), Some(fr1));
    assert_state(&mut con, k, (fr3, 3, None, "shared", 2));
    assert!(nothing_yet(&mut y));
    assert!(nothing_yet(&mut r4), "r4 does not overtake y");
    assert_eq!(shared(&mut con, k, 60_000, "late"), None);

    // y waits for r1, r2 (released) and r3 (expires by itself).
    assert_eq!(release(&mut con, k, "r1"), 1);
    assert_eq!(release(&mut con, k, "r2"), 1);
    assert!(nothing_yet(&mut y), "r3 still holds");
    let fy = granted_to(&mut y, "y");
    let waited = released_x.elapsed();
    assert!(
        waited >= Duration::from_millis(1_995),
        "y was granted before r3's deadline: {waited:?}"
    );
    assert!(fy > fr3);
    assert_eq!(renew(&mut con, k, "r3", 1000), 0);
    assert!(nothing_yet(&mut r4));
    assert_state(&mut con, k, (fy, 1, None, "exclusive", 1));
    assert_eq!(release(&mut con, k, "y"), 1);
    let fr4 = granted_to(&mut r4, "r4");
    assert!(fr4 > fy);
    assert_eq!(release(&mut con, k, "r4"), 1);
    assert!(!exists(&mut con, k));
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn a_limit_lock_grants_its_waiters_up_to_the_limit_as_permits_come_back() {
    let (srv, mut con) = start();
    let k = "sem";
    let lim = &["BLOCK", "0", "LIMIT", "2"][..];
    let fw = acquire(&mut con, k, 60_000, "writer").unwrap();
    let mut l1 = queue(&srv, &mut con, k, 60_000, "l1", lim);
    let mut l2 = queue(&srv, &mut con, k, 1_500, "l2", lim);
    let mut l3 = queue(&srv, &mut con, k, 60_000, "l3", lim);
    let mut l4 = queue(&srv, &mut con, k, 60_000, "l4", lim);
    assert_eq!(waiters(&mut con, k), 4);
    let err = acq_err(&mut con, k, 1000, "other", &["SHARED"]);
    assert!(
        err.starts_with("ERR the lock is shared with LIMIT 2"),
        "{err}"
    );
    // The writer leaves: two permits, two waiters granted.
    let released = Instant::now();
    assert_eq!(release(&mut con, k, "writer"), 1);
    let f1 = granted_to(&mut l1, "l1");
    let f2 = granted_to(&mut l2, "l2");
    assert!(fw < f1 && f1 < f2);
    assert!(nothing_yet(&mut l3) && nothing_yet(&mut l4));
    assert_state(&mut con, k, (f2, 2, Some(2), "shared", 2));
    assert_eq!(limited(&mut con, k, 1000, "other", 2), None);
    // A release gives one permit back: one waiter.
    assert_eq!(release(&mut con, k, "l1"), 1);
    let f3 = granted_to(&mut l3, "l3");
    assert!(f3 > f2);
    assert!(nothing_yet(&mut l4));
    // An expiry too.
    let f4 = granted_to(&mut l4, "l4");
    assert!(
        released.elapsed() >= Duration::from_millis(1_495),
        "before l2's deadline"
    );
    assert!(f4 > f3);
    assert_state(&mut con, k, (f4, 2, Some(2), "shared", 0));
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn a_waiter_that_times_out_gets_null_and_takes_its_limit_along() {
    let (srv, mut con) = start_with_writer();
    let mut raw = srv.raw();
    let start = Instant::now();
    send_acq(&mut raw, "k", 1000, "r", &["SHARED", "BLOCK", "200"]);
    assert_eq!(raw.read_reply(), b"$-1\r\n");
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(waiters(&mut con, "k"), 0);
    // A permit request that timed out leaves no limit behind.
    send_acq(&mut raw, "k", 1000, "p", &["LIMIT", "2", "BLOCK", "150"]);
    assert_eq!(raw.read_reply(), b"$-1\r\n");
    assert_eq!(waiters(&mut con, "k"), 0);
    assert_eq!(shared(&mut con, "k", 1000, "other"), None);
    assert_eq!(limited(&mut con, "k", 1000, "other", 5), None);
    // RESP3 null.
    let mut resp3 = srv.raw();
    assert!(resp3.cmd(&[b"HELLO", b"3"]).starts_with(b"%"));
    send_acq(&mut resp3, "k", 1000, "r3", &["BLOCK", "50", "SHARED"]);
    assert_eq!(resp3.read_reply(), b"_\r\n");
    assert_eq!(renew(&mut con, "k", "r", 1000), 0);
    assert_eq!(lock_info(&mut con, "k").unwrap().state().1, 1);
    assert_eq!(blocked_clients(&mut con), 0);
}

/// "Whenever a lock has room, its waiters are granted from the head for as long as the head can
/// be granted": a reader waits behind a writer only because of the writer; when the writer
/// leaves the queue (timeout, disconnect, CLIENT UNBLOCK) the lock has room for the reader,
/// which must be granted then, not at the next release or expiry (a holder of 60 s here).
#[test]
fn a_shared_waiter_behind_a_writer_that_leaves_the_queue_is_granted_at_once() {
    let (srv, mut con) = start();
    let mut stuck = Vec::new();
    for (i, how) in ["timeout", "disconnect", "unblock", "unblock-error"]
        .iter()
        .enumerate()
    {
        for limit in [false, true] {
            let key = format!("k{i}-{limit}");
            let opts: &[&str] = if limit {
                &["BLOCK", "0", "LIMIT", "2"]
            } else {
                &["BLOCK", "0", "SHARED"]
            };
            if limit {
                limited(&mut con, &key, 60_000, "holder", 2).unwrap();
            } else {
                shared(&mut con, &key, 60_000, "holder").unwrap();
            }
            let timeout = if *how == "timeout" { "1000" } else { "0" };
            let (writer, id) =
                queue_with_id(&srv, &mut con, &key, 60_000, "writer", &["BLOCK", timeout]);
            let mut reader = queue(&srv, &mut con, &key, 60_000, "reader", opts);
            let mut reader2 = queue(&srv, &mut con, &key, 60_000, "reader2", opts);
            let _writer2 = queue(&srv, &mut con, &key, 60_000, "writer2", &["BLOCK", "0"]);
            assert!(
                nothing_yet(&mut reader),
                "{key}: the reader waits behind the writer"
            );
            leave_queue(&mut con, writer, &id, how);
            // Nothing is ahead of the reader now, and it can be granted: it is.
            let Some(reply) = reader.reply_within(Duration::from_secs(2)) else {
                let i = lock_info(&mut con, &key).unwrap();
                // (What a new request then does, and whether it wakes the stuck reader.)
                let fresh = try_acq(&mut con, &key, 1000, "fresh", &opts[2..]);
                let woken = reader
                    .reply_within(Duration::from_millis(500))
                    .map(|r| String::from_utf8_lossy(&r).replace("\r\n", " "));
                stuck.push(format!(
                    "{how} (LIMIT: {limit}): still waiting after 2 s, {i:?}; then a new \
                     reader gets {fresh:?}, and the waiting reader gets {woken:?}"
                ));
                continue;
            };
            let (token, _) = grant(&redis::parse_redis_value(&reply).unwrap()).unwrap();
            assert_eq!(token, b"reader");
            // The readers behind it too, up to the limit (LIMIT 2: one permit was left), and
            // not past writer2.
            if limit {
                assert!(nothing_yet(&mut reader2), "{key}: past the limit");
            } else {
                let reply = reader2.reply_within(Duration::from_secs(2));
                let reply = reply.unwrap_or_else(|| panic!("{key}: reader2 not granted"));
                let (token, _) = grant(&redis::parse_redis_value(&reply).unwrap()).unwrap();
                assert_eq!(token, b"reader2");
            }
            let i = lock_info(&mut con, &key).unwrap();
            let expect = if limit { (2, 2) } else { (3, 1) };
            assert_eq!((i.holders, i.waiters), expect, "{key}: {i:?}");
            assert_eq!(i.limit, limit.then_some(2), "{key}");
        }
    }
    assert!(
        stuck.is_empty(),
        "a reader behind a writer that left was not granted:\n{}",
        stuck.join("\n")
    );
    wait_for("the waiters left to go", || blocked_clients(&mut con) == 0);
}

#[test]
fn shared_waiters_leave_the_queue_on_disconnect_and_client_unblock() {
    let (srv, mut con) = start_with_writer();
    let sh = &["BLOCK", "0", "SHARED"][..];
    let gone = queue(&srv, &mut con, "k", 60_000, "gone", sh);
    let (mut unblocked, id) = queue_with_id(&srv, &mut con, "k", 60_000, "unblocked", sh);
    let (mut errored, id2) = queue_with_id(&srv, &mut con, "k", 60_000, "errored", sh);
    let mut stays = queue(&srv, &mut con, "k", 60_000, "stays", sh);
    assert_eq!(waiters(&mut con, "k"), 4);
    drop(gone);
    wait_for("the closed waiter to leave", || waiters(&mut con, "k") == 3);
    assert_eq!(unblock(&mut con, &id, "TIMEOUT"), 1);
    assert_eq!(unblocked.read_reply(), b"$-1\r\n");
    assert_eq!(unblock(&mut con, &id2, "ERROR"), 1);
    let reply = String::from_utf8(errored.read_reply()).unwrap();
    assert!(reply.starts_with("-UNBLOCKED"), "{reply}");
    assert_eq!(waiters(&mut con, "k"), 1);
    assert_eq!(unblocked.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(release(&mut con, "k", "writer"), 1);
    granted_to(&mut stays, "stays");
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!((i.holders, i.waiters, i.mode.as_str()), (1, 0, "shared"));
    for token in ["gone", "unblocked", "errored"] {
        assert_eq!(
            renew(&mut con, "k", token, 1000),
            0,
            "{token} holds nothing"
        );
    }
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn a_granted_reader_that_disconnected_before_its_reply_does_not_keep_its_hold() {
    let (srv, mut con) = start_with_writer();
    let sh = &["SHARED", "BLOCK", "0"][..];
    let (_doomed, id) = queue_with_id(&srv, &mut con, "k", 60_000, "doomed", sh);
    let mut r2 = queue(&srv, &mut con, "k", 60_000, "r2", sh);
    let mut x = queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]);
    // The release grants both readers; the first one's connection is killed before its reply
    // can be delivered.
    let mut tx = srv.raw();
    assert_eq!(tx.cmd(&[b"MULTI"]), b"+OK\r\n");
    tx.cmd(&[b"LOCK.RELEASE", b"k", b"writer"]);
    tx.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]);
    assert_eq!(tx.cmd(&[b"EXEC"]), b"*2\r\n:1\r\n:1\r\n");
    let f2 = granted_to(&mut r2, "r2");
    let start = Instant::now();
    while holders(&mut con, "k") != 1 && start.elapsed() < Duration::from_secs(3) {
        sleep(Duration::from_millis(20));
    }
    let r2_alone = (f2, 1, None, "shared".into(), 1);
    assert_eq!(
        state(&mut con, "k"),
        Some(r2_alone),
        "the dead reader's grant was taken back"
    );
    assert_eq!(renew(&mut con, "k", "doomed", 1000), 0);
    // So r2's release lets the writer in at once.
    assert_eq!(release(&mut con, "k", "r2"), 1);
    let reply = x.reply_within(Duration::from_secs(2));
    assert!(
        reply.is_some(),
        "x was not granted after the last live reader left"
    );
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn block_inside_multi_and_lua_is_a_single_attempt_in_every_mode() {
    let (srv, mut con) = start_with_writer();
    let mut raw = srv.raw();
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    send_acq(&mut raw, "k", 1000, "m", &["SHARED", "BLOCK", "0"]);
    assert_eq!(raw.read_reply(), b"+QUEUED\r\n");
    send_acq(&mut raw, "k", 1000, "m2", &["LIMIT", "2", "BLOCK", "0"]);
    assert_eq!(raw.read_reply(), b"+QUEUED\r\n");
    assert_eq!(raw.cmd(&[b"EXEC"]), b"*2\r\n$-1\r\n$-1\r\n");
    let script = b"return redis.call('LOCK.ACQUIRE', KEYS[1], 1000, 'SHARED', 'BLOCK', 0)";
    assert_eq!(call(&mut con, &[b"EVAL", script, b"1", b"k"]), Value::Nil);
    let library = b"#!lua name=s\nredis.register_function('s', function(keys) \
        return redis.call('LOCK.ACQUIRE', keys[1], 1000, 'LIMIT', 3, 'BLOCK', 0) end)";
    call(&mut con, &[b"FUNCTION", b"LOAD", library]);
    assert_eq!(call(&mut con, &[b"FCALL", b"s", b"1", b"k"]), Value::Nil);
    assert_eq!(waiters(&mut con, "k"), 0);
    // A script on a shared lock is granted a shared hold.
    shared(&mut con, "s2", 60_000, "a").unwrap();
    let script =
        b"return redis.call('LOCK.ACQUIRE', KEYS[1], 1000, 'TOKEN', 'lua', 'SHARED', 'BLOCK', 0)";
    let (token, _) = grant(&call(&mut con, &[b"EVAL", script, b"1", b"s2"])).unwrap();
    assert_eq!(token, b"lua");
    assert_eq!(holders(&mut con, "s2"), 2);

    // On a shared lock: a shared request is granted, an exclusive one is not.
    let fa = shared(&mut con, "s", 60_000, "a").unwrap();
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    send_acq(&mut raw, "s", 60_000, "m1", &["SHARED", "BLOCK", "0"]);
    raw.read_reply();
    send_acq(&mut raw, "s", 60_000, "m2", &["BLOCK", "0"]);
    raw.read_reply();
    raw.send(&[b"EXEC"]);
    let Value::Array(results) = raw.value() else {
        panic!("EXEC")
    };
    let (token, fm) = grant(&results[0]).expect("the shared request in MULTI is granted");
    assert_eq!(token, b"m1");
    assert!(fm > fa);
    assert_eq!(results[1], Value::Nil);
    // With a writer waiting, a shared request in MULTI does not overtake it either.
    let _writer = queue(&srv, &mut con, "s", 60_000, "w", &["BLOCK", "0"]);
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    send_acq(&mut raw, "s", 60_000, "m3", &["SHARED", "BLOCK", "0"]);
    raw.read_reply();
    assert_eq!(raw.cmd(&[b"EXEC"]), b"*1\r\n$-1\r\n");
    let i = lock_info(&mut con, "s").unwrap();
    assert_eq!((i.holders, i.waiters), (2, 1));
    assert_eq!(
        blocked_clients(&mut con),
        1,
        "only the writer outside MULTI waits"
    );
}

#[test]
fn del_and_flushall_hand_a_shared_lock_to_its_waiters() {
    let (srv, mut con) = start();
    let sh = &["BLOCK", "0", "SHARED"][..];
    shared(&mut con, "k", 60_000, "s1").unwrap();
    let f2 = shared(&mut con, "k", 60_000, "s2").unwrap();
    let mut x = queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]);
    let mut r1 = queue(&srv, &mut con, "k", 60_000, "r1", sh);
    let mut r2 = queue(&srv, &mut con, "k", 60_000, "r2", sh);
    assert_eq!(int(call(&mut con, &[b"DEL", b"k"])), 1);
    let fx = granted_to(&mut x, "x");
    assert!(fx > f2);
    assert!(nothing_yet(&mut r1) && nothing_yet(&mut r2));
    assert_state(&mut con, "k", (fx, 1, None, "exclusive", 2));
    assert_eq!(
        renew(&mut con, "k", "s1", 1000),
        0,
        "DEL ended the shared holds"
    );
    call(&mut con, &[b"FLUSHALL"]);
    let f1 = granted_to(&mut r1, "r1");
    let f2 = granted_to(&mut r2, "r2");
    assert!(fx < f1 && f1 < f2);
    assert_state(&mut con, "k", (f2, 2, None, "shared", 0));
    assert_eq!(
        renew(&mut con, "k", "x", 1000),
        0,
        "FLUSHALL ended the exclusive hold"
    );

    // A full semaphore: DEL frees every permit, the waiters take as many as there are.
    let lim = &["BLOCK", "0", "LIMIT", "2"][..];
    limited(&mut con, "sem", 60_000, "p1", 2).unwrap();
    limited(&mut con, "sem", 60_000, "p2", 2).unwrap();
    let mut w1 = queue(&srv, &mut con, "sem", 60_000, "w1", lim);
    let mut w2 = queue(&srv, &mut con, "sem", 60_000, "w2", lim);
    let mut w3 = queue(&srv, &mut con, "sem", 60_000, "w3", lim);
    assert_eq!(int(call(&mut con, &[b"UNLINK", b"sem"])), 1);
    granted_to(&mut w1, "w1");
    let fw2 = granted_to(&mut w2, "w2");
    assert!(nothing_yet(&mut w3));
    assert_state(&mut con, "sem", (fw2, 2, Some(2), "shared", 1));

    // SWAPDB moves the locks to db 9 with their holders: their waiters take the keys in db 0.
    shared(&mut con, "sw", 60_000, "s1").unwrap();
    let mut x = queue(&srv, &mut con, "sw", 60_000, "x", &["BLOCK", "0"]);
    call(&mut con, &[b"SWAPDB", b"0", b"9"]);
    let fx = granted_to(&mut x, "x");
    let fw3 = granted_to(&mut w3, "w3");
    assert_state(&mut con, "sw", (fx, 1, None, "exclusive", 0));
    assert_state(&mut con, "sem", (fw3, 1, Some(2), "shared", 0));
    assert_eq!(lock_info(&mut con, "k"), None);
    call(&mut con, &[b"SELECT", b"9"]);
    assert_eq!(holders(&mut con, "k"), 2);
    assert_eq!(holders(&mut con, "sem"), 2);
    assert_eq!(holders(&mut con, "sw"), 1);
    assert_eq!(release(&mut con, "sw", "s1"), 1);
    call(&mut con, &[b"SELECT", b"0"]);
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn max_waiters_counts_waiters_of_every_mode() {
    let srv = Server::start_with(&["max-waiters", "2"], &[]);
    let mut con = srv.conn();
    shared(&mut con, "k", 60_000, "r").unwrap();
    let _x = queue(&srv, &mut con, "k", 10_000, "x", &["BLOCK", "0"]);
    let _r2 = queue(&srv, &mut con, "k", 10_000, "r2", &["BLOCK", "0", "SHARED"]);
    for opts in [&["BLOCK", "0", "SHARED"][..], &["BLOCK", "0"]] {
        let err = acq_err(&mut con, "k", 1000, "third", opts);
        assert!(
            err.starts_with("ERR") && err.contains("lock.max-waiters"),
            "{opts:?}: {err}"
        );
    }
    assert_eq!(waiters(&mut con, "k"), 2);
    // Without BLOCK: a plain null.
    assert_eq!(shared(&mut con, "k", 1000, "third"), None);
    assert_eq!(holders(&mut con, "k"), 1);
}

#[test]
fn an_overwrite_by_another_type_answers_wrongtype_to_every_waiter() {
    let (srv, mut con) = start_with_writer();
    let sh = &["BLOCK", "0", "SHARED"][..];
    let mut all = vec![
        queue(&srv, &mut con, "k", 60_000, "r1", sh),
        queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]),
        queue(&srv, &mut con, "k", 60_000, "r2", sh),
    ];
    call(&mut con, &[b"SET", b"k", b"plain"]);
    for raw in &mut all {
        let reply = String::from_utf8(raw.read_reply()).unwrap();
        assert!(reply.starts_with("-WRONGTYPE"), "{reply}");
    }
    let plain = Value::BulkString(b"plain".to_vec());
    assert_eq!(call(&mut con, &[b"GET", b"k"]), plain);
    assert_eq!(blocked_clients(&mut con), 0);
    // Every option answers WRONGTYPE on it, and leaves it alone.
    for opts in [&["SHARED"][..], &["LIMIT", "2"]] {
        let err = acq_err(&mut con, "k", 1000, "t", opts);
        assert!(err.starts_with("WRONGTYPE"), "{err}");
    }
    assert_eq!(call(&mut con, &[b"GET", b"k"]), plain);
}

#[test]
fn an_expiring_writer_hands_over_to_every_reader_at_the_head_of_the_queue() {
    let (srv, mut con) = start();
    // Only the module's own timers end holds now.
    call(&mut con, &[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"0"]);
    let start = Instant::now();
    acquire(&mut con, "k", 600, "writer").unwrap();
    let sh = &["SHARED", "BLOCK", "0"][..];
    let mut r1 = queue(&srv, &mut con, "k", 400, "r1", sh);
    let mut r2 = queue(&srv, &mut con, "k", 600, "r2", sh);
    let mut x = queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]);
    assert_eq!(waiters(&mut con, "k"), 3, "the writer outlived the set-up");
    let f1 = granted_to(&mut r1, "r1");
    let f2 = granted_to(&mut r2, "r2");
    assert!(
        start.elapsed() >= Duration::from_millis(595),
        "before the writer's deadline"
    );
    assert!(f1 < f2);
    // Both hold; x waits for the later of their own deadlines, counted from their grant.
    let fx = granted_to(&mut x, "x");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1_180), "{waited:?}");
    assert!(fx > f2);
    assert_state(&mut con, "k", (fx, 1, None, "exclusive", 0));
    assert_eq!(stat(&mut con, "expired"), 3);
}

#[test]
fn many_readers_at_the_head_are_granted_at_once_up_to_the_limit() {
    let (srv, mut con) = start();
    // 50 readers behind a writer: all granted by its release.
    acquire(&mut con, "k", 60_000, "writer").unwrap();
    let mut readers: Vec<Raw> = (0..50)
        .map(|i| blocked_client_opts(&srv, "k", &format!("r{i}"), &["SHARED", "BLOCK", "0"]))
        .collect();
    wait_for("50 readers to queue", || waiters(&mut con, "k") == 50);
    assert_eq!(release(&mut con, "k", "writer"), 1);
    let mut fences: Vec<i64> = readers
        .iter_mut()
        .enumerate()
        .map(|(i, raw)| granted_to(raw, &format!("r{i}")))
        .collect();
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!((i.holders, i.waiters), (50, 0));
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 50, "each its own fence");

    // 30 permit requests behind a writer on LIMIT 10: the first 10 in queue order.
    acquire(&mut con, "sem", 60_000, "writer").unwrap();
    let lim = &["LIMIT", "10", "BLOCK", "0"][..];
    let mut queued: Vec<Raw> = (0..30)
        .map(|i| queue(&srv, &mut con, "sem", 60_000, &format!("p{i}"), lim))
        .collect();
    assert_eq!(release(&mut con, "sem", "writer"), 1);
    let mut last = 0;
    for (i, raw) in queued.iter_mut().take(10).enumerate() {
        let f = granted_to(raw, &format!("p{i}"));
        assert!(f > last);
        last = f;
    }
    assert!(queued[10..].iter_mut().all(nothing_yet));
    assert_state(&mut con, "sem", (last, 10, Some(10), "shared", 20));
    for i in 0..5 {
        assert_eq!(release(&mut con, "sem", &format!("p{i}")), 1);
    }
    for (i, raw) in queued.iter_mut().enumerate().skip(10).take(5) {
        granted_to(raw, &format!("p{i}"));
    }
    assert!(queued[15..].iter_mut().all(nothing_yet));
    assert_eq!(holders(&mut con, "sem"), 10);

    // A thousand holders on one key, pipelined.
    let mut raw = srv.raw();
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(acquire_resp("big", 60_000, &format!("h{i}"), &["SHARED"]));
    }
    raw.write_all(&batch);
    let mut last = 0;
    for i in 0..1000 {
        let (token, fence) = grant(&raw.value()).unwrap();
        assert_eq!(token, format!("h{i}").into_bytes());
        assert!(fence > last);
        last = fence;
    }
    assert_state(&mut con, "big", (last, 1000, None, "shared", 0));
    assert_eq!(acquire(&mut con, "big", 1000, "writer"), None);
    // MEMORY USAGE counts the holders.
    shared(&mut con, "small", 60_000, "h0").unwrap();
    let usage = |con: &mut Con, key: &[u8]| int(call(con, &[b"MEMORY", b"USAGE", key]));
    let (big, small) = (usage(&mut con, b"big"), usage(&mut con, b"small"));
    assert!(
        big > small + 1000 * 24,
        "MEMORY USAGE: {big} for 1000 holders, {small} for one"
    );
    let mut batch = Vec::new();
    for i in 0..1000 {
        let token = format!("h{i}");
        batch.extend(resp(&[b"LOCK.RELEASE", b"big", token.as_bytes()]));
    }
    raw.write_all(&batch);
    for _ in 0..1000 {
        assert_eq!(raw.read_reply(), b":1\r\n");
    }
    assert!(!exists(&mut con, "big"));
    srv.assert_alive();
}

/// On a semaphore with a free permit, a waiting writer at the head still holds back the
/// permit requests behind it; once it has held and left, they get what permits there are.
#[test]
fn on_a_semaphore_permit_requests_do_not_overtake_a_waiting_writer() {
    let (srv, mut con) = start();
    let k = "sem";
    let lim = &["LIMIT", "2", "BLOCK", "0"][..];
    acquire(&mut con, k, 60_000, "first").unwrap();
    let mut l0 = queue(&srv, &mut con, k, 60_000, "l0", lim);
    let mut l1 = queue(&srv, &mut con, k, 60_000, "l1", lim);
    let mut x = queue(&srv, &mut con, k, 60_000, "x", &["BLOCK", "0"]);
    let mut l3 = queue(&srv, &mut con, k, 60_000, "l3", lim);
    let mut l4 = queue(&srv, &mut con, k, 60_000, "l4", lim);
    let mut l5 = queue(&srv, &mut con, k, 60_000, "l5", lim);
    assert_eq!(release(&mut con, k, "first"), 1);
    granted_to(&mut l0, "l0");
    let f1 = granted_to(&mut l1, "l1");
    assert!(nothing_yet(&mut x) && nothing_yet(&mut l3));
    // A permit comes back; the writer cannot have it, and nobody behind it may.
    assert_eq!(release(&mut con, k, "l0"), 1);
    assert!(nothing_yet(&mut l3), "l3 overtook the writer");
    assert_eq!(limited(&mut con, k, 60_000, "late", 2), None);
    assert_state(&mut con, k, (f1, 1, Some(2), "shared", 4));
    assert_eq!(release(&mut con, k, "l1"), 1);
    let fx = granted_to(&mut x, "x");
    assert_state(&mut con, k, (fx, 1, None, "exclusive", 3));
    assert!(nothing_yet(&mut l3));
    assert_eq!(release(&mut con, k, "x"), 1);
    let f3 = granted_to(&mut l3, "l3");
    let f4 = granted_to(&mut l4, "l4");
    assert!(fx < f3 && f3 < f4);
    assert!(nothing_yet(&mut l5));
    assert_state(&mut con, k, (f4, 2, Some(2), "shared", 1));
}

#[test]
fn a_caller_in_the_same_packet_as_the_release_does_not_overtake_the_waiters() {
    let (srv, mut con) = start();
    // A reader leaves while a writer waits; a reader asks in the same packet.
    shared(&mut con, "k", 60_000, "s1").unwrap();
    let mut x = queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]);
    let mut raw = srv.raw();
    // In one packet: `holder` releases, then `requests` (token, options) ask; the release
    // answers 1, the first request null.
    let release_then = |raw: &mut Raw, holder: &str, requests: &[(&str, &[&str])], why: &str| {
        let mut batch = resp(&[b"LOCK.RELEASE", b"k", holder.as_bytes()]);
        for (token, opts) in requests {
            batch.extend(acquire_resp("k", 1000, token, opts));
        }
        raw.write_all(&batch);
        assert_eq!(raw.read_reply(), b":1\r\n");
        assert_eq!(raw.read_reply(), b"$-1\r\n", "{why}");
    };
    release_then(
        &mut raw,
        "s1",
        &[("late", &["SHARED"])],
        "the reader did not overtake the writer",
    );
    granted_to(&mut x, "x");
    // The writer leaves while readers wait; a writer asks in the same packet.
    let sh = &["SHARED", "BLOCK", "0"][..];
    let mut r1 = queue(&srv, &mut con, "k", 60_000, "r1", sh);
    release_then(
        &mut raw,
        "x",
        &[("late", &[]), ("late2", &["SHARED"])],
        "the writer did not overtake the reader",
    );
    // The reader then holds and nobody waits: a new reader may join.
    let reply = raw.value();
    granted_to(&mut r1, "r1");
    let i = lock_info(&mut con, "k").unwrap();
    match grant(&reply) {
        Some((token, _)) => {
            assert_eq!(token, b"late2");
            assert_eq!((i.holders, i.waiters), (2, 0));
        }
        None => assert_eq!((i.holders, i.waiters), (1, 0)),
    }
}

/// A holder is its token: two waiting requests with one token are granted one hold (the second
/// gets the first's grant), which takes one permit.
#[test]
fn two_waiters_with_one_token_get_one_hold() {
    let (srv, mut con) = start();
    for (key, opts) in [
        ("rw", &["SHARED", "BLOCK", "0"][..]),
        ("sem", &["LIMIT", "2", "BLOCK", "0"]),
    ] {
        acquire(&mut con, key, 60_000, "writer").unwrap();
        let mut d1 = queue(&srv, &mut con, key, 60_000, "dup", opts);
        let mut d2 = queue(&srv, &mut con, key, 30_000, "dup", opts);
        let mut other = queue(&srv, &mut con, key, 60_000, "other", opts);
        assert_eq!(release(&mut con, key, "writer"), 1);
        let f1 = granted_to(&mut d1, "dup");
        let f2 = granted_to(&mut d2, "dup");
        assert_eq!(f1, f2, "{key}: one holder, one fence");
        let fo = granted_to(&mut other, "other");
        assert!(fo > f1);
        let i = lock_info(&mut con, key).unwrap();
        assert_eq!((i.holders, i.waiters, i.fence), (2, 0, fo), "{key}: {i:?}");
        // One RELEASE ends dup's hold.
        assert_eq!(release(&mut con, key, "dup"), 1);
        assert_eq!(release(&mut con, key, "dup"), 0);
        assert_eq!(holders(&mut con, key), 1);
    }
    assert_eq!(blocked_clients(&mut con), 0);
}

/// A grant and a BLOCK timeout falling due together, for several readers at once: each gets
/// a reply (the grant or null), and a reader that got a grant holds the lock.
#[test]
fn readers_racing_their_timeouts_always_get_a_reply() {
    let (srv, mut con) = start();
    for round in 0..8 {
        let key = format!("race{round}");
        acquire(&mut con, &key, 150, "writer").unwrap();
        let mut readers: Vec<(String, Raw)> = (0..3)
            .map(|j| {
                let token = format!("r{j}");
                let timeout = (149 + j).to_string();
                let raw = blocked_client_opts(&srv, &key, &token, &["SHARED", "BLOCK", &timeout]);
                (token, raw)
            })
            .collect();
        let mut granted = 0;
        for (token, raw) in &mut readers {
            let reply = raw
                .reply_within(Duration::from_secs(3))
                .unwrap_or_else(|| panic!("{key} {token}: no reply at all"));
            let got = grant(&redis::parse_redis_value(&reply).unwrap()).is_some();
            assert_eq!(
                renew(&mut con, &key, token, 5_000),
                i64::from(got),
                "{key} {token}"
            );
            granted += i64::from(got);
        }
        assert_eq!(holders(&mut con, &key), granted, "{key}");
        assert_eq!(waiters(&mut con, &key), 0, "{key}");
    }
    assert_eq!(blocked_clients(&mut con), 0);
}

/// WATCH sees a shared grant, release or renewal, and nothing else: refused requests, errors
/// and LOCK.INFO leave a watched lock alone.
#[test]
fn watch_sees_changes_of_holders_only() {
    let (srv, mut con) = start();
    let mut other = srv.conn();
    shared(&mut con, "k", 60_000, "a").unwrap();
    let mut raw = srv.raw();
    let exec_after = |raw: &mut Raw, other: &mut Con, change: &dyn Fn(&mut Con)| {
        assert_eq!(raw.cmd(&[b"WATCH", b"k"]), b"+OK\r\n");
        change(other);
        assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
        assert_eq!(raw.cmd(&[b"PING"]), b"+QUEUED\r\n");
        raw.cmd(&[b"EXEC"])
    };
    let untouched: [&dyn Fn(&mut Con); 4] = [
        &|c| assert_eq!(acquire(c, "k", 1000, "writer"), None),
        &|c| assert!(try_acq(c, "k", 1000, "b", &["LIMIT", "2"]).is_err()),
        &|c| assert!(lock_info(c, "k").is_some()),
        &|c| assert_eq!(release(c, "k", "nobody"), 0),
    ];
    for change in untouched {
        assert_eq!(exec_after(&mut raw, &mut other, change), b"*1\r\n+PONG\r\n");
    }
    let touched: [&dyn Fn(&mut Con); 3] = [
        &|c| assert!(shared(c, "k", 60_000, "b").is_some()),
        &|c| assert_eq!(renew(c, "k", "a", 30_000), 1),
        &|c| assert_eq!(release(c, "k", "b"), 1),
    ];
    for change in touched {
        let exec = exec_after(&mut raw, &mut other, change);
        assert!(
            exec == b"*-1\r\n" || exec == b"_\r\n",
            "{}",
            String::from_utf8_lossy(&exec)
        );
    }
}

/// A lock's name is its key in its database: the same name in two databases is two locks,
/// with their own holders, limits and queues.
#[test]
fn the_same_name_in_two_databases_is_two_locks() {
    let srv = Server::start();
    let mut db0 = srv.conn();
    let mut db1 = srv.conn();
    call(&mut db1, &[b"SELECT", b"1"]);
    limited(&mut db0, "k", 60_000, "p", 2).unwrap();
    // No limit clash, no mode clash across databases.
    shared(&mut db1, "k", 60_000, "r").unwrap();
    let mut w1 = srv.raw();
    w1.cmd(&[b"SELECT", b"1"]);
    send_acq(&mut w1, "k", 60_000, "w1", &["BLOCK", "0"]);
    wait_for("w1 to queue in db 1", || waiters(&mut db1, "k") == 1);
    assert_eq!(waiters(&mut db0, "k"), 0);
    // Releasing db 0's holder serves nobody in db 1.
    assert_eq!(release(&mut db0, "k", "p"), 1);
    assert!(nothing_yet(&mut w1));
    assert_eq!(release(&mut db1, "k", "r"), 1);
    granted_to(&mut w1, "w1");
    let i = lock_info(&mut db1, "k").unwrap();
    assert_eq!((i.holders, i.mode.as_str()), (1, "exclusive"));
    assert_eq!(lock_info(&mut db0, "k"), None);
}

/// Readers whose deadlines pass during CLIENT PAUSE WRITE hand the lock over once the pause
/// ends, not during it.
#[test]
fn a_pause_holds_back_the_hand_off_of_expired_readers() {
    let (srv, mut con) = start();
    shared(&mut con, "k", 400, "r1").unwrap();
    shared(&mut con, "k", 500, "r2").unwrap();
    let mut x = queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]);
    call(&mut con, &[b"CLIENT", b"PAUSE", b"60000", b"WRITE"]);
    assert_eq!(holders(&mut con, "k"), 2, "the readers outlived the set-up");
    assert!(
        x.reply_within(Duration::from_millis(900)).is_none(),
        "handed off during the pause"
    );
    call(&mut con, &[b"CLIENT", b"UNPAUSE"]);
    let reply = x
        .reply_within(Duration::from_secs(5))
        .expect("no hand-off after the pause");
    let (token, _) = grant(&redis::parse_redis_value(&reply).unwrap()).unwrap();
    assert_eq!(token, b"x");
    let i = lock_info(&mut con, "k").unwrap();
    assert_eq!((i.holders, i.mode.as_str(), i.waiters), (1, "exclusive", 0));
    srv.assert_alive();
}

// ---------------------------------------------------------------------------------------
// What operators see
// ---------------------------------------------------------------------------------------

#[test]
fn every_holder_event_is_a_keyspace_notification() {
    let (srv, mut con) = start();
    let mut sub = subscribe_lock_events(&srv);
    shared(&mut con, "k", 60_000, "a").unwrap();
    shared(&mut con, "k", 60_000, "b").unwrap();
    assert_events(&mut sub, "k", &["lock.acquired", "lock.acquired"]);
    shared(&mut con, "k", 60_000, "a").unwrap();
    assert_eq!(renew(&mut con, "k", "b", 60_000), 1);
    assert_events(&mut sub, "k", &["lock.renewed", "lock.renewed"]);
    let mut x = queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]);
    assert_eq!(release(&mut con, "k", "a"), 1);
    assert_events(&mut sub, "k", &["lock.released"]);
    assert_eq!(release(&mut con, "k", "b"), 1);
    granted_to(&mut x, "x");
    assert_events(&mut sub, "k", &["lock.released", "lock.handed-off"]);
    release_to_readers(&srv, &mut con, ("k", "x"), &[("r1", 300), ("r2", 60_000)]);
    assert_events(
        &mut sub,
        "k",
        &["lock.released", "lock.handed-off", "lock.handed-off"],
    );
    // r1's deadline passes: only r1 expires.
    assert_events(&mut sub, "k", &["lock.expired"]);
    assert_eq!(holders(&mut con, "k"), 1);
    assert_eq!(release(&mut con, "k", "r2"), 1);
    assert_events(&mut sub, "k", &["lock.released"]);
    // Permits too; a refused request publishes nothing.
    limited(&mut con, "sem", 400, "p1", 1).unwrap();
    assert_eq!(limited(&mut con, "sem", 400, "p2", 1), None);
    assert_events(&mut sub, "sem", &["lock.acquired", "lock.expired"]);
    // Two holders with the same deadline (one packet): one expiry event each, as the key
    // itself expires.
    let mut raw = srv.raw();
    let mut batch = acquire_resp("same", 200, "e1", &["SHARED"]);
    batch.extend(acquire_resp("same", 200, "e2", &["SHARED"]));
    raw.write_all(&batch);
    assert!(grant(&raw.value()).is_some() && grant(&raw.value()).is_some());
    assert_events(
        &mut sub,
        "same",
        &[
            "lock.acquired",
            "lock.acquired",
            "lock.expired",
            "lock.expired",
        ],
    );
    assert!(
        sub.reply_within(Duration::from_millis(300)).is_none(),
        "no more events"
    );
    assert!(!exists(&mut con, "same"));
}

#[test]
fn info_lock_counts_each_holder_event_and_one_key_per_lock() {
    let (srv, mut con) = start();
    for t in ["a", "b", "c"] {
        shared(&mut con, "k", 60_000, t).unwrap();
    }
    assert_eq!(stat(&mut con, "acquired"), 3);
    assert_eq!(stat(&mut con, "keys"), 1);
    shared(&mut con, "k", 60_000, "a").unwrap();
    assert_eq!(stat(&mut con, "acquired"), 3, "a retry is no new grant");
    limited(&mut con, "m", 60_000, "p1", 2).unwrap();
    limited(&mut con, "m", 60_000, "p2", 2).unwrap();
    assert_eq!(limited(&mut con, "m", 60_000, "p3", 2), None);
    assert_eq!(stat(&mut con, "acquired"), 5);
    assert_eq!(stat(&mut con, "keys"), 2);
    let renewed = stat(&mut con, "renewed");
    assert_eq!(renew(&mut con, "k", "a", 60_000), 1);
    assert_eq!(renew(&mut con, "k", "b", 60_000), 1);
    assert_eq!(stat(&mut con, "renewed"), renewed + 2);

    let mut x = queue(&srv, &mut con, "k", 60_000, "x", &["BLOCK", "0"]);
    for t in ["a", "b", "c"] {
        assert_eq!(release(&mut con, "k", t), 1);
    }
    granted_to(&mut x, "x");
    assert_eq!(stat(&mut con, "released"), 3);
    assert_eq!(stat(&mut con, "handed_off"), 1);
    release_to_readers(
        &srv,
        &mut con,
        ("k", "x"),
        &[("r1", 60_000), ("r2", 60_000)],
    );
    assert_eq!(stat(&mut con, "released"), 4);
    assert_eq!(
        stat(&mut con, "handed_off"),
        3,
        "each waiter granted counts"
    );
    assert_eq!(
        stat(&mut con, "acquired"),
        5,
        "hand-offs are not direct grants"
    );
    assert_eq!(stat(&mut con, "keys"), 2);

    // Each holder's expiry counts.
    shared(&mut con, "e", 100, "e1").unwrap();
    shared(&mut con, "e", 250, "e2").unwrap();
    assert_eq!(stat(&mut con, "keys"), 3);
    wait_for("both expiries", || stat(&mut con, "expired") == 2);
    wait_for("the expired lock's key to go", || {
        stat(&mut con, "keys") == 2
    });
    for t in ["r1", "r2"] {
        assert_eq!(release(&mut con, "k", t), 1);
    }
    assert_eq!(release(&mut con, "m", "p1"), 1);
    assert_eq!(stat(&mut con, "keys"), 1);
    assert_eq!(release(&mut con, "m", "p2"), 1);
    assert_eq!(stat(&mut con, "released"), 8);
    assert_eq!(stat(&mut con, "keys"), 0);
    assert_eq!(stat(&mut con, "expired"), 2);
    assert_eq!(stat(&mut con, "acquired"), 7);
}

/// A holder whose deadline passes is removed on time (a `lock.expired` event, counted in
/// INFO), whatever the waiters did meanwhile.
#[test]
fn a_holder_expires_on_time_after_the_waiters_have_left() {
    let (srv, mut con) = start();
    let mut sub = subscribe_lock_events(&srv);
    let mut late = Vec::new();
    for how in ["timeout", "disconnect", "unblock"] {
        for granted_by_hand_off in [false, true] {
            let key = format!("{how}-{granted_by_hand_off}");
            let short_ttl = 600;
            let start;
            let (writer, id);
            if granted_by_hand_off {
                // r-short and r-long were granted by a writer's release; another writer waits.
                acquire(&mut con, &key, 60_000, "first").unwrap();
                let sh = &["SHARED", "BLOCK", "0"][..];
                let mut a = queue(&srv, &mut con, &key, short_ttl, "r-short", sh);
                let mut b = queue(&srv, &mut con, &key, 60_000, "r-long", sh);
                let block = if how == "timeout" { "300" } else { "0" };
                (writer, id) = queue_with_id(&srv, &mut con, &key, 60_000, "w", &["BLOCK", block]);
                start = Instant::now();
                assert_eq!(release(&mut con, &key, "first"), 1);
                granted_to(&mut a, "r-short");
                granted_to(&mut b, "r-long");
                let expected = [
                    "lock.acquired",
                    "lock.released",
                    "lock.handed-off",
                    "lock.handed-off",
                ];
                assert_events(&mut sub, &key, &expected);
            } else {
                // Two shared holders, then a writer waits.
                shared(&mut con, &key, 60_000, "r-long").unwrap();
                start = Instant::now();
                shared(&mut con, &key, short_ttl, "r-short").unwrap();
                let block = if how == "timeout" { "300" } else { "0" };
                (writer, id) = queue_with_id(&srv, &mut con, &key, 60_000, "w", &["BLOCK", block]);
                assert_events(&mut sub, &key, &["lock.acquired", "lock.acquired"]);
            }
            leave_queue(&mut con, writer, &id, how);
            wait_for("the writer to leave", || waiters(&mut con, &key) == 0);
            // r-short's deadline passes: its expiry comes within a few ms (3 s allowed).
            match sub.reply_within(Duration::from_millis(short_ttl + 3_000)) {
                Some(reply) => {
                    let text = String::from_utf8_lossy(&reply).into_owned();
                    assert!(
                        text.contains("lock.expired") && text.contains(&key),
                        "{text}"
                    );
                    assert!(start.elapsed() >= Duration::from_millis(short_ttl - 2));
                }
                None => late.push(format!(
                    "{key}: no lock.expired {:?} after the grant; LOCK.INFO {:?}",
                    start.elapsed(),
                    lock_info(&mut con, &key)
                )),
            }
            assert_eq!(holders(&mut con, &key), 1);
            assert_eq!(release(&mut con, &key, "r-long"), 1);
            // Drain this round's events (the release; a late expiry).
            while sub.reply_within(Duration::from_millis(100)).is_some() {}
        }
    }
    assert!(
        late.is_empty(),
        "holders not expired on time:\n{}",
        late.join("\n")
    );
}

/// One holder of the model in `holders_follow_a_model`: its grant's fence, and its deadline
/// as far as the client can tell (between `sent + ttl` and `sent + ttl + slack`).
struct Modelled {
    token: String,
    fence: i64,
    earliest: Instant,
    slack: Duration,
}

/// Whole milliseconds from `from` to `to` (negative when `to` is earlier).
fn ms_between(from: Instant, to: Instant) -> i64 {
    if to >= from {
        to.duration_since(from).as_millis() as i64
    } else {
        -(from.duration_since(to).as_millis() as i64)
    }
}

/// LOCK.INFO and PTTL agree with the model: holders, highest fence, latest deadline.
fn check_model(con: &mut Con, key: &str, limit: Option<u32>, model: &[Modelled], what: &str) {
    let t0 = Instant::now();
    let info = lock_info(con, key);
    let t1 = Instant::now();
    if model.is_empty() {
        assert_eq!(info, None, "{what}");
        assert!(!exists(con, key), "{what}");
        return;
    }
    let i =
        info.unwrap_or_else(|| panic!("{what}: free, but the model has {} holders", model.len()));
    let fence = model.iter().map(|h| h.fence).max().unwrap();
    assert_eq!(i.holders, model.len() as i64, "{what}: {i:?}");
    assert_eq!(
        i.fence, fence,
        "{what}: the highest fence among the holders"
    );
    assert_eq!(i.limit, limit.map(i64::from), "{what}");
    assert_eq!((i.mode.as_str(), i.waiters), ("shared", 0), "{what}");
    let latest = model.iter().map(|h| h.earliest).max().unwrap();
    let latest_late = model.iter().map(|h| h.earliest + h.slack).max().unwrap();
    let (low, high) = (ms_between(t1, latest) - 2, ms_between(t0, latest_late) + 2);
    assert!(
        i.ttl >= low && i.ttl <= high,
        "{what}: ttl {} not in [{low}, {high}]",
        i.ttl
    );
    let t0 = Instant::now();
    let p = pttl(con, key);
    let t1 = Instant::now();
    let (low, high) = (ms_between(t1, latest) - 2, ms_between(t0, latest_late) + 2);
    assert!(
        p >= low && p <= high,
        "{what}: PTTL {p} not in [{low}, {high}]"
    );
}

/// Random grants, retries, renewals and releases on one lock, checked against a model after
/// each step; then the holders left expire one by one, each at its own deadline.
fn holders_follow_a_model(srv: &Server, key: &str, limit: Option<u32>, seed: u64) {
    let mut con = srv.conn();
    let limit_arg = limit.map(|n| n.to_string());
    let opts: Vec<&str> = match &limit_arg {
        Some(n) => vec!["LIMIT", n],
        None => vec!["SHARED"],
    };
    let mut rng = Rng::new(seed);
    let mut model: Vec<Modelled> = Vec::new();
    let mut last_fence = 0;
    for step in 0..1500 {
        let ttl = 100_000 + 997 * rng.below(200);
        let pick = if model.is_empty() {
            0
        } else {
            rng.below(model.len() as u64) as usize
        };
        let sent = Instant::now();
        let op = if model.is_empty() { 0 } else { rng.below(10) };
        let what = format!("step {step} op {op}");
        match op {
            0..=3 => {
                let token = format!("t{step}");
                let got = acq(&mut con, key, ttl, &token, &opts);
                if limit.is_some_and(|n| model.len() >= n as usize) {
                    assert_eq!(got, None, "{what}: over the limit");
                } else {
                    let fence = got.unwrap_or_else(|| panic!("{what}: refused"));
                    assert!(fence > last_fence, "{what}");
                    last_fence = fence;
                    model.push(Modelled {
                        token,
                        fence,
                        earliest: sent + Duration::from_millis(ttl),
                        slack: sent.elapsed(),
                    });
                }
            }
            4 | 5 => {
                let h = &mut model[pick];
                let got = if op == 4 {
                    acq(&mut con, key, ttl, &h.token, &opts)
                } else {
                    (renew(&mut con, key, &h.token, ttl) == 1).then_some(h.fence)
                };
                assert_eq!(
                    got,
                    Some(h.fence),
                    "{what}: a retry or renewal of {}",
                    h.token
                );
                h.earliest = sent + Duration::from_millis(ttl);
                h.slack = sent.elapsed();
            }
            6..=8 => {
                let h = model.swap_remove(pick);
                assert_eq!(release(&mut con, key, &h.token), 1, "{what}: {}", h.token);
            }
            _ => {
                assert_eq!(renew(&mut con, key, "nobody", ttl), 0);
                assert_eq!(release(&mut con, key, "nobody"), 0);
                let gone = format!("t{}", step.max(1) - 1);
                if !model.iter().any(|h| h.token == gone) {
                    assert_eq!(renew(&mut con, key, &gone, ttl), 0, "{what}: {gone}");
                }
            }
        }
        check_model(&mut con, key, limit, &model, &what);
    }
    // The holders left (20 at most) get deadlines 30 ms apart, in random order; the others go.
    while model.len() > 20 {
        let h = model.swap_remove(rng.below(model.len() as u64) as usize);
        assert_eq!(release(&mut con, key, &h.token), 1);
    }
    if model.is_empty() {
        return;
    }
    let expired_before = stat(&mut con, "expired");
    let n = model.len();
    for (j, h) in model.iter_mut().enumerate() {
        let ttl = 300 + 30 * ((j * 7) % n) as u64;
        let sent = Instant::now();
        assert_eq!(renew(&mut con, key, &h.token, ttl), 1);
        h.earliest = sent + Duration::from_millis(ttl);
        h.slack = sent.elapsed();
    }
    // Poll while they expire: holders, fence and ttl stay within what the deadlines allow.
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        let info = lock_info(&mut con, key);
        let t1 = Instant::now();
        // Surely live: deadline after t1. Possibly live: deadline after t0 (2 ms either way
        // for the server's millisecond clock).
        let ms2 = Duration::from_millis(2);
        let sure: Vec<&Modelled> = model.iter().filter(|h| h.earliest > t1 + ms2).collect();
        let maybe: Vec<&Modelled> = model
            .iter()
            .filter(|h| h.earliest + h.slack + ms2 > t0)
            .collect();
        let Some(i) = info else {
            assert!(
                sure.is_empty(),
                "free while {} holders were surely live",
                sure.len()
            );
            break;
        };
        if i.holders < sure.len() as i64 || i.holders > maybe.len() as i64 {
            let (n_sure, n_maybe) = (sure.len(), maybe.len());
            // Which holders does the server still know? (RENEW answers 1 for a live one.)
            let report: Vec<String> = model
                .iter()
                .map(|h| {
                    let live = renew(&mut con, key, &h.token, 60_000);
                    format!(
                        "{} fence {} deadline in {} ms (+{:?}): renew {live}",
                        h.token,
                        h.fence,
                        ms_between(t1, h.earliest),
                        h.slack
                    )
                })
                .collect();
            panic!(
                "{key}: {} holders: {n_sure} surely live, {n_maybe} possibly; {i:?}\n{}",
                i.holders,
                report.join("\n")
            );
        }
        assert!(
            maybe.iter().any(|h| h.fence == i.fence),
            "fence {} is no live holder's",
            i.fence
        );
        if let Some(top) = sure.iter().map(|h| h.fence).max() {
            assert!(
                i.fence >= top,
                "fence {} below a live holder's {top}",
                i.fence
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the holders never all expired"
        );
        sleep(Duration::from_millis(5));
    }
    wait_for("the key to go", || !exists(&mut con, key));
    wait_for("every expiry to count", || {
        stat(&mut con, "expired") == expired_before + n as u64
    });
}

#[test]
fn holders_follow_a_model_through_grants_retries_renewals_releases_and_expiries() {
    let srv = Server::start();
    holders_follow_a_model(&srv, "shared", None, 7);
    holders_follow_a_model(&srv, "sem", Some(40), 11);
}

/// Poll LOCK.INFO (every 2 ms, up to 3 s) until it shows `holders` (0: free), `waiters` and
/// `mode`; fail with what it showed last.
fn settle(con: &mut Con, key: &str, holders: usize, waiters: usize, mode: &str, what: &str) {
    let want = (
        holders as i64,
        waiters as i64,
        if holders == 0 { "" } else { mode },
    );
    poll_until(Duration::from_secs(3), Duration::from_millis(2), || {
        let i = lock_info(con, key);
        let seen = i
            .as_ref()
            .map_or((0, 0, ""), |i| (i.holders, i.waiters, i.mode.as_str()));
        if seen == want {
            return Ok(());
        }
        Err(format!(
            "{what}: LOCK.INFO shows {i:?}, the model (holders, waiters, mode) {want:?}"
        ))
    });
}

/// A waiter of `queue_follows_a_model`.
struct Queued {
    token: String,
    exclusive: bool,
    raw: Raw,
}

/// What `queue_follows_a_model` expects of one lock: its holders (token, exclusive) and its
/// FIFO queue, the last fence granted and how many grants there were.
struct QueueModel {
    limit: Option<u32>,
    holders: Vec<(String, bool)>,
    queue: std::collections::VecDeque<Queued>,
    last_fence: i64,
    grants: usize,
}

impl QueueModel {
    /// Whether a request of this mode fits beside the holders.
    fn fits(&self, exclusive: bool) -> bool {
        if exclusive {
            self.holders.is_empty()
        } else {
            !self.holders.iter().any(|h| h.1)
                && self.limit.is_none_or(|n| self.holders.len() < n as usize)
        }
    }

    /// Whether a new request of this mode is granted at once: nobody waits, and it fits.
    fn grants_at_once(&self, exclusive: bool) -> bool {
        self.queue.is_empty() && self.fits(exclusive)
    }

    /// `token` was granted `fence`: a fence above every earlier one.
    fn granted(&mut self, token: String, exclusive: bool, fence: i64, what: &str) {
        assert!(
            fence > self.last_fence,
            "{what}: {token} granted out of order"
        );
        self.last_fence = fence;
        self.grants += 1;
        self.holders.push((token, exclusive));
    }

    /// The waiters at the head that fit are granted, in queue order.
    fn serve_head(&mut self, what: &str) {
        while self.queue.front().is_some_and(|w| self.fits(w.exclusive)) {
            let mut w = self.queue.pop_front().unwrap();
            let fence = granted_to(&mut w.raw, &w.token);
            self.granted(w.token, w.exclusive, fence, what);
        }
    }
}

/// Random blocking and non-blocking requests of both modes, releases, and waiters that
/// disconnect, on one lock; after each step the grants and LOCK.INFO are those of a model of
/// the contract's policy: one FIFO queue, granted from the head while the head fits (after a
/// release and after a head that leaves), nobody overtaking.
fn queue_follows_a_model(srv: &Server, key: &str, limit: Option<u32>, seed: u64) {
    let mut con = srv.conn();
    let shared_opts: Vec<String> = match limit {
        Some(n) => vec!["LIMIT".into(), n.to_string()],
        None => vec!["SHARED".into()],
    };
    let mut rng = Rng::new(seed);
    let mut m = QueueModel {
        limit,
        holders: Vec::new(),
        queue: Default::default(),
        last_fence: 0,
        grants: 0,
    };
    for step in 0..250 {
        let op = rng.below(10);
        let exclusive = rng.below(3) == 0;
        let token = format!("q{step}");
        let mut opts: Vec<&str> = if exclusive {
            vec![]
        } else {
            shared_opts.iter().map(String::as_str).collect()
        };
        let what = format!("{key} step {step} op {op} exclusive {exclusive}");
        match op {
            0..=3 => {
                opts.extend(["BLOCK", "0"]);
                let mut raw = srv.raw();
                send_acq(&mut raw, key, 60_000, &token, &opts);
                if m.grants_at_once(exclusive) {
                    let fence = granted_to(&mut raw, &token);
                    m.granted(token, exclusive, fence, &what);
                } else {
                    m.queue.push_back(Queued {
                        token,
                        exclusive,
                        raw,
                    });
                }
            }
            4 => {
                let got = acq(&mut con, key, 60_000, &token, &opts);
                if m.grants_at_once(exclusive) {
                    let fence = got.unwrap_or_else(|| panic!("{what}: refused"));
                    m.granted(token, exclusive, fence, &what);
                } else {
                    assert_eq!(got, None, "{what}: granted past the queue");
                }
            }
            5..=7 => {
                if m.holders.is_empty() {
                    continue;
                }
                let pick = rng.below(m.holders.len() as u64) as usize;
                let (gone, _) = m.holders.swap_remove(pick);
                assert_eq!(release(&mut con, key, &gone), 1, "{what}");
                m.serve_head(&what);
            }
            _ => {
                if m.queue.is_empty() {
                    continue;
                }
                // Any waiter disconnects, the head too: the waiters then at the head that fit
                // are granted.
                let at = rng.below(m.queue.len() as u64) as usize;
                drop(m.queue.remove(at));
                m.serve_head(&what);
            }
        }
        let mode = if m.holders.first().is_some_and(|h| h.1) {
            "exclusive"
        } else {
            "shared"
        };
        settle(&mut con, key, m.holders.len(), m.queue.len(), mode, &what);
    }
    let grants = m.grants;
    // Everybody leaves in turn; the queue empties in order.
    while let Some((gone, _)) = m.holders.pop() {
        assert_eq!(release(&mut con, key, &gone), 1);
        m.serve_head("the end");
    }
    assert!(m.queue.is_empty());
    settle(&mut con, key, 0, 0, "", "the end");
    assert!(grants > 50, "{key}: only {grants} grants");
}

#[test]
fn the_queue_follows_a_model_of_the_policy_across_modes() {
    let srv = Server::start();
    queue_follows_a_model(&srv, "rw", None, 3);
    queue_follows_a_model(&srv, "sem", Some(3), 5);
    assert_eq!(blocked_clients(&mut srv.conn()), 0);
}

/// LOCK.INFO works on a replica and shows what the primary shows, holder by holder, as holders
/// come, renew, leave and expire; the replica refuses shared requests.
#[test]
fn a_replica_shows_every_holder_and_refuses_shared_requests() {
    let primary = Server::start_with(&[], &["--repl-diskless-sync-delay", "0"]);
    let replica = primary.replica(&[]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let same = |p: &mut Con, r: &mut Con, key: &str, what: &str| {
        poll_until(Duration::from_secs(5), Duration::from_millis(10), || {
            let (on_p, on_r) = (state(p, key), state(r, key));
            if on_p == on_r {
                return Ok(());
            }
            Err(format!(
                "{what}: the replica shows {on_r:?}, the primary {on_p:?}"
            ))
        })
    };
    shared(&mut p, "k", 60_000, "a").unwrap();
    shared(&mut p, "k", 60_000, "b").unwrap();
    limited(&mut p, "sem", 60_000, "p1", 2).unwrap();
    limited(&mut p, "sem", 60_000, "p2", 2).unwrap();
    same(&mut p, &mut r, "k", "two readers");
    assert_eq!(holders(&mut r, "k"), 2);
    same(&mut p, &mut r, "sem", "two permits");
    assert_eq!(lock_info(&mut r, "sem").unwrap().limit, Some(2));
    for opts in [&["SHARED"][..], &["LIMIT", "2"], &["SHARED", "BLOCK", "0"]] {
        let err = try_acq(&mut r, "k", 1000, "c", opts).unwrap_err();
        assert!(err.starts_with("READONLY"), "{opts:?}: {err}");
    }
    assert_eq!(renew(&mut p, "k", "b", 300), 1);
    // b expires on the primary: the replica follows.
    wait_for("b to expire", || holders(&mut p, "k") == 1);
    same(&mut p, &mut r, "k", "after b's expiry");
    assert_eq!(release(&mut p, "sem", "p1"), 1);
    same(&mut p, &mut r, "sem", "after a release");
    assert_eq!(renew(&mut p, "k", "a", 30_000), 1);
    let pttl_r = pttl(&mut r, "k");
    assert!(pttl_r > 20_000 && pttl_r <= 60_000, "{pttl_r}");
    assert_eq!(release(&mut p, "k", "a"), 1);
    wait_for("the replica to drop the lock", || {
        lock_info(&mut r, "k").is_none()
    });
}

// ---------------------------------------------------------------------------------------
// Many clients
// ---------------------------------------------------------------------------------------

#[test]
fn readers_and_writers_under_contention_never_overlap_a_writer() {
    let srv = Server::start();
    let base = Instant::now();
    let out = contend(&srv, "rw", 12, Duration::from_secs(4), Mix::ReadWrite);
    let holds = &out.holds;
    assert_exclusive_holds_overlap_nothing(holds, base);
    assert_distinct_fences(holds);
    let writers = holds.iter().filter(|h| h.exclusive).count();
    let readers = holds.len() - writers;
    assert!(
        writers >= 5 && readers >= 5,
        "{writers} writer and {readers} reader grants"
    );
    assert!(out.killed >= 1, "no client dropped a hold");
    // Readers did share the lock.
    let shared_overlap = holds.iter().enumerate().any(|(i, a)| {
        holds[i + 1..]
            .iter()
            .any(|b| !a.exclusive && !b.exclusive && overlap(a, b))
    });
    assert!(shared_overlap, "no two readers ever held at once");
    eprintln!(
        "{writers} writer grants, {readers} reader grants, {} timeouts, {} dropped holds",
        out.timeouts, out.killed
    );
}

#[test]
fn a_semaphore_under_contention_never_admits_more_than_its_limit() {
    let srv = Server::start();
    let out = contend(&srv, "sem", 6, Duration::from_secs(4), Mix::Permits(3));
    let holds = &out.holds;
    assert_distinct_fences(holds);
    let most = max_overlap(holds);
    assert!(most <= 3, "{most} holds at once on LIMIT 3");
    assert!(most >= 2, "the permits were never used together");
    assert!(holds.len() >= 10, "{} grants", holds.len());
    assert!(out.killed >= 1, "no client dropped a hold");
    eprintln!(
        "{} grants, at most {most} at once, {} timeouts, {} dropped holds",
        holds.len(),
        out.timeouts,
        out.killed
    );
}

#[test]
fn killed_permit_holders_give_their_permits_back_only_at_their_deadlines() {
    let (srv, mut con) = start();
    let ttl = 800;
    let mut sent = Vec::new();
    for i in 0..3 {
        let mut raw = srv.raw();
        let token = format!("killed{i}");
        sent.push(Instant::now());
        send_acq(&mut raw, "sem", ttl, &token, &["LIMIT", "3"]);
        granted_to(&mut raw, &token);
        // Gone without a release.
    }
    let lim = &["LIMIT", "3", "BLOCK", "10000"][..];
    let mut queued: Vec<(String, Raw)> = (0..3)
        .map(|i| {
            let token = format!("next{i}");
            let raw = queue(&srv, &mut con, "sem", 60_000, &token, lim);
            (token, raw)
        })
        .collect();
    let i = lock_info(&mut con, "sem").unwrap();
    assert_eq!(
        (i.holders, i.waiters),
        (3, 3),
        "closed connections keep their holds"
    );
    for (j, (token, raw)) in queued.iter_mut().enumerate() {
        granted_to(raw, token);
        let after = sent[j].elapsed();
        // The j-th permit comes back at killed j's deadline: its ttl after it was asked for
        // at the earliest (1 ms for the server's millisecond clock).
        assert!(
            after + Duration::from_millis(2) >= Duration::from_millis(ttl),
            "{token} was granted {after:?} after killed{j} asked for a {ttl} ms permit"
        );
    }
    let i = lock_info(&mut con, "sem").unwrap();
    assert_eq!((i.holders, i.waiters, i.limit), (3, 0, Some(3)));
    assert_eq!(stat(&mut con, "expired"), 3);
    assert_eq!(stat(&mut con, "handed_off"), 3);
    for j in 0..3 {
        assert_eq!(renew(&mut con, "sem", &format!("killed{j}"), 1000), 0);
    }
}

/// Who waits in the FIFO test, in queue order.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Role {
    /// Holds 200 ms, then releases.
    Holds,
    /// Disconnects while it waits.
    Leaves,
    /// Drops its connection once granted: the hold ends at its deadline.
    Killed,
    /// Its BLOCK times out before its turn.
    TimesOut,
}

#[test]
fn readers_and_writers_queued_one_by_one_are_granted_in_queue_order() {
    use Role::*;
    let (srv, mut con) = start();
    let key = "fifo";
    let killed_ttl: u64 = 600;
    // (exclusive, role), in queue order.
    let plan = [
        (false, Holds),
        (false, Holds),
        (true, Holds),
        (false, Leaves),
        (false, Holds),
        (false, Holds),
        (true, Killed),
        (false, Holds),
        (true, Leaves),
        (true, Holds),
        (false, Holds),
        (false, TimesOut),
    ];
    let base = Instant::now();
    acquire(&mut con, key, 60_000, "first").unwrap();
    let h_granted = Instant::now();
    struct Waiter {
        index: usize,
        exclusive: bool,
        role: Role,
        sent: Instant,
    }
    let mut threads = Vec::new();
    let mut leaving = Vec::new();
    let mut timing_out = None;
    for (index, &(exclusive, role)) in plan.iter().enumerate() {
        let token = format!("w{index}");
        let ttl = if role == Killed { killed_ttl } else { 10_000 };
        let timeout = if role == TimesOut { "300" } else { "15000" };
        let mut opts = vec!["BLOCK", timeout];
        if !exclusive {
            opts.push("SHARED");
        }
        let before = waiters(&mut con, key);
        let mut raw = srv.raw();
        let sent = Instant::now();
        send_acq(&mut raw, key, ttl, &token, &opts);
        wait_for("the waiter to queue", || {
            waiters(&mut con, key) == before + 1
        });
        let w = Waiter {
            index,
            exclusive,
            role,
            sent,
        };
        match role {
            Leaves => leaving.push(raw),
            TimesOut => timing_out = Some(raw),
            Holds | Killed => threads.push(std::thread::spawn(move || {
                let reply = raw.value();
                let start = Instant::now();
                let (got, fence) = grant(&reply).unwrap_or_else(|| panic!("{token}: null"));
                assert_eq!(got, token.as_bytes());
                if w.role == Killed {
                    drop(raw);
                    return (w, start, None, fence);
                }
                sleep(Duration::from_millis(200));
                let released = Instant::now();
                assert_eq!(
                    raw.cmd(&[b"LOCK.RELEASE", b"fifo", token.as_bytes()]),
                    b":1\r\n",
                    "{token}"
                );
                (w, start, Some(released), fence)
            })),
        }
    }
    assert_eq!(waiters(&mut con, key), 12);
    let mut timing_out = timing_out.unwrap();
    assert_eq!(timing_out.read_reply(), b"$-1\r\n");
    drop(leaving);
    wait_for("the leavers to leave", || waiters(&mut con, key) == 9);
    let h_released = Instant::now();
    assert_eq!(release(&mut con, key, "first"), 1);
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    // Grant order (by fence, drawn at each grant) is queue order, across modes.
    let mut by_fence: Vec<(i64, usize)> =
        results.iter().map(|(w, _, _, f)| (*f, w.index)).collect();
    by_fence.sort_unstable();
    let order: Vec<usize> = by_fence.iter().map(|&(_, i)| i).collect();
    assert_eq!(order, [0, 1, 2, 4, 5, 6, 7, 9, 10]);

    // The conservative intervals: no writer overlaps anyone.
    let mut holds = vec![Hold {
        client: 99,
        exclusive: true,
        start: h_granted,
        end: h_released,
        fence: 0,
    }];
    // The killed writer was granted once all before it had released: its deadline is its
    // ttl after that at the earliest (less 1 ms for the server's millisecond clock).
    let mut killed_deadline = None;
    for (w, start, released, fence) in &results {
        let end = match released {
            Some(r) => *r,
            None => {
                let before = results
                    .iter()
                    .filter(|(o, ..)| o.index < w.index)
                    .filter_map(|(_, _, r, _)| *r)
                    .max()
                    .unwrap();
                let d = before.max(w.sent) + Duration::from_millis(killed_ttl - 1);
                killed_deadline = Some(d);
                d
            }
        };
        holds.push(Hold {
            client: w.index,
            exclusive: w.exclusive,
            start: *start,
            end,
            fence: *fence,
        });
    }
    assert_exclusive_holds_overlap_nothing(&holds, base);
    let start_of = |i: usize| holds.iter().find(|h| h.client == i).unwrap().start;
    assert!(
        start_of(7) >= killed_deadline.unwrap(),
        "w7 granted before w6's deadline"
    );
    // Consecutive readers were granted together: each pair held at once.
    let hold_of = |i: usize| *holds.iter().find(|h| h.client == i).unwrap();
    for (a, b) in [(0, 1), (4, 5)] {
        assert!(
            overlap(&hold_of(a), &hold_of(b)),
            "w{a} and w{b} did not hold together: {} / {}",
            describe(&hold_of(a), base),
            describe(&hold_of(b), base)
        );
    }
    wait_for("the lock to be free", || lock_info(&mut con, key).is_none());
    for i in [3, 8, 11] {
        assert_eq!(renew(&mut con, key, &format!("w{i}"), 1000), 0);
    }
    assert_eq!(stat(&mut con, "handed_off"), 9);
    assert_eq!(blocked_clients(&mut con), 0);
}
