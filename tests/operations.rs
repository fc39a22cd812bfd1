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
    // SHARED | LIMIT n: one optional choice of a pure token and an integer.
    for word in ["oneof", "pure-token", "SHARED", "LIMIT", "limit"] {
        assert!(docs.contains(word), "{word} missing from {docs}");
    }
    for cmd in ["lock.renew", "lock.release", "lock.info", "lock.holders"] {
        let docs = format!(
            "{:?}",
            call(&mut con, &[b"COMMAND", b"DOCS", cmd.as_bytes()])
        );
        assert!(
            docs.contains("summary") && docs.contains("key"),
            "{cmd}: {docs}"
        );
    }
    // The internal effect command takes its holder as one argument (since 0.4): at least
    // `LOCK.APPLY key hold`, and its docs name the hold.
    let apply = call(&mut con, &[b"COMMAND", b"INFO", b"lock.apply"]);
    let redis::Value::Array(entries) = &apply else {
        panic!("{apply:?}")
    };
    let redis::Value::Array(entry) = &entries[0] else {
        panic!("{apply:?}")
    };
    assert_eq!(entry[1], redis::Value::Int(-3), "{apply:?}");
    let docs = format!(
        "{:?}",
        call(&mut con, &[b"COMMAND", b"DOCS", b"lock.apply"])
    );
    assert!(
        docs.contains("hold") && docs.contains("deadline:fence:token"),
        "{docs}"
    );
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

/// ACL categories: where the server supports them for modules (Redis 7.2+, Valkey), the write
/// commands are in @write, LOCK.INFO in @read, ACQUIRE in @blocking, the short ones in @fast,
/// and the four in the module's own @lock. Redis 7.0 puts module commands in no category.
#[test]
fn acl_categories_sort_the_commands() {
    let srv = Server::start();
    let mut admin = srv.conn();
    let category = |con: &mut redis::Connection, name: &str| -> Vec<String> {
        let mut names: Vec<String> = redis::cmd("ACL")
            .arg("CAT")
            .arg(name)
            .query::<Vec<String>>(con)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.starts_with("lock."))
            .collect();
        names.sort();
        names
    };
    if !has_module_acl_categories(&mut admin) {
        assert_eq!(category(&mut admin, "write"), Vec::<String>::new());
        return;
    }
    let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        category(&mut admin, "write"),
        list(&[
            "lock.acquire",
            "lock.apply",
            "lock.clock",
            "lock.drop",
            "lock.release",
            "lock.renew"
        ])
    );
    assert_eq!(
        category(&mut admin, "read"),
        list(&["lock.holders", "lock.info"])
    );
    assert_eq!(category(&mut admin, "blocking"), list(&["lock.acquire"]));
    assert_eq!(
        category(&mut admin, "fast"),
        list(&["lock.info", "lock.release", "lock.renew"])
    );
    assert_eq!(
        category(&mut admin, "lock"),
        list(&[
            "lock.acquire",
            "lock.holders",
            "lock.info",
            "lock.release",
            "lock.renew"
        ])
    );
    acquire(&mut admin, "k", 60_000, "admin").unwrap();
    let user = |name: &str, rules: &[&str]| {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes(), b"on", b">pw", b"~*"];
        args.extend(rules.iter().map(|r| r.as_bytes()));
        call(&mut srv.conn(), &args);
        let mut con = srv.conn();
        call(&mut con, &[b"AUTH", name.as_bytes(), b"pw"]);
        con
    };
    let writes: [&[&[u8]]; 3] = [
        &[b"LOCK.ACQUIRE", b"k2", b"1000"],
        &[b"LOCK.RENEW", b"k", b"admin", b"60000"],
        &[b"LOCK.RELEASE", b"k", b"nobody"],
    ];
    // Meant as read-only: +@all -@write.
    let mut read_only = user("ro", &["+@all", "-@write"]);
    assert!(info(&mut read_only, b"k").is_some());
    for cmd in writes {
        let err = call_err(&mut read_only, cmd);
        assert!(err.starts_with("NOPERM"), "{cmd:?}: {err}");
    }
    // +@read +@write runs all four; so does +@lock, which grants nothing else.
    for rules in [&["+@read", "+@write"][..], &["+@lock"]] {
        let mut con = user("rw", rules);
        assert!(info(&mut con, b"k").is_some(), "{rules:?}");
        assert_eq!(call(&mut con, writes[1]), Value::Int(1), "{rules:?}");
        assert_eq!(call(&mut con, writes[2]), Value::Int(0), "{rules:?}");
        assert!(grant(&call(&mut con, writes[0])).is_some(), "{rules:?}");
        call(&mut admin, &[b"DEL", b"k2"]);
    }
    let mut lock_only = user("lockonly", &["+@lock"]);
    let err = call_err(&mut lock_only, &[b"GET", b"k"]);
    assert!(err.starts_with("NOPERM"), "{err}");
}

