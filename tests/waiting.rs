//! LOCK.ACQUIRE ... BLOCK: server-side FIFO waiting and hand-off, on a real server.
//! Blocked clients are raw connections: the command is sent, and the reply read when due.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Like `blocked_client`, then wait until the server has queued it (so arrival order is known).
fn queue(srv: &Server, con: &mut redis::Connection, key: &str, token: &str) -> Raw {
    let before = waiters(con, key);
    let raw = blocked_client(srv, key, 10_000, token, 0);
    wait_for("the waiter to queue", || waiters(con, key) == before + 1);
    raw
}

fn blocked_clients(con: &mut redis::Connection) -> i64 {
    info_field(con, "clients", "blocked_clients")
        .unwrap()
        .parse()
        .unwrap()
}

fn release(con: &mut redis::Connection, key: &str, token: &str) -> i64 {
    int(call(
        con,
        &[b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()],
    ))
}

/// The grant a blocked connection receives: (token, fence), or None for null.
fn granted(raw: &mut Raw) -> Option<(Vec<u8>, i64)> {
    grant(&raw.value())
}

fn nothing_yet(raw: &mut Raw) -> bool {
    raw.reply_within(Duration::from_millis(50)).is_none()
}

#[test]
fn waiters_are_served_in_arrival_order_with_new_fences_and_their_own_ttl() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut last = acquire(&mut con, "k", 10_000, "holder").unwrap();
    let mut queued: Vec<(String, Raw)> = (1..=5)
        .map(|i| {
            let token = format!("w{i}");
            let raw = queue(&srv, &mut con, "k", &token);
            (token, raw)
        })
        .collect();
    assert_eq!(waiters(&mut con, "k"), 5);
    // A non-blocking ACQUIRE does not overtake them.
    assert_eq!(acquire(&mut con, "k", 10_000, "barger"), None);
    let mut holder = "holder".to_string();
    for i in 0..queued.len() {
        assert!(queued[i + 1..].iter_mut().all(|(_, raw)| nothing_yet(raw)));
        assert_eq!(release(&mut con, "k", &holder), 1);
        let (token, raw) = &mut queued[i];
        let (got, fence) = granted(raw).unwrap();
        assert_eq!(got, token.as_bytes());
        assert!(fence > last, "fences rise on every hand-off");
        last = fence;
        let (info_fence, ttl, left) = info(&mut con, b"k").unwrap();
        assert_eq!(info_fence, fence);
        assert!(ttl > 9_000 && ttl <= 10_000, "the waiter's own ttl: {ttl}");
        holder = token.clone();
        assert_eq!(left, (queued.len() - i - 1) as i64);
    }
    assert_eq!(release(&mut con, "k", &holder), 1);
    assert_eq!(info(&mut con, b"k"), None);
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn a_chain_of_waiters_each_holding_briefly_is_served_on_release_not_on_expiry() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "chain", 10_000, "first").unwrap();
    let n = 30;
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let port = srv.port;
            std::thread::spawn(move || {
                let mut raw = Raw::connect(port);
                let token = format!("t{i}");
                raw.send(&[
                    b"LOCK.ACQUIRE",
                    b"chain",
                    b"10000",
                    b"TOKEN",
                    token.as_bytes(),
                    b"BLOCK",
                    b"0",
                ]);
                let (got, fence) = grant(&raw.value()).unwrap();
                assert_eq!(got, token.as_bytes());
                std::thread::sleep(Duration::from_millis(1));
                assert_eq!(
                    raw.cmd(&[b"LOCK.RELEASE", b"chain", token.as_bytes()]),
                    b":1\r\n"
                );
                fence
            })
        })
        .collect();
    wait_for("every waiter to queue", || waiters(&mut con, "chain") == n);
    let start = Instant::now();
    assert_eq!(release(&mut con, "chain", "first"), 1);
    let mut fences: Vec<i64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Each lock lasts 10 s: had any hand-off waited for an expiry, this would take 10 s.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    fences.sort();
    fences.dedup();
    assert_eq!(fences.len(), n as usize, "every grant had its own fence");
    assert_eq!(info(&mut con, b"chain"), None);
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn a_timeout_replies_null_and_leaves_the_queue() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 10_000, "holder").unwrap();
    let start = Instant::now();
    let mut first = blocked_client(&srv, "k", 1000, "short", 200);
    let mut second = queue(&srv, &mut con, "k", "long");
    assert_eq!(first.read_reply(), b"$-1\r\n");
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(waiters(&mut con, "k"), 1);
    // The one that timed out is not served; the next one is.
    assert_eq!(release(&mut con, "k", "holder"), 1);
    assert_eq!(granted(&mut second).unwrap().0, b"long");
    assert_eq!(blocked_clients(&mut con), 0);
    // RESP3 null.
    let mut resp3 = srv.raw();
    assert!(resp3.cmd(&[b"HELLO", b"3"]).starts_with(b"%"));
    resp3.send(&[b"LOCK.ACQUIRE", b"k", b"100", b"BLOCK", b"50"]);
    assert_eq!(resp3.read_reply(), b"_\r\n");
}

