//! Both APIs on a cluster of 3 primaries (slots split, joined with CLUSTER MEET).

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::thread;
use std::time::Duration;

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
    let slot = key_slot(&mut cluster.nodes[0].conn(), key.as_bytes());
    cluster.start_moving(slot, 0, 1);
    migrate(
        &mut cluster.nodes[0].conn(),
        cluster.nodes[1].port,
        &[key.as_bytes()],
    );
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
