//! Hot-key contention: many clients on one lock, by each way of waiting, for a fixed time.
//!
//! Every client loops: wait for the lock, stay inside for the critical section, release, then
//! work outside the lock for a random 0-1 ms before asking again (without that pause a polling
//! client simply re-takes the lock it has just released, and the others starve). The clients
//! count who is inside, so every run also checks mutual exclusion (and, for BLOCK, that fences
//! only rise) and fails loudly if it breaks; with a 0 ms section a client counts as inside
//! only for an instant, so the 1 ms runs are the ones where an overlap would show.
//! Reported: completed critical sections per second, the server's CPU per section, the
//! hand-off latency (how long the lock stood free while it was wanted: from a release that
//! left someone waiting to the next grant, whoever gets it: with polling, often not a client
//! that was waiting), the waits from asking to the grant, and the busiest client's share of
//! the sections, which shows fairness.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::{cmd, load_script, now_ms, report, scale, server_cpu, LUA_RELEASE, LUA_ZSET_ACQUIRE};

/// get-compare-del that also tells the subscribers, as Redisson's unlock does.
const LUA_RELEASE_PUBLISH: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
    redis.call('del', KEYS[1]); redis.call('publish', ARGV[2], 'released'); return 1 \
    else return 0 end";

const KEY: &str = "hot";
const CHANNEL: &str = "hot:released";
/// Long enough that no hold expires during a run: exclusion must come from the lock itself.
const TTL: &str = "10000";
/// A writer's mark in the `inside` count of the readers/writer run.
const WRITER: usize = 1 << 20;

pub fn run(srv: &Server) {
    bench_hot_key(srv);
    bench_readers_writer(srv);
    bench_semaphore(srv);
}

/// How long each configuration runs.
fn run_time() -> Duration {
    Duration::from_secs_f64((2.0 * scale()).max(0.5))
}

/// One way of waiting for a held lock.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Way {
    /// `LOCK.ACQUIRE ... BLOCK`, released by `LOCK.RELEASE`.
    Block,
    /// `SET NX PX`, retried after 10 ms with jitter (5-15 ms), released by get-compare-del.
    Poll,
    /// `SET NX PX`, retried on a pub/sub message (or after 100 ms), released by a script that
    /// get-compare-dels and publishes: Redisson's way.
    PubSub,
    /// `LOCK.ACQUIRE ... SHARED BLOCK`: a reader.
    SharedBlock,
    /// `LOCK.ACQUIRE ... LIMIT n BLOCK`: a semaphore of n permits.
    LimitBlock(usize),
    /// A sorted-set semaphore of n permits in Lua, polled every 10 ms with jitter.
    ZsetPoll(usize),
}

impl Way {
    fn name(self) -> String {
        match self {
            Way::Block => "BLOCK".into(),
            Way::Poll => "polling 10 ms".into(),
            Way::PubSub => "pub/sub".into(),
            Way::SharedBlock => "SHARED BLOCK".into(),
            Way::LimitBlock(n) => format!("LIMIT {n} BLOCK"),
            Way::ZsetPoll(n) => format!("Lua sorted set of {n}, polling 10 ms"),
        }
    }
    /// How many may be inside at once.
    fn capacity(self) -> usize {
        match self {
            Way::LimitBlock(n) | Way::ZsetPoll(n) => n,
            Way::SharedBlock => usize::MAX,
            Way::Block | Way::Poll | Way::PubSub => 1,
        }
    }
}

/// What every client of one run shares.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Who is inside now (readers count 1, a writer WRITER).
    inside: AtomicUsize,
    violations: AtomicU64,
    /// The highest fence granted so far (BLOCK only).
    fence: AtomicI64,
    fence_regressions: AtomicU64,
    /// Clients waiting for the lock now.
    waiting: AtomicUsize,
    /// When the last release was sent, if anyone was waiting then; a grant takes it.
    last_release: Mutex<Option<Instant>>,
    /// Hand-off latencies in µs (exclusive runs).
    samples: Mutex<Vec<f64>>,
    /// Waits from asking to grant in µs, of every client but the writer.
    waits: Mutex<Vec<f64>>,
    /// The writer's waits (readers/writer runs).
    writer_waits: Mutex<Vec<f64>>,
    sections: AtomicU64,
    handoffs: AtomicU64,
}

