//! Both APIs on a cluster of 3 primaries (slots split, joined with CLUSTER MEET).

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{key_slot, Cluster};
use common::*;
use redis::cluster::ClusterClient;
use support::*;

const NODES: usize = 3;

/// One key on each node.
fn keys(cluster: &Cluster) -> Vec<String> {
    let mut con = cluster.nodes[0].conn();
    (0..NODES)
        .map(|n| key_on_node(&mut con, "lock", n, NODES))
        .collect()
}

fn client(cluster: &Cluster) -> ClusterClient {
    ClusterClient::new(cluster.urls()).unwrap()
}

/// What a hold of `key` looks like on its node after `held_fence` was granted there and a
/// waiter queued: the fence on its owner, one waiter, renewals on that node.
fn assert_held_on_owner(cluster: &Cluster, node: usize, key: &str, held_fence: i64) {
    let mut con = cluster.nodes[node].conn();
    assert_eq!(fence_of(&mut con, key.as_bytes()), Some(held_fence));
    assert_eq!(waiters(&mut con, key), 1);
    assert!(
        command_calls(&mut con, "lock.renew") >= 2,
        "renewed on its node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_locks_on_every_node_with_waiting_and_the_watchdog() {
    let cluster = Cluster::start(NODES);
    let locks = fencelock::Locks::cluster(client(&cluster), cluster.urls()[0].as_str()).unwrap();
    let keys = keys(&cluster);
    let mut holds = Vec::new();
    for key in &keys {
        let held = locks.lock(key, ttl(300)).await.unwrap();
        let other = locks.clone();
        let key = key.clone();
        let waiter =
            tokio::spawn(async move { other.acquire(key, ttl(300).wait(5000 * MS)).await });
        holds.push((held, waiter));
    }
    tokio::time::sleep(1000 * MS).await;
    for (node, (held, waiter)) in holds.into_iter().enumerate() {
        assert!(held.is_held());
        assert!(!waiter.is_finished());
        assert_held_on_owner(&cluster, node, &keys[node], held.fence());
        let fence = held.fence();
        assert!(held.release().await.unwrap());
        let next = waiter.await.unwrap().unwrap().expect("granted");
        assert!(next.fence() > fence);
        assert!(next.release().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_watchdog_follows_a_moved_slot() {
    let cluster = Cluster::start(NODES);
    let locks = fencelock::Locks::cluster(client(&cluster), cluster.urls()[0].as_str()).unwrap();
    let key = keys(&cluster).remove(0);
    let held = locks.lock(&key, ttl(600)).await.unwrap();
    let slot = start_moving_a_held_key(&cluster, &key);
    cluster.finish_moving(slot, 1);
    let mut target = cluster.nodes[1].conn();
    let renewals = command_calls(&mut target, "lock.renew");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(held.is_held(), "{:?}", held.lost_reason());
    assert!(command_calls(&mut target, "lock.renew") > renewals);
    assert_eq!(fence_of(&mut target, key.as_bytes()), Some(held.fence()));
    assert!(held.release().await.unwrap());
    assert_eq!(fence_of(&mut target, key.as_bytes()), None);
}

#[test]
fn blocking_locks_on_every_node_with_waiting_and_the_watchdog() {
    let cluster = Cluster::start(NODES);
    let locks =
        fencelock::blocking::Locks::cluster(client(&cluster), cluster.urls()[0].as_str()).unwrap();
    let keys = keys(&cluster);
    let mut holds = Vec::new();
    for key in &keys {
        let held = locks.lock(key, ttl(300)).unwrap();
        let other = locks.clone();
        let key = key.clone();
        let waiter = thread::spawn(move || other.acquire(key, ttl(300).wait(5000 * MS)));
        holds.push((held, waiter));
    }
    thread::sleep(1000 * MS);
    for (node, (held, waiter)) in holds.into_iter().enumerate() {
        assert!(held.is_held());
        assert_held_on_owner(&cluster, node, &keys[node], held.fence());
        let fence = held.fence();
        assert!(held.release().unwrap());
        let next = waiter.join().unwrap().unwrap().expect("granted");
        assert!(next.fence() > fence);
        assert!(next.release().unwrap());
    }
}

/// A cluster client that gives up on a reply after 50 ms and sends the command again (the
/// re-sends of redis-rs's cluster connection): the lock commands must not go through it.
fn impatient_client(cluster: &Cluster) -> ClusterClient {
    ClusterClient::builder(cluster.urls())
        .response_timeout(50 * MS)
        .build()
        .unwrap()
}

/// `count` keys on node `node`.
fn keys_on(cluster: &Cluster, node: usize, count: usize) -> Vec<String> {
    let mut con = cluster.nodes[node].conn();
    (0..count)
        .map(|i| key_on_node(&mut con, &format!("many{i}"), node, NODES))
        .collect()
}

/// `CLIENT PAUSE ms WRITE` on the node of `con`: its LOCK commands wait, unanswered.
fn pause_writes(con: &mut redis::Connection, ms: u32) {
    let ms = ms.to_string();
    call(con, &[b"CLIENT", b"PAUSE", ms.as_bytes(), b"WRITE"]);
}

const PER_NODE: usize = 4;

/// After the releases of `keys` on `node` (`before`: its RELEASE count before them): one
/// RELEASE each reached the node, and every lock is free.
fn assert_released_once(cluster: &Cluster, node: usize, keys: &[String], before: u64) {
    let mut con = cluster.nodes[node].conn();
    let calls = command_calls(&mut con, "lock.release") - before;
    assert_eq!(
        calls,
        keys.len() as u64,
        "one RELEASE per lock, none re-sent"
    );
    for key in keys {
        assert!(lock_info_of(&mut con, key.as_bytes()).is_none(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_release_answers_true_once_per_lock_on_every_node() {
    let cluster = Cluster::start(NODES);
    let locks =
        fencelock::Locks::cluster(impatient_client(&cluster), cluster.urls()[0].as_str()).unwrap();
    for node in 0..NODES {
        let keys = keys_on(&cluster, node, PER_NODE);
        let mut holds = Vec::new();
        for key in &keys {
            holds.push(locks.lock(key, ttl(10_000).watchdog(false)).await.unwrap());
        }
        let mut con = cluster.nodes[node].conn();
        let before = command_calls(&mut con, "lock.release");
        // Slower than the cluster client's response timeout, well within the retry budget.
        pause_writes(&mut con, 300);
        let releases: Vec<_> = holds
            .into_iter()
            .map(|held| tokio::spawn(held.release()))
            .collect();
        for release in releases {
            assert!(release.await.unwrap().unwrap(), "released: true");
        }
        assert_released_once(&cluster, node, &keys, before);
    }
}

#[test]
fn blocking_release_answers_true_once_per_lock_on_every_node() {
    let cluster = Cluster::start(NODES);
    let locks =
        fencelock::blocking::Locks::cluster(impatient_client(&cluster), cluster.urls()[0].as_str())
            .unwrap();
    for node in 0..NODES {
        let keys = keys_on(&cluster, node, PER_NODE);
        let holds: Vec<_> = keys
            .iter()
            .map(|key| locks.lock(key, ttl(10_000).watchdog(false)).unwrap())
            .collect();
        let mut con = cluster.nodes[node].conn();
        let before = command_calls(&mut con, "lock.release");
        pause_writes(&mut con, 300);
        let releases: Vec<_> = holds
            .into_iter()
            .map(|held| thread::spawn(move || held.release()))
            .collect();
        for release in releases {
            assert!(release.join().unwrap().unwrap(), "released: true");
        }
        assert_released_once(&cluster, node, &keys, before);
    }
}

/// How long the owning node is paused in the cut-off tests: longer than the retry budget
/// (300 ms) and the give-up's release after it.
const CUT_OFF_MS: u32 = 1500;

/// On each node in turn: an acquire without a wait (`acquire`) while the node is paused longer
/// than the retry budget. It gives up within the budget and its give-up; once the pause has
/// ended and whatever was queued on the node has run, no grant is left, and at most the one
/// ACQUIRE the library sent reached the node (no re-send).
fn cut_off_on_every_node<T: std::fmt::Debug>(
    cluster: &Cluster,
    mut acquire: impl FnMut(&str) -> fencelock::Result<T>,
) {
    for (node, key) in keys(cluster).into_iter().enumerate() {
        let mut con = cluster.nodes[node].conn();
        let before = command_calls(&mut con, "lock.acquire");
        pause_writes(&mut con, CUT_OFF_MS);
        let started = Instant::now();
        assert_unreachable(acquire(&key));
        assert!(started.elapsed() < 1200 * MS, "{:?}", started.elapsed());
        thread::sleep(
            (started + (CUT_OFF_MS + 700) * MS).saturating_duration_since(Instant::now()),
        );
        assert!(
            lock_info_of(&mut con, key.as_bytes()).is_none(),
            "a ghost grant"
        );
        let calls = command_calls(&mut con, "lock.acquire") - before;
        assert!(calls <= 1, "{calls} ACQUIREs reached the node: re-sent");
    }
}

#[test]
fn async_acquire_cut_off_leaves_no_grant() {
    let cluster = Cluster::start(NODES);
    let locks = fencelock::Locks::cluster(impatient_client(&cluster), cluster.urls()[0].as_str())
        .unwrap()
        .with_settings(quick_retries());
    let rt = tokio::runtime::Runtime::new().unwrap();
    cut_off_on_every_node(&cluster, |key| rt.block_on(locks.acquire(key, ttl(10_000))));
}

#[test]
fn blocking_acquire_cut_off_leaves_no_grant() {
    let cluster = Cluster::start(NODES);
    let locks =
        fencelock::blocking::Locks::cluster(impatient_client(&cluster), cluster.urls()[0].as_str())
            .unwrap()
            .with_settings(quick_retries());
    cut_off_on_every_node(&cluster, |key| locks.acquire(key, ttl(10_000)));
}

/// Start moving the slot of `key` (held) from node 0 to node 1, the key already on the target:
/// its slot.
fn start_moving_a_held_key(cluster: &Cluster, key: &str) -> u16 {
    let slot = key_slot(&mut cluster.nodes[0].conn(), key.as_bytes());
    cluster.start_moving(slot, 0, 1);
    migrate(
        &mut cluster.nodes[0].conn(),
        cluster.nodes[1].port,
        &[key.as_bytes()],
    );
    slot
}

/// The fence of `key` on the node importing its slot (which answers it only after ASKING).
fn fence_while_importing(target: &mut redis::Connection, key: &str) -> Option<i64> {
    call(target, &[b"ASKING"]);
    fence_of(target, key.as_bytes())
}

/// While the slot of a held lock is being moved (the key already on the target): its RELEASE
/// follows the source's ASK, and an ACQUIRE without a wait is granted on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_plain_commands_follow_ask_and_moved() {
    let cluster = Cluster::start(NODES);
    let locks = fencelock::Locks::cluster(client(&cluster), cluster.urls()[0].as_str()).unwrap();
    let key = keys(&cluster).remove(0);
    let held = locks.lock(&key, ttl(5000).watchdog(false)).await.unwrap();
    let slot = start_moving_a_held_key(&cluster, &key);
    let mut target = cluster.nodes[1].conn();
    assert!(held.release().await.unwrap());
    assert_eq!(fence_while_importing(&mut target, &key), None);
    let again = locks.lock(&key, ttl(5000).watchdog(false)).await.unwrap();
    assert_eq!(
        fence_while_importing(&mut target, &key),
        Some(again.fence())
    );
    cluster.finish_moving(slot, 1);
    // The slot map still says node 0: MOVED, then the owner looked up again.
    assert!(again.release().await.unwrap());
    assert!(lock_info_of(&mut target, key.as_bytes()).is_none());
}

#[test]
fn blocking_plain_commands_follow_ask_and_moved() {
    let cluster = Cluster::start(NODES);
    let locks =
        fencelock::blocking::Locks::cluster(client(&cluster), cluster.urls()[0].as_str()).unwrap();
    let key = keys(&cluster).remove(0);
    let held = locks.lock(&key, ttl(5000).watchdog(false)).unwrap();
    let slot = start_moving_a_held_key(&cluster, &key);
    let mut target = cluster.nodes[1].conn();
    assert!(held.release().unwrap());
    assert_eq!(fence_while_importing(&mut target, &key), None);
    let again = locks.lock(&key, ttl(5000).watchdog(false)).unwrap();
    assert_eq!(
        fence_while_importing(&mut target, &key),
        Some(again.fence())
    );
    cluster.finish_moving(slot, 1);
    assert!(again.release().unwrap());
    assert!(lock_info_of(&mut target, key.as_bytes()).is_none());
}
