//! Hot-key contention: many clients on one lock, by each way of waiting.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::{cmd, is_grant, is_okay, load_scripts, scaled};

pub fn run(srv: &Server) {
    bench_handoff(srv);
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