/// A small xorshift generator, so each client's jitter is its own and repeatable.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// 0 to 1 ms of work outside the lock.
    fn outside(&mut self) -> Duration {
        Duration::from_micros(self.next() % 1_000)
    }
    /// 5 to 15 ms: a 10 ms poll that does not fall into step with the others.
    fn poll_sleep(&mut self) -> Duration {
        Duration::from_micros(5_000 + self.next() % 10_000)
    }
}

/// A client's connections and scripts.
struct Client {
    token: String,
    con: redis::Connection,
    /// Pub/sub runs only: the connection subscribed to CHANNEL.
    sub: Option<redis::Connection>,
    release_sha: String,
    zset_sha: String,
    jitter: Jitter,
}

impl Client {
    /// Waits until this client holds the lock (true) or the run is over (false).
    fn take(
        &mut self,
        way: Way,
        shared: &Shared,
        mut subscribed: Option<&mut redis::PubSub>,
    ) -> bool {
        while !shared.stop.load(Ordering::Relaxed) {
            match way {
                Way::Block | Way::SharedBlock | Way::LimitBlock(_) => {
                    let mut c = cmd(&["LOCK.ACQUIRE", KEY, TTL, "TOKEN", &self.token]);
                    if let Way::LimitBlock(n) = way {
                        c.arg("LIMIT").arg(n);
                    } else if way == Way::SharedBlock {
                        c.arg("SHARED");
                    }
                    let v: Value = c.arg("BLOCK").arg(1000).query(&mut self.con).unwrap();
                    if let Some((_, fence)) = grant(&v) {
                        if way == Way::Block
                            && shared.fence.fetch_max(fence, Ordering::SeqCst) >= fence
                        {
                            shared.fence_regressions.fetch_add(1, Ordering::Relaxed);
                        }
                        return true;
                    }
                }
                Way::Poll | Way::PubSub => {
                    let v: Value = cmd(&["SET", KEY, &self.token, "NX", "PX", TTL])
                        .query(&mut self.con)
                        .unwrap();
                    if matches!(v, Value::Okay) {
                        return true;
                    }
                    match subscribed.as_mut() {
                        // A message, or the timeout against a release missed between the
                        // failed SET and this wait (the subscription stays, so none is lost).
                        Some(ps) => drop(ps.get_message()),
                        None => thread::sleep(self.jitter.poll_sleep()),
                    }
                }
                Way::ZsetPoll(n) => {
                    let now = now_ms();
                    let v: Value = cmd(&[
                        "EVALSHA",
                        &self.zset_sha,
                        "1",
                        KEY,
                        &now.to_string(),
                        &(now + 10_000).to_string(),
                        &n.to_string(),
                        &self.token,
                    ])
                    .query(&mut self.con)
                    .unwrap();
                    if matches!(v, Value::Int(1)) {
                        return true;
                    }
                    thread::sleep(self.jitter.poll_sleep());
                }
            }
        }
        false
    }

    fn give_back(&mut self, way: Way) {
        let released: i64 = match way {
            Way::Block | Way::SharedBlock | Way::LimitBlock(_) => {
                cmd(&["LOCK.RELEASE", KEY, &self.token])
            }
            Way::Poll => cmd(&["EVALSHA", &self.release_sha, "1", KEY, &self.token]),
            Way::PubSub => cmd(&["EVALSHA", &self.release_sha, "1", KEY, &self.token, CHANNEL]),
            Way::ZsetPoll(_) => cmd(&["ZREM", KEY, &self.token]),
        }
        .query(&mut self.con)
        .unwrap();
        assert_eq!(released, 1, "{way:?}: a hold was lost during the run");
    }
}

