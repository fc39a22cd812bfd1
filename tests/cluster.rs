//! Locks on a 3-primary cluster: routing by key through a cluster-aware client, MOVED and ASK
//! from wrong nodes, and a held lock (with a waiter) moved to another shard while held: by
//! MIGRATE (the classic resharding path) and, on Valkey 9, by CLUSTER MIGRATESLOTS.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

fn cluster_call(con: &mut redis::cluster::ClusterConnection, args: &[&[u8]]) -> Value {
    command(args)
        .query::<Value>(con)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn a_cluster_client_spreads_locks_over_every_shard() {
    let cluster = Cluster::start(3);
    let mut con = cluster.client();
    let mut fences = Vec::new();
    for i in 0..90 {
        let key = format!("orders:{i}");
        let token = format!("worker-{i}");
        let reply = cluster_call(
            &mut con,
            &[
                b"LOCK.ACQUIRE",
                key.as_bytes(),
                b"60000",
                b"TOKEN",
                token.as_bytes(),
            ],
        );
        let (got, fence) = grant(&reply).unwrap();
        assert_eq!(got, token.as_bytes());
        fences.push(fence);
        assert_eq!(
            cluster_call(
                &mut con,
                &[b"LOCK.RENEW", key.as_bytes(), token.as_bytes(), b"90000"]
            ),
            Value::Int(1)
        );
    }
    for node in &cluster.nodes {
        let keys = int(call(&mut node.conn(), &[b"DBSIZE"]));
        assert!(keys > 10, "every shard holds some locks: {keys}");
    }
    for i in 0..90 {
        let key = format!("orders:{i}");
        let token = format!("worker-{i}");
        assert_eq!(
            cluster_call(
                &mut con,
                &[b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()]
            ),
            Value::Int(1)
        );
    }
    for node in &cluster.nodes {
        assert_eq!(int(call(&mut node.conn(), &[b"DBSIZE"])), 0);
    }
}

#[test]
fn a_wrong_node_answers_moved_for_every_command() {
    let cluster = Cluster::start(3);
    let mut any = cluster.nodes[0].conn();
    let slot = key_slot(&mut any, b"invoice:7");
    let owner = cluster.owner(slot);
    let wrong = (owner + 1) % 3;
    let mut con = cluster.nodes[wrong].conn();
    for cmd in [
        &[&b"LOCK.ACQUIRE"[..], b"invoice:7", b"1000"][..],
        &[b"LOCK.RENEW", b"invoice:7", b"t", b"1000"],
        &[b"LOCK.RELEASE", b"invoice:7", b"t"],
        &[b"LOCK.INFO", b"invoice:7"],
    ] {
        let err = call_err(&mut con, cmd);
        let expected = format!("MOVED {slot} 127.0.0.1:{}", cluster.nodes[owner].port);
        assert!(err.starts_with(&expected), "{cmd:?}: {err}");
    }
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 0);
}

/// A key whose slot is owned by node 0, and another node to move it to.
fn key_on_first_node(cluster: &Cluster) -> (String, u16) {
    let mut con = cluster.nodes[0].conn();
    (0..)
        .map(|i| format!("lock:{i}"))
        .map(|key| {
            let slot = key_slot(&mut con, key.as_bytes());
            (key, slot)
        })
        .find(|(_, slot)| cluster.owner(*slot) == 0)
        .unwrap()
}

/// Put a lock held by "owner" under `key`, with a fence far above every clock (so only a
/// raised fence clock can issue a higher one); returns that fence.
fn restore_future_lock(con: &mut redis::Connection, key: &str) -> i64 {
    let fence = now_us() + 10_000_000_000;
    let payload = dump_of_lock(key, "owner", 60_000, fence);
    call(con, &[b"RESTORE", key.as_bytes(), b"60000", &payload]);
    assert_eq!(info(con, key.as_bytes()).map(|i| i.0), Some(fence));
    fence
}

/// A labeled shared lock in the slot of `key` (two holders, one labeled); its key.
fn labeled_lock_beside(con: &mut redis::Connection, key: &str) -> String {
    let labeled = format!("{{{key}}}:labeled");
    for options in [&[&b"META"[..], b"10.0.0.7:80"][..], &[]] {
        let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", labeled.as_bytes(), b"60000", b"SHARED"];
        args.extend(options);
        assert!(grant(&call(con, &args)).is_some());
    }
    labeled
}