/// Load-time arguments are checked as CONFIG SET checks values: a wrong one stops the module
/// from loading (and so the server from starting) with a log line naming it.
#[test]
fn wrong_module_arguments_stop_the_module_from_loading() {
    for (args, expected) in [
        (
            &["max-ttl", "-1"][..],
            "module argument max-ttl -1 is out of range",
        ),
        (
            &["max-waiters", "-3"],
            "module argument max-waiters -3 is out of range",
        ),
        (&["bogus", "1"], "unknown module argument 'bogus'"),
        (
            &["max-ttl", "abc"],
            "module argument max-ttl 'abc' is not a whole number",
        ),
        (&["max-ttl"], "module argument max-ttl has no value"),
        (
            &["fence-jump", "86400001"],
            "module argument fence-jump 86400001 is out of range",
        ),
    ] {
        let log = start_refused(args);
        assert!(log.contains(expected), "{args:?}:\n{log}");
    }
    // Right ones are taken; a config line (as CONFIG REWRITE writes) overrides them.
    let srv = Server::start_with(
        &["max-waiters", "3", "fence-jump", "0", "max-ttl", "5000"],
        &["--lock.max-ttl", "7000"],
    );
    let mut con = srv.conn();
    let get = |con: &mut redis::Connection, name: &str| -> String {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(con)
            .unwrap();
        v[1].clone()
    };
    assert_eq!(get(&mut con, "lock.max-waiters"), "3");
    assert_eq!(get(&mut con, "lock.fence-jump"), "0");
    assert_eq!(get(&mut con, "lock.max-ttl"), "7000");
    assert_eq!(get(&mut con, "lock.fence-max-ahead"), "86400000");
}

/// MODULE LIST shows the crate's version as major * 10000 + minor * 100 + patch, and the
/// server's log has no warning from the module at start.
#[test]
fn module_list_shows_the_crate_version_and_the_start_is_quiet() {
    let srv = Server::start();
    let mut con = srv.conn();
    let modules: Vec<Vec<Value>> = redis::cmd("MODULE").arg("LIST").query(&mut con).unwrap();
    let lock = modules
        .iter()
        .find(|m| m.get(1) == Some(&Value::BulkString(b"lock".to_vec())))
        .expect("the module is listed");
    let [major, minor, patch] = [
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    ]
    .map(|p| p.parse::<i64>().unwrap());
    assert_eq!(
        lock.get(3),
        Some(&Value::Int(major * 10_000 + minor * 100 + patch))
    );
    let log = srv.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("<lock>")).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(
        ours[0].contains("Created new data type 'fencelock'"),
        "{ours:?}"
    );
}

/// Active defragmentation moves lock values and long tokens and leaves every lock intact.
/// Only servers built with the defrag-aware jemalloc (Redis 8 here) can run it; the others
/// refuse `activedefrag yes`.
#[test]
fn active_defrag_keeps_every_lock() {
    let srv = Server::start();
    let mut con = srv.conn();
    let enable = redis::cmd("CONFIG")
        .arg("SET")
        .arg("activedefrag")
        .arg("yes")
        .query::<Value>(&mut con);
    if enable.is_err() {
        let version = info_field(&mut con, "server", "redis_version").unwrap_or_default();
        assert!(
            is_valkey() || version.starts_with("7."),
            "Redis {version} refused activedefrag: {enable:?}"
        );
        return;
    }
    call(&mut con, &[b"CONFIG", b"SET", b"activedefrag", b"no"]);
    let token = |i: usize| format!("{i:040}");
    let n = 60_000;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("LOCK.ACQUIRE")
            .arg(format!("lock:{i}"))
            .arg(600_000)
            .arg("TOKEN")
            .arg(token(i))
            .ignore();
        pipe.cmd("SET")
            .arg(format!("pad:{i}"))
            .arg("x".repeat(40))
            .ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    // Free most of it, leaving the survivors scattered over half-empty pages.
    let mut pipe = redis::pipe();
    for i in (0..n).filter(|i| i % 10 != 0) {
        pipe.cmd("LOCK.RELEASE")
            .arg(format!("lock:{i}"))
            .arg(token(i))
            .ignore();
        pipe.cmd("DEL").arg(format!("pad:{i}")).ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    let digest = |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST"]);
    let before = digest(&mut con);
    let hits = |con: &mut redis::Connection| -> u64 {
        info_field(con, "stats", "active_defrag_hits")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for (name, value) in [
        ("active-defrag-ignore-bytes", "1"),
        ("active-defrag-threshold-lower", "1"),
        ("active-defrag-cycle-min", "25"),
        ("activedefrag", "yes"),
    ] {
        call(
            &mut con,
            &[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()],
        );
    }
    wait_for("active defrag to move something", || hits(&mut con) > 0);
    std::thread::sleep(Duration::from_millis(500));
    call(&mut con, &[b"CONFIG", b"SET", b"activedefrag", b"no"]);
    srv.assert_alive();
    assert_eq!(digest(&mut con), before);
    for i in (0..n).step_by(10) {
        let key = format!("lock:{i}");
        let renewed = call(
            &mut con,
            &[
                b"LOCK.RENEW",
                key.as_bytes(),
                token(i).as_bytes(),
                b"600000",
            ],
        );
        assert_eq!(renewed, Value::Int(1), "{key}");
    }
}