/// Clients for one run, each with its own connection (and, for pub/sub, a subscribed one).
fn clients(srv: &Server, way: Way, n: usize, first_id: usize) -> Vec<Client> {
    let mut con = srv.conn();
    let release_sha = load_script(
        &mut con,
        if way == Way::PubSub {
            LUA_RELEASE_PUBLISH
        } else {
            LUA_RELEASE
        },
    );
    let zset_sha = load_script(&mut con, LUA_ZSET_ACQUIRE);
    (first_id..first_id + n)
        .map(|id| {
            let sub = (way == Way::PubSub).then(|| srv.conn());
            Client {
                token: format!("client-{id:04}"),
                con: srv.conn(),
                sub,
                release_sha: release_sha.clone(),
                zset_sha: zset_sha.clone(),
                jitter: Jitter(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1).wrapping_mul(0xff51_afd7)),
            }
        })
        .collect()
}

/// One client's loop; returns how many sections it completed.
fn work(mut c: Client, way: Way, cs: Duration, writer: bool, shared: Arc<Shared>) -> u64 {
    let weight = if writer { WRITER } else { 1 };
    let exclusive = way.capacity() == 1;
    let mut mine = 0;
    // Subscribed for the whole run (dropping a PubSub unsubscribes), so no message is lost.
    let mut sub = c.sub.take();
    let mut subscribed = sub.as_mut().map(|s| {
        let mut ps = s.as_pubsub();
        ps.subscribe(CHANNEL).unwrap();
        ps.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ps
    });
    loop {
        if writer {
            // The occasional writer: one write every 20 ms or so.
            thread::sleep(Duration::from_millis(20));
        }
        let asked = Instant::now();
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        let took = c.take(way, &shared, subscribed.as_mut());
        let granted = Instant::now();
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
        if !took {
            return mine;
        }
        let before = shared.inside.fetch_add(weight, Ordering::SeqCst);
        let excluded = if writer || exclusive {
            before == 0
        } else {
            // Shared: no writer inside, and no more than the permits.
            before < WRITER && before < way.capacity()
        };
        if !excluded {
            shared.violations.fetch_add(1, Ordering::Relaxed);
        }
        if exclusive && !writer {
            // A hand-off: the first grant after a release that left someone waiting; its
            // latency is how long the lock stood free while it was wanted.
            if let Some(at) = shared.last_release.lock().unwrap().take() {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.handoffs.fetch_add(1, Ordering::Relaxed);
                    shared
                        .samples
                        .lock()
                        .unwrap()
                        .push((granted - at).as_secs_f64() * 1e6);
                }
            }
        }
        if !shared.stop.load(Ordering::Relaxed) {
            let waits = if writer {
                &shared.writer_waits
            } else {
                &shared.waits
            };
            waits
                .lock()
                .unwrap()
                .push((granted - asked).as_secs_f64() * 1e6);
        }
        if !cs.is_zero() {
            thread::sleep(cs);
        }
        shared.inside.fetch_sub(weight, Ordering::SeqCst);
        if exclusive {
            let now = Instant::now();
            let wanted = shared.waiting.load(Ordering::SeqCst) > 0;
            *shared.last_release.lock().unwrap() = wanted.then_some(now);
        }
        c.give_back(way);
        if !shared.stop.load(Ordering::Relaxed) {
            shared.sections.fetch_add(1, Ordering::Relaxed);
            mine += 1;
        }
        if !writer {
            thread::sleep(c.jitter.outside());
        }
    }
}

