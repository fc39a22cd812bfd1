//! LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE and LOCK.INFO against a real server.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::*;

#[test]
fn acquire_free_lock_replies_a_server_token_and_a_clock_fence() {
    let srv = Server::start();
    let mut con = srv.conn();
    let before = now_us();
    let (token, fence) = grant(&call(&mut con, &[b"LOCK.ACQUIRE", b"job", b"10000"])).unwrap();
    let after = now_us();
    assert_eq!(token.len(), 32);
    assert!(token
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
    // The fence follows the server's Unix clock in microseconds; the first grant after a
    // start jumps lock.fence-jump (60 s) ahead, above any grant this server may have missed.
    assert!(
        fence >= before + 60_000_000 && fence <= after + 60_000_000 + 5_000_000,
        "{fence}"
    );
    let pttl = int(call(&mut con, &[b"PTTL", b"job"]));
    assert!(pttl > 9_000 && pttl <= 10_000, "{pttl}");
    let kind: String = redis::cmd("TYPE").arg("job").query(&mut con).unwrap();
    assert_eq!(kind, "fencelock");
    let err = call_err(&mut con, &[b"GET", b"job"]);
    assert!(err.starts_with("WRONGTYPE"), "{err}");
    // Two server tokens never repeat.
    let (token2, fence2) = grant(&call(&mut con, &[b"LOCK.ACQUIRE", b"job2", b"10000"])).unwrap();
    assert_ne!(token, token2);
    assert!(fence2 > fence);
}

#[test]
fn a_held_lock_is_refused_to_other_owners_with_null() {
    let srv = Server::start();
    let mut con = srv.conn();
    assert!(acquire(&mut con, "k", 10_000, "alice").is_some());
    assert_eq!(acquire(&mut con, "k", 10_000, "bob"), None);
    assert_eq!(call(&mut con, &[b"LOCK.ACQUIRE", b"k", b"100"]), Value::Nil);
    let (fence, _, _) = info(&mut con, b"k").unwrap();
    // bob's attempt changed nothing.
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", b"bob"])), 0);
    assert_eq!(info(&mut con, b"k").unwrap().0, fence);
}

#[test]
fn retry_by_the_same_token_keeps_the_fence_and_moves_the_deadline() {
    let srv = Server::start();
    let mut con = srv.conn();
    let fence = acquire(&mut con, "k", 1_000, "me").unwrap();
    sleep(Duration::from_millis(30));
    assert_eq!(acquire(&mut con, "k", 60_000, "me"), Some(fence));
    let pttl = int(call(&mut con, &[b"PTTL", b"k"]));
    assert!(pttl > 59_000, "{pttl}");
    // Not reentrant: one RELEASE frees it whatever the number of retries.
    assert_eq!(acquire(&mut con, "k", 60_000, "me"), Some(fence));
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", b"me"])), 1);
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"k"])), 0);
    assert_eq!(info(&mut con, b"k"), None);
}

#[test]
fn renew_extends_only_for_the_owner_and_keeps_the_fence() {
    let srv = Server::start();
    let mut con = srv.conn();
    let fence = acquire(&mut con, "k", 1_000, "me").unwrap();
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"me", b"50000"])),
        1
    );
    let pttl = int(call(&mut con, &[b"PTTL", b"k"]));
    assert!(pttl > 49_000 && pttl <= 50_000, "{pttl}");
    let (f, ttl, waiters) = info(&mut con, b"k").unwrap();
    assert_eq!(f, fence);
    assert!(ttl > 49_000, "{ttl}");
    assert_eq!(waiters, 0);
    // Someone else's token: 0, deadline untouched.
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"other", b"100"])),
        0
    );
    assert!(int(call(&mut con, &[b"PTTL", b"k"])) > 49_000);
    // A free lock: 0, and no key is created.
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"free", b"me", b"100"])),
        0
    );
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"free"])), 0);
}

#[test]
fn release_frees_only_for_the_owner() {
    let srv = Server::start();
    let mut con = srv.conn();
    let fence = acquire(&mut con, "k", 10_000, "me").unwrap();
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", b"other"])), 0);
    assert_eq!(info(&mut con, b"k").unwrap().0, fence);
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", b"me"])), 1);
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"k"])), 0);
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", b"me"])), 0);
    // Free again: anyone may take it, with a new, higher fence.
    assert!(acquire(&mut con, "k", 10_000, "other").unwrap() > fence);
}

