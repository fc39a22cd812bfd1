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

/// A command takes the time the server read when it started (Redis 7.2+ and Valkey), the time
/// the server judges its keys' expiry by; inside MULTI that is the time EXEC started, for the
/// lock commands as for EXISTS. So after a sleep past the lock's deadline within the
/// transaction, the lock and its key still agree: both there, and its owner releases it.
/// Redis 7.0 tells modules no such time: there the module reads the clock, and finds the
/// lock expired while the server still has the key.
#[test]
fn a_transaction_sees_one_time_for_the_lock_and_its_key() {
    let srv = Server::start();
    let mut con = srv.conn();
    let frozen = has_command_time(&mut con);
    let mut raw = srv.raw();
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    for cmd in [
        &[&b"LOCK.ACQUIRE"[..], b"k", b"50", b"TOKEN", b"me"][..],
        &[b"DEBUG", b"SLEEP", b"0.2"],
        &[b"EXISTS", b"k"],
        &[b"LOCK.RELEASE", b"k", b"me"],
    ] {
        assert_eq!(raw.cmd(cmd), b"+QUEUED\r\n");
    }
    let exec = String::from_utf8(raw.cmd(&[b"EXEC"])).unwrap();
    assert!(exec.starts_with("*4\r\n*2\r\n$2\r\nme\r\n:"), "{exec:?}");
    let released = if frozen { ":1\r\n" } else { ":0\r\n" };
    assert!(
        exec.ends_with(&format!("+OK\r\n:1\r\n{released}")),
        "{exec:?}"
    );
    // Outside the transaction the deadline has passed: the key is gone either way.
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
        // The same letters in the other case are another token, in both directions.
        let other_case: Vec<u8> = match token.iter().any(u8::is_ascii_lowercase) {
            true => token.to_ascii_uppercase(),
            false => token.to_ascii_lowercase(),
        };
        if other_case != *token {
            let release = [&b"LOCK.RELEASE"[..], key.as_bytes(), &other_case];
            assert_eq!(int(call(&mut con, &release)), 0);
        }
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

/// The common calls and their neighbours, as a transcript: each reply, with fences and
/// tokens the server drew named by their order of appearance, and remaining times rounded.
fn common_calls_transcript(con: &mut redis::Connection, key: &str) -> Vec<String> {
    let k = key.as_bytes();
    let calls: Vec<Vec<&[u8]>> = vec![
        vec![
            b"LOCK.ACQUIRE",
            k,
            b"10000",
            b"TOKEN",
            b"0123456789abcdef0123456789abcdef",
        ],
        // A retry, in another case and spelling of the option.
        vec![
            b"LOCK.ACQUIRE",
            k,
            b"20000",
            b"token",
            b"0123456789abcdef0123456789abcdef",
        ],
        vec![b"PTTL", k],
        vec![b"LOCK.ACQUIRE", k, b"10000", b"TOKEN", b"other"],
        vec![b"LOCK.ACQUIRE", k, b"10000"],
        vec![b"LOCK.RENEW", k, b"other", b"30000"],
        vec![
            b"LOCK.RENEW",
            k,
            b"0123456789abcdef0123456789abcdef",
            b"30000",
        ],
        vec![b"PTTL", k],
        vec![b"LOCK.RELEASE", k, b"other"],
        vec![b"LOCK.RELEASE", k, b"0123456789ABCDEF0123456789ABCDEF"],
        vec![b"LOCK.RELEASE", k, b"0123456789abcdef0123456789abcdef"],
        vec![b"LOCK.RELEASE", k, b"0123456789abcdef0123456789abcdef"],
        vec![b"EXISTS", k],
        // Malformed: refused, nothing changes.
        vec![b"LOCK.ACQUIRE", k, b"0", b"TOKEN", b"t"],
        vec![b"LOCK.ACQUIRE", k, b"10000", b"TOKEN", b""],
        vec![b"LOCK.ACQUIRE", k, b"10000", b"TOKEN"],
        vec![b"LOCK.ACQUIRE", k, b"10000", b"TOKENS", b"t"],
        vec![b"LOCK.ACQUIRE", k, b"9223372036854775807", b"TOKEN", b"t"],
        vec![b"LOCK.RENEW", k, b"t", b"-1"],
        vec![b"LOCK.RELEASE", k, b""],
        vec![b"EXISTS", k],
        // A server token, then a caller's token of every stored form.
        vec![b"LOCK.ACQUIRE", k, b"10000"],
        vec![b"LOCK.INFO", k],
        vec![b"DEL", k],
        vec![
            b"LOCK.ACQUIRE",
            k,
            b"10000",
            b"TOKEN",
            b"123e4567-e89b-12d3-a456-426614174000",
        ],
        vec![b"LOCK.RELEASE", k, b"123e4567-e89b-12d3-a456-426614174000"],
        vec![b"LOCK.ACQUIRE", k, b"10000", b"TOKEN", b"worker-7"],
        vec![b"LOCK.RENEW", k, b"worker-7", b"10000"],
        vec![b"LOCK.RELEASE", k, b"worker-7"],
        // Another type under the key: WRONGTYPE, and the value stays.
        vec![b"SET", k, b"v"],
        vec![b"LOCK.ACQUIRE", k, b"10000", b"TOKEN", b"t"],
        vec![b"LOCK.RENEW", k, b"t", b"10000"],
        vec![b"LOCK.RELEASE", k, b"t"],
        vec![b"GET", k],
        vec![b"DEL", k],
    ];
    let mut seen: Vec<i64> = Vec::new();
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    let name = |n: i64, seen: &mut Vec<i64>| {
        let at = seen.iter().position(|&f| f == n).unwrap_or_else(|| {
            seen.push(n);
            seen.len() - 1
        });
        format!("fence#{at}")
    };
    calls
        .iter()
        .map(|args| {
            let reply = try_call(con, args);
            let shown = match (&reply, args[0]) {
                (Ok(Value::Int(ms)), b"PTTL") => format!("pttl~{}", (ms + 999) / 1000),
                (Ok(v @ Value::Array(_)), b"LOCK.ACQUIRE") => {
                    let (token, fence) = grant(v).unwrap();
                    let token = match args.len() {
                        3 => {
                            tokens.push(token);
                            format!("server-token#{}", tokens.len())
                        }
                        _ => String::from_utf8_lossy(&token).into_owned(),
                    };
                    format!("[{token}, {}]", name(fence, &mut seen))
                }
                (Ok(v), b"LOCK.INFO") => {
                    let (fence, ttl, waiters) = info_reply(v.clone()).unwrap();
                    format!(
                        "info {} ttl~{} waiters {waiters}",
                        name(fence, &mut seen),
                        (ttl + 999) / 1000
                    )
                }
                (Ok(v), _) => format!("{v:?}"),
                (Err(e), _) => format!("error {e}"),
            };
            format!(
                "{:?} -> {shown}",
                String::from_utf8_lossy(&args.join(&b' '))
            )
        })
        .collect()
}

/// A plain LOCK.ACQUIRE takes a shorter path when nobody waits for any lock (see the README's
/// Performance section); while a client waits for another lock it takes the general one.
/// Both answer alike, call by call, and as the contract says.
#[test]
fn the_common_calls_answer_alike_whether_or_not_anyone_waits() {
    let srv = Server::start();
    let mut con = srv.conn();
    let quiet = common_calls_transcript(&mut con, "plain");
    // A client waits for another lock.
    assert!(acquire(&mut con, "elsewhere", 60_000, "holder").is_some());
    let mut waiter = srv.raw();
    waiter.send_acquire_blocking("elsewhere", 1000, "waiter", 0);
    wait_for("the waiter to block", || {
        info_field(&mut con, "clients", "blocked_clients").as_deref() == Some("1")
    });
    let busy = common_calls_transcript(&mut con, "plain");
    assert_eq!(quiet, busy);
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RELEASE", b"elsewhere", b"holder"])),
        1
    );
    assert_eq!(grant(&waiter.value()).unwrap().0, b"waiter");
    // What the contract says of each call (spot checks of the transcript).
    let expect = [
        (0, "[0123456789abcdef0123456789abcdef, fence#0]"),
        (1, "[0123456789abcdef0123456789abcdef, fence#0]"),
        (2, "pttl~20"),
        (3, "nil"),
        (4, "nil"),
        (5, "int(0)"),
        (6, "int(1)"),
        (7, "pttl~30"),
        (8, "int(0)"),
        (9, "int(0)"),
        (10, "int(1)"),
        (11, "int(0)"),
        (12, "int(0)"),
        (20, "int(0)"),
        (21, "[server-token#1, fence#1]"),
        (22, "info fence#1 ttl~10 waiters 0"),
        (24, "[123e4567-e89b-12d3-a456-426614174000, fence#2]"),
        (25, "int(1)"),
        (26, "[worker-7, fence#3]"),
        (27, "int(1)"),
        (28, "int(1)"),
        (33, "bulk-string('\"v\"')"),
    ];
    for (at, shown) in expect {
        let line = quiet[at].to_lowercase();
        assert!(
            line.ends_with(&format!("-> {}", shown.to_lowercase())),
            "{at}: {line}"
        );
    }
    for at in [13, 14, 15, 16, 17, 18, 19] {
        assert!(quiet[at].contains("-> error ERR"), "{}", quiet[at]);
    }
    for at in [30, 31, 32] {
        assert!(quiet[at].contains("-> error WRONGTYPE"), "{}", quiet[at]);
    }
}