/// What one run measured.
struct Outcome {
    sections_per_s: f64,
    handoffs_per_s: f64,
    cpu_per_section: f64,
    cpu_per_handoff: f64,
    /// Hand-off latencies, sorted.
    samples: Vec<f64>,
    /// Waits of every client but the writer, sorted.
    waits: Vec<f64>,
    /// The writer's waits, sorted.
    writer_waits: Vec<f64>,
    busiest_share: f64,
    /// Sections of the writer (readers/writer runs).
    writer_sections: u64,
}

/// `groups` of (way, clients, writer?) on one lock for `run_time()`, each inside for `cs`.
fn measure(srv: &Server, groups: &[(Way, usize, bool)], cs: Duration) -> Outcome {
    call(&mut srv.conn(), &[b"FLUSHALL", b"SYNC"]);
    let shared = Arc::new(Shared::default());
    let mut threads = Vec::new();
    let mut next_id = 0;
    for &(way, n, writer) in groups {
        for c in clients(srv, way, n, next_id) {
            let shared = shared.clone();
            threads.push((
                writer,
                thread::spawn(move || work(c, way, cs, writer, shared)),
            ));
        }
        next_id += n;
    }
    let mut con = srv.conn();
    let cpu_before = server_cpu(&mut con);
    let start = Instant::now();
    thread::sleep(run_time());
    shared.stop.store(true, Ordering::SeqCst);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (server_cpu(&mut con) - cpu_before) * 1e6;
    let mut per_client = Vec::new();
    let mut writer_sections = 0;
    for (writer, t) in threads {
        let n = t.join().unwrap();
        if writer {
            writer_sections += n;
        } else {
            per_client.push(n);
        }
    }
    let name = groups[0].0.name();
    assert_eq!(
        shared.violations.load(Ordering::SeqCst),
        0,
        "{name}: more clients were inside than the lock admits"
    );
    assert_eq!(
        shared.fence_regressions.load(Ordering::SeqCst),
        0,
        "{name}: a grant's fence was not above every earlier one"
    );
    let sections = shared.sections.load(Ordering::SeqCst);
    let handoffs = shared.handoffs.load(Ordering::SeqCst);
    let readers: u64 = per_client.iter().sum();
    let take = |v: &Mutex<Vec<f64>>| sorted(std::mem::take(&mut *v.lock().unwrap()));
    Outcome {
        sections_per_s: sections as f64 / elapsed,
        handoffs_per_s: handoffs as f64 / elapsed,
        cpu_per_section: cpu / sections.max(1) as f64,
        cpu_per_handoff: cpu / handoffs.max(1) as f64,
        samples: take(&shared.samples),
        waits: take(&shared.waits),
        writer_waits: take(&shared.writer_waits),
        busiest_share: per_client.iter().copied().max().unwrap_or(0) as f64 / readers.max(1) as f64,
        writer_sections,
    }
}

/// The q-quantile of sorted `xs` (NaN when there is none).
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[((xs.len() as f64 - 1.0) * q).round() as usize]
}

fn sorted(mut xs: Vec<f64>) -> Vec<f64> {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs
}

