//! Scale: memory and per-command time with many locks, holders, waiters and ephemeral holds.
//! Nothing here asserts a time; only that the timed replies are the success replies.
//!
//! Printed tables (Markdown), one per part:
//!
//! - Exclusive locks: `| measure | locks already held | contender | value | module / contender |`
//!   (bytes per lock; µs per command = 1e6 / pipelined ops/s over one connection, for ACQUIRE of
//!   a new key, RENEW and RELEASE of the keys just taken, on an empty server and on one already
//!   holding 1,000,000 locks, or 1,000,000 strings for the string contenders).
//! - Shared holders and waiters: `| measure | 1 | 10 | ... | growth smallest -> largest |
//!   log2 bound | linear | verdict |`: the per-command cost at each size, the growth factor
//!   c(N) / c(n), the bound (1 + log2 N) / (1 + log2 n) that a cost growing with the logarithm
//!   of the size stays within, the linear factor N / n, and whether the growth is within the
//!   log2 bound.
//! - Ephemeral holds: `| measure | value |`.
//!
//! Figures recorded for the charts (`report::record("scale", series, x, value)`):
//!
//! - `exclusive: bytes per lock: <contender>`, x = locks held (`1000000`);
//! - `exclusive: µs per <ACQUIRE new key | RENEW | RELEASE>: <contender>`, x = locks already held
//!   (`0` or `1000000`);
//! - `shared: µs per <LOCK.RENEW | LOCK.ACQUIRE LIMIT + LOCK.RELEASE | LOCK.INFO>`, x = holders;
//!   `shared: bytes per holder`, x = holders; `shared: growth <measure>`, x = `n-N`;
//! - `waiters: µs per <joining ACQUIRE BLOCK | RELEASE handing off | leaving (disconnect)>`,
//!   x = waiters already queued; `waiters: bytes per waiter` and `waiters: bytes per idle
//!   connection`, x = waiters; `waiters: ms for all to disconnect`, x = waiters;
//!   `waiters: growth <measure>`, x = `n-N`;
//! - `ephemeral: ops/s <LOCK.ACQUIRE | LOCK.ACQUIRE EPHEMERAL>`, `ephemeral: bytes per hold
//!   <plain | EPHEMERAL>`, `ephemeral: ms to release all on close`, x = holds (`5000`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::{
    cmd, fill, is_grant, is_okay, is_one, load_script, median, rate, report, scaled, token,
    Prepare, LUA_RELEASE, LUA_RENEW, ROUNDS,
};

pub fn run(srv: &Server) {
    let start = Instant::now();
    bench_exclusive(srv);
    bench_holders(srv);
    bench_waiters();
    bench_ephemeral(srv);
    println!("\n(scale section: {:.0} s)", start.elapsed().as_secs_f64());
}

