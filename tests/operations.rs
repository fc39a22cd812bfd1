//! What operators rely on: ACL key patterns, command docs and key specs, the eviction guard,
//! OOM behaviour, configs, and mutual exclusion under many concurrent clients.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn acl_key_patterns_apply_to_locks() {
    let srv = Server::start();
    let mut admin = srv.conn();
    call(
        &mut admin,
        &[
            b"ACL",
            b"SETUSER",
            b"orders",
            b"on",
            b">pw",
            b"~orders:*",
            b"+@all",
        ],
    );
    call(
        &mut admin,
        &[
            b"ACL",
            b"SETUSER",
            b"reader",
            b"on",
            b">pw",
            b"%R~locks:*",
            b"+@all",
        ],
    );
    acquire(&mut admin, "locks:a", 10_000, "admin").unwrap();

    let mut orders = srv.conn();
    call(&mut orders, &[b"AUTH", b"orders", b"pw"]);
    assert!(acquire(&mut orders, "orders:1", 10_000, "o").is_some());
    for cmd in [
        &[&b"LOCK.ACQUIRE"[..], b"other:1", b"1000"][..],
        &[b"LOCK.RENEW", b"other:1", b"o", b"1000"],
        &[b"LOCK.RELEASE", b"other:1", b"o"],
        &[b"LOCK.INFO", b"other:1"],
    ] {
        let err = call_err(&mut orders, cmd);
        assert!(err.starts_with("NOPERM"), "{cmd:?}: {err}");
    }

    let mut reader = srv.conn();
    call(&mut reader, &[b"AUTH", b"reader", b"pw"]);
    assert!(info(&mut reader, b"locks:a").is_some());
    for cmd in [
        &[&b"LOCK.ACQUIRE"[..], b"locks:a", b"1000"][..],
        &[b"LOCK.RENEW", b"locks:a", b"admin", b"1000"],
        &[b"LOCK.RELEASE", b"locks:a", b"admin"],
    ] {
        let err = call_err(&mut reader, cmd);
        assert!(err.starts_with("NOPERM"), "{cmd:?}: {err}");
    }
    assert!(
        info(&mut admin, b"locks:a").is_some(),
        "the refused RELEASE freed nothing"
    );
}

#[test]
fn command_docs_and_key_specs() {
    let srv = Server::start();
    let mut con = srv.conn();
    let docs = format!(
        "{:?}",
        call(&mut con, &[b"COMMAND", b"DOCS", b"lock.acquire"])
    );
    for word in ["summary", "arguments", "ttl", "TOKEN", "BLOCK", "optional"] {
        assert!(docs.contains(word), "{word} missing from {docs}");
    }
    for cmd in ["lock.renew", "lock.release", "lock.info"] {
        let docs = format!(
            "{:?}",
            call(&mut con, &[b"COMMAND", b"DOCS", cmd.as_bytes()])
        );
        assert!(
            docs.contains("summary") && docs.contains("key"),
            "{cmd}: {docs}"
        );
    }
    let info = format!(
        "{:?}",
        call(
            &mut con,
            &[
                b"COMMAND",
                b"INFO",
                b"lock.info",
                b"lock.release",
                b"lock.acquire"
            ]
        )
    );
    assert!(info.contains("\"RO\"") || info.contains("RO"), "{info}");
    assert!(
        info.contains("\"delete\"") || info.contains("delete"),
        "{info}"
    );
    assert!(info.contains("update"), "{info}");
    assert!(
        info.contains("deny-oom") || info.contains("denyoom"),
        "{info}"
    );
    let keys = call(
        &mut con,
        &[
            b"COMMAND",
            b"GETKEYS",
            b"LOCK.ACQUIRE",
            b"my:key",
            b"100",
            b"TOKEN",
            b"t",
        ],
    );
    assert_eq!(
        keys,
        Value::Array(vec![Value::BulkString(b"my:key".to_vec())])
    );
    // Arity is the server's to check.
    let err = call_err(&mut con, &[b"LOCK.RENEW", b"k"]);
    assert!(err.contains("wrong number of arguments"), "{err}");
}

