//! `make bench`: the module against the Lua scripts and core commands it replaces, on one
//! server started here, in one run. Rounds alternate the order of the contenders and the
//! medians are compared, because the machine is noisy. Results are printed as a Markdown
//! table; nothing here asserts a speed.
//!
//! LOCK_SERVER picks the server binary (default redis-server), LOCK_MODULE the module.
//! BENCH_SCALE (default 1.0) scales the amount of work.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const ROUNDS: usize = 5;
const CLIENTS: usize = 8;
const PIPELINE: usize = 64;

/// get-compare-del: the usual release script.
const LUA_RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
    return redis.call('del', KEYS[1]) else return 0 end";
/// get-compare-pexpire: the usual renew script.
const LUA_RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
    return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// A reentrant hash lock in the style of Redisson: a hash of owner -> hold count.
const LUA_HASH_LOCK: &str = "if redis.call('exists', KEYS[1]) == 0 \
    or redis.call('hexists', KEYS[1], ARGV[2]) == 1 then \
    redis.call('hincrby', KEYS[1], ARGV[2], 1); redis.call('pexpire', KEYS[1], ARGV[1]); \
    return nil end; return redis.call('pttl', KEYS[1])";

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

fn token(i: usize) -> String {
    format!(
        "{:032x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    )
}

/// One contender: how its keys are prepared, the command it times, what success looks like.
struct Contender {
    name: &'static str,
    prepare: Prepare,
    command: fn(&str, &str, &Shas) -> redis::Cmd,
    ok: fn(&Value) -> bool,
}

#[derive(Clone, Copy)]
enum Prepare {
    Nothing,
    Locks,
    Strings,
}

struct Shas {
    release: String,
    renew: String,
    hash_lock: String,
}

/// SCRIPT LOAD: the script's SHA.
fn load_script(con: &mut redis::Connection, body: &str) -> String {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(con)
        .unwrap()
}

fn load_scripts(con: &mut redis::Connection) -> Shas {
    Shas {
        release: load_script(con, LUA_RELEASE),
        renew: load_script(con, LUA_RENEW),
        hash_lock: load_script(con, LUA_HASH_LOCK),
    }
}

/// An empty server, then `keys` prepared as `how` says.
fn prepare(con: &mut redis::Connection, how: Prepare, keys: &[(String, String)]) {
    call(con, &[b"FLUSHALL", b"SYNC"]);
    fill(con, how, keys);
}

fn fill(con: &mut redis::Connection, how: Prepare, keys: &[(String, String)]) {
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for (key, tok) in chunk {
            match how {
                Prepare::Nothing => {}
                Prepare::Locks => {
                    pipe.cmd("LOCK.ACQUIRE")
                        .arg(key)
                        .arg(600_000)
                        .arg("TOKEN")
                        .arg(tok);
                }
                Prepare::Strings => {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(tok)
                        .arg("NX")
                        .arg("PX")
                        .arg(600_000);
                }
            }
        }
        if !matches!(how, Prepare::Nothing) {
            pipe.query::<Vec<Value>>(con).unwrap();
        }
    }
}