fn bench_hot_key(srv: &Server) {
    println!(
        "\n### Hot-key contention (one lock; between sections each client works 0-1 ms outside \
         it; {:.1} s per row)\n",
        run_time().as_secs_f64()
    );
    println!(
        "A hand-off is the first grant after a release that left someone waiting; its latency \
         is how long the lock stood free while it was wanted (from the holder sending its \
         release to the next holder seeing its grant). A wait runs from asking to the grant. \
         The busiest client's share of the sections shows fairness (1/clients is fair).\n"
    );
    println!(
        "| waiting by | clients | critical section | sections/s | server CPU µs/section \
         | server CPU µs/hand-off | hand-off p50 (µs) | hand-off p99 (µs) | wait p99 (ms) \
         | busiest client |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for cs_ms in [0u64, 1] {
        for clients in [8, 32, 128] {
            for way in [Way::Block, Way::Poll, Way::PubSub] {
                let out = measure(srv, &[(way, clients, false)], Duration::from_millis(cs_ms));
                let lat = &out.samples;
                let at = format!("{clients} clients, {cs_ms} ms");
                println!(
                    "| {} | {clients} | {cs_ms} ms | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} \
                     | {:.0}% |",
                    way.name(),
                    out.sections_per_s,
                    out.cpu_per_section,
                    out.cpu_per_handoff,
                    quantile(lat, 0.5),
                    quantile(lat, 0.99),
                    quantile(&out.waits, 0.99) / 1000.0,
                    out.busiest_share * 100.0
                );
                let name = way.name();
                report::record("sections", &name, &at, out.sections_per_s);
                report::record("handoffs", &name, &at, out.handoffs_per_s);
                report::record("section-cpu", &name, &at, out.cpu_per_section);
                report::record("handoff-cpu", &name, &at, out.cpu_per_handoff);
                report::record("wait-p99", &name, &at, quantile(&out.waits, 0.99));
                if !lat.is_empty() {
                    for q in (1..100).map(|i| i as f64 / 100.0).chain([0.999]) {
                        let x = format!("{at} @ {q:.3}");
                        report::record("handoff", &name, &x, quantile(lat, q));
                    }
                }
            }
        }
    }
}

/// 16 readers (SHARED) and one writer that wants the lock every 20 ms, 1 ms inside each.
fn bench_readers_writer(srv: &Server) {
    let readers = 16;
    println!(
        "\n### Readers and an occasional writer ({readers} SHARED readers working 0-1 ms \
         between reads, one writer every 20 ms, 1 ms inside, all with BLOCK)\n"
    );
    let out = measure(
        srv,
        &[(Way::SharedBlock, readers, false), (Way::Block, 1, true)],
        Duration::from_millis(1),
    );
    let secs = run_time().as_secs_f64();
    let writer = &out.writer_waits;
    println!(
        "| reader sections/s | reader wait p99 (µs) | writer sections/s | writer wait p50 (µs) \
         | writer wait p99 (µs) | writer wait max (µs) |"
    );
    println!("|---|---|---|---|---|---|");
    let reader_rate = out.sections_per_s - out.writer_sections as f64 / secs;
    println!(
        "| {reader_rate:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |",
        quantile(&out.waits, 0.99),
        out.writer_sections as f64 / secs,
        quantile(writer, 0.5),
        quantile(writer, 0.99),
        quantile(writer, 1.0),
    );
    report::record("readers-writer", "reader sections/s", "", reader_rate);
    report::record(
        "readers-writer",
        "writer wait p99 µs",
        "",
        quantile(writer, 0.99),
    );
}

/// A semaphore of 4 permits under 32 clients, 1 ms inside: LIMIT 4 BLOCK against the usual
/// sorted set in Lua, polled.
fn bench_semaphore(srv: &Server) {
    let clients = 32;
    println!(
        "\n### A semaphore of 4 ({clients} clients working 0-1 ms between sections, 1 ms \
         inside)\n"
    );
    println!(
        "| semaphore | sections/s | server CPU µs/section | wait p50 (µs) | wait p99 (µs) \
         | busiest client |"
    );
    println!("|---|---|---|---|---|---|");
    for way in [Way::LimitBlock(4), Way::ZsetPoll(4)] {
        let out = measure(srv, &[(way, clients, false)], Duration::from_millis(1));
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0}% |",
            way.name(),
            out.sections_per_s,
            out.cpu_per_section,
            quantile(&out.waits, 0.5),
            quantile(&out.waits, 0.99),
            out.busiest_share * 100.0
        );
        let name = way.name();
        report::record("semaphore", &name, "sections/s", out.sections_per_s);
        report::record(
            "semaphore",
            &name,
            "server CPU µs/section",
            out.cpu_per_section,
        );
        report::record(
            "semaphore",
            &name,
            "wait p99 µs",
            quantile(&out.waits, 0.99),
        );
    }
}