#[test]
fn an_expired_lock_is_free_and_its_old_owner_has_lost_it() {
    let srv = Server::start();
    let mut con = srv.conn();
    let old = acquire(&mut con, "k", 50, "old").unwrap();
    sleep(Duration::from_millis(120));
    assert_eq!(info(&mut con, b"k"), None);
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"old", b"1000"])),
        0
    );
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", b"old"])), 0);
    let new = acquire(&mut con, "k", 10_000, "new").unwrap();
    assert!(new > old);
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"old", b"1000"])),
        0
    );
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"k", b"old"])), 0);
    assert_eq!(info(&mut con, b"k").unwrap().0, new);
}

#[test]
fn the_old_owner_retaking_an_expired_lock_gets_a_new_grant() {
    let srv = Server::start();
    let mut con = srv.conn();
    let first = acquire(&mut con, "k", 50, "me").unwrap();
    sleep(Duration::from_millis(120));
    let second = acquire(&mut con, "k", 10_000, "me").unwrap();
    assert!(
        second > first,
        "an expired lock is a new grant, not a retry"
    );
}

#[test]
fn a_free_lock_takes_no_memory() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "a", 30, "me").unwrap();
    acquire(&mut con, "b", 10_000, "me").unwrap();
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"b", b"me"])), 1);
    sleep(Duration::from_millis(100));
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"a", b"b"])), 0);
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 0);
}

#[test]
fn info_shows_fence_ttl_and_waiters_but_never_the_token() {
    let srv = Server::start();
    let mut con = srv.conn();
    assert_eq!(info(&mut con, b"k"), None);
    let fence = acquire(&mut con, "k", 5_000, "secret-token").unwrap();
    let (f, ttl, waiters) = info(&mut con, b"k").unwrap();
    assert_eq!(f, fence);
    assert!(ttl > 4_000 && ttl <= 5_000, "{ttl}");
    assert_eq!(waiters, 0);
    let raw = srv.raw().cmd(&[b"LOCK.INFO", b"k"]);
    assert!(!raw.windows(6).any(|w| w == b"secret"), "{raw:?}");
}

#[test]
fn fences_strictly_increase_across_keys_databases_and_deletions() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut last = 0;
    let mut check = |f: i64| {
        assert!(f > last, "{f} after {last}");
        last = f;
    };
    for i in 0..200 {
        check(
            acquire(&mut con, &format!("k{}", i % 7), 10_000, &format!("t{i}")).unwrap_or_else(
                || {
                    // Held: free it the ordinary way, then take it.
                    let key = format!("k{}", i % 7);
                    call(&mut con, &[b"DEL", key.as_bytes()]);
                    acquire(&mut con, &key, 10_000, &format!("t{i}")).unwrap()
                },
            ),
        );
    }
    let f = acquire(&mut con, "r", 10_000, "a").unwrap();
    check(f);
    call(&mut con, &[b"LOCK.RELEASE", b"r", b"a"]);
    check(acquire(&mut con, "r", 10_000, "a").unwrap());
    call(&mut con, &[b"DEL", b"r"]);
    check(acquire(&mut con, "r", 10_000, "a").unwrap());
    call(&mut con, &[b"FLUSHALL"]);
    check(acquire(&mut con, "r", 10_000, "a").unwrap());
    call(&mut con, &[b"SELECT", b"3"]);
    check(acquire(&mut con, "r", 10_000, "a").unwrap());
    call(&mut con, &[b"FLUSHDB"]);
    check(acquire(&mut con, "r", 10_000, "a").unwrap());
}

#[test]
fn keys_and_tokens_are_binary_safe() {
    let srv = Server::start();
    let mut con = srv.conn();
    let key: &[u8] = b"lock:\x00\r\n\xff";
    let token: &[u8] = b"\x00tok\r\n\xfe";
    let (t, fence) = grant(&call(
        &mut con,
        &[b"LOCK.ACQUIRE", key, b"10000", b"TOKEN", token],
    ))
    .unwrap();
    assert_eq!(t, token);
    // A key that differs only after the NUL is another lock.
    assert!(grant(&call(&mut con, &[b"LOCK.ACQUIRE", b"lock:\x00", b"10000"])).is_some());
    // The same token but for its last byte is another owner.
    assert_eq!(
        call(
            &mut con,
            &[b"LOCK.ACQUIRE", key, b"10000", b"TOKEN", b"\x00tok\r\n\xff"]
        ),
        Value::Nil
    );
    assert_eq!(info(&mut con, key).unwrap().0, fence);
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", key, token, b"20000"])),
        1
    );
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", key, token])), 1);
    // The longest token, 256 bytes of every value.
    let long: Vec<u8> = (0..=255u8).collect();
    let (t, _) = grant(&call(
        &mut con,
        &[b"LOCK.ACQUIRE", b"long", b"1000", b"TOKEN", &long],
    ))
    .unwrap();
    assert_eq!(t, long);
}