/// Operations per second of one contender: CLIENTS threads, each over its own keys.
fn throughput(srv: &Server, shas: &Shas, c: &Contender, per_client: usize, pipeline: usize) -> f64 {
    let keys: Vec<Vec<(String, String)>> = (0..CLIENTS)
        .map(|t| {
            (0..per_client)
                .map(|i| (format!("bench:{t}:{i}"), token(t * per_client + i)))
                .collect()
        })
        .collect();
    let all: Vec<(String, String)> = keys.iter().flatten().cloned().collect();
    prepare(&mut srv.conn(), c.prepare, &all);
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let mut threads = Vec::new();
    for mine in keys {
        let mut con = srv.conn();
        let barrier = barrier.clone();
        let (command, ok) = (c.command, c.ok);
        let shas = Shas {
            release: shas.release.clone(),
            renew: shas.renew.clone(),
            hash_lock: shas.hash_lock.clone(),
        };
        threads.push(thread::spawn(move || {
            barrier.wait();
            let mut failures = 0;
            for chunk in mine.chunks(pipeline) {
                if pipeline == 1 {
                    let (key, tok) = &chunk[0];
                    let v: Value = command(key, tok, &shas).query(&mut con).unwrap();
                    failures += usize::from(!ok(&v));
                } else {
                    let mut pipe = redis::pipe();
                    for (key, tok) in chunk {
                        pipe.add_command(command(key, tok, &shas));
                    }
                    let replies: Vec<Value> = pipe.query(&mut con).unwrap();
                    failures += replies.iter().filter(|v| !ok(v)).count();
                }
            }
            failures
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let failures: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(
        failures, 0,
        "{}: the timed path was not the success path",
        c.name
    );
    (CLIENTS * per_client) as f64 / elapsed
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn is_grant(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.len() == 2)
}
fn is_one(v: &Value) -> bool {
    matches!(v, Value::Int(1))
}
fn is_okay(v: &Value) -> bool {
    matches!(v, Value::Okay)
}
fn is_nil(v: &Value) -> bool {
    matches!(v, Value::Nil)
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// (what is compared, contenders: the module first)
fn comparisons(valkey: bool) -> Vec<(&'static str, Vec<Contender>)> {
    let mut release = vec![
        Contender {
            name: "LOCK.RELEASE",
            prepare: Prepare::Locks,
            command: |k, t, _| cmd(&["LOCK.RELEASE", k, t]),
            ok: is_one,
        },
        Contender {
            name: "EVALSHA get-compare-del",
            prepare: Prepare::Strings,
            command: |k, t, s| cmd(&["EVALSHA", &s.release, "1", k, t]),
            ok: is_one,
        },
    ];
    if valkey {
        release.push(Contender {
            name: "DELIFEQ",
            prepare: Prepare::Strings,
            command: |k, t, _| cmd(&["DELIFEQ", k, t]),
            ok: is_one,
        });
    }
    vec![
        (
            "acquire",
            vec![
                Contender {
                    name: "LOCK.ACQUIRE",
                    prepare: Prepare::Nothing,
                    command: |k, t, _| cmd(&["LOCK.ACQUIRE", k, "60000", "TOKEN", t]),
                    ok: is_grant,
                },
                Contender {
                    name: "SET NX PX",
                    prepare: Prepare::Nothing,
                    command: |k, t, _| cmd(&["SET", k, t, "NX", "PX", "60000"]),
                    ok: is_okay,
                },
                Contender {
                    name: "EVALSHA hash lock (Redisson style)",
                    prepare: Prepare::Nothing,
                    command: |k, t, s| cmd(&["EVALSHA", &s.hash_lock, "1", k, "60000", t]),
                    ok: is_nil,
                },
            ],
        ),
        ("release", release),
        (
            "renew",
            vec![
                Contender {
                    name: "LOCK.RENEW",
                    prepare: Prepare::Locks,
                    command: |k, t, _| cmd(&["LOCK.RENEW", k, t, "60000"]),
                    ok: is_one,
                },
                Contender {
                    name: "EVALSHA get-compare-pexpire",
                    prepare: Prepare::Strings,
                    command: |k, t, s| cmd(&["EVALSHA", &s.renew, "1", k, t, "60000"]),
                    ok: is_one,
                },
            ],
        ),
    ]
}

/// The comparisons named in `operations`, at each (pipeline, requests per client).
fn bench_throughput(srv: &Server, title: &str, runs: &[(usize, usize)], operations: &[&str]) {
    let shas = load_scripts(&mut srv.conn());
    println!(
        "\n### Throughput{title} (ops/s, median of {ROUNDS} alternating rounds, {CLIENTS} clients)\n"
    );
    println!("| operation | pipeline | contender | ops/s | module / contender |");
    println!("|---|---|---|---|---|");
    for (what, contenders) in comparisons(is_valkey()) {
        if !operations.contains(&what) {
            continue;
        }
        for &(pipeline, per_client) in runs {
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
            for round in 0..ROUNDS {
                let mut order: Vec<usize> = (0..contenders.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    samples[i].push(throughput(srv, &shas, &contenders[i], per_client, pipeline));
                }
            }
            let medians: Vec<f64> = samples.into_iter().map(median).collect();
            for (c, m) in contenders.iter().zip(&medians) {
                println!(
                    "| {what} | {pipeline} | {} | {:.0} | {:.2}x |",
                    c.name,
                    m,
                    medians[0] / m
                );
            }
        }
    }
}

/// The same comparisons with a replica attached, as in production: every contender's writes
/// now really travel (the module's effects, the core commands' rewritten forms, the scripts'
/// effects), so the propagation each one pays is part of what is measured.
fn bench_throughput_with_replica(srv: &Server) {
    let replica = Server::start();
    let mut rcon = replica.conn();
    let port = srv.port.to_string();
    call(&mut rcon, &[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    wait_for("the replica to link", || {
        info_field(&mut rcon, "replication", "master_link_status").as_deref() == Some("up")
    });
    bench_throughput(
        srv,
        " with one replica attached",
        &[(PIPELINE, scaled(40_000))],
        &["acquire", "release"],
    );
}

/// One way of waiting for a held lock: each client loops take, hold briefly, release.
#[derive(Clone, Copy, PartialEq)]
enum Waiting {
    Block,
    Poll { sleep_ms: u64 },
    PubSub,
}

/// Time from each release to the grant of the next holder, in µs. The clients take turns:
/// after releasing, a client asks again only once another client has had the lock (without
/// that, a polling client simply re-takes the lock it just released), and after a random
/// 0-10 ms of work outside the lock, so pollers do not fall into step with each other. Only
/// hand-offs count: releases that found this client already asking.
fn handoff(srv: &Server, how: Waiting, clients: usize, handoffs: usize) -> Vec<f64> {
    call(&mut srv.conn(), &[b"FLUSHALL", b"SYNC"]);
    let released_at: Arc<Mutex<Option<(Instant, usize)>>> = Arc::new(Mutex::new(None));
    let samples: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    // Who had the lock last, and a signal when that changes.
    let holder = Arc::new((Mutex::new(usize::MAX), Condvar::new()));
    let shas = load_scripts(&mut srv.conn());
    let mut threads = Vec::new();
    for c in 0..clients {
        let mut con = srv.conn();
        let mut sub = srv.conn();
        let (released_at, samples, holder) = (released_at.clone(), samples.clone(), holder.clone());
        let release_sha = shas.release.clone();
        threads.push(thread::spawn(move || {
            let me = format!("client-{c}");
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64 + c as u64;
            let mut pubsub = (how == Waiting::PubSub).then(|| {
                let mut ps = sub.as_pubsub();
                ps.subscribe("released").unwrap();
                ps.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                ps
            });
            // Since when this client has been asking for the lock.
            let mut wanting_since: Option<Instant> = None;
            loop {
                if samples.lock().unwrap().len() >= handoffs {
                    return;
                }
                let asked_at = *wanting_since.get_or_insert_with(Instant::now);
                let granted = match how {
                    Waiting::Block => {
                        let v: Value =
                            cmd(&["LOCK.ACQUIRE", "h", "10000", "TOKEN", &me, "BLOCK", "200"])
                                .query(&mut con)
                                .unwrap();
                        is_grant(&v)
                    }
                    Waiting::Poll { sleep_ms } => {
                        let v: Value = cmd(&["SET", "h", &me, "NX", "PX", "10000"])
                            .query(&mut con)
                            .unwrap();
                        if !is_okay(&v) {
                            thread::sleep(Duration::from_millis(sleep_ms));
                        }
                        is_okay(&v)
                    }
                    Waiting::PubSub => {
                        let v: Value = cmd(&["SET", "h", &me, "NX", "PX", "10000"])
                            .query(&mut con)
                            .unwrap();
                        if !is_okay(&v) {
                            // Wait for a release message (or a short timeout, against a
                            // release between the failed try and this wait).
                            let _ = pubsub.as_mut().unwrap().get_message();
                        }
                        is_okay(&v)
                    }
                };
                if !granted {
                    continue;
                }
                let now = Instant::now();
                wanting_since = None;
                // A hand-off: the lock was released while this client was already asking.
                if let Some((at, _)) = released_at.lock().unwrap().take() {
                    if asked_at < at {
                        samples.lock().unwrap().push((now - at).as_secs_f64() * 1e6);
                    }
                }
                *holder.0.lock().unwrap() = c;
                holder.1.notify_all();
                // Hold briefly, then release and stamp the moment.
                thread::sleep(Duration::from_micros(200));
                *released_at.lock().unwrap() = Some((Instant::now(), c));
                match how {
                    Waiting::Block => {
                        let _: i64 = cmd(&["LOCK.RELEASE", "h", &me]).query(&mut con).unwrap();
                    }
                    Waiting::Poll { .. } => {
                        let _: i64 = cmd(&["EVALSHA", &release_sha, "1", "h", &me])
                            .query(&mut con)
                            .unwrap();
                    }
                    Waiting::PubSub => {
                        let _: i64 = cmd(&["EVALSHA", &release_sha, "1", "h", &me])
                            .query(&mut con)
                            .unwrap();
                        let _: i64 = cmd(&["PUBLISH", "released", "h"]).query(&mut con).unwrap();
                    }
                }
                // My turn again only after someone else's (or when the run is over).
                let mut last = holder.0.lock().unwrap();
                while *last == c && samples.lock().unwrap().len() < handoffs {
                    last = holder
                        .1
                        .wait_timeout(last, Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
                drop(last);
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                thread::sleep(Duration::from_micros(seed % 10_000));
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let samples = samples.lock().unwrap().clone();
    samples
}

fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

fn bench_handoff(srv: &Server) {
    let clients = 4;
    println!(
        "\n### Hand-off latency under contention ({clients} clients taking turns on one lock)\n"
    );
    println!("| waiting by | hand-offs | p50 (µs) | p99 (µs) |");
    println!("|---|---|---|---|");
    for (name, how, n) in [
        ("LOCK.ACQUIRE ... BLOCK", Waiting::Block, scaled(2000)),
        (
            "polling SET NX PX every 10 ms",
            Waiting::Poll { sleep_ms: 10 },
            scaled(300),
        ),
        (
            "pub/sub notification + SET NX PX",
            Waiting::PubSub,
            scaled(2000),
        ),
    ] {
        let samples = handoff(srv, how, clients, n);
        println!(
            "| {name} | {} | {:.0} | {:.0} |",
            samples.len(),
            percentile(samples.clone(), 0.5),
            percentile(samples, 0.99)
        );
    }
}

fn used_memory(con: &mut redis::Connection) -> i64 {
    info_field(con, "memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap()
}

fn bench_memory(srv: &Server) {
    let n = scaled(1_000_000);
    println!("\n### Memory per held lock ({n} locks, 32-character tokens)\n");
    println!("| lock | bytes per lock | module / contender |");
    println!("|---|---|---|");
    let mut con = srv.conn();
    let mut per_lock = Vec::new();
    for how in [Prepare::Locks, Prepare::Strings] {
        call(&mut con, &[b"FLUSHALL", b"SYNC"]);
        let before = used_memory(&mut con);
        let keys: Vec<(String, String)> = (0..n).map(|i| (format!("lock:{i}"), token(i))).collect();
        fill(&mut con, how, &keys);
        let after = used_memory(&mut con);
        per_lock.push((after - before) as f64 / n as f64);
    }
    for (name, bytes) in [
        ("LOCK.ACQUIRE", per_lock[0]),
        ("SET NX PX (string)", per_lock[1]),
    ] {
        println!("| {name} | {bytes:.1} | {:.2}x |", per_lock[0] / bytes);
    }
    call(&mut con, &[b"FLUSHALL", b"SYNC"]);
}

/// A counting semaphore as a sorted set, the usual Lua way: members are tokens, scores their
/// deadlines; acquiring drops the expired and adds one if there is room.
const LUA_ZSET_ACQUIRE: &str = "redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1]) \
    if redis.call('zcard', KEYS[1]) < tonumber(ARGV[3]) then \
    redis.call('zadd', KEYS[1], ARGV[2], ARGV[4]) return 1 end return 0";
const LUA_ZSET_RENEW: &str = "if redis.call('zscore', KEYS[1], ARGV[2]) then \
    redis.call('zadd', KEYS[1], ARGV[1], ARGV[2]) return 1 end return 0";

/// Pipelined commands per second over one connection.
fn rate(con: &mut redis::Connection, cmds: &[redis::Cmd], ok: fn(&Value) -> bool) -> f64 {
    let start = Instant::now();
    for chunk in cmds.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for c in chunk {
            pipe.add_command(c.clone());
        }
        let replies: Vec<Value> = pipe.query(con).unwrap();
        assert!(
            replies.iter().all(ok),
            "the timed path was not the success path"
        );
    }
    cmds.len() as f64 / start.elapsed().as_secs_f64()
}

/// Unix milliseconds, as the scripts' scores and the module's deadlines count them.
fn now_ms() -> i64 {
    now_us() / 1000
}

/// Shared holders: memory per holder and the cost of renewing one, or of taking and giving back
/// one more permit, on a lock of 1 and of `n` holders, beside a sorted-set semaphore in Lua.
fn bench_shared(srv: &Server) {
    let n = scaled(10_000).max(2);
    let ops = scaled(20_000).max(PIPELINE);
    let mut con = srv.conn();
    let (zacquire, zrenew) = (
        load_script(&mut con, LUA_ZSET_ACQUIRE),
        load_script(&mut con, LUA_ZSET_RENEW),
    );
    let limit = (n + 1).to_string();
    // `holders` holders on `sem` of either kind.
    let fill = |con: &mut redis::Connection, module: bool, holders: usize| {
        call(con, &[b"FLUSHALL", b"SYNC"]);
        let deadline = (now_ms() + 600_000).to_string();
        for chunk in (0..holders).collect::<Vec<_>>().chunks(1000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                if module {
                    pipe.add_command(cmd(&[
                        "LOCK.ACQUIRE",
                        "sem",
                        "600000",
                        "LIMIT",
                        &limit,
                        "TOKEN",
                        &token(i),
                    ]));
                } else {
                    pipe.add_command(cmd(&["ZADD", "sem", &deadline, &token(i)]));
                }
            }
            pipe.query::<Vec<Value>>(con).unwrap();
        }
    };
    println!("\n### Shared holders ({n} on one lock, 32-character tokens)\n");
    println!("| measure | holders on the lock | contender | value | module / contender |");
    println!("|---|---|---|---|---|");
    let mut per_holder = Vec::new();
    for module in [true, false] {
        fill(&mut con, module, 1);
        let before = used_memory(&mut con);
        fill(&mut con, module, n);
        let after = used_memory(&mut con);
        per_holder.push((after - before) as f64 / (n - 1) as f64);
    }
    for (name, bytes) in [
        ("LOCK.ACQUIRE LIMIT", per_holder[0]),
        ("ZADD (sorted-set semaphore)", per_holder[1]),
    ] {
        println!(
            "| bytes per holder beyond the first | {n} | {name} | {bytes:.1} | {:.2}x |",
            per_holder[0] / bytes
        );
    }
    for holders in [1, n] {
        let mut rates = Vec::new();
        for module in [true, false] {
            fill(&mut con, module, holders);
            let deadline = (now_ms() + 600_000).to_string();
            let renews: Vec<redis::Cmd> = (0..ops)
                .map(|i| {
                    let t = token(i % holders);
                    if module {
                        cmd(&["LOCK.RENEW", "sem", &t, "600000"])
                    } else {
                        cmd(&["EVALSHA", &zrenew, "1", "sem", &deadline, &t])
                    }
                })
                .collect();
            let renew = median(
                (0..ROUNDS)
                    .map(|_| rate(&mut con, &renews, is_one))
                    .collect(),
            );
            // One more permit taken and given back, with a token no holder has.
            let extra = token(n + 1);
            let now = now_ms().to_string();
            let mut cycle = Vec::new();
            for _ in 0..ops / 2 {
                if module {
                    cycle.push(cmd(&[
                        "LOCK.ACQUIRE",
                        "sem",
                        "600000",
                        "LIMIT",
                        &limit,
                        "TOKEN",
                        &extra,
                    ]));
                    cycle.push(cmd(&["LOCK.RELEASE", "sem", &extra]));
                } else {
                    cycle.push(cmd(&[
                        "EVALSHA", &zacquire, "1", "sem", &now, &deadline, &limit, &extra,
                    ]));
                    cycle.push(cmd(&["ZREM", "sem", &extra]));
                }
            }
            let ok: fn(&Value) -> bool = |v| is_grant(v) || is_one(v);
            let take = median((0..ROUNDS).map(|_| rate(&mut con, &cycle, ok)).collect());
            rates.push((renew, take));
        }
        for (what, module_rate, lua_rate, lua_name) in [
            (
                "renew one holder (ops/s, p64)",
                rates[0].0,
                rates[1].0,
                "EVALSHA zscore-zadd",
            ),
            (
                "take + give back a permit (ops/s, p64)",
                rates[0].1,
                rates[1].1,
                "EVALSHA zremrangebyscore-zcard-zadd + ZREM",
            ),
        ] {
            let module_name = if what.starts_with("renew") {
                "LOCK.RENEW"
            } else {
                "LOCK.ACQUIRE LIMIT + LOCK.RELEASE"
            };
            println!("| {what} | {holders} | {module_name} | {module_rate:.0} | 1.00x |");
            println!(
                "| {what} | {holders} | {lua_name} | {lua_rate:.0} | {:.2}x |",
                module_rate / lua_rate
            );
        }
    }
    call(&mut con, &[b"FLUSHALL", b"SYNC"]);
}

fn main() {
    let srv = Server::start();
    let mut con = srv.conn();
    let version = info_field(&mut con, "server", "valkey_version")
        .or_else(|| info_field(&mut con, "server", "redis_version"))
        .unwrap_or_default();
    println!(
        "## {} {version} ({}), `make bench`",
        if is_valkey() { "Valkey" } else { "Redis" },
        server_binary()
    );
    // BENCH_ONLY=shared runs that section alone.
    if std::env::var("BENCH_ONLY").as_deref() != Ok("shared") {
        bench_throughput(
            &srv,
            "",
            &[(1, scaled(4000)), (PIPELINE, scaled(40_000))],
            &["acquire", "release", "renew"],
        );
        bench_throughput_with_replica(&srv);
        bench_handoff(&srv);
        bench_memory(&srv);
    }
    bench_shared(&srv);
}