#[test]
fn acquire_is_refused_while_the_server_may_evict_keys() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "held", 60_000, "me").unwrap();
    call(&mut con, &[b"CONFIG", b"SET", b"maxmemory", b"1gb"]);
    // maxmemory with noeviction: locks are fine.
    assert!(acquire(&mut con, "a", 1_000, "me").is_some());
    for policy in [
        "allkeys-lru",
        "volatile-ttl",
        "volatile-lru",
        "allkeys-random",
        "volatile-lfu",
    ] {
        call(
            &mut con,
            &[b"CONFIG", b"SET", b"maxmemory-policy", policy.as_bytes()],
        );
        let err = call_err(&mut con, &[b"LOCK.ACQUIRE", b"b", b"1000"]);
        assert!(
            err.starts_with("ERR") && err.contains("noeviction"),
            "{policy}: {err}"
        );
        assert_eq!(int(call(&mut con, &[b"EXISTS", b"b"])), 0);
        // RENEW and RELEASE keep working so owners can finish.
        assert_eq!(
            int(call(&mut con, &[b"LOCK.RENEW", b"held", b"me", b"60000"])),
            1
        );
    }
    assert!(srv.log().contains("may evict lock keys"), "{}", srv.log());
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"held", b"me"])), 1);
    call(
        &mut con,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction"],
    );
    assert!(acquire(&mut con, "b", 1_000, "me").is_some());
    assert!(srv.log().contains("no longer possible"), "{}", srv.log());
    // maxmemory 0 means no eviction at all, whatever the policy.
    call(
        &mut con,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"],
    );
    call(&mut con, &[b"CONFIG", b"SET", b"maxmemory", b"0"]);
    assert!(acquire(&mut con, "c", 1_000, "me").is_some());
}

#[test]
fn a_server_started_with_an_eviction_policy_warns_at_load() {
    let srv = Server::start_with(
        &[],
        &["--maxmemory", "100mb", "--maxmemory-policy", "volatile-lru"],
    );
    assert!(srv.log().contains("may evict lock keys"), "{}", srv.log());
    let err = call_err(&mut srv.conn(), &[b"LOCK.ACQUIRE", b"k", b"1000"]);
    assert!(err.contains("noeviction"), "{err}");
}

#[test]
fn under_memory_pressure_acquire_gets_oom_while_renew_and_release_work() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "held", 60_000, "me").unwrap();
    call(&mut con, &[b"CONFIG", b"SET", b"maxmemory", b"1"]);
    let err = call_err(&mut con, &[b"LOCK.ACQUIRE", b"k", b"1000"]);
    assert!(err.starts_with("OOM"), "{err}");
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"held", b"me", b"60000"])),
        1
    );
    assert!(info(&mut con, b"held").is_some());
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"held", b"me"])), 1);
    call(&mut con, &[b"CONFIG", b"SET", b"maxmemory", b"0"]);
    assert!(acquire(&mut con, "k", 1_000, "me").is_some());
}

#[test]
fn max_ttl_is_a_config_with_a_range_and_a_load_time_argument() {
    let srv = Server::start_with(&["max-ttl", "5000"], &[]);
    let mut con = srv.conn();
    let v = call(&mut con, &[b"CONFIG", b"GET", b"lock.max-ttl"]);
    assert_eq!(
        v,
        Value::Array(vec![
            Value::BulkString(b"lock.max-ttl".to_vec()),
            Value::BulkString(b"5000".to_vec())
        ])
    );
    assert!(call_err(&mut con, &[b"LOCK.ACQUIRE", b"k", b"5001"]).contains("max-ttl"));
    assert!(acquire(&mut con, "k", 5_000, "me").is_some());
    let err = call_err(&mut con, &[b"CONFIG", b"SET", b"lock.max-ttl", b"-1"]);
    assert!(err.starts_with("ERR"), "{err}");
    let err = call_err(&mut con, &[b"CONFIG", b"SET", b"lock.max-ttl", b"soon"]);
    assert!(err.starts_with("ERR"), "{err}");
    call(&mut con, &[b"CONFIG", b"SET", b"lock.max-ttl", b"0"]);
    assert!(acquire(&mut con, "k2", 86_400_000, "me").is_some());
}

/// Many clients contend on one key: never two holders at once, and the fences of successive
/// holders strictly increase.
#[test]
fn concurrent_clients_never_hold_one_lock_together() {
    let srv = Server::start();
    let in_section = Arc::new(AtomicBool::new(false));
    let fences = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..12)
        .map(|w| {
            let mut con = srv.conn();
            let in_section = in_section.clone();
            let fences = fences.clone();
            thread::spawn(move || {
                let token = format!("worker-{w}");
                let mut grants = 0;
                let mut attempts = 0;
                while Instant::now() < deadline && attempts < 20_000 {
                    attempts += 1;
                    let Some(fence) = acquire(&mut con, "shared", 10_000, &token) else {
                        continue;
                    };
                    assert!(
                        !in_section.swap(true, Ordering::SeqCst),
                        "two holders at once"
                    );
                    fences.lock().unwrap().push(fence);
                    thread::sleep(Duration::from_micros(200));
                    in_section.store(false, Ordering::SeqCst);
                    assert_eq!(
                        int(call(
                            &mut con,
                            &[b"LOCK.RELEASE", b"shared", token.as_bytes()]
                        )),
                        1
                    );
                    grants += 1;
                }
                grants
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let fences = fences.lock().unwrap();
    assert_eq!(fences.len(), total);
    assert!(total > 50, "only {total} grants");
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences not increasing"
    );
    srv.assert_alive();
}
