//! What operators see: the `INFO lock` section, the `lock.*` configs, keyspace notifications
//! of lock events, and `SCAN ... TYPE fencelock`.

mod common;

use std::time::Duration;

use common::*;

fn stat(con: &mut redis::Connection, name: &str) -> u64 {
    info_lock_stat(con, name)
}

/// Keyspace events of the module class on, and a connection subscribed to `channel`.
fn subscribe_events(srv: &Server, how: &[u8], channel: &[u8]) -> Raw {
    call(
        &mut srv.conn(),
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"Ed"],
    );
    let mut sub = srv.raw();
    sub.cmd(&[how, channel]);
    sub
}

#[test]
fn info_lock_counts_every_kind_of_event() {
    let srv = Server::start();
    let mut con = srv.conn();
    let names: Vec<String> = info_lock(&mut con).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "lock_keys",
            "lock_waiting",
            "lock_acquired",
            "lock_contended",
            "lock_renewed",
            "lock_released",
            "lock_expired",
            "lock_handed_off",
            "lock_timeouts",
            "lock_ephemeral_holds",
            "lock_ephemeral_connections",
            "lock_closed_releases"
        ]
    );
    assert!(info_lock(&mut con).iter().all(|(_, v)| *v == 0));

    acquire(&mut con, "a", 60_000, "me").unwrap();
    acquire(&mut con, "a", 60_000, "me").unwrap(); // a retry: not a new grant
    acquire(&mut con, "b", 60_000, "me").unwrap();
    assert_eq!(acquire(&mut con, "a", 1000, "other"), None);
    call(&mut con, &[b"LOCK.RENEW", b"a", b"me", b"60000"]);
    assert_eq!(stat(&mut con, "keys"), 2);
    assert_eq!(stat(&mut con, "acquired"), 2);
    assert_eq!(stat(&mut con, "contended"), 1);
    assert_eq!(stat(&mut con, "renewed"), 1);

    // A waiter, then a hand-off on release.
    let mut waiter = blocked_client(&srv, "a", 10_000, "next", 0);
    wait_for("the waiter", || stat(&mut con, "waiting") == 1);
    assert_eq!(stat(&mut con, "contended"), 2);
    call(&mut con, &[b"LOCK.RELEASE", b"a", b"me"]);
    assert!(grant(&waiter.value()).is_some());
    assert_eq!(stat(&mut con, "released"), 1);
    assert_eq!(stat(&mut con, "handed_off"), 1);
    assert_eq!(stat(&mut con, "waiting"), 0);

    // A timeout.
    let mut late = blocked_client(&srv, "a", 10_000, "late", 50);
    assert_eq!(late.read_reply(), b"$-1\r\n");
    assert_eq!(stat(&mut con, "timeouts"), 1);

    // An expiry: the lock runs out while held.
    acquire(&mut con, "c", 50, "me").unwrap();
    wait_for("the expiry", || stat(&mut con, "expired") == 1);
    assert_eq!(stat(&mut con, "keys"), 2, "a (the waiter's) and b");
    call(&mut con, &[b"FLUSHALL"]);
    wait_for("the flush", || stat(&mut con, "keys") == 0);
    // A release is not an expiry, nor is a DEL of a live lock.
    assert_eq!(stat(&mut con, "expired"), 1);
}

#[test]
fn max_waiters_is_a_config_and_a_load_time_argument() {
    let srv = Server::start_with(&["max-waiters", "2"], &[]);
    let mut con = srv.conn();
    let get = |con: &mut redis::Connection| -> Vec<String> {
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("lock.max-waiters")
            .query(con)
            .unwrap()
    };
    assert_eq!(get(&mut con), ["lock.max-waiters", "2"]);
    acquire(&mut con, "k", 60_000, "holder").unwrap();
    let _first = blocked_client(&srv, "k", 10_000, "w1", 0);
    let _second = blocked_client(&srv, "k", 10_000, "w2", 0);
    wait_for("two waiters", || waiters(&mut con, "k") == 2);
    let err = call_err(&mut con, &[b"LOCK.ACQUIRE", b"k", b"1000", b"BLOCK", b"0"]);
    assert!(
        err.starts_with("ERR") && err.contains("lock.max-waiters"),
        "{err}"
    );
    assert_eq!(waiters(&mut con, "k"), 2);
    // Without BLOCK the limit does not apply: a plain null.
    assert_eq!(acquire(&mut con, "k", 1000, "plain"), None);
    // Raised live; 0 means no limit; out of range is refused.
    call(&mut con, &[b"CONFIG", b"SET", b"lock.max-waiters", b"0"]);
    let _third = blocked_client(&srv, "k", 10_000, "w3", 0);
    wait_for("three waiters", || waiters(&mut con, "k") == 3);
    let err = call_err(&mut con, &[b"CONFIG", b"SET", b"lock.max-waiters", b"-1"]);
    assert!(err.starts_with("ERR"), "{err}");
    assert_eq!(get(&mut con), ["lock.max-waiters", "0"]);
    let all: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("lock.*")
        .query(&mut con)
        .unwrap();
    let mut names: Vec<&str> = all.iter().step_by(2).map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "lock.fence-jump",
            "lock.fence-max-ahead",
            "lock.max-ttl",
            "lock.max-waiters"
        ],
        "{all:?}"
    );
}