#[test]
fn resp2_replies_byte_for_byte() {
    let srv = Server::start();
    let mut raw = srv.raw();
    let reply = raw.cmd(&[b"LOCK.ACQUIRE", b"k", b"10000", b"TOKEN", b"abc"]);
    let text = String::from_utf8(reply).unwrap();
    assert!(text.starts_with("*2\r\n$3\r\nabc\r\n:"), "{text:?}");
    assert_eq!(
        raw.cmd(&[b"LOCK.ACQUIRE", b"k", b"10000", b"TOKEN", b"xyz"]),
        b"$-1\r\n"
    );
    assert_eq!(raw.cmd(&[b"LOCK.INFO", b"free"]), b"$-1\r\n");
    let info = String::from_utf8(raw.cmd(&[b"LOCK.INFO", b"k"])).unwrap();
    // Fields in name order; an exclusive lock has one holder and no limit.
    assert!(info.starts_with("*10\r\n$5\r\nfence\r\n:"), "{info:?}");
    assert!(
        info.contains("$7\r\nholders\r\n:1\r\n$4\r\nmode\r\n$9\r\nexclusive\r\n$3\r\nttl\r\n:"),
        "{info:?}"
    );
    assert!(
        info.contains("$3\r\nttl\r\n:") && info.ends_with("$7\r\nwaiters\r\n:0\r\n"),
        "{info:?}"
    );
    assert_eq!(raw.cmd(&[b"LOCK.RENEW", b"k", b"xyz", b"100"]), b":0\r\n");
    assert_eq!(raw.cmd(&[b"LOCK.RENEW", b"k", b"abc", b"100"]), b":1\r\n");
    assert_eq!(raw.cmd(&[b"LOCK.RELEASE", b"k", b"abc"]), b":1\r\n");
    assert_eq!(raw.cmd(&[b"LOCK.RELEASE", b"k", b"abc"]), b":0\r\n");
}

#[test]
fn resp3_replies_byte_for_byte() {
    let srv = Server::start();
    let mut raw = srv.raw();
    raw.cmd(&[b"HELLO", b"3"]);
    let text =
        String::from_utf8(raw.cmd(&[b"LOCK.ACQUIRE", b"k", b"10000", b"TOKEN", b"abc"])).unwrap();
    assert!(text.starts_with("*2\r\n$3\r\nabc\r\n:"), "{text:?}");
    assert_eq!(
        raw.cmd(&[b"LOCK.ACQUIRE", b"k", b"10000", b"TOKEN", b"xyz"]),
        b"_\r\n"
    );
    assert_eq!(raw.cmd(&[b"LOCK.INFO", b"free"]), b"_\r\n");
    let info = String::from_utf8(raw.cmd(&[b"LOCK.INFO", b"k"])).unwrap();
    assert!(info.starts_with("%5\r\n$5\r\nfence\r\n:"), "{info:?}");
    assert!(
        info.contains("$4\r\nmode\r\n$9\r\nexclusive\r\n"),
        "{info:?}"
    );
    // And through a RESP3 client library.
    let mut con = srv.conn_resp3();
    assert!(matches!(
        call(&mut con, &[b"LOCK.INFO", b"k"]),
        Value::Map(_)
    ));
    assert_eq!(info_fence(&mut con), info_fence(&mut srv.conn()));
}

fn info_fence(con: &mut redis::Connection) -> i64 {
    info(con, b"k").unwrap().0
}

#[test]
fn multi_exec_runs_the_commands_atomically_and_block_is_one_attempt() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut raw = srv.raw();
    acquire(&mut con, "held", 10_000, "owner").unwrap();
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    for cmd in [
        &[&b"LOCK.ACQUIRE"[..], b"k", b"10000", b"TOKEN", b"me"][..],
        &[
            b"LOCK.ACQUIRE",
            b"held",
            b"10000",
            b"TOKEN",
            b"me",
            b"BLOCK",
            b"0",
        ],
        &[b"LOCK.RENEW", b"k", b"me", b"20000"],
        &[b"LOCK.INFO", b"held"],
        &[b"LOCK.RELEASE", b"k", b"me"],
    ] {
        assert_eq!(raw.cmd(cmd), b"+QUEUED\r\n");
    }
    let exec = String::from_utf8(raw.cmd(&[b"EXEC"])).unwrap();
    assert!(exec.starts_with("*5\r\n*2\r\n$2\r\nme\r\n:"), "{exec:?}");
    // BLOCK inside MULTI did not wait and left the lock to its owner.
    assert!(exec.contains("\r\n$-1\r\n:1\r\n*10\r\n"), "{exec:?}");
    assert!(exec.ends_with(":1\r\n"), "{exec:?}");
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"k"])), 0);
}