#[test]
fn expiry_hands_the_lock_over_at_the_deadline_without_waiting_for_redis_expiry() {
    let srv = Server::start();
    let mut con = srv.conn();
    // Only the module's own timer can hand over now.
    call(&mut con, &[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"0"]);
    acquire(&mut con, "k", 300, "holder").unwrap();
    let start = Instant::now();
    let mut waiter = blocked_client(&srv, "k", 5000, "next", 0);
    let (token, _) = granted(&mut waiter).unwrap();
    let waited = start.elapsed();
    assert_eq!(token, b"next");
    assert!(waited >= Duration::from_millis(280), "{waited:?}");
    // Well before its 5 s BLOCK timeout; the margin is for a loaded machine.
    assert!(waited < Duration::from_millis(2000), "{waited:?}");
    // The old holder can no longer renew; the new one can.
    let renew = |con: &mut redis::Connection, token: &[u8]| {
        int(call(con, &[b"LOCK.RENEW", b"k", token, b"5000"]))
    };
    assert_eq!(renew(&mut con, b"holder"), 0);
    assert_eq!(renew(&mut con, b"next"), 1);
}

#[test]
fn renewing_moves_the_hand_off_with_the_deadline() {
    let srv = Server::start();
    let mut con = srv.conn();
    call(&mut con, &[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"0"]);
    acquire(&mut con, "k", 300, "holder").unwrap();
    let mut waiter = queue(&srv, &mut con, "k", "next");
    // Longer: the first deadline passes with the lock still held.
    let renew = |con: &mut redis::Connection, ttl: &[u8]| {
        int(call(con, &[b"LOCK.RENEW", b"k", b"holder", ttl]))
    };
    assert_eq!(renew(&mut con, b"5000"), 1);
    assert!(waiter.reply_within(Duration::from_millis(600)).is_none());
    // Shorter: the hand-off comes earlier than the deadline it had.
    let start = Instant::now();
    assert_eq!(renew(&mut con, b"200"), 1);
    assert_eq!(granted(&mut waiter).unwrap().0, b"next");
    assert!(start.elapsed() < Duration::from_millis(1000));
}