pub fn used_memory(con: &mut redis::Connection) -> i64 {
    info_field(con, "memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap()
}

fn us(ops_per_s: f64) -> f64 {
    1e6 / ops_per_s
}

fn flush(con: &mut redis::Connection) {
    call(con, &[b"FLUSHALL", b"SYNC"]);
}

/// The three timed commands of one contender on the keys `x:i`: (name, take, renew, give back).
type Make = fn(&str, &str, &(String, String)) -> redis::Cmd;
struct Exclusive {
    name: &'static str,
    background: Prepare,
    take: Make,
    take_ok: fn(&Value) -> bool,
    renew: Make,
    release: Make,
}

/// 1,000,000 exclusive locks: bytes per lock, and ACQUIRE / RENEW / RELEASE on an empty server
/// and on one holding them, beside SET NX PX and the usual Lua scripts on as many strings.
fn bench_exclusive(srv: &Server) {
    let n = scaled(1_000_000);
    let ops = scaled(30_000).max(64);
    let mut con = srv.conn();
    let shas = (
        load_script(&mut con, LUA_RENEW),
        load_script(&mut con, LUA_RELEASE),
    );
    let contenders = [
        Exclusive {
            name: "LOCK.*",
            background: Prepare::Locks,
            take: |k, t, _| cmd(&["LOCK.ACQUIRE", k, "60000", "TOKEN", t]),
            take_ok: is_grant,
            renew: |k, t, _| cmd(&["LOCK.RENEW", k, t, "60000"]),
            release: |k, t, _| cmd(&["LOCK.RELEASE", k, t]),
        },
        Exclusive {
            name: "SET NX PX + Lua",
            background: Prepare::Strings,
            take: |k, t, _| cmd(&["SET", k, t, "NX", "PX", "60000"]),
            take_ok: is_okay,
            renew: |k, t, s| cmd(&["EVALSHA", &s.0, "1", k, t, "60000"]),
            release: |k, t, s| cmd(&["EVALSHA", &s.1, "1", k, t]),
        },
    ];
    let keys: Vec<(String, String)> = (0..ops).map(|i| (format!("x:{i}"), token(n + i))).collect();
    let batch = |f: Make| -> Vec<redis::Cmd> { keys.iter().map(|(k, t)| f(k, t, &shas)).collect() };
    let batches: Vec<[Vec<redis::Cmd>; 3]> = contenders
        .iter()
        .map(|c| [batch(c.take), batch(c.renew), batch(c.release)])
        .collect();
    // One round: take, renew and give back every `x:i`; the three rates.
    let round = |con: &mut redis::Connection, i: usize| -> [f64; 3] {
        let b = &batches[i];
        [
            rate(con, &b[0], contenders[i].take_ok),
            rate(con, &b[1], is_one),
            rate(con, &b[2], is_one),
        ]
    };
    // rates[state][contender][command]: medians over the rounds.
    let mut rates = [[[0.0; 3]; 2]; 2];
    flush(&mut con);
    let mut samples: Vec<Vec<[f64; 3]>> = vec![Vec::new(); 2];
    for r in 0..ROUNDS {
        for i in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
            samples[i].push(round(&mut con, i));
        }
    }
    for i in 0..2 {
        for c in 0..3 {
            rates[0][i][c] = median(samples[i].iter().map(|s| s[c]).collect());
        }
    }
    let mut per_lock = Vec::new();
    for (i, c) in contenders.iter().enumerate() {
        flush(&mut con);
        let before = used_memory(&mut con);
        let held: Vec<(String, String)> = (0..n).map(|i| (format!("lock:{i}"), token(i))).collect();
        fill(&mut con, c.background, &held);
        drop(held);
        let after = used_memory(&mut con);
        per_lock.push((after - before) as f64 / n as f64);
        let s: Vec<[f64; 3]> = (0..ROUNDS).map(|_| round(&mut con, i)).collect();
        for k in 0..3 {
            rates[1][i][k] = median(s.iter().map(|x| x[k]).collect());
        }
    }
    flush(&mut con);

    println!("\n### Scale: exclusive locks ({n} held, 32-character tokens, pipeline 64)\n");
    println!("| measure | locks already held | contender | value | module / contender |");
    println!("|---|---|---|---|---|");
    let x = n.to_string();
    for (i, c) in contenders.iter().enumerate() {
        println!(
            "| bytes per lock | {n} | {} | {:.1} | {:.2}x |",
            c.name,
            per_lock[i],
            per_lock[0] / per_lock[i]
        );
        report::record(
            "scale",
            &format!("exclusive: bytes per lock: {}", c.name),
            &x,
            per_lock[i],
        );
    }
    for (k, what) in ["ACQUIRE new key", "RENEW", "RELEASE"].iter().enumerate() {
        for (state, held) in [(0, 0), (1, n)] {
            for (i, c) in contenders.iter().enumerate() {
                let t = us(rates[state][i][k]);
                println!(
                    "| µs per {what} | {held} | {} | {t:.2} | {:.2}x |",
                    c.name,
                    t / us(rates[state][0][k])
                );
                report::record(
                    "scale",
                    &format!("exclusive: µs per {what}: {}", c.name),
                    &held.to_string(),
                    t,
                );
            }
        }
        for (i, c) in contenders.iter().enumerate() {
            println!(
                "| µs per {what}: {n} held / empty | | {} | {:.2}x | |",
                c.name,
                rates[0][i][k] / rates[1][i][k]
            );
        }
    }
}