/// The labeled lock arrived whole: both holders, the first with its label.
fn check_moved_label(node: &Server, labeled: &str) {
    let mut con = node.conn();
    let reply = call(&mut con, &[b"LOCK.HOLDERS", labeled.as_bytes()]);
    let Value::Array(entries) = reply else {
        panic!("{labeled}: {reply:?}")
    };
    let metas: Vec<Option<Value>> = entries
        .into_iter()
        .map(|e| info_field_of(&info_pairs(e).unwrap(), "meta"))
        .collect();
    assert_eq!(
        metas,
        [Some(Value::BulkString(b"10.0.0.7:80".to_vec())), None]
    );
}

/// After the move: the owner renews and releases on the new shard, and a new grant there
/// has a higher fence than the moved lock.
fn check_moved_lock(node: &Server, key: &str, token: &str, fence: i64) {
    let mut con = node.conn();
    assert_eq!(info(&mut con, key.as_bytes()).map(|i| i.0), Some(fence));
    assert!(int(call(&mut con, &[b"PTTL", key.as_bytes()])) > 30_000);
    assert_eq!(acquire(&mut con, key, 1000, "intruder"), None);
    let renew = [
        &b"LOCK.RENEW"[..],
        key.as_bytes(),
        token.as_bytes(),
        b"60000",
    ];
    assert_eq!(int(call(&mut con, &renew)), 1);
    let release = [&b"LOCK.RELEASE"[..], key.as_bytes(), token.as_bytes()];
    assert_eq!(int(call(&mut con, &release)), 1);
    let again = acquire(&mut con, key, 1000, "next").unwrap();
    assert!(again > fence, "{again} <= {fence}");
}

#[test]
fn a_held_lock_moved_by_migrate_keeps_token_deadline_and_fence() {
    let cluster = Cluster::start(3);
    let (key, slot) = key_on_first_node(&cluster);
    let (source, target) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut src = source.conn();
    let fence = restore_future_lock(&mut src, &key);
    let labeled = labeled_lock_beside(&mut src, &key);
    let mut blocked = blocked_client(source, &key, 10_000, "waiter", 0);
    wait_for("the waiter to queue", || waiters(&mut src, &key) == 1);
    cluster.start_moving(slot, 0, 1);
    let reply = migrate(&mut src, target.port, &[key.as_bytes(), labeled.as_bytes()]);
    let port = target.port;
    assert_eq!(reply, Value::Okay);
    // The waiter is told to retry, which the cluster redirects to the new owner.
    let reply = String::from_utf8(blocked.read_reply()).unwrap();
    assert!(reply.starts_with("-TRYAGAIN"), "{reply}");
    // Mid-migration the source sends clients on with ASK.
    let err = call_err(&mut src, &[b"LOCK.ACQUIRE", key.as_bytes(), b"1000"]);
    assert!(
        err.starts_with(&format!("ASK {slot} 127.0.0.1:{port}")),
        "{err}"
    );
    cluster.finish_moving(slot, 1);
    assert_eq!(int(call(&mut src, &[b"DBSIZE"])), 0);
    assert_eq!(cluster.owner(slot), 1);
    check_moved_lock(target, &key, "owner", fence);
    check_moved_label(target, &labeled);
    assert_source_left_alone(&mut src);
}

/// Valkey 9's atomic slot migration moves the slot with its locks in one step.
#[test]
fn a_held_lock_moved_by_cluster_migrateslots_keeps_token_deadline_and_fence() {
    if !is_valkey() {
        return; // CLUSTER MIGRATESLOTS is Valkey 9's; Redis 7 has only the MIGRATE path.
    }
    let cluster = Cluster::start(3);
    let (key, slot) = key_on_first_node(&cluster);
    let mut src = cluster.nodes[0].conn();
    let fence = restore_future_lock(&mut src, &key);
    let labeled = labeled_lock_beside(&mut src, &key);
    let mut blocked = blocked_client(&cluster.nodes[0], &key, 10_000, "waiter", 0);
    wait_for("the waiter to queue", || waiters(&mut src, &key) == 1);
    cluster.migrate_slot(slot, 0, 1);
    let reply = String::from_utf8(blocked.read_reply()).unwrap();
    assert!(reply.starts_with("-TRYAGAIN"), "{reply}");
    wait_for("the source to drop the slot's keys", || {
        int(call(&mut src, &[b"DBSIZE"])) == 0
    });
    std::thread::sleep(Duration::from_millis(100));
    check_moved_lock(&cluster.nodes[1], &key, "owner", fence);
    check_moved_label(&cluster.nodes[1], &labeled);
}
