//! `make bench`: the module against the Lua scripts and core commands it replaces, on one
//! server started here, in one run. Rounds alternate the order of the contenders and the
//! medians are compared, because the machine is noisy. Results are printed as a Markdown
//! table; nothing here asserts a speed.
//!
//! LOCK_SERVER picks the server binary (default redis-server), LOCK_MODULE the module.
//! BENCH_SCALE (default 1.0) scales the amount of work.

mod charts;
#[path = "../../tests/common/mod.rs"]
mod common;
mod contention;
mod driver;
mod instructions;
mod report;
mod scale;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use common::*;
use driver::{Driver, Reply};

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

/// One contender: how its keys are prepared, the command it times (and, for a whole lock
/// cycle, the command after it on the same key), what success looks like.
struct Contender {
    name: &'static str,
    prepare: Prepare,
    command: fn(&str, &str, &Shas) -> redis::Cmd,
    then: Option<fn(&str, &str, &Shas) -> redis::Cmd>,
    ok: fn(&Reply) -> bool,
}

fn contender(
    name: &'static str,
    prepare: Prepare,
    command: fn(&str, &str, &Shas) -> redis::Cmd,
    ok: fn(&Reply) -> bool,
) -> Contender {
    Contender {
        name,
        prepare,
        command,
        then: None,
        ok,
    }
}

/// A take and a give-back of the same fresh key, timed as one operation.
fn cycle(
    name: &'static str,
    take: fn(&str, &str, &Shas) -> redis::Cmd,
    give_back: fn(&str, &str, &Shas) -> redis::Cmd,
) -> Contender {
    Contender {
        name,
        prepare: Prepare::Nothing,
        command: take,
        then: Some(give_back),
        ok: |r| r.is_grant() || r.is_okay() || r.is_one(),
    }
}