/// The sizes 1, 10, 100, ... up to `max` (and `max` itself), at least `from`.
fn sizes(from: usize, max: usize, step: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut s = from;
    while s < max {
        v.push(s);
        s *= step;
    }
    v.push(max);
    v
}

/// `| measure | values... | growth | log2 bound | linear | verdict |`, and the growth recorded.
fn growth_row(section: &str, what: &str, sizes: &[usize], values: &[f64], unit: &str) {
    let (n, big) = (sizes[0] as f64, *sizes.last().unwrap() as f64);
    let growth = values.last().unwrap() / values[0];
    let log_bound = (1.0 + big.log2()) / (1.0 + n.log2());
    let cells: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    println!(
        "| {what} ({unit}) | {} | {growth:.2}x | {log_bound:.1}x | {:.0}x | {} |",
        cells.join(" | "),
        big / n,
        if growth <= log_bound {
            "within log2"
        } else {
            "ABOVE log2"
        }
    );
    report::record(
        "scale",
        &format!("{section}: growth {what}"),
        &format!("{}-{}", sizes[0], sizes.last().unwrap()),
        growth,
    );
}

fn size_header(first: &str, sizes: &[usize]) {
    let cols: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    println!(
        "| {first} | {} | growth {} -> {} | log2 bound | linear | verdict |",
        cols.join(" | "),
        sizes[0],
        sizes.last().unwrap()
    );
    println!("|---|{}---|---|---|---|", "---|".repeat(sizes.len()));
}

/// Shared holders (LIMIT 20000) on one key: RENEW of one holder, ACQUIRE + RELEASE of one more
/// holder, LOCK.INFO, at 1, 10, ... 10,000 holders; bytes per holder.
fn bench_holders(srv: &Server) {
    let max = scaled(10_000).max(10);
    let ops = scaled(20_000).max(64);
    let sizes = sizes(1, max, 10);
    let mut con = srv.conn();
    let limit = "20000";
    let extra = "extra-holder-token";
    let info_ok: fn(&Value) -> bool = |v| matches!(v, Value::Array(a) if !a.is_empty());
    let cycle_ok: fn(&Value) -> bool = |v| is_grant(v) || is_one(v);
    // [renew, take + give back, info] µs at each size; bytes per holder at each size.
    let mut cost: Vec<[f64; 3]> = Vec::new();
    let mut bytes = Vec::new();
    for &h in &sizes {
        flush(&mut con);
        let before = used_memory(&mut con);
        for chunk in (0..h).collect::<Vec<_>>().chunks(1000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.add_command(cmd(&[
                    "LOCK.ACQUIRE",
                    "sem",
                    "600000",
                    "LIMIT",
                    limit,
                    "TOKEN",
                    &token(i),
                ]));
            }
            let replies: Vec<Value> = pipe.query(&mut con).unwrap();
            assert!(replies.iter().all(is_grant), "a holder was refused");
        }
        bytes.push((used_memory(&mut con) - before) as f64 / h as f64);
        let renews: Vec<redis::Cmd> = (0..ops)
            .map(|i| cmd(&["LOCK.RENEW", "sem", &token(i * 7919 % h), "600000"]))
            .collect();
        let mut cycle = Vec::new();
        for _ in 0..ops / 2 {
            cycle.push(cmd(&[
                "LOCK.ACQUIRE",
                "sem",
                "600000",
                "LIMIT",
                limit,
                "TOKEN",
                extra,
            ]));
            cycle.push(cmd(&["LOCK.RELEASE", "sem", extra]));
        }
        let infos: Vec<redis::Cmd> = (0..ops).map(|_| cmd(&["LOCK.INFO", "sem"])).collect();
        let rounds = ROUNDS.min(3);
        let renew = median(
            (0..rounds)
                .map(|_| rate(&mut con, &renews, is_one))
                .collect(),
        );
        // Per pair: the rate counts commands, a pair is two.
        let take = median(
            (0..rounds)
                .map(|_| rate(&mut con, &cycle, cycle_ok))
                .collect(),
        ) / 2.0;
        let info = median(
            (0..rounds)
                .map(|_| rate(&mut con, &infos, info_ok))
                .collect(),
        );
        assert_eq!(lock_info_of(&mut con, b"sem").unwrap().holders, h as i64);
        cost.push([us(renew), us(take), us(info)]);
    }
    flush(&mut con);

    println!("\n### Scale: shared holders on one lock (LIMIT {limit}, pipeline 64)\n");
    println!(
        "Per-command time (µs = 1e6 / pipelined ops/s) at each number of holders; the growth \
         factor from the fewest to the most holders beside the factor (1 + log2 N) / (1 + log2 n) \
         a logarithmic cost stays within.\n"
    );
    size_header("measure / holders", &sizes);
    let names = [
        "LOCK.RENEW of one holder",
        "LOCK.ACQUIRE LIMIT + LOCK.RELEASE of one more holder",
        "LOCK.INFO",
    ];
    for (k, what) in names.iter().enumerate() {
        let values: Vec<f64> = cost.iter().map(|c| c[k]).collect();
        growth_row("shared", what, &sizes, &values, "µs");
        for (&h, v) in sizes.iter().zip(&values) {
            report::record(
                "scale",
                &format!("shared: µs per {what}"),
                &h.to_string(),
                *v,
            );
        }
    }
    // Below 1,000 holders the lock's growth is smaller than what the server's own buffers move
    // between two INFO readings (one run measured -1,922 bytes per holder at 10), so it is not
    // shown there.
    let cells: Vec<String> = sizes
        .iter()
        .zip(&bytes)
        .map(|(&h, b)| {
            if h >= 1000 {
                format!("{b:.1}")
            } else {
                "–".to_string()
            }
        })
        .collect();
    println!(
        "| bytes per holder (the key included; from 1000 holders, below it the server's own \
         buffers move more) | {} | | | | |",
        cells.join(" | ")
    );
    for (&h, b) in sizes.iter().zip(&bytes).filter(|(&h, _)| h >= 1000) {
        report::record("scale", "shared: bytes per holder", &h.to_string(), *b);
    }
}