#[test]
fn lock_events_are_keyspace_notifications_in_order() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut sub = subscribe_events(&srv, b"PSUBSCRIBE", b"__keyevent@0__:lock.*");
    acquire(&mut con, "k", 60_000, "a").unwrap();
    acquire(&mut con, "k", 60_000, "a").unwrap();
    call(&mut con, &[b"LOCK.RENEW", b"k", b"a", b"300"]);
    let mut waiter = blocked_client(&srv, "k", 10_000, "b", 0);
    wait_for("the waiter", || waiters(&mut con, "k") == 1);
    // The lock expires while b waits: expired, then handed off.
    assert!(grant(&waiter.value()).is_some());
    call(&mut con, &[b"LOCK.RELEASE", b"k", b"b"]);
    let mut events = Vec::new();
    while let Some(reply) = sub.reply_within(Duration::from_millis(300)) {
        events.extend(keyevent(&reply));
    }
    let expected = [
        "lock.acquired",
        "lock.renewed",
        "lock.renewed",
        "lock.expired",
        "lock.handed-off",
        "lock.released",
    ];
    let got: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(got, expected);
    assert!(events.iter().all(|(_, key)| key == "k"));
}

#[test]
fn scan_by_type_lists_the_locks() {
    let srv = Server::start();
    let mut con = srv.conn();
    for key in ["l1", "l2", "l3"] {
        acquire(&mut con, key, 60_000, "me").unwrap();
    }
    call(&mut con, &[b"SET", b"plain", b"x"]);
    let (_, mut keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(100)
        .arg("TYPE")
        .arg("fencelock")
        .query(&mut con)
        .unwrap();
    keys.sort();
    assert_eq!(keys, ["l1", "l2", "l3"]);
}

/// A release at the very millisecond of the deadline is a release, not also an expiry: every
/// granted lock ends as at most one of the two.
#[test]
fn a_release_is_never_also_counted_as_an_expiry() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut raw = srv.raw();
    let n = 10_000;
    let mut batch = Vec::new();
    for i in 0..n {
        let key = format!("k{}", i % 50);
        batch.extend(resp(&[
            b"LOCK.ACQUIRE",
            key.as_bytes(),
            b"1",
            b"TOKEN",
            b"t",
        ]));
        batch.extend(resp(&[b"LOCK.RELEASE", key.as_bytes(), b"t"]));
    }
    raw.write_all(&batch);
    for _ in 0..2 * n {
        raw.read_reply();
    }
    let (acquired, released) = (stat(&mut con, "acquired"), stat(&mut con, "released"));
    assert!(released > 0);
    wait_for("the last locks to expire", || {
        int(call(&mut con, &[b"DBSIZE"])) == 0
    });
    let expired = stat(&mut con, "expired");
    assert_eq!(
        released + expired,
        acquired,
        "{released} + {expired} != {acquired}"
    );
}

/// The counters count what this server does while it serves: locks that expired while it was
/// down are not counted when a restart replays them, nor published as lock.expired; a loaded
/// lock that expires afterwards is.
#[test]
fn counters_start_at_zero_after_a_restart_that_replays_expired_locks() {
    let mut srv = Server::start_with(&[], &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = srv.conn();
    for i in 0..20 {
        acquire(&mut con, &format!("brief:{i}"), 100, "me").unwrap();
    }
    acquire(&mut con, "later", 3_000, "me").unwrap();
    srv.kill();
    std::thread::sleep(Duration::from_millis(300));
    srv.restart();
    let mut con = srv.conn();
    let mut sub = subscribe_events(&srv, b"SUBSCRIBE", b"__keyevent@0__:lock.expired");
    wait_for("the expired locks to go", || {
        int(call(&mut con, &[b"DBSIZE"])) == 1
    });
    assert_eq!(stat(&mut con, "expired"), 0);
    assert_eq!(stat(&mut con, "acquired"), 0);
    assert_eq!(stat(&mut con, "keys"), 1);
    wait_for("the later lock to expire", || {
        int(call(&mut con, &[b"DBSIZE"])) == 0
    });
    assert_eq!(stat(&mut con, "expired"), 1);
    let message = String::from_utf8_lossy(&sub.read_reply()).into_owned();
    assert!(message.ends_with("later\r\n"), "{message}");
}
