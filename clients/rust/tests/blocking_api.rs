//! The blocking API against real servers with the module (no tokio runtime anywhere).

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use common::*;
use fencelock::blocking::Locks;
use fencelock::{Error, LostReason};
use support::*;

fn locks(srv: &Server) -> Locks {
    Locks::new(redis::Client::open(srv.url()).unwrap())
}

#[test]
fn watchdog_holds_for_five_ttls_while_another_waits() {
    let srv = Server::start();
    let locks = locks(&srv);
    let a = locks.lock("job", ttl(300)).unwrap();
    let fence_a = a.fence();
    let other = locks.clone();
    let waiter = thread::spawn(move || other.acquire("job", ttl(300).wait(5000 * MS)));
    let mut con = srv.conn();
    wait_for("the waiter", || waiters(&mut con, "job") == 1);
    let waiting = blocked_client_ids(&mut con);
    assert_eq!(waiting.len(), 1);
    thread::sleep(1500 * MS);
    assert!(a.is_held());
    assert!(!a.lost_signal().is_lost());
    assert!(!waiter.is_finished());
    assert_eq!(waiters(&mut con, "job"), 1);
    // The same waiting connection all along: the wait was never cut short and sent again.
    assert_eq!(blocked_client_ids(&mut con), waiting);
    let signal = a.lost_signal();
    assert!(a.release().unwrap());
    let b = waiter
        .join()
        .unwrap()
        .unwrap()
        .expect("granted at the release");
    assert!(b.fence() > fence_a);
    assert!(b.safe_deadline() > Instant::now() + 200 * MS);
    // Released, never lost: the signal waits out its timeout (past the safe deadline too).
    let started = Instant::now();
    assert!(!signal.wait_timeout(300 * MS));
    assert!(started.elapsed() >= 300 * MS);
    assert!(!signal.is_lost());
    assert_eq!(fence_of(&mut con, b"job"), Some(b.fence()));
    assert!(b.release().unwrap());
}

#[test]
fn lost_within_a_ttl_when_the_key_is_deleted() {
    let srv = Server::start();
    let held = locks(&srv).lock("gone", ttl(500)).unwrap();
    let signal = held.lost_signal();
    assert!(!signal.wait_timeout(50 * MS));
    call(&mut srv.conn(), &[b"DEL", b"gone"]);
    assert!(signal.wait_timeout(500 * MS), "lost within one ttl");
    assert_eq!(signal.reason(), Some(LostReason::RenewalRefused));
    assert_eq!(held.lost_reason(), Some(LostReason::RenewalRefused));
    assert!(!held.is_held());
    assert!(!held.release().unwrap());
}

#[test]
fn lost_at_the_safe_deadline_while_renewals_hang() {
    let srv = Server::start();
    let held = locks(&srv).lock("k", ttl(500)).unwrap();
    let mut con = srv.conn();
    call(&mut con, &[b"CLIENT", b"PAUSE", b"1500", b"WRITE"]);
    let paused = Instant::now();
    let signal = held.lost_signal();
    assert!(signal.wait_timeout(600 * MS), "lost while the RENEW hangs");
    // The safe deadline was before the server's expiry (last confirmed send + ttl), and
    // the signal fired at it (give or take the scheduler).
    assert!(held.safe_deadline() < paused + 500 * MS);
    assert!(paused.elapsed() < 600 * MS, "{:?}", paused.elapsed());
    assert_eq!(signal.reason(), Some(LostReason::Deadline));
    call(&mut con, &[b"CLIENT", b"UNPAUSE"]);
    // Lost at the local deadline: the watchdog sent a release by token (run after the pause).
    wait_for("the watchdog's release", || {
        command_calls(&mut con, "lock.release") == 1
    });
    assert!(!held.release().unwrap());
    wait_for("the lock to go", || !exists(&srv, "k"));
}

#[test]
fn lost_at_the_safe_deadline_when_the_server_is_killed() {
    let mut srv = Server::start();
    let held = locks(&srv)
        .with_settings(quick_retries())
        .lock("k", ttl(500))
        .unwrap();
    thread::sleep(200 * MS);
    srv.kill();
    let killed = Instant::now();
    assert!(held.lost_signal().wait_timeout(500 * MS));
    // The safe deadline was before the server's expiry (last confirmed send + ttl), and
    // the signal fired at it (give or take the scheduler).
    assert!(held.safe_deadline() < killed + 500 * MS);
    assert!(killed.elapsed() < 600 * MS, "{:?}", killed.elapsed());
    assert_eq!(held.lost_reason(), Some(LostReason::Deadline));
    assert!(!held.release().unwrap());
}

#[test]
fn no_renew_after_release() {
    let srv = Server::start();
    let mut con = srv.conn();
    let held = locks(&srv)
        .lock("k", ttl(300).renew_every(50 * MS))
        .unwrap();
    thread::sleep(400 * MS);
    let renewed = command_calls(&mut con, "lock.renew");
    assert!(renewed >= 4, "the watchdog renewed {renewed} times");
    assert!(held.release().unwrap());
    let after_release = command_calls(&mut con, "lock.renew");
    thread::sleep(400 * MS);
    assert_eq!(command_calls(&mut con, "lock.renew"), after_release);
    assert!(!exists(&srv, "k"));
}