/// `MEMORY USAGE key SAMPLES 0`: what the server (and the module's callback) counts for a key.
fn memory_usage(con: &mut redis::Connection, key: &str) -> i64 {
    int(call(
        con,
        &[b"MEMORY", b"USAGE", key.as_bytes(), b"SAMPLES", b"0"],
    ))
}

/// `INFO clients` `connected_clients`.
fn connected(con: &mut redis::Connection) -> usize {
    info_field(con, "clients", "connected_clients")
        .unwrap()
        .parse()
        .unwrap()
}

/// `count` new raw connections, once the server has accepted them all (connected in chunks, so
/// the listen backlog never overflows).
fn connect_many(srv: &Server, con: &mut redis::Connection, count: usize) -> Vec<Raw> {
    let base = connected(con);
    let mut raws = Vec::with_capacity(count);
    while raws.len() < count {
        for _ in 0..(count - raws.len()).min(200) {
            raws.push(srv.raw());
        }
        wait_for_within("the server to accept", Duration::from_secs(60), || {
            connected(con) >= base + raws.len()
        });
    }
    raws
}

/// Poll LOCK.INFO without pause until `key` has `n` waiters (60 s at most).
fn wait_waiters(con: &mut redis::Connection, key: &str, n: usize) {
    let start = Instant::now();
    while waiters(con, key) != n as i64 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {n} waiters (now {})",
            waiters(con, key)
        );
    }
}

/// Waiters on one key, on a server of their own (maxclients 20500): bytes per waiter, and at
/// queues of 1, 100, 1000, 10,000: the time of joining ACQUIRE BLOCKs, of RELEASEs that hand the
/// lock to the head, and of waiters leaving by disconnecting.
/// This process's soft limit of open files (from /proc/self/limits; 1024 if unknown).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| match l.split_whitespace().nth(3)? {
                    "unlimited" => Some(usize::MAX),
                    n => n.parse().ok(),
                })
        })
        .unwrap_or(1024)
}

/// The BLOCK timeout of the waiters: longer than the section runs, so none times out.
const BLOCK_MS: u64 = 600_000;