#[test]
fn lua_scripts_and_functions_can_use_the_commands_and_block_is_one_attempt() {
    let srv = Server::start();
    let mut con = srv.conn();
    let v = call(
        &mut con,
        &[
            b"EVAL",
            b"return redis.call('LOCK.ACQUIRE', KEYS[1], 10000, 'TOKEN', ARGV[1])",
            b"1",
            b"k",
            b"lua",
        ],
    );
    let (token, fence) = grant(&v).unwrap();
    assert_eq!(token, b"lua");
    let v = call(
        &mut con,
        &[
            b"EVAL",
            b"return redis.call('LOCK.ACQUIRE', KEYS[1], 10000, 'BLOCK', 0)",
            b"1",
            b"k",
        ],
    );
    assert_eq!(v, Value::Nil);
    call(
        &mut con,
        &[
            b"FUNCTION",
            b"LOAD",
            b"#!lua name=locks\nredis.register_function('take', function(keys, args) \
              return redis.call('LOCK.ACQUIRE', keys[1], 10000, 'TOKEN', args[1], 'BLOCK', 5000) end)",
        ],
    );
    assert_eq!(
        call(&mut con, &[b"FCALL", b"take", b"1", b"k", b"fn"]),
        Value::Nil
    );
    let (token, f2) = grant(&call(&mut con, &[b"FCALL", b"take", b"1", b"k2", b"fn"])).unwrap();
    assert_eq!(token, b"fn");
    assert!(f2 > fence);
    // Read-only scripts may call LOCK.INFO but not ACQUIRE.
    let v = call(
        &mut con,
        &[
            b"EVAL_RO",
            b"return redis.call('LOCK.INFO', KEYS[1])",
            b"1",
            b"k",
        ],
    );
    assert!(matches!(v, Value::Array(ref a) if a.len() == 10), "{v:?}");
    let err = call_err(
        &mut con,
        &[
            b"EVAL_RO",
            b"return redis.call('LOCK.ACQUIRE', KEYS[1], 100)",
            b"1",
            b"k3",
        ],
    );
    assert!(err.contains("Write commands are not allowed"), "{err}");
}

#[test]
fn block_outside_transactions_takes_a_free_lock_at_once() {
    let srv = Server::start();
    let mut con = srv.conn();
    let v = call(
        &mut con,
        &[
            b"LOCK.ACQUIRE",
            b"k",
            b"10000",
            b"BLOCK",
            b"100",
            b"TOKEN",
            b"me",
        ],
    );
    assert_eq!(grant(&v).unwrap().0, b"me");
    // On a held lock it waits, here until its timeout: null.
    let start = std::time::Instant::now();
    let v = call(
        &mut con,
        &[b"LOCK.ACQUIRE", b"k", b"10000", b"BLOCK", b"100"],
    );
    assert_eq!(v, Value::Nil);
    assert!(start.elapsed() >= std::time::Duration::from_millis(100));
}

#[test]
fn copy_of_a_lock_is_refused() {
    let srv = Server::start();
    let mut con = srv.conn();
    let fence = acquire(&mut con, "k", 10_000, "me").unwrap();
    let err = call_err(&mut con, &[b"COPY", b"k", b"k2"]);
    assert!(err.starts_with("ERR"), "{err}");
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"k2"])), 0);
    assert_eq!(info(&mut con, b"k").unwrap().0, fence);
}

#[test]
fn other_types_answer_wrongtype_and_are_not_touched() {
    let srv = Server::start();
    let mut con = srv.conn();
    call(&mut con, &[b"SET", b"s", b"value"]);
    call(&mut con, &[b"RPUSH", b"l", b"a"]);
    for key in [&b"s"[..], b"l"] {
        for cmd in [
            &[&b"LOCK.ACQUIRE"[..], key, b"1000"][..],
            &[
                b"LOCK.ACQUIRE",
                key,
                b"1000",
                b"TOKEN",
                b"t",
                b"BLOCK",
                b"10",
            ],
            &[b"LOCK.RENEW", key, b"t", b"1000"],
            &[b"LOCK.RELEASE", key, b"t"],
            &[b"LOCK.INFO", key],
        ] {
            let err = call_err(&mut con, cmd);
            assert!(err.starts_with("WRONGTYPE"), "{cmd:?}: {err}");
        }
    }
    assert_eq!(
        call(&mut con, &[b"GET", b"s"]),
        Value::BulkString(b"value".to_vec())
    );
    assert_eq!(int(call(&mut con, &[b"PTTL", b"s"])), -1);
    assert_eq!(int(call(&mut con, &[b"LLEN", b"l"])), 1);
}