#[test]
fn del_unlink_flushdb_flushall_and_swapdb_hand_the_lock_over() {
    let srv = Server::start();
    let mut con = srv.conn();
    let frees: [&[&[u8]]; 5] = [
        &[b"DEL", b"k"],
        &[b"UNLINK", b"k"],
        &[b"FLUSHDB"],
        &[b"FLUSHALL"],
        &[b"SWAPDB", b"0", b"9"],
    ];
    for (i, free) in frees.iter().enumerate() {
        let old = acquire(&mut con, "k", 60_000, "holder").unwrap();
        let token = format!("w{i}");
        let mut waiter = queue(&srv, &mut con, "k", &token);
        call(&mut con, free);
        let (got, fence) = granted(&mut waiter).unwrap();
        assert_eq!(got, token.as_bytes(), "after {free:?}");
        assert!(fence > old);
        assert_eq!(info(&mut con, b"k").unwrap().0, fence, "after {free:?}");
        assert_eq!(release(&mut con, "k", &token), 1);
        call(&mut con, &[b"FLUSHALL"]);
    }
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn waiters_of_a_key_overwritten_by_another_type_get_wrongtype() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 60_000, "holder").unwrap();
    let mut waiter = queue(&srv, &mut con, "k", "w");
    call(&mut con, &[b"SET", b"k", b"plain"]);
    let reply = String::from_utf8(waiter.read_reply()).unwrap();
    assert!(reply.starts_with("-WRONGTYPE"), "{reply}");
    assert_eq!(
        call(&mut con, &[b"GET", b"k"]),
        Value::BulkString(b"plain".to_vec())
    );
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn a_freed_lock_goes_to_the_first_waiter_before_a_caller_in_the_same_batch() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 60_000, "holder").unwrap();
    let mut waiter = queue(&srv, &mut con, "k", "waiter");
    // DEL and ACQUIRE in one packet: the deferred hand-off has not run when ACQUIRE comes.
    let mut raw = srv.raw();
    let mut batch = Vec::new();
    for args in [
        &[&b"DEL"[..], b"k"][..],
        &[b"LOCK.ACQUIRE", b"k", b"1000", b"TOKEN", b"barger"],
    ] {
        batch.extend(resp(args));
    }
    raw.write_all(&batch);
    assert_eq!(raw.read_reply(), b":1\r\n");
    assert_eq!(raw.read_reply(), b"$-1\r\n", "the caller did not overtake");
    assert_eq!(granted(&mut waiter).unwrap().0, b"waiter");
}

#[test]
fn a_waiter_that_disconnects_leaves_the_queue() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 60_000, "holder").unwrap();
    let gone = queue(&srv, &mut con, "k", "gone");
    let mut stays = queue(&srv, &mut con, "k", "stays");
    drop(gone);
    wait_for("the closed waiter to leave", || waiters(&mut con, "k") == 1);
    assert_eq!(release(&mut con, "k", "holder"), 1);
    assert_eq!(granted(&mut stays).unwrap().0, b"stays");
    assert_eq!(blocked_clients(&mut con), 0);
}

/// "holder" holds `k`; `victim` waits first and "next" behind it. Returns the victim's
/// connection (to keep open until EXEC), "next", and a connection with a transaction open
/// that releases the lock, so granting it to `victim`, and kills `victim` before the grant's
/// reply can be delivered. The caller queues more, or sends EXEC.
fn grant_then_kill(srv: &Server, con: &mut redis::Connection, victim: &str) -> (Raw, Raw, Raw) {
    acquire(con, "k", 60_000, "holder").unwrap();
    let mut doomed = srv.raw();
    let id = doomed.client_id();
    doomed.send_acquire_blocking("k", 60_000, victim, 0);
    wait_for("the waiter to queue", || waiters(con, "k") == 1);
    let next = queue(srv, con, "k", "next");
    let mut tx = srv.raw();
    assert_eq!(tx.cmd(&[b"MULTI"]), b"+OK\r\n");
    tx.cmd(&[b"LOCK.RELEASE", b"k", b"holder"]);
    tx.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]);
    (doomed, next, tx)
}