fn bench_waiters() {
    let srv = Server::start_with(&[], &["--maxclients", "20500"]);
    let wanted = scaled(10_000).max(10);
    // Each waiter is one socket here and one in the server: stay within the fd limit.
    let fds = open_files_limit();
    let max = wanted.min(fds.saturating_sub(500)).max(10);
    if max < wanted {
        println!(
            "\n(waiters: {max} instead of {wanted}, as the open-files limit is {fds}; \
             raise it with `ulimit -n {}`)",
            wanted + 1000
        );
    }
    let batch = scaled(100).clamp(2, 100).min(max);
    let sizes = sizes(1, max, 10)
        .into_iter()
        .filter(|&s| s == 1 || s >= 100 || s == max)
        .collect::<Vec<_>>();
    let key = "w";
    let mut con = srv.conn();
    let mut owner = "first-owner".to_string();
    assert!(is_grant(&call(
        &mut con,
        &[
            b"LOCK.ACQUIRE",
            key.as_bytes(),
            b"600000",
            b"TOKEN",
            owner.as_bytes()
        ]
    )));
    let mut next = 0usize;
    let mut queue: VecDeque<(Raw, String)> = VecDeque::new();
    // Send the blocking ACQUIREs of `raws` (each with a new token), queued at the back.
    let send = |raws: Vec<Raw>, queue: &mut VecDeque<(Raw, String)>, next: &mut usize| {
        for mut raw in raws {
            let t = format!("waiter-{next}");
            *next += 1;
            raw.send_acquire_blocking(key, 600_000, &t, BLOCK_MS);
            queue.push_back((raw, t));
        }
    };
    // Connect `count`, send their blocking ACQUIREs: the wall time until the queue counts them.
    let join =
        |con: &mut redis::Connection, queue: &mut VecDeque<(Raw, String)>, next: &mut usize| {
            let raws = connect_many(&srv, con, batch);
            let target = queue.len() + batch;
            let start = Instant::now();
            send(raws, queue, next);
            wait_waiters(con, key, target);
            start.elapsed().as_secs_f64()
        };
    // [join, hand-off, leave] µs at each size.
    let mut cost: Vec<[f64; 3]> = Vec::new();
    let mut idle_bytes = 0.0;
    let mut waiter_bytes = 0.0;
    let mut grown = 0;
    for &n in &sizes {
        // Grow the queue to n; the memory of the largest growth.
        let add = n - queue.len();
        let before = used_memory(&mut con);
        let raws = connect_many(&srv, &mut con, add);
        let connected_mem = used_memory(&mut con);
        send(raws, &mut queue, &mut next);
        wait_waiters(&mut con, key, n);
        let after = used_memory(&mut con);
        if add > grown {
            grown = add;
            idle_bytes = (connected_mem - before) as f64 / add as f64;
            waiter_bytes = (after - before) as f64 / add as f64;
        }
        // Joining: `batch` more at the tail (n -> n + batch).
        let joined = join(&mut con, &mut queue, &mut next);
        // Handing off: `batch` releases pipelined on one connection, each by the token of the
        // holder the previous one granted (n + batch -> n).
        let mut tokens = vec![owner.clone()];
        let granted: Vec<(Raw, String)> = (0..batch).map(|_| queue.pop_front().unwrap()).collect();
        tokens.extend(granted.iter().take(batch - 1).map(|(_, t)| t.clone()));
        let releases: Vec<redis::Cmd> = tokens
            .iter()
            .map(|t| cmd(&["LOCK.RELEASE", key, t]))
            .collect();
        let handoff = us(rate(&mut con, &releases, is_one));
        for (mut raw, t) in granted {
            match redis::parse_redis_value(&raw.read_reply()).unwrap() {
                Value::Array(a)
                    if a.first() == Some(&Value::BulkString(t.clone().into_bytes())) => {}
                other => panic!("waiter {t} was not granted: {other:?}"),
            }
            owner = t;
        }
        assert_eq!(waiters(&mut con, key), n as i64);
        // Leaving: `batch` more join, then close their connections (n + batch -> n).
        let joined_again = join(&mut con, &mut queue, &mut next);
        let leavers: Vec<(Raw, String)> = (0..batch).map(|_| queue.pop_back().unwrap()).collect();
        let start = Instant::now();
        drop(leavers);
        wait_waiters(&mut con, key, n);
        let leave = start.elapsed().as_secs_f64() * 1e6 / batch as f64;
        let join_us = (joined + joined_again) * 1e6 / (2 * batch) as f64;
        cost.push([join_us, handoff, leave]);
    }
    // What the module says the key with its queue takes.
    let total = queue.len();
    let key_usage = memory_usage(&mut con, key);
    // All of them leave at once.
    let start = Instant::now();
    drop(queue);
    wait_waiters(&mut con, key, 0);
    let all_gone_ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(info_lock_stat(&mut con, "waiting"), 0);
    // The server's own blocking wait, measured the same way: as many BLPOPs on one list.
    let before = used_memory(&mut con);
    let raws = connect_many(&srv, &mut con, grown);
    let connected_mem = used_memory(&mut con);
    let mut blpops = Vec::with_capacity(grown);
    for mut raw in raws {
        raw.send(&[b"BLPOP", b"list", b"600"]);
        blpops.push(raw);
    }
    wait_for_within("the BLPOPs to block", Duration::from_secs(60), || {
        info_field(&mut con, "clients", "blocked_clients").as_deref() == Some(&grown.to_string())
    });
    let blpop_bytes = (used_memory(&mut con) - before) as f64 / grown as f64;
    let blpop_idle = (connected_mem - before) as f64 / grown as f64;
    drop(blpops);

    println!(
        "\n### Scale: waiters on one lock (ACQUIRE ... BLOCK, one connection each, batches of {batch})\n"
    );
    println!(
        "Joining: wall time from sending {batch} blocking ACQUIREs (on connections already \
         accepted) until LOCK.INFO counts them, per waiter. Hand-off: {batch} RELEASEs pipelined \
         on one connection, each handing the lock to the head of the queue (from n + {batch} \
         waiting down to n). Leaving: {batch} waiters at the tail close their connections, wall \
         time until the queue is back to n, per waiter.\n"
    );
    size_header("measure / waiters queued", &sizes);
    let names = [
        "one more ACQUIRE BLOCK joining",
        "RELEASE handing off to the head",
        "a waiter leaving (disconnect)",
    ];
    for (k, what) in names.iter().enumerate() {
        let values: Vec<f64> = cost.iter().map(|c| c[k]).collect();
        growth_row("waiters", what, &sizes, &values, "µs");
        for (&n, v) in sizes.iter().zip(&values) {
            report::record(
                "scale",
                &format!("waiters: µs per {what}"),
                &n.to_string(),
                *v,
            );
        }
    }
    println!("\n| measure | value |");
    println!("|---|---|");
    println!("| bytes per waiting connection ({grown} added) | {waiter_bytes:.0} |");
    println!("| of which the idle connection | {idle_bytes:.0} |");
    println!(
        "| of which the wait (module and blocked client) | {:.0} |",
        waiter_bytes - idle_bytes
    );
    println!("| bytes per connection waiting in BLPOP, for comparison | {blpop_bytes:.0} |");
    println!("| of which the idle connection | {blpop_idle:.0} |");
    println!("| of which the wait | {:.0} |", blpop_bytes - blpop_idle);
    println!(
        "| MEMORY USAGE of the lock key with {total} waiters, per waiter | {:.1} |",
        key_usage as f64 / total as f64
    );
    println!("| ms for all {total} waiters to disconnect | {all_gone_ms:.1} |");
    report::record(
        "scale",
        "waiters: bytes per BLPOP waiter",
        &grown.to_string(),
        blpop_bytes,
    );
    let x = grown.to_string();
    report::record("scale", "waiters: bytes per waiter", &x, waiter_bytes);
    report::record(
        "scale",
        "waiters: bytes per idle connection",
        &x,
        idle_bytes,
    );
    report::record(
        "scale",
        "waiters: ms for all to disconnect",
        &total.to_string(),
        all_gone_ms,
    );
}