#[test]
fn killed_wait_retries_and_gets_the_lock_once() {
    let srv = Server::start();
    let locks = locks(&srv);
    let mut con = srv.conn();
    let a = locks.lock("k", ttl(1000)).unwrap();
    let other = locks.clone();
    let waiter = thread::spawn(move || other.acquire("k", ttl(1000).wait(4000 * MS).token("bob")));
    wait_for("the waiter", || waiters(&mut con, "k") == 1);
    let ids = blocked_client_ids(&mut con);
    assert_eq!(ids.len(), 1, "{ids:?}");
    call(&mut con, &[b"CLIENT", b"KILL", b"ID", ids[0].as_bytes()]);
    wait_for("the waiter to wait again", || {
        let again = blocked_client_ids(&mut con);
        again.len() == 1 && again != ids
    });
    let fence_a = a.fence();
    assert!(a.release().unwrap());
    let b = waiter
        .join()
        .unwrap()
        .unwrap()
        .expect("granted after the release");
    assert_eq!(b.token(), b"bob");
    assert!(b.fence() > fence_a);
    assert_eq!(holders(&mut con, "k").len(), 1);
    assert!(b.release().unwrap());
}

#[test]
fn sixteen_threads_take_turns() {
    let srv = Server::start();
    let locks = locks(&srv);
    let resource = Arc::new(FencedResource::default());
    let (workers, rounds) = (16, 3);
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let (locks, resource) = (locks.clone(), resource.clone());
            thread::spawn(move || {
                for _ in 0..rounds {
                    let held = locks.lock("hot", ttl(1000).wait(20_000 * MS)).unwrap();
                    assert!(resource.enter(held.fence(), w));
                    thread::sleep(2 * MS);
                    resource.leave(w);
                    assert!(held.release().unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    resource.assert_complete(workers, rounds);
}

#[test]
fn options_reach_the_server() {
    let srv = Server::start();
    let locks = locks(&srv);
    let mut con = srv.conn();
    let r = locks.lock("rw", ttl(1000).shared().meta("r1")).unwrap();
    let p = locks.lock("sem", ttl(1000).limit(3)).unwrap();
    let e = locks.lock("eph", ttl(1000).ephemeral().meta("me")).unwrap();
    assert_eq!(field(&holders(&mut con, "rw")[0], "mode"), Some("shared"));
    assert_eq!(field(&holders(&mut con, "rw")[0], "meta"), Some("r1"));
    assert_eq!(lock_info_of(&mut con, b"sem").unwrap().limit, Some(3));
    assert_eq!(field(&holders(&mut con, "eph")[0], "ephemeral"), Some("1"));
    assert!(locks.acquire("eph", ttl(1000)).unwrap().is_none());
    for held in [r, p, e] {
        assert!(held.release().unwrap());
    }
    assert!(matches!(
        locks.acquire("k", ttl(1000).shared().limit(2)),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn without_watchdog_the_signal_fires_at_the_deadline() {
    let srv = Server::start();
    let held = locks(&srv).lock("m", ttl(400).watchdog(false)).unwrap();
    thread::sleep(250 * MS);
    assert!(held.renew().unwrap());
    thread::sleep(250 * MS);
    assert!(held.is_held());
    let signal = held.lost_signal();
    assert!(signal.wait_timeout(400 * MS));
    assert_eq!(signal.reason(), Some(LostReason::Deadline));
    assert!(!held.renew().unwrap());
}

#[test]
fn drop_releases() {
    let srv = Server::start();
    let held = locks(&srv).lock("d", ttl(5000)).unwrap();
    assert!(exists(&srv, "d"));
    drop(held);
    assert!(!exists(&srv, "d"));
}

#[test]
fn module_not_loaded() {
    let plain = PlainServer::start();
    let locks = Locks::new(redis::Client::open(plain.url()).unwrap());
    for opts in [ttl(1000), ttl(1000).wait(100 * MS)] {
        match locks.acquire("k", opts) {
            Err(Error::ModuleNotLoaded(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_lost_ephemeral_hold_closes_its_connection() {
    let srv = Server::start();
    let mut con = srv.conn();
    let held = locks(&srv).lock("eph", ttl(400).ephemeral()).unwrap();
    let before = connected_clients(&mut con);
    call(&mut con, &[b"DEL", b"eph"]);
    assert!(held.lost_signal().wait_timeout(400 * MS), "lost");
    assert_eq!(held.lost_reason(), Some(LostReason::RenewalRefused));
    wait_for("the pinned connection to close", || {
        connected_clients(&mut con) == before - 1
    });
    assert!(!held.release().unwrap());
}

/// A server that accepts connections and never answers: every call ends within its budget,
/// also while other threads' calls hold the shared connection.
#[test]
fn a_hung_server_costs_each_call_its_budget_only() {
    let locks = Locks::new(silent_server()).with_settings(quick_retries());
    let started = Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let locks = locks.clone();
            thread::spawn(move || locks.acquire(format!("k{i}"), ttl(1000)))
        })
        .collect();
    for call in calls {
        assert_unreachable(call.join().unwrap());
    }
    // Each: its attempts (300 ms), then its release by token (300 ms), each of which may
    // spend that long connecting and as long again on the connection's handshake; one after
    // the other, five would take over 3 s.
    assert!(started.elapsed() < 2500 * MS, "{:?}", started.elapsed());
}