#[derive(Clone, Copy)]
enum Prepare {
    Nothing,
    Locks,
    Strings,
    /// Values of the bench-only floor module.
    Floor,
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
                Prepare::Floor => {
                    pipe.cmd("FLOOR.ACQUIRE")
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

/// Operations per second of one contender: CLIENTS threads, each over its own keys, every
/// request encoded before the clock starts.
/// The server's CPU time so far (user + system), in seconds.
fn server_cpu(con: &mut redis::Connection) -> f64 {
    ["used_cpu_user", "used_cpu_sys"]
        .iter()
        .map(|f| {
            info_field(con, "cpu", f)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap()
        })
        .sum()
}

/// (operations per second, the server's CPU µs per operation) of one contender.
fn throughput(
    srv: &Server,
    shas: &Shas,
    c: &Contender,
    per_client: usize,
    pipeline: usize,
) -> (f64, f64) {
    let keys: Vec<Vec<(String, String)>> = (0..CLIENTS)
        .map(|t| {
            (0..per_client)
                .map(|i| (format!("bench:{t}:{i}"), token(t * per_client + i)))
                .collect()
        })
        .collect();
    let all: Vec<(String, String)> = keys.iter().flatten().cloned().collect();
    prepare(&mut srv.conn(), c.prepare, &all);
    let per_op = 1 + usize::from(c.then.is_some());
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let mut threads = Vec::new();
    for mine in keys {
        let mut driver = Driver::connect(srv.port);
        let requests: Vec<Vec<u8>> = mine
            .chunks(pipeline)
            .map(|chunk| {
                let mut bytes = Vec::new();
                for (key, tok) in chunk {
                    bytes.extend((c.command)(key, tok, shas).get_packed_command());
                    if let Some(then) = c.then {
                        bytes.extend(then(key, tok, shas).get_packed_command());
                    }
                }
                bytes
            })
            .collect();
        let counts: Vec<usize> = mine.chunks(pipeline).map(|c| c.len() * per_op).collect();
        let barrier = barrier.clone();
        let ok = c.ok;
        threads.push(thread::spawn(move || {
            barrier.wait();
            requests
                .iter()
                .zip(counts)
                .map(|(request, count)| driver.exchange(request, count, ok))
                .sum::<usize>()
        }));
    }
    let mut con = srv.conn();
    let cpu_before = server_cpu(&mut con);
    barrier.wait();
    let start = Instant::now();
    let failures: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = server_cpu(&mut con) - cpu_before;
    assert_eq!(
        failures, 0,
        "{}: the timed path was not the success path",
        c.name
    );
    let ops = (CLIENTS * per_client) as f64;
    (ops / elapsed, cpu * 1e6 / ops)
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

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// (what is compared, contenders: the module first, then the floor module's command, the
/// least the server's module API allows for the same work).
fn comparisons(valkey: bool) -> Vec<(&'static str, Vec<Contender>)> {
    use Prepare::*;
    let acquire = vec![
        contender(
            "LOCK.ACQUIRE",
            Nothing,
            |k, t, _| cmd(&["LOCK.ACQUIRE", k, "60000", "TOKEN", t]),
            Reply::is_grant,
        ),
        contender(
            "floor: FLOOR.ACQUIRE",
            Nothing,
            |k, t, _| cmd(&["FLOOR.ACQUIRE", k, "60000", "TOKEN", t]),
            Reply::is_grant,
        ),
        contender(
            "SET NX PX",
            Nothing,
            |k, t, _| cmd(&["SET", k, t, "NX", "PX", "60000"]),
            Reply::is_okay,
        ),
        contender(
            "EVALSHA hash lock (Redisson style)",
            Nothing,
            |k, t, s| cmd(&["EVALSHA", &s.hash_lock, "1", k, "60000", t]),
            Reply::is_nil,
        ),
        contender(
            "PING",
            Nothing,
            |_, _, _| cmd(&["PING"]),
            |r| *r == Reply::Other,
        ),
    ];
    let mut renew = vec![
        contender(
            "LOCK.RENEW",
            Locks,
            |k, t, _| cmd(&["LOCK.RENEW", k, t, "60000"]),
            Reply::is_one,
        ),
        contender(
            "floor: FLOOR.RENEW",
            Floor,
            |k, t, _| cmd(&["FLOOR.RENEW", k, t, "60000"]),
            Reply::is_one,
        ),
        contender(
            "EVALSHA get-compare-pexpire",
            Strings,
            |k, t, s| cmd(&["EVALSHA", &s.renew, "1", k, t, "60000"]),
            Reply::is_one,
        ),
    ];
    let mut release = vec![
        contender(
            "LOCK.RELEASE",
            Locks,
            |k, t, _| cmd(&["LOCK.RELEASE", k, t]),
            Reply::is_one,
        ),
        contender(
            "floor: FLOOR.RELEASE",
            Floor,
            |k, t, _| cmd(&["FLOOR.RELEASE", k, t]),
            Reply::is_one,
        ),
        contender(
            "EVALSHA get-compare-del",
            Strings,
            |k, t, s| cmd(&["EVALSHA", &s.release, "1", k, t]),
            Reply::is_one,
        ),
    ];
    let mut lock_cycle = vec![
        cycle(
            "LOCK.ACQUIRE + LOCK.RELEASE",
            |k, t, _| cmd(&["LOCK.ACQUIRE", k, "60000", "TOKEN", t]),
            |k, t, _| cmd(&["LOCK.RELEASE", k, t]),
        ),
        cycle(
            "floor: FLOOR.ACQUIRE + FLOOR.RELEASE",
            |k, t, _| cmd(&["FLOOR.ACQUIRE", k, "60000", "TOKEN", t]),
            |k, t, _| cmd(&["FLOOR.RELEASE", k, t]),
        ),
        cycle(
            "SET NX PX + EVALSHA get-compare-del",
            |k, t, _| cmd(&["SET", k, t, "NX", "PX", "60000"]),
            |k, t, s| cmd(&["EVALSHA", &s.release, "1", k, t]),
        ),
    ];
    if valkey {
        renew.push(contender(
            "SET IFEQ PX (Valkey)",
            Strings,
            |k, t, _| cmd(&["SET", k, t, "IFEQ", t, "PX", "60000"]),
            Reply::is_okay,
        ));
        release.push(contender(
            "DELIFEQ (Valkey)",
            Strings,
            |k, t, _| cmd(&["DELIFEQ", k, t]),
            Reply::is_one,
        ));
        lock_cycle.push(cycle(
            "SET NX PX + DELIFEQ (Valkey)",
            |k, t, _| cmd(&["SET", k, t, "NX", "PX", "60000"]),
            |k, t, _| cmd(&["DELIFEQ", k, t]),
        ));
    }
    vec![
        ("acquire", acquire),
        ("renew", renew),
        ("release", release),
        ("lock cycle", lock_cycle),
    ]
}

/// The comparisons named in `operations`, at each (pipeline, requests per client).
fn bench_throughput(srv: &Server, title: &str, runs: &[(usize, usize)], operations: &[&str]) {
    let shas = load_scripts(&mut srv.conn());
    println!(
        "\n### Throughput{title} (median of {ROUNDS} alternating rounds, {CLIENTS} clients)\n"
    );
    println!(
        "ops/s is what the clients saw; server CPU is the server's own user + system time per \
         command, which other load on the machine disturbs less.\n"
    );
    println!(
        "| operation | pipeline | contender | ops/s | module / contender | server CPU µs/op \
         | contender CPU / module CPU |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (what, contenders) in comparisons(is_valkey()) {
        if !operations.contains(&what) {
            continue;
        }
        for &(pipeline, per_client) in runs {
            let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
            let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
            for round in 0..ROUNDS {
                let mut order: Vec<usize> = (0..contenders.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    let (rate, cpu) = throughput(srv, &shas, &contenders[i], per_client, pipeline);
                    rates[i].push(rate);
                    cpus[i].push(cpu);
                }
            }
            let rates: Vec<f64> = rates.into_iter().map(median).collect();
            let cpus: Vec<f64> = cpus.into_iter().map(median).collect();
            let at = format!("pipeline {pipeline}{title}");
            for (i, c) in contenders.iter().enumerate() {
                println!(
                    "| {what} | {pipeline} | {} | {:.0} | {:.2}x | {:.2} | {:.2}x |",
                    c.name,
                    rates[i],
                    rates[0] / rates[i],
                    cpus[i],
                    cpus[i] / cpus[0],
                );
                report::record("throughput", c.name, &at, rates[i]);
                report::record("cpu", c.name, &at, cpus[i]);
                if i > 0 {
                    let series = format!("{} / {}", contenders[0].name, c.name);
                    report::record("ratio", &series, &at, rates[0] / rates[i]);
                    report::record("cpu-ratio", &series, &at, cpus[i] / cpus[0]);
                }
            }
        }
    }
}

/// The same comparisons with a replica attached, as in production: every contender's writes
/// now really travel (the module's effects, the core commands' rewritten forms, the scripts'
/// effects), so the propagation each one pays is part of what is measured.
fn bench_throughput_with_replica(srv: &Server) {
    let replica = start_server();
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
        let before = scale::used_memory(&mut con);
        fill(&mut con, module, n);
        let after = scale::used_memory(&mut con);
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

/// The bench-only floor module (LOCK_FLOOR, default the release build's).
fn floor_module() -> String {
    std::env::var("LOCK_FLOOR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/liblock_floor.so"
        )
        .into()
    })
}

/// A server with the lock module and, beside it, the floor module.
fn start_server() -> Server {
    Server::start_with(&[], &["--loadmodule", &floor_module()])
}

/// Whether the section `name` runs: all of them, or those BENCH_ONLY lists (comma-separated:
/// throughput, instructions, replica, contention, scale, shared).
fn wanted(name: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

fn main() {
    // `make bench` ends with a run that only draws the charts from every server's results.
    if std::env::var("BENCH_CHARTS").is_ok_and(|v| v == "1") {
        charts::draw();
        return;
    }
    let srv = start_server();
    let mut con = srv.conn();
    let version = info_field(&mut con, "server", "valkey_version")
        .or_else(|| info_field(&mut con, "server", "redis_version"))
        .unwrap_or_default();
    let server = format!("{} {version}", if is_valkey() { "Valkey" } else { "Redis" });
    report::begin(&server);
    println!("## {server} ({}), `make bench`", server_binary());
    if wanted("throughput") {
        bench_throughput(
            &srv,
            "",
            &[(1, scaled(4000)), (PIPELINE, scaled(40_000))],
            &["acquire", "renew", "release", "lock cycle"],
        );
    }
    if wanted("instructions") {
        instructions::run();
    }
    if wanted("replica") {
        bench_throughput_with_replica(&srv);
    }
    if wanted("contention") {
        contention::run(&srv);
    }
    if wanted("scale") {
        scale::run(&srv);
    }
    if wanted("shared") {
        bench_shared(&srv);
    }
}