/// 5,000 ephemeral holds on one connection: bytes per hold, ACQUIRE EPHEMERAL ops/s beside a
/// plain ACQUIRE, and the time until the server has released all of them once the connection
/// closes.
fn bench_ephemeral(srv: &Server) {
    let n = scaled(5_000).max(64);
    let mut con = srv.conn();
    let mut plain_rates = Vec::new();
    let mut eph_rates = Vec::new();
    let mut close_ms = Vec::new();
    let (mut plain_bytes, mut eph_bytes) = (0.0, 0.0);
    let mut usage = (0, 0);
    for round in 0..ROUNDS {
        flush(&mut con);
        let plain: Vec<redis::Cmd> = (0..n)
            .map(|i| {
                cmd(&[
                    "LOCK.ACQUIRE",
                    &format!("p:{i}"),
                    "60000",
                    "TOKEN",
                    &token(i),
                ])
            })
            .collect();
        let eph: Vec<redis::Cmd> = (0..n)
            .map(|i| {
                cmd(&[
                    "LOCK.ACQUIRE",
                    &format!("e:{i}"),
                    "60000",
                    "TOKEN",
                    &token(i),
                    "EPHEMERAL",
                ])
            })
            .collect();
        let mut holder = srv.conn();
        for first in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let before = used_memory(&mut con);
            if first {
                plain_rates.push(rate(&mut holder, &plain, is_grant));
            } else {
                eph_rates.push(rate(&mut holder, &eph, is_grant));
            }
            let bytes = (used_memory(&mut con) - before) as f64 / n as f64;
            if round == 0 {
                if first {
                    plain_bytes = bytes;
                } else {
                    eph_bytes = bytes;
                }
            }
        }
        if round == 0 {
            usage = (memory_usage(&mut con, "p:0"), memory_usage(&mut con, "e:0"));
        }
        assert_eq!(info_lock_stat(&mut con, "ephemeral_holds"), n as u64);
        assert_eq!(info_lock_stat(&mut con, "keys"), 2 * n as u64);
        let start = Instant::now();
        drop(holder);
        let limit = Duration::from_secs(30);
        while info_lock_stat(&mut con, "ephemeral_holds") != 0 {
            assert!(
                start.elapsed() < limit,
                "the ephemeral holds were not released"
            );
        }
        while info_lock_stat(&mut con, "keys") != n as u64 {
            assert!(
                start.elapsed() < limit,
                "the ephemeral locks were not freed"
            );
        }
        close_ms.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(int(call(&mut con, &[b"EXISTS", b"e:0"])), 0);
        assert_eq!(int(call(&mut con, &[b"EXISTS", b"p:0"])), 1);
    }
    flush(&mut con);
    let (plain, eph, close) = (median(plain_rates), median(eph_rates), median(close_ms));
    println!("\n### Scale: {n} ephemeral holds on one connection (pipeline 64)\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| LOCK.ACQUIRE ops/s (new keys) | {plain:.0} |");
    println!(
        "| LOCK.ACQUIRE EPHEMERAL ops/s (new keys) | {eph:.0} ({:.2}x of plain) |",
        eph / plain
    );
    println!("| bytes per plain hold (the key included) | {plain_bytes:.1} |");
    println!(
        "| bytes per EPHEMERAL hold (the key included) | {eph_bytes:.1} (+{:.1}) |",
        eph_bytes - plain_bytes
    );
    println!(
        "| MEMORY USAGE of one key: plain / EPHEMERAL | {} / {} |",
        usage.0, usage.1
    );
    println!("| ms from closing the connection until all {n} are released (median of {ROUNDS}) | {close:.1} |");
    let x = n.to_string();
    report::record("scale", "ephemeral: ops/s LOCK.ACQUIRE", &x, plain);
    report::record("scale", "ephemeral: ops/s LOCK.ACQUIRE EPHEMERAL", &x, eph);
    report::record("scale", "ephemeral: bytes per hold plain", &x, plain_bytes);
    report::record(
        "scale",
        "ephemeral: bytes per hold EPHEMERAL",
        &x,
        eph_bytes,
    );
    report::record("scale", "ephemeral: ms to release all on close", &x, close);
}