#[test]
fn a_granted_waiter_that_disconnected_before_its_reply_does_not_keep_the_lock() {
    let srv = Server::start();
    let mut con = srv.conn();
    let (_doomed, mut next, mut tx) = grant_then_kill(&srv, &mut con, "doomed");
    let exec = tx.cmd(&[b"EXEC"]);
    assert_eq!(exec, b"*2\r\n:1\r\n:1\r\n");
    // The grant was taken back and handed on.
    assert_eq!(granted(&mut next).unwrap().0, b"next");
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"doomed", b"1000"])),
        0
    );
    assert_eq!(waiters(&mut con, "k"), 0);
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn client_unblock_answers_null_or_an_error_and_leaves_the_queue() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 60_000, "holder").unwrap();
    for (how, expect) in [(&b"TIMEOUT"[..], "$-1"), (b"ERROR", "-UNBLOCKED")] {
        let mut waiter = srv.raw();
        let id = waiter.client_id();
        waiter.send(&[b"LOCK.ACQUIRE", b"k", b"1000", b"BLOCK", b"0"]);
        wait_for("the waiter to queue", || waiters(&mut con, "k") == 1);
        assert_eq!(
            int(call(&mut con, &[b"CLIENT", b"UNBLOCK", id.as_bytes(), how])),
            1
        );
        let reply = String::from_utf8(waiter.read_reply()).unwrap();
        assert!(reply.starts_with(expect), "{how:?}: {reply}");
        assert_eq!(waiters(&mut con, "k"), 0);
        // The connection is usable again.
        assert_eq!(waiter.cmd(&[b"PING"]), b"+PONG\r\n");
    }
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn block_in_multi_lua_and_functions_is_one_attempt_and_leaves_no_waiter() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 60_000, "holder").unwrap();
    let mut raw = srv.raw();
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    raw.cmd(&[b"LOCK.ACQUIRE", b"k", b"1000", b"BLOCK", b"0"]);
    assert_eq!(raw.cmd(&[b"EXEC"]), b"*1\r\n$-1\r\n");
    let script = b"return redis.call('LOCK.ACQUIRE', KEYS[1], 1000, 'BLOCK', 0)";
    assert_eq!(call(&mut con, &[b"EVAL", script, b"1", b"k"]), Value::Nil);
    call(
        &mut con,
        &[
            b"FUNCTION",
            b"LOAD",
            b"#!lua name=w\nredis.register_function('w', function(keys) \
              return redis.call('LOCK.ACQUIRE', keys[1], 1000, 'BLOCK', 0) end)",
        ],
    );
    assert_eq!(call(&mut con, &[b"FCALL", b"w", b"1", b"k"]), Value::Nil);
    assert_eq!(waiters(&mut con, "k"), 0);
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn hundreds_of_waiters_on_many_keys_are_all_served() {
    let srv = Server::start();
    let mut con = srv.conn();
    let (keys, per_key) = (25, 12);
    let mut queued: Vec<Vec<(String, Raw)>> = Vec::new();
    for k in 0..keys {
        let key = format!("key{k}");
        acquire(&mut con, &key, 60_000, "holder").unwrap();
        let waiting = (0..per_key)
            .map(|i| {
                let token = format!("{key}-{i}");
                (token.clone(), blocked_client(&srv, &key, 60_000, &token, 0))
            })
            .collect();
        queued.push(waiting);
    }
    wait_for("every waiter to queue", || {
        blocked_clients(&mut con) == keys * per_key as i64
    });
    for (k, mut waiting) in queued.into_iter().enumerate() {
        let key = format!("key{k}");
        let mut holder = "holder".to_string();
        while !waiting.is_empty() {
            assert_eq!(release(&mut con, &key, &holder), 1);
            // Arrival order within a key is tested above; here: exactly one waiter of this
            // key is served per release.
            let served = loop {
                if let Some(i) = waiting
                    .iter_mut()
                    .position(|(_, raw)| raw.reply_within(Duration::from_millis(1)).is_some())
                {
                    break i;
                }
            };
            let (token, _) = waiting.remove(served);
            assert_eq!(
                info(&mut con, key.as_bytes()).unwrap().2,
                waiting.len() as i64
            );
            holder = token;
        }
        assert_eq!(release(&mut con, &key, &holder), 1);
    }
    assert_eq!(blocked_clients(&mut con), 0);
}

#[test]
fn a_pause_holds_hand_offs_back_until_it_ends() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 200, "holder").unwrap();
    let mut waiter = queue(&srv, &mut con, "k", "next");
    call(&mut con, &[b"CLIENT", b"PAUSE", b"60000", b"WRITE"]);
    // The deadline passes while writes are paused: no hand-off, and no crash.
    assert!(waiter.reply_within(Duration::from_millis(500)).is_none());
    call(&mut con, &[b"CLIENT", b"UNPAUSE"]);
    assert_eq!(granted(&mut waiter).unwrap().0, b"next");
    srv.assert_alive();
}

