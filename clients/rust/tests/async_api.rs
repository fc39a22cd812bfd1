//! The async API against real servers with the module.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fencelock::{Error, LockOptions, Locks, LostReason};
use support::*;
use tokio::time::{sleep, timeout};

fn locks(srv: &Server) -> Locks {
    Locks::new(redis::Client::open(srv.url()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_holds_for_five_ttls_while_another_waits() {
    let srv = Server::start();
    let locks = locks(&srv);
    let a = locks.lock("job", ttl(300)).await.unwrap();
    let fence_a = a.fence();
    let other = locks.clone();
    let waiter = tokio::spawn(async move { other.acquire("job", ttl(300).wait(5000 * MS)).await });
    // Five ttls: the watchdog renews, and the waiter (past the connection's default 500 ms
    // response timeout) keeps waiting on its own connection.
    let mut con = srv.conn();
    wait_for("the waiter", || waiters(&mut con, "job") == 1);
    let waiting = blocked_client_ids(&mut con);
    assert_eq!(waiting.len(), 1);
    sleep(1500 * MS).await;
    assert!(a.is_held());
    assert!(!waiter.is_finished());
    assert_eq!(waiters(&mut con, "job"), 1);
    // The same waiting connection all along: the wait was never cut short and sent again.
    assert_eq!(blocked_client_ids(&mut con), waiting);
    assert_eq!(fence_of(&mut con, b"job"), Some(fence_a));
    assert!(a.release().await.unwrap());
    let b = timeout(1000 * MS, waiter)
        .await
        .expect("granted at the release")
        .unwrap()
        .unwrap()
        .expect("granted, not null");
    assert!(b.fence() > fence_a);
    // The grant's reply came 1.5 s after its ACQUIRE was sent: a RENEW confirmed it, so its
    // safe deadline counts from now, not from the send time.
    assert!(b.is_held());
    assert!(b.safe_deadline() > Instant::now() + 200 * MS);
    assert_eq!(fence_of(&mut con, b"job"), Some(b.fence()));
    assert!(b.release().await.unwrap());
    assert!(!exists(&srv, "job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_within_a_ttl_when_the_key_is_deleted() {
    let srv = Server::start();
    let held = locks(&srv).lock("gone", ttl(500)).await.unwrap();
    assert!(!*held.lost_watch().borrow());
    call(&mut srv.conn(), &[b"DEL", b"gone"]);
    timeout(500 * MS, held.lost())
        .await
        .expect("lost within one ttl");
    assert_eq!(held.lost_reason(), Some(LostReason::RenewalRefused));
    assert!(*held.lost_watch().borrow());
    assert!(!held.is_held());
    assert!(!held.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_at_the_safe_deadline_when_the_server_is_killed() {
    let mut srv = Server::start();
    let held = locks(&srv)
        .with_settings(quick_retries())
        .lock("k", ttl(500))
        .await
        .unwrap();
    sleep(200 * MS).await;
    srv.kill();
    let killed = Instant::now();
    timeout(500 * MS, held.lost())
        .await
        .expect("lost within one ttl of the kill");
    // The safe deadline was before the server's expiry (last confirmed send + ttl), and
    // the signal fired at it (give or take the scheduler).
    assert!(held.safe_deadline() < killed + 500 * MS);
    assert!(killed.elapsed() < 600 * MS, "{:?}", killed.elapsed());
    assert!(Instant::now() >= held.safe_deadline());
    assert_eq!(held.lost_reason(), Some(LostReason::Deadline));
    let started = Instant::now();
    assert!(!held.release().await.unwrap(), "lost: release says false");
    assert!(started.elapsed() < 1000 * MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_at_the_safe_deadline_while_renewals_hang() {
    let srv = Server::start();
    let held = locks(&srv).lock("k", ttl(500)).await.unwrap();
    let mut con = srv.conn();
    call(&mut con, &[b"CLIENT", b"PAUSE", b"1500", b"WRITE"]);
    let paused = Instant::now();
    timeout(600 * MS, held.lost())
        .await
        .expect("lost while the RENEW hangs");
    // Before the server's own expiry: the last confirmed renewal was before the pause.
    // The safe deadline was before the server's expiry (last confirmed send + ttl), and
    // the signal fired at it (give or take the scheduler).
    assert!(held.safe_deadline() < paused + 500 * MS);
    assert!(paused.elapsed() < 600 * MS, "{:?}", paused.elapsed());
    assert_eq!(held.lost_reason(), Some(LostReason::Deadline));
    call(&mut con, &[b"CLIENT", b"UNPAUSE"]);
    // Lost at the local deadline: the watchdog sent a release by token (run after the pause).
    wait_for("the watchdog's release", || {
        command_calls(&mut con, "lock.release") == 1
    });
    wait_for("the lock to go", || !exists(&srv, "k"));
    assert!(!held.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_renew_after_release() {
    let srv = Server::start();
    let mut con = srv.conn();
    let held = locks(&srv)
        .lock("k", ttl(300).renew_every(50 * MS))
        .await
        .unwrap();
    sleep(400 * MS).await;
    let renewed = command_calls(&mut con, "lock.renew");
    assert!(renewed >= 4, "the watchdog renewed {renewed} times");
    assert!(held.release().await.unwrap());
    let after_release = command_calls(&mut con, "lock.renew");
    sleep(400 * MS).await;
    assert_eq!(command_calls(&mut con, "lock.renew"), after_release);
    assert!(!exists(&srv, "k"));
}

/// Kill the connection of the one blocked waiter, and wait until it waits again on another.
fn kill_the_waiter(con: &mut redis::Connection, key: &str) {
    let ids = blocked_client_ids(con);
    assert_eq!(ids.len(), 1, "{ids:?}");
    call(con, &[b"CLIENT", b"KILL", b"ID", ids[0].as_bytes()]);
    wait_for("the waiter to wait again", || {
        let again = blocked_client_ids(con);
        again.len() == 1 && again != ids && waiters(con, key) == 1
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_wait_retries_and_gets_the_lock_once() {
    let srv = Server::start();
    let locks = locks(&srv);
    let mut con = srv.conn();
    let a = locks.lock("k", ttl(1000)).await.unwrap();
    let other = locks.clone();
    let waiter = tokio::spawn(async move {
        other
            .acquire("k", ttl(1000).wait(4000 * MS).token("bob"))
            .await
    });
    wait_for("the waiter", || waiters(&mut con, "k") == 1);
    kill_the_waiter(&mut con, "k");
    let fence_a = a.fence();
    assert!(a.release().await.unwrap());
    let b = waiter
        .await
        .unwrap()
        .unwrap()
        .expect("granted after the release");
    assert_eq!(b.token(), b"bob");
    assert!(b.fence() > fence_a);
    let holders = holders(&mut con, "k");
    assert_eq!(holders.len(), 1, "one holder: {holders:?}");
    assert_eq!(field(&holders[0], "fence"), Some(&*b.fence().to_string()));
    assert!(b.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_wait_ends_cleanly_at_its_deadline() {
    let srv = Server::start();
    let locks = locks(&srv);
    let mut con = srv.conn();
    let a = locks.lock("k", ttl(1000)).await.unwrap();
    let other = locks.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move { other.acquire("k", ttl(1000).wait(800 * MS)).await });
    wait_for("the waiter", || waiters(&mut con, "k") == 1);
    kill_the_waiter(&mut con, "k");
    assert!(waiter.await.unwrap().unwrap().is_none(), "not acquired");
    assert!(started.elapsed() >= 800 * MS);
    assert!(started.elapsed() < 2000 * MS);
    assert_eq!(waiters(&mut con, "k"), 0);
    assert_eq!(holders(&mut con, "k").len(), 1);
    assert_eq!(fence_of(&mut con, b"k"), Some(a.fence()));
    assert!(a.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_take_turns() {
    let srv = Server::start();
    let locks = locks(&srv);
    let resource = Arc::new(FencedResource::default());
    let (workers, rounds) = (16, 3);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (locks, resource) = (locks.clone(), resource.clone());
            tokio::spawn(async move {
                for _ in 0..rounds {
                    let held = locks
                        .lock("hot", ttl(1000).wait(20_000 * MS))
                        .await
                        .unwrap();
                    assert!(resource.enter(held.fence(), w));
                    sleep(2 * MS).await;
                    resource.leave(w);
                    assert!(held.release().await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    resource.assert_complete(workers, rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_limit_ephemeral_and_meta_reach_the_server() {
    let srv = Server::start();
    let locks = locks(&srv);
    let mut con = srv.conn();
    let r1 = locks
        .lock("rw", ttl(1000).shared().meta("r1"))
        .await
        .unwrap();
    let r2 = locks.lock("rw", ttl(1000).shared()).await.unwrap();
    let rw = holders(&mut con, "rw");
    assert_eq!(rw.len(), 2);
    assert!(rw.iter().all(|h| field(h, "mode") == Some("shared")));
    assert_eq!(field(&rw[0], "meta"), Some("r1"));
    assert!(locks.acquire("rw", ttl(1000)).await.unwrap().is_none());

    let p1 = locks.lock("sem", ttl(1000).limit(2)).await.unwrap();
    let p2 = locks.lock("sem", ttl(1000).limit(2)).await.unwrap();
    assert!(locks
        .acquire("sem", ttl(1000).limit(2))
        .await
        .unwrap()
        .is_none());
    assert_eq!(holders(&mut con, "sem").len(), 2);
    let limit = lock_info_of(&mut con, b"sem").unwrap().limit;
    assert_eq!(limit, Some(2));

    let e = locks
        .lock("eph", ttl(1000).ephemeral().meta("me"))
        .await
        .unwrap();
    let eph = holders(&mut con, "eph");
    assert_eq!(field(&eph[0], "ephemeral"), Some("1"));
    assert_eq!(field(&eph[0], "meta"), Some("me"));
    assert_eq!(field(&eph[0], "mode"), Some("exclusive"));

    for held in [r1, r2, p1, p2, e] {
        assert!(held.release().await.unwrap());
    }
    for key in ["rw", "sem", "eph"] {
        assert!(!exists(&srv, key), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_is_sent() {
    let srv = Server::start();
    let locks = locks(&srv);
    let mut con = srv.conn();
    let before = command_calls(&mut con, "lock.acquire");
    for opts in [
        LockOptions::new().shared().limit(2),
        ttl(0),
        LockOptions::new().ttl(Duration::from_micros(300)),
        ttl(1000).token(""),
    ] {
        match locks.acquire("k", opts).await {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(command_calls(&mut con, "lock.acquire"), before);
    // A server error is raised as it is.
    call(&mut con, &[b"SET", b"plain", b"v"]);
    match locks.acquire("plain", ttl(1000)).await {
        Err(Error::Server(e)) => assert_eq!(e.code(), Some("WRONGTYPE")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_hold_is_lost_when_its_connection_is_killed() {
    let srv = Server::start();
    let mut con = srv.conn();
    let held = locks(&srv).lock("eph", ttl(600).ephemeral()).await.unwrap();
    let id = int(call(&mut con, &[b"CLIENT", b"ID"]));
    // The pinned connection is the only other one that sent LOCK.ACQUIRE.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    let pinned = list
        .lines()
        .filter(|l| l.contains("cmd=lock.acquire") && !l.contains(&format!("id={id} ")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect::<Vec<_>>();
    assert_eq!(pinned.len(), 1, "{list}");
    call(&mut con, &[b"CLIENT", b"KILL", b"ID", pinned[0].as_bytes()]);
    assert!(!exists(&srv, "eph"), "the server ended the hold");
    timeout(600 * MS, held.lost()).await.expect("lost");
    assert_eq!(held.lost_reason(), Some(LostReason::ConnectionClosed));
    assert!(!held.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watchdog_the_signal_fires_at_the_deadline_and_renew_moves_it() {
    let srv = Server::start();
    let mut con = srv.conn();
    let held = locks(&srv)
        .lock("m", ttl(400).watchdog(false))
        .await
        .unwrap();
    sleep(250 * MS).await;
    assert!(held.renew().await.unwrap());
    sleep(250 * MS).await;
    assert!(held.is_held(), "the manual renewal moved the deadline");
    assert_eq!(command_calls(&mut con, "lock.renew"), 1);
    timeout(400 * MS, held.lost())
        .await
        .expect("lost at the deadline");
    assert_eq!(held.lost_reason(), Some(LostReason::Deadline));
    assert!(!held.renew().await.unwrap());
    assert!(!held.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_releases_in_the_background() {
    let srv = Server::start();
    let locks = locks(&srv);
    let held = locks.lock("d", ttl(5000)).await.unwrap();
    assert!(exists(&srv, "d"));
    drop(held);
    wait_for("the release", || !exists(&srv, "d"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_leaves_no_grant_behind() {
    let srv = Server::start();
    let locks = locks(&srv);
    let mut con = srv.conn();
    let a = locks.lock("c", ttl(2000)).await.unwrap();
    let wait = locks.acquire("c", ttl(2000).wait(5000 * MS).token("late"));
    assert!(timeout(300 * MS, wait).await.is_err(), "cancelled");
    wait_for("the waiter to leave", || waiters(&mut con, "c") == 0);
    assert!(a.release().await.unwrap());
    sleep(100 * MS).await;
    assert_eq!(fence_of(&mut con, b"c"), None, "no ghost grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_do_not_stall_the_users_connection() {
    let srv = Server::start();
    let client = redis::Client::open(srv.url()).unwrap();
    let mut mine = client.get_multiplexed_async_connection().await.unwrap();
    let manager = client.get_connection_manager().await.unwrap();
    for locks in [
        Locks::with_connection(client.clone(), mine.clone()),
        Locks::with_manager(client.clone(), manager),
    ] {
        let a = locks.lock("x", ttl(1000)).await.unwrap();
        let other = locks.clone();
        let waiter =
            tokio::spawn(async move { other.acquire("x", ttl(1000).wait(800 * MS)).await });
        sleep(100 * MS).await;
        let started = Instant::now();
        let y = locks.lock("y", ttl(1000)).await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut mine).await.unwrap();
        assert_eq!(pong, "PONG");
        assert!(started.elapsed() < 200 * MS, "{:?}", started.elapsed());
        assert!(!waiter.is_finished());
        assert!(a.release().await.unwrap());
        let b = waiter.await.unwrap().unwrap().unwrap();
        assert!(b.release().await.unwrap());
        assert!(y.release().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_not_loaded() {
    let plain = PlainServer::start();
    let locks = Locks::new(redis::Client::open(plain.url()).unwrap());
    for opts in [ttl(1000), ttl(1000).wait(100 * MS)] {
        match locks.acquire("k", opts).await {
            Err(e @ Error::ModuleNotLoaded(_)) => {
                let text = e.to_string();
                assert!(text.contains("not loaded") && text.contains("libredis_lock.so"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_connection_error() {
    let mut srv = Server::start();
    let locks = locks(&srv).with_settings(quick_retries());
    srv.kill();
    let started = Instant::now();
    match locks.acquire("k", ttl(1000)).await {
        Err(Error::Connection(_) | Error::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    match locks.acquire("k", ttl(1000).wait(300 * MS)).await {
        Err(Error::Connection(_) | Error::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < 3000 * MS);
}

/// The "ghost" of an abandoned wait: a waiter cancelled at the moment the holder releases.
/// The server may hand the lock to the waiter's connection before it has processed its close;
/// a release by token that came before that hand-off frees nothing, and the grant would stay
/// until its ttl. After every round the lock must be free, or held by the holder only.
async fn cancel_waits_as_the_lock_is_released(srv: &Server, waiting: &Locks, rounds: u64) {
    let holder = locks(srv);
    let mut con = srv.conn();
    for round in 0..rounds {
        let a = holder.lock("g", ttl(5000)).await.unwrap();
        let other = waiting.clone();
        let waiter =
            tokio::spawn(async move { other.acquire("g", ttl(5000).wait(5000 * MS)).await });
        wait_for("the waiter", || waiters(&mut con, "g") == 1);
        waiter.abort();
        // The release at a slightly different moment each round.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_micros(round % 6 * 100) {
            std::hint::spin_loop();
        }
        let fence_a = a.fence().to_string();
        assert!(a.release().await.unwrap());
        // A grant the waiter got before it was cancelled is released by its give-up.
        let start = Instant::now();
        let mut left = holders(&mut con, "g");
        while !left.is_empty() && start.elapsed() < 1500 * MS {
            assert!(left.len() == 1 && field(&left[0], "fence") != Some(&*fence_a));
            sleep(5 * MS).await;
            left = holders(&mut con, "g");
        }
        assert!(left.is_empty(), "round {round}: a ghost grant {left:?}");
        assert_eq!(waiters(&mut con, "g"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_cancelled_as_the_lock_is_released_leaves_no_ghost() {
    let srv = Server::start();
    cancel_waits_as_the_lock_is_released(&srv, &locks(&srv), 60).await;
}

/// Without the right to CLIENT ID / CLIENT LIST (ACL), a give-up releases by token twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_without_client_commands_leaves_no_ghost() {
    let srv = Server::start();
    let mut con = srv.conn();
    let acl = [
        "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-client",
    ];
    redis::cmd("ACL").arg(&acl).exec(&mut con).unwrap();
    let url = format!("redis://limited:pw@127.0.0.1:{}/", srv.port);
    let limited = Locks::new(redis::Client::open(url).unwrap());
    cancel_waits_as_the_lock_is_released(&srv, &limited, 10).await;
    // Each round: the holder's release, and the give-up's two (now and a little later).
    wait_for("the give-ups' releases", || {
        command_calls(&mut con, "lock.release") == 30
    });
    sleep(300 * MS).await;
    assert_eq!(command_calls(&mut con, "lock.release"), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ephemeral_hold_closes_its_connection() {
    let srv = Server::start();
    let mut con = srv.conn();
    let held = locks(&srv).lock("eph", ttl(400).ephemeral()).await.unwrap();
    let before = connected_clients(&mut con);
    call(&mut con, &[b"DEL", b"eph"]);
    timeout(400 * MS, held.lost()).await.expect("lost");
    assert_eq!(held.lost_reason(), Some(LostReason::RenewalRefused));
    wait_for("the pinned connection to close", || {
        connected_clients(&mut con) == before - 1
    });
    assert!(!held.release().await.unwrap());
}

/// A server that accepts connections and never answers: every call ends within its budget,
/// also while other tasks wait for the same connection to open (the time waiting counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_costs_each_call_its_budget_only() {
    let locks = Locks::new(silent_server()).with_settings(quick_retries());
    let started = Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire(format!("k{i}"), ttl(1000)).await })
        })
        .collect();
    for call in calls {
        assert_unreachable(call.await.unwrap());
    }
    // Each: its attempts (300 ms), then its release by token (300 ms), each of which may
    // spend that long connecting and as long again on the connection's handshake; one after
    // the other, five would take over 3 s.
    assert!(started.elapsed() < 2500 * MS, "{:?}", started.elapsed());
}