#[test]
fn watch_sees_real_changes_only() {
    let srv = Server::start();
    let mut watcher = srv.raw();
    let mut other = srv.conn();
    acquire(&mut other, "k", 10_000, "owner").unwrap();
    // A refused ACQUIRE and a failed RENEW change nothing, so the transaction runs.
    watcher.cmd(&[b"WATCH", b"k"]);
    assert_eq!(acquire(&mut other, "k", 10_000, "intruder"), None);
    assert_eq!(
        int(call(&mut other, &[b"LOCK.RENEW", b"k", b"intruder", b"5"])),
        0
    );
    watcher.cmd(&[b"MULTI"]);
    watcher.cmd(&[b"PING"]);
    assert_eq!(watcher.cmd(&[b"EXEC"]), b"*1\r\n+PONG\r\n");
    // A renewal is a change: the transaction aborts.
    watcher.cmd(&[b"WATCH", b"k"]);
    assert_eq!(
        int(call(&mut other, &[b"LOCK.RENEW", b"k", b"owner", b"20000"])),
        1
    );
    watcher.cmd(&[b"MULTI"]);
    watcher.cmd(&[b"PING"]);
    assert_eq!(watcher.cmd(&[b"EXEC"]), b"*-1\r\n");
    // So is a release.
    watcher.cmd(&[b"WATCH", b"k"]);
    assert_eq!(int(call(&mut other, &[b"LOCK.RELEASE", b"k", b"owner"])), 1);
    watcher.cmd(&[b"MULTI"]);
    watcher.cmd(&[b"PING"]);
    assert_eq!(watcher.cmd(&[b"EXEC"]), b"*-1\r\n");
}

/// Tokens are stored compactly when they are hex or UUIDs; every form must come back exactly,
/// in replies, checks, RDB and DUMP/RESTORE.
#[test]
fn every_token_shape_round_trips_exactly() {
    let mut srv = Server::start();
    let mut con = srv.conn();
    let tokens: [&[u8]; 6] = [
        b"0123456789abcdef0123456789abcdef",
        b"0123456789ABCDEF0123456789abcdef",
        b"123e4567-e89b-12d3-a456-426614174000",
        b"short",
        b"\x00\xff binary token that is longer than thirty-six bytes \r\n",
        b"123e4567-e89b-12d3-a456-42661417400",
    ];
    // ACQUIRE with TOKEN: a new grant, or the existing one's (token, fence) on a retry.
    let take = |con: &mut redis::Connection, key: &str, token: &[u8]| {
        grant(&call(
            con,
            &[b"LOCK.ACQUIRE", key.as_bytes(), b"60000", b"TOKEN", token],
        ))
    };
    let mut fences = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let key = format!("k{i}");
        let (got, fence) = take(&mut con, &key, token).unwrap();
        assert_eq!(got, *token);
        fences.push(fence);
        let renew = [&b"LOCK.RENEW"[..], key.as_bytes(), token, b"60000"];
        assert_eq!(int(call(&mut con, &renew)), 1);
        let mut other = token.to_vec();
        other[0] ^= 1;
        let renew = [&b"LOCK.RENEW"[..], key.as_bytes(), &other, b"60000"];
        assert_eq!(int(call(&mut con, &renew)), 0);
        let Value::BulkString(dump) = call(&mut con, &[b"DUMP", key.as_bytes()]) else {
            panic!("no dump")
        };
        let copy = format!("copy{i}");
        call(&mut con, &[b"RESTORE", copy.as_bytes(), b"60000", &dump]);
        assert_eq!(take(&mut con, &copy, token), Some((token.to_vec(), fence)));
    }
    srv.shutdown_save();
    srv.restart();
    let mut con = srv.conn();
    for (i, token) in tokens.iter().enumerate() {
        let key = format!("k{i}");
        assert_eq!(
            take(&mut con, &key, token),
            Some((token.to_vec(), fences[i]))
        );
    }
}