#[test]
fn a_replica_follows_every_hand_off() {
    let primary = Server::start();
    let replica = Server::start();
    let mut p = primary.conn();
    let mut r = replica.conn();
    call(
        &mut r,
        &[
            b"REPLICAOF",
            b"127.0.0.1",
            primary.port.to_string().as_bytes(),
        ],
    );
    wait_for("the replica to sync", || {
        info_field(&mut r, "replication", "master_link_status").as_deref() == Some("up")
    });
    acquire(&mut p, "k", 300, "holder").unwrap();
    let mut by_release = queue(&primary, &mut p, "k", "a");
    let mut by_expiry = queue(&primary, &mut p, "k", "b");
    assert_eq!(release(&mut p, "k", "holder"), 1);
    let (_, fence_a) = granted(&mut by_release).unwrap();
    wait_for("the replica to see the hand-off", || {
        info(&mut r, b"k").is_some_and(|(fence, _, _)| fence == fence_a)
    });
    // Shorten a's lock: the timer hands it to b.
    call(&mut p, &[b"LOCK.RENEW", b"k", b"a", b"100"]);
    let (_, fence_b) = granted(&mut by_expiry).unwrap();
    assert!(fence_b > fence_a);
    wait_for("the replica to see the expiry hand-off", || {
        info(&mut r, b"k").is_some_and(|(fence, _, _)| fence == fence_b)
    });
    // Nothing waits on the replica: it refuses ACQUIRE, and shows no waiters.
    let err = call_err(&mut r, &[b"LOCK.ACQUIRE", b"k", b"100", b"BLOCK", b"0"]);
    assert!(err.starts_with("READONLY"), "{err}");
    assert_eq!(info(&mut r, b"k").unwrap().2, 0);
    let digest = |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST"]);
    wait_for("equal digests", || digest(&mut p) == digest(&mut r));
}

#[test]
fn waiters_are_answered_when_the_primary_becomes_a_replica() {
    let other = Server::start();
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 60_000, "holder").unwrap();
    let mut waiter = queue(&srv, &mut con, "k", "w");
    call(
        &mut con,
        &[
            b"REPLICAOF",
            b"127.0.0.1",
            other.port.to_string().as_bytes(),
        ],
    );
    let reply = String::from_utf8(waiter.read_reply()).unwrap();
    assert!(reply.starts_with("-UNBLOCKED"), "{reply}");
    assert_eq!(blocked_clients(&mut con), 0);
    srv.assert_alive();
}

/// A hand-off and a BLOCK timeout falling due together: the waiter always gets a reply (the
/// grant or null), never silence, and a granted waiter holds the lock.
#[test]
fn a_grant_racing_the_timeout_always_gets_a_reply() {
    let srv = Server::start();
    let mut con = srv.conn();
    for i in 0..20 {
        let key = format!("race{i}");
        acquire(&mut con, &key, 200, "holder").unwrap();
        let mut waiter = blocked_client(&srv, &key, 5000, "w", 199 + (i % 3));
        let reply = waiter
            .reply_within(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{key}: no reply at all"));
        let granted = grant(&redis::parse_redis_value(&reply).unwrap()).is_some();
        let renew = [&b"LOCK.RENEW"[..], key.as_bytes(), b"w", b"5000"];
        assert_eq!(int(call(&mut con, &renew)), i64::from(granted), "{key}");
    }
    assert_eq!(blocked_clients(&mut con), 0);
}

/// A grant whose reply was lost, then retried by its owner (same token) before the server
/// took it back: the owner keeps it, and the next waiter keeps waiting.
#[test]
fn a_retry_by_the_owner_keeps_a_grant_whose_reply_was_lost() {
    let srv = Server::start();
    let mut con = srv.conn();
    let (_doomed, mut next, mut tx) = grant_then_kill(&srv, &mut con, "owner");
    tx.cmd(&[b"LOCK.ACQUIRE", b"k", b"60000", b"TOKEN", b"owner"]);
    let exec = String::from_utf8(tx.cmd(&[b"EXEC"])).unwrap();
    assert!(
        exec.starts_with("*3\r\n:1\r\n:1\r\n*2\r\n$5\r\nowner\r\n"),
        "{exec:?}"
    );
    assert!(next.reply_within(Duration::from_millis(300)).is_none());
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"owner", b"60000"])),
        1
    );
    assert_eq!(waiters(&mut con, "k"), 1);
}
