//! Locks and fencing numbers survive what a deployment goes through: restarts from RDB and
//! AOF, replication, promotion of a replica, lost writes, DUMP/RESTORE, MIGRATE, RENAME, MOVE.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::*;

/// Locks taken (and a few renewed, released or expired) before a restart.
struct Taken {
    held: Vec<(String, String, i64)>,
    gone: Vec<String>,
    max_fence: i64,
}

fn take_locks(con: &mut redis::Connection, prefix: &str, n: usize) -> Taken {
    let mut held = Vec::new();
    let mut gone = Vec::new();
    let mut max_fence = 0;
    for i in 0..n {
        let key = format!("{prefix}:{i}");
        let token = format!("owner-{prefix}-{i}\x00\u{ff}");
        let fence = acquire(con, &key, 600_000, &token).unwrap();
        max_fence = max_fence.max(fence);
        match i % 5 {
            0 => {
                assert_eq!(
                    int(call(
                        con,
                        &[b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()]
                    )),
                    1
                );
                gone.push(key);
            }
            1 => {
                assert_eq!(
                    int(call(
                        con,
                        &[b"LOCK.RENEW", key.as_bytes(), token.as_bytes(), b"900000"]
                    )),
                    1
                );
                held.push((key, token, fence));
            }
            _ => held.push((key, token, fence)),
        }
    }
    let key = format!("{prefix}:short");
    max_fence = max_fence.max(acquire(con, &key, 50, "short").unwrap());
    gone.push(key);
    Taken {
        held,
        gone,
        max_fence,
    }
}

/// Every held lock is held again by its own token with its fence; the rest are free; new
/// fences exceed every old one.
fn check_locks(con: &mut redis::Connection, taken: &Taken) {
    for (key, token, fence) in &taken.held {
        assert_eq!(
            info(con, key.as_bytes()).map(|i| i.0),
            Some(*fence),
            "{key}"
        );
        assert_eq!(acquire(con, key, 600_000, "intruder"), None, "{key}");
        // The owner's retry is recognised: same fence.
        assert_eq!(acquire(con, key, 600_000, token), Some(*fence), "{key}");
        assert!(int(call(con, &[b"PTTL", key.as_bytes()])) > 0);
    }
    for key in &taken.gone {
        assert_eq!(info(con, key.as_bytes()), None, "{key}");
    }
    let fresh = acquire(con, "fresh-after-restart", 1000, "new").unwrap();
    assert!(fresh > taken.max_fence, "{fresh} <= {}", taken.max_fence);
    call(con, &[b"LOCK.RELEASE", b"fresh-after-restart", b"new"]);
}

fn wait_rewrite_done(con: &mut redis::Connection) {
    wait_for("AOF rewrite", || {
        info_field(con, "persistence", "aof_rewrite_in_progress").as_deref() == Some("0")
            && info_field(con, "persistence", "aof_rewrite_scheduled").as_deref() == Some("0")
    });
}

#[test]
fn locks_survive_a_restart_from_rdb() {
    let mut srv = Server::start();
    let taken = take_locks(&mut srv.conn(), "rdb", 30);
    sleep(Duration::from_millis(100));
    srv.shutdown_save();
    srv.restart();
    check_locks(&mut srv.conn(), &taken);
}

fn aof_restart(preamble: &str, rewrite: bool) {
    let mut srv = Server::start_with_aof(preamble);
    let mut con = srv.conn();
    let mut taken = take_locks(&mut con, "before", 20);
    if rewrite {
        call(&mut con, &[b"BGREWRITEAOF"]);
        wait_rewrite_done(&mut con);
    }
    // Writes after the rewrite land in the incremental AOF.
    let after = take_locks(&mut con, "after", 10);
    taken.held.extend(after.held);
    taken.gone.extend(after.gone);
    taken.max_fence = taken.max_fence.max(after.max_fence);
    sleep(Duration::from_millis(100));
    srv.kill();
    srv.restart();
    check_locks(&mut srv.conn(), &taken);
    srv.assert_alive();
}

#[test]
fn locks_survive_a_restart_from_aof_with_rdb_preamble() {
    aof_restart("yes", true);
}

#[test]
fn locks_survive_a_restart_from_a_plain_aof() {
    aof_restart("no", false);
}

#[test]
fn locks_survive_a_restart_from_a_plain_aof_after_bgrewriteaof() {
    aof_restart("no", true);
}

#[test]
fn fences_keep_rising_after_a_crash_loses_the_newest_writes() {
    let mut srv = Server::start();
    let mut con = srv.conn();
    take_locks(&mut con, "saved", 10);
    call(&mut con, &[b"SAVE"]);
    // These grants are lost with the crash.
    let lost = take_locks(&mut con, "lost", 200);
    srv.kill();
    srv.restart();
    let mut con = srv.conn();
    assert_eq!(
        info(&mut con, b"lost:3"),
        None,
        "the newer writes really were lost"
    );
    let fresh = acquire(&mut con, "lost:3", 1000, "new").unwrap();
    assert!(fresh > lost.max_fence, "{fresh} <= {}", lost.max_fence);
}

#[test]
fn a_replica_follows_the_primary_and_keeps_the_locks_when_promoted() {
    let mut primary = Server::start();
    let mut pcon = primary.conn();
    // Taken before the replica connects: they reach it by full sync.
    let mut taken = take_locks(&mut pcon, "sync", 15);
    let replica = primary.replica(&[]);
    let mut rcon = replica.conn();
    // Taken after: they reach it through the replication stream.
    let stream = take_locks(&mut pcon, "stream", 15);
    taken.held.extend(stream.held);
    taken.gone.extend(stream.gone);
    taken.max_fence = taken.max_fence.max(stream.max_fence);
    replica_caught_up(&mut pcon);
    sleep(Duration::from_millis(100));

    for (key, _, fence) in &taken.held {
        let (pf, pttl, _) = info(&mut pcon, key.as_bytes()).unwrap();
        let (rf, rttl, _) = info(&mut rcon, key.as_bytes()).expect(key);
        assert_eq!((pf, rf), (*fence, *fence), "{key}");
        assert!(
            (pttl - rttl).abs() < 200,
            "{key}: primary ttl {pttl}, replica ttl {rttl}"
        );
    }
    for key in &taken.gone {
        assert_eq!(info(&mut rcon, key.as_bytes()), None, "{key}");
    }
    // The replica refuses writes, including the effect command.
    let err = call_err(&mut rcon, &[b"LOCK.ACQUIRE", b"x", b"1000"]);
    assert!(err.starts_with("READONLY"), "{err}");
    let err = call_err(
        &mut rcon,
        &[
            b"LOCK.RELEASE",
            b"sync:2",
            "owner-sync-2\x00\u{ff}".as_bytes(),
        ],
    );
    assert!(err.starts_with("READONLY"), "{err}");
    let digest = |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST"]);
    assert_eq!(digest(&mut pcon), digest(&mut rcon));

    // Failover: the primary dies, the replica is promoted.
    primary.kill();
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    check_locks(&mut rcon, &taken);
}

/// A lock loaded from an AOF with a fence far above the clock: the clock is raised to it, and
/// DUMP/RESTORE and MIGRATE carry it to other servers, raising theirs.
#[test]
fn restored_and_migrated_locks_raise_the_fence_clock() {
    let future_fence = now_us() + 10_000_000_000;
    let aof = aof_with_locks(
        &[("future", "tok"), ("other", "tok2")],
        600_000,
        future_fence,
    );
    let dir = new_dir();
    std::fs::write(dir.join("appendonly.aof"), aof).unwrap();
    let source = Server::start_in(dir, &[], &["--appendonly", "yes"]);
    let mut scon = source.conn();
    assert_eq!(
        info(&mut scon, b"future").map(|i| i.0),
        Some(future_fence),
        "{}",
        source.log()
    );
    assert!(acquire(&mut scon, "next", 1000, "me").unwrap() > future_fence);

    // DUMP / RESTORE with the remaining ttl.
    let target = Server::start();
    let mut tcon = target.conn();
    let payload = call(&mut scon, &[b"DUMP", b"future"]);
    let Value::BulkString(payload) = payload else {
        panic!("{payload:?}")
    };
    let pttl = int(call(&mut scon, &[b"PTTL", b"future"])).to_string();
    call(
        &mut tcon,
        &[b"RESTORE", b"future", pttl.as_bytes(), &payload],
    );
    assert_eq!(info(&mut tcon, b"future").map(|i| i.0), Some(future_fence));
    assert_eq!(acquire(&mut tcon, "future", 1000, "intruder"), None);
    assert_eq!(
        int(call(
            &mut tcon,
            &[b"LOCK.RENEW", b"future", b"tok", b"5000"]
        )),
        1
    );
    assert!(acquire(&mut tcon, "next", 1000, "me").unwrap() > future_fence);
    // A corrupt payload is refused, not loaded.
    let mut bad = payload.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let err = call_err(&mut tcon, &[b"RESTORE", b"bad", b"0", &bad]);
    assert!(err.starts_with("ERR"), "{err}");

    // MIGRATE moves the lock with token, deadline and fence.
    let third = Server::start();
    let mut ccon = third.conn();
    let port = third.port.to_string();
    let reply = call(
        &mut scon,
        &[
            b"MIGRATE",
            b"127.0.0.1",
            port.as_bytes(),
            b"other",
            b"0",
            b"5000",
        ],
    );
    assert_eq!(reply, Value::Okay);
    assert_eq!(int(call(&mut scon, &[b"EXISTS", b"other"])), 0);
    assert_eq!(info(&mut ccon, b"other").map(|i| i.0), Some(future_fence));
    assert!(int(call(&mut ccon, &[b"PTTL", b"other"])) > 500_000);
    assert!(acquire(&mut ccon, "next", 1000, "me").unwrap() > future_fence);
    assert_eq!(
        int(call(&mut ccon, &[b"LOCK.RELEASE", b"other", b"tok2"])),
        1
    );
}

#[test]
fn rename_and_move_carry_the_lock() {
    let srv = Server::start();
    let mut con = srv.conn();
    let fence = acquire(&mut con, "a", 60_000, "me").unwrap();
    call(&mut con, &[b"RENAME", b"a", b"b"]);
    assert_eq!(info(&mut con, b"a"), None);
    assert_eq!(info(&mut con, b"b").map(|i| i.0), Some(fence));
    assert!(int(call(&mut con, &[b"PTTL", b"b"])) > 50_000);
    assert_eq!(int(call(&mut con, &[b"MOVE", b"b", b"1"])), 1);
    call(&mut con, &[b"SELECT", b"1"]);
    assert_eq!(info(&mut con, b"b").map(|i| i.0), Some(fence));
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"b", b"me"])), 1);
    // TYPE, MEMORY USAGE and DEBUG DIGEST-VALUE answer on lock keys.
    acquire(&mut con, "c", 60_000, "me").unwrap();
    let kind: String = redis::cmd("TYPE").arg("c").query(&mut con).unwrap();
    assert_eq!(kind, "fencelock");
    assert!(int(call(&mut con, &[b"MEMORY", b"USAGE", b"c"])) > 0);
    let d1 = call(&mut con, &[b"DEBUG", b"DIGEST-VALUE", b"c"]);
    call(&mut con, &[b"LOCK.RENEW", b"c", b"me", b"90000"]);
    let d2 = call(&mut con, &[b"DEBUG", b"DIGEST-VALUE", b"c"]);
    assert_ne!(d1, d2, "the digest covers the deadline");
}

/// `tests/fixtures/lock-v1.rdb` was saved by Redis 7.0 with encoding version 1 of the lock
/// type: two locks held until 2100 with fences 5000000000000000 and 4999999999999999, and the
/// fence clock at 5000000000000000. Every later version must still load it.
#[test]
fn an_rdb_written_by_encoding_version_1_still_loads() {
    let dir = new_dir();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lock-v1.rdb");
    std::fs::copy(fixture, dir.join("dump.rdb")).unwrap();
    // Its fences are a century ahead, so lock.fence-max-ahead must allow for that.
    let srv = Server::start_in(dir, &["fence-max-ahead", "4611686018427387"], &[]);
    let mut con = srv.conn();
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 2, "{}", srv.log());
    assert_eq!(
        info(&mut con, b"fixture:lock").map(|i| i.0),
        Some(5_000_000_000_000_000)
    );
    assert_eq!(
        info(&mut con, b"fixture:\x00binary").map(|i| i.0),
        Some(4_999_999_999_999_999)
    );
    assert_eq!(acquire(&mut con, "fixture:lock", 1000, "intruder"), None);
    let owner: &[u8] = b"fixture-owner\x00\xff";
    assert_eq!(
        int(call(
            &mut con,
            &[b"LOCK.RENEW", b"fixture:lock", owner, b"60000"]
        )),
        1
    );
    assert_eq!(
        int(call(
            &mut con,
            &[b"LOCK.RELEASE", b"fixture:\x00binary", b"tok"]
        )),
        1
    );
    // The saved fence clock was restored: new grants come after it.
    assert!(acquire(&mut con, "new", 1000, "me").unwrap() > 5_000_000_000_000_000);
}

/// `tests/fixtures/lock-v1.dump` is `DUMP fixture:dumped` from Redis 7.0 with encoding version
/// 1 of the lock type: token `dump-owner-v1`, held until 2099 (ttl 2300000000000 ms from
/// 2026-12-02) with fence 1796174007212028. RESTORE of it must keep working on every server.
#[test]
fn a_dump_payload_of_encoding_version_1_still_restores() {
    // Its fence is the clock of 2026-12-02: allow for a test machine whose clock is behind.
    let srv = Server::start_with(&["fence-max-ahead", "4611686018427387"], &[]);
    let mut con = srv.conn();
    let payload = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lock-v1.dump"),
    )
    .unwrap();
    let reply = call(&mut con, &[b"RESTORE", b"restored", b"0", &payload]);
    assert_eq!(reply, Value::Okay, "{}", srv.log());
    let (fence, ttl, waiters) = info(&mut con, b"restored").expect("a held lock");
    assert_eq!((fence, waiters), (1_796_174_007_212_028, 0));
    assert!(ttl > 365 * 24 * 3_600_000, "held for years: {ttl}");
    // The key expires with the lock, whatever RESTORE's ttl said.
    assert!(int(call(&mut con, &[b"PTTL", b"restored"])) > 365 * 24 * 3_600_000);
    assert_eq!(acquire(&mut con, "restored", 1000, "intruder"), None);
    assert_eq!(
        int(call(
            &mut con,
            &[b"LOCK.RENEW", b"restored", b"dump-owner-v1", b"60000"]
        )),
        1
    );
    assert!(acquire(&mut con, "new", 1000, "me").unwrap() > 1_796_174_007_212_028);
    assert_eq!(
        int(call(
            &mut con,
            &[b"LOCK.RELEASE", b"restored", b"dump-owner-v1"]
        )),
        1
    );
}

/// `tests/fixtures/aof-v1/` is the multi-part AOF (`aof-use-rdb-preamble no`) that the first
/// version of the module wrote on Redis 7.0 on 2026-12-02: a rewritten base with two
/// `LOCK.APPLY` effects, then an incremental file with `LOCK.CLOCK` (inside the `MULTI` with
/// `BGREWRITEAOF` that version produced), a new lock, a renewal and a release (`DEL`). Every
/// later version must replay it the same.
#[test]
fn an_aof_written_by_the_first_version_still_loads() {
    let dir = new_dir();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aof-v1");
    std::fs::create_dir_all(dir.join("appendonlydir")).unwrap();
    for file in std::fs::read_dir(&fixtures).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(
            &file,
            dir.join("appendonlydir").join(file.file_name().unwrap()),
        )
        .unwrap();
    }
    // Its fences are the clock of 2026-12-02: allow for a test machine whose clock is behind.
    let srv = Server::start_in(
        dir,
        &["fence-max-ahead", "4611686018427387"],
        &["--appendonly", "yes", "--aof-use-rdb-preamble", "no"],
    );
    let mut con = srv.conn();
    assert_eq!(int(call(&mut con, &[b"DBSIZE"])), 2, "{}", srv.log());
    assert_eq!(
        info(&mut con, b"aof:rewritten").map(|i| i.0),
        Some(1_796_179_721_235_776)
    );
    assert_eq!(
        info(&mut con, b"aof:incremental").map(|i| i.0),
        Some(1_796_179_721_235_778)
    );
    assert_eq!(info(&mut con, b"aof:released"), None);
    // The renewal in the incremental file moved the deadline, and the key's expiry with it.
    let pttl = int(call(&mut con, &[b"PTTL", b"aof:rewritten"]));
    assert!(pttl > 365 * 24 * 3_600_000, "{pttl}");
    assert_eq!(acquire(&mut con, "aof:rewritten", 1000, "intruder"), None);
    for (key, owner) in [
        (&b"aof:rewritten"[..], &b"aof-owner-base"[..]),
        (b"aof:incremental", b"aof-owner-incr"),
    ] {
        assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", key, owner])), 1);
    }
    assert!(acquire(&mut con, "new", 1000, "me").unwrap() > 1_796_179_721_235_778);
}

/// Since 0.4 every grant and renewal reaches the AOF (and replicas, from the same call) as
/// `LOCK.APPLY key deadline:fence:token`, the options after: one argument for the holder,
/// whatever bytes its token holds. A plain AOF of such effects replays to the same locks.
#[test]
fn effects_carry_the_holder_as_one_argument() {
    let mut srv = Server::start_with_aof("no");
    let mut con = srv.conn();
    let token = "tok:with:colons\x00";
    let start_ms = now_us() / 1000;
    let fence = acquire(&mut con, "one", 60_000, token).unwrap();
    let (_, shared_fence) = grant(&call(
        &mut con,
        &[
            b"LOCK.ACQUIRE",
            b"two",
            b"60000",
            b"TOKEN",
            b"r1",
            b"LIMIT",
            b"3",
            b"META",
            b"m",
        ],
    ))
    .unwrap();
    assert_eq!(
        int(call(
            &mut con,
            &[b"LOCK.RENEW", b"one", token.as_bytes(), b"90000"]
        )),
        1
    );
    let end_ms = now_us() / 1000;
    let applies: Vec<_> = aof_commands(&srv.dir)
        .into_iter()
        .filter(|c| c[0].eq_ignore_ascii_case(b"LOCK.APPLY"))
        .collect();
    assert_eq!(applies.len(), 3, "{applies:?}");
    // (key, deadline, fence, token, the arguments after the holder)
    let parts = |c: &[Vec<u8>]| {
        let mut hold = c[2].splitn(3, |&b| b == b':');
        let mut number = || -> i64 {
            std::str::from_utf8(hold.next().unwrap())
                .unwrap()
                .parse()
                .unwrap()
        };
        let (deadline, fence) = (number(), number());
        (
            c[1].clone(),
            deadline,
            fence,
            hold.next().unwrap().to_vec(),
            c[3..].to_vec(),
        )
    };
    let within = |deadline: i64, ttl: i64| (start_ms + ttl..=end_ms + ttl).contains(&deadline);
    let (key, deadline, f, tok, rest) = parts(&applies[0]);
    assert_eq!(
        (key, f, tok, rest.len()),
        (b"one".to_vec(), fence, token.as_bytes().to_vec(), 0)
    );
    assert!(within(deadline, 60_000), "{deadline}");
    let (key, deadline, f, tok, rest) = parts(&applies[1]);
    assert_eq!(
        (key, f, tok),
        (b"two".to_vec(), shared_fence, b"r1".to_vec())
    );
    assert_eq!(rest, [&b"LIMIT"[..], b"3", b"META", b"m"]);
    assert!(within(deadline, 60_000), "{deadline}");
    let (key, deadline, f, tok, rest) = parts(&applies[2]);
    assert_eq!(
        (key, f, tok, rest.len()),
        (b"one".to_vec(), fence, token.as_bytes().to_vec(), 0)
    );
    assert!(within(deadline, 90_000), "{deadline}");

    srv.kill();
    srv.restart();
    let mut con = srv.conn();
    assert_eq!(fence_of(&mut con, b"one"), Some(fence), "{}", srv.log());
    assert_eq!(fence_of(&mut con, b"two"), Some(shared_fence));
    let pttl = int(call(&mut con, &[b"PTTL", b"one"]));
    assert!(pttl > 60_000, "the renewal replayed: {pttl}");
    let info = lock_info_of(&mut con, b"two").unwrap();
    assert_eq!(info.limit, Some(3), "{info:?}");
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RELEASE", b"one", token.as_bytes()])),
        1
    );
    assert_eq!(int(call(&mut con, &[b"LOCK.RELEASE", b"two", b"r1"])), 1);
}

/// The fence clock, raised far above wall time by a lock that is gone by the time of a
/// rewrite without the RDB preamble, still holds after a crash and restart.
#[test]
fn a_plain_aof_rewrite_keeps_the_fence_clock_without_any_lock() {
    let future_fence = now_us() + 10_000_000_000;
    let dir = new_dir();
    let aof = aof_with_locks(&[("brief", "tok")], 1, future_fence);
    std::fs::write(dir.join("appendonly.aof"), aof).unwrap();
    let config = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--aof-use-rdb-preamble",
        "no",
    ];
    let mut srv = Server::start_in(dir, &[], &config);
    let mut con = srv.conn();
    assert_eq!(info(&mut con, b"brief"), None, "the lock has expired");
    call(&mut con, &[b"BGREWRITEAOF"]);
    wait_rewrite_done(&mut con);
    srv.kill();
    srv.restart();
    let mut con = srv.conn();
    let fresh = acquire(&mut con, "fresh", 1000, "me").unwrap();
    assert!(fresh > future_fence, "{fresh} <= {future_fence}");
}

#[test]
fn the_clock_command_is_refused_to_ordinary_clients() {
    let srv = Server::start();
    let mut con = srv.conn();
    let far = (now_us() + 10_000_000_000).to_string();
    let err = call_err(&mut con, &[b"LOCK.CLOCK", far.as_bytes()]);
    assert!(
        err.starts_with("ERR") && err.contains("LOCK.CLOCK"),
        "{err}"
    );
    assert!(acquire(&mut con, "k", 1000, "me").unwrap() < now_us() + 120_000_000);
}

/// Tokens in every form the lock value stores (short inline, 32 lowercase hex digits and
/// UUIDs as their bytes, near misses of those, long ones on the heap) reach a replica exactly
/// as the client gave them, from the grant's effect and from the renewal's, for exclusive
/// and shared holders: once promoted, the replica knows each owner by its own token.
#[test]
fn every_token_form_reaches_a_replica_byte_for_byte() {
    let primary = Server::start();
    let mut pcon = primary.conn();
    let replica = primary.replica(&[]);
    let mut rcon = replica.conn();
    let tokens = [
        "short".to_string(),
        "00112233445566778899aabbccddeeff".to_string(),
        "00112233445566778899AABBCCDDEEFF".to_string(),
        "0011223344556677889gaabbccddeeff".to_string(),
        "123e4567-e89b-12d3-a456-426614174000".to_string(),
        "123E4567-E89B-12D3-A456-426614174000".to_string(),
        "x".repeat(200),
    ];
    let mut fences = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let key = format!("form:{i}");
        let fence = acquire(&mut pcon, &key, 600_000, token).unwrap();
        let renewed = call(
            &mut pcon,
            &[b"LOCK.RENEW", key.as_bytes(), token.as_bytes(), b"900000"],
        );
        assert_eq!(int(renewed), 1, "{token}");
        let shared_key = format!("form-shared:{i}");
        let shared = call(
            &mut pcon,
            &[
                b"LOCK.ACQUIRE",
                shared_key.as_bytes(),
                b"600000",
                b"TOKEN",
                token.as_bytes(),
                b"LIMIT",
                b"3",
            ],
        );
        let (granted, shared_fence) = grant(&shared).unwrap();
        assert_eq!(granted, token.as_bytes());
        let renewed = call(
            &mut pcon,
            &[
                b"LOCK.RENEW",
                shared_key.as_bytes(),
                token.as_bytes(),
                b"900000",
            ],
        );
        assert_eq!(int(renewed), 1, "{token}");
        fences.push((key, shared_key, fence, shared_fence));
    }
    replica_caught_up(&mut pcon);
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    for (token, (key, shared_key, fence, shared_fence)) in tokens.iter().zip(&fences) {
        // The renewal's deadline arrived; the owner's retry is recognised with its fence;
        // anyone else is refused.
        assert!(
            int(call(&mut rcon, &[b"PTTL", key.as_bytes()])) > 600_000,
            "{token}"
        );
        assert_eq!(
            acquire(&mut rcon, key, 600_000, token),
            Some(*fence),
            "{token}"
        );
        assert_eq!(
            acquire(&mut rcon, key, 600_000, "intruder"),
            None,
            "{token}"
        );
        let released = call(
            &mut rcon,
            &[b"LOCK.RELEASE", key.as_bytes(), token.as_bytes()],
        );
        assert_eq!(int(released), 1, "{token}");
        assert_eq!(
            info(&mut rcon, shared_key.as_bytes()).map(|i| i.0),
            Some(*shared_fence)
        );
        let released = call(
            &mut rcon,
            &[b"LOCK.RELEASE", shared_key.as_bytes(), token.as_bytes()],
        );
        assert_eq!(int(released), 1, "{token}");
        assert_eq!(info(&mut rcon, shared_key.as_bytes()), None, "{token}");
    }
}

/// A replica with its own AOF records the effects it receives: restarted on its own, it
/// still has the locks granted through the replication stream.
#[test]
fn a_replica_records_the_effects_in_its_own_aof() {
    let mut primary = Server::start();
    let mut pcon = primary.conn();
    let mut replica = primary.replica(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut rcon = replica.conn();
    wait_rewrite_done(&mut rcon);
    let taken = take_locks(&mut pcon, "stream", 10);
    replica_caught_up(&mut pcon);
    sleep(Duration::from_millis(100));
    primary.kill();
    replica.kill();
    replica.restart();
    let mut rcon = replica.conn();
    for (key, _, fence) in &taken.held {
        assert_eq!(
            info(&mut rcon, key.as_bytes()).map(|i| i.0),
            Some(*fence),
            "{key}"
        );
    }
    for key in &taken.gone {
        assert_eq!(info(&mut rcon, key.as_bytes()), None, "{key}");
    }
}

/// The fence clock is written to the AOF and replicas when the server forks, but not from
/// inside the command that forked: the server would then count BGSAVE or BGREWRITEAOF as a
/// write and propagate it, and every replica would fork and save too. (That the clock still
/// reaches the AOF is `a_plain_aof_rewrite_keeps_the_fence_clock_without_any_lock`.)
#[test]
fn a_fork_on_the_primary_is_not_repeated_by_its_replicas() {
    let primary = Server::start_with(&[], &["--appendonly", "yes"]);
    let mut pcon = primary.conn();
    let replica = primary.replica(&[]);
    let mut rcon = replica.conn();
    let saves = |con: &mut redis::Connection| {
        ["rdb_saves", "aof_rewrites"].map(|name| info_field(con, "persistence", name))
    };
    let before = saves(&mut rcon);
    acquire(&mut pcon, "k", 60_000, "me").unwrap();
    wait_rewrite_done(&mut pcon);
    call(&mut pcon, &[b"BGREWRITEAOF"]);
    wait_rewrite_done(&mut pcon);
    call(&mut pcon, &[b"BGSAVE"]);
    wait_for("the primary's BGSAVE", || {
        info_field(&mut pcon, "persistence", "rdb_bgsave_in_progress").as_deref() == Some("0")
    });
    // Whatever the forks propagated has reached the replica.
    replica_caught_up(&mut pcon);
    sleep(Duration::from_millis(200));
    assert_eq!(saves(&mut rcon), before, "{}", replica.log());
    assert!(
        !replica.log().contains("Background saving started"),
        "{}",
        replica.log()
    );
    assert!(
        !replica
            .log()
            .contains("Background append only file rewriting started"),
        "{}",
        replica.log()
    );
}

/// Every truncation of a real DUMP payload, with a valid checksum so the server hands it to
/// the module: the server stays up. (A few cuts happen to read as a shorter valid lock, as
/// the RDB format cannot tell; those are restored as such.)
#[test]
fn truncated_restore_payloads_are_refused_without_crashing() {
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 60_000, "a-token-of-some-length").unwrap();
    let Value::BulkString(dump) = call(&mut con, &[b"DUMP", b"k"]) else {
        panic!("no dump")
    };
    let refused = restore_truncations(&mut con, &dump, |_| {});
    let cuts = dump.len() - 11;
    assert!(refused > cuts / 2, "{refused} of {cuts}");
    srv.assert_alive();
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST and RESTORE with another ttl cannot move a
/// lock key's expiry away from the lock's deadline: it is put back inside the same command, on
/// the primary, on its replica and in what the AOF replays.
#[test]
fn the_key_expiry_always_follows_the_lock_deadline() {
    let dir = new_dir();
    let mut primary = Server::start_in(
        dir,
        &[],
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let replica = primary.replica(&[]);
    let mut con = primary.conn();
    let mut rcon = replica.conn();
    let pttl = |con: &mut redis::Connection, key: &[u8]| int(call(con, &[b"PTTL", key]));
    let near_deadline = |con: &mut redis::Connection, key: &[u8], ttl: i64| {
        let left = pttl(con, key);
        assert!(
            left > ttl - 5_000 && left <= ttl,
            "{left} for a {ttl} ms lock"
        );
    };
    acquire(&mut con, "k", 60_000, "me").unwrap();
    let later = (now_us() / 1_000_000 + 3_600).to_string();
    let later_ms = (now_us() / 1_000 + 3_600_000).to_string();
    for args in [
        &[&b"PEXPIRE"[..], b"k", b"100"][..],
        &[b"EXPIRE", b"k", b"1"],
        &[b"EXPIRE", b"k", b"100000"],
        &[b"EXPIREAT", b"k", later.as_bytes()],
        &[b"PEXPIREAT", b"k", later_ms.as_bytes()],
        &[b"PERSIST", b"k"],
    ] {
        call(&mut con, args);
        near_deadline(&mut con, b"k", 60_000);
    }
    // Pipelined with the change, the very next command already sees the deadline (the fix
    // runs inside the command); Redis 7.0 fixes it right after the command instead.
    let (moved, left): (i64, i64) = redis::pipe()
        .cmd("PEXPIRE")
        .arg("k")
        .arg(50)
        .cmd("PTTL")
        .arg("k")
        .query(&mut con)
        .unwrap();
    assert_eq!(moved, 1);
    if has_post_notification_jobs(&mut con) {
        assert!(left > 55_000, "{left}");
    } else {
        assert!(left <= 50, "{left}");
        near_deadline(&mut con, b"k", 60_000);
    }
    // Past the short expiry asked for, the lock is still held.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(acquire(&mut con, "k", 1000, "other"), None);
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"me", b"30000"])),
        1
    );
    near_deadline(&mut con, b"k", 30_000);

    // RESTORE with another ttl, or none: the expiry is the restored lock's deadline.
    let Value::BulkString(dump) = call(&mut con, &[b"DUMP", b"k"]) else {
        panic!("no dump")
    };
    for ttl in [&b"0"[..], b"5", b"99999999"] {
        call(&mut con, &[b"RESTORE", b"copy", ttl, &dump, b"REPLACE"]);
        near_deadline(&mut con, b"copy", 30_000);
    }
    call(&mut con, &[b"DEL", b"copy"]);

    // The replica keeps the same expiry, from the same deadline.
    call(&mut con, &[b"PERSIST", b"k"]);
    call(&mut con, &[b"WAIT", b"1", b"5000"]);
    near_deadline(&mut rcon, b"k", 30_000);

    // So does what the AOF replays after a restart.
    primary.shutdown_save();
    primary.restart();
    let mut con = primary.conn();
    near_deadline(&mut con, b"k", 30_000);

    // A restored lock whose deadline has passed is free whatever ttl RESTORE gives it.
    acquire(&mut con, "old", 100, "me").unwrap();
    let Value::BulkString(old) = call(&mut con, &[b"DUMP", b"old"]) else {
        panic!("no dump")
    };
    wait_for("the lock to expire", || {
        int(call(&mut con, &[b"EXISTS", b"old"])) == 0
    });
    call(&mut con, &[b"RESTORE", b"old", b"0", &old]);
    assert_eq!(info(&mut con, b"old"), None, "an expired lock is free");
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"old"])), 0);
    // And the key of another type is left alone.
    call(&mut con, &[b"SET", b"plain", b"v"]);
    call(&mut con, &[b"PEXPIRE", b"plain", b"100000"]);
    assert!(pttl(&mut con, b"plain") > 90_000);
}

/// An effect carrying a fence the module cannot hold is refused without touching the clock.
#[test]
fn an_effect_with_an_impossible_fence_does_not_exhaust_the_clock() {
    let dir = new_dir();
    let mut aof = aof_with_locks(&[("bad", "tok")], 600_000, 1 << 62);
    aof.extend(aof_with_locks(&[("good", "tok")], 600_000, 42));
    std::fs::write(dir.join("appendonly.aof"), aof).unwrap();
    let srv = Server::start_in(dir, &[], &["--appendonly", "yes"]);
    let mut con = srv.conn();
    assert_eq!(info(&mut con, b"bad"), None);
    assert_eq!(info(&mut con, b"good").map(|i| i.0), Some(42));
    let fresh = acquire(&mut con, "fresh", 1000, "me").unwrap();
    assert!(fresh > 42 && fresh < now_us() + 120_000_000, "{fresh}");
}

/// The v1 fixture's fences are a century ahead of the clock: with the default
/// lock.fence-max-ahead its locks still load and stay held, but they do not drag the fence
/// clock there, and the log says so.
#[test]
fn a_loaded_fence_far_ahead_keeps_its_lock_but_not_the_clock() {
    let dir = new_dir();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lock-v1.rdb");
    std::fs::copy(fixture, dir.join("dump.rdb")).unwrap();
    let srv = Server::start_in(dir, &[], &[]);
    let mut con = srv.conn();
    assert_eq!(
        info(&mut con, b"fixture:lock").map(|i| i.0),
        Some(5_000_000_000_000_000)
    );
    assert_eq!(acquire(&mut con, "fixture:lock", 1000, "intruder"), None);
    let fresh = acquire(&mut con, "new", 1000, "me").unwrap();
    let day = 86_400_000_000;
    assert!(fresh < now_us() + day + 120_000_000, "{fresh}");
    assert!(
        srv.log().contains("more than lock.fence-max-ahead"),
        "{}",
        srv.log()
    );
}

/// A DUMP payload whose fence is the largest a lock can hold (2^62-1, valid checksum): RESTORE
/// on a primary refuses it, the server logs why, and fences go on following the clock. Before,
/// one such RESTORE made every later ACQUIRE answer "fencing numbers are exhausted".
#[test]
fn restore_refuses_a_fence_far_ahead_of_the_clock() {
    let poisoned = dump_of_lock("p", "tok", 600_000, (1 << 62) - 1);
    let ahead = dump_of_lock("a", "tok", 600_000, now_us() + 2 * 86_400_000_000);
    let near = dump_of_lock("n", "tok", 600_000, now_us() + 3_600_000_000);
    let srv = Server::start();
    let mut con = srv.conn();
    for (key, payload) in [(&b"p"[..], &poisoned), (b"a", &ahead)] {
        let err = call_err(&mut con, &[b"RESTORE", key, b"0", payload]);
        assert!(err.starts_with("ERR"), "{err}");
        assert_eq!(int(call(&mut con, &[b"EXISTS", key])), 0);
    }
    assert!(
        srv.log().contains("RESTORE refused a lock whose fence"),
        "{}",
        srv.log()
    );
    let fresh = acquire(&mut con, "k", 1000, "me").unwrap();
    assert!(fresh < now_us() + 120_000_000, "{fresh}");
    // Within the bound (an hour ahead here), RESTORE takes the lock and raises the clock.
    call(&mut con, &[b"RESTORE", b"n", b"0", &near]);
    let restored = info(&mut con, b"n").unwrap().0;
    assert!(acquire(&mut con, "k2", 1000, "me").unwrap() > restored);
    // The bound is a setting.
    call(
        &mut con,
        &[
            b"CONFIG",
            b"SET",
            b"lock.fence-max-ahead",
            b"4611686018427387",
        ],
    );
    call(&mut con, &[b"RESTORE", b"a", b"0", &ahead]);
    assert!(info(&mut con, b"a").is_some());
    srv.assert_alive();
}

/// The first grant after a restart jumps lock.fence-jump ahead of the clock and of every fence
/// loaded; `fence-jump 0` turns that off.
#[test]
fn the_first_fence_after_a_restart_jumps_ahead() {
    let mut srv = Server::start_with(&[], &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = srv.conn();
    let before = acquire(&mut con, "a", 60_000, "me").unwrap();
    let second = acquire(&mut con, "b", 60_000, "me").unwrap();
    assert!(
        second > before && second < before + 60_000_000,
        "one jump only"
    );
    srv.kill();
    let restarted_at = now_us();
    srv.restart();
    let mut con = srv.conn();
    let fresh = acquire(&mut con, "c", 60_000, "me").unwrap();
    assert!(
        fresh >= restarted_at.max(second) + 60_000_000,
        "{fresh} after {second}"
    );
    // So does the first grant after a promotion (here from a replica that never synced).
    call(&mut con, &[b"REPLICAOF", b"127.0.0.1", b"1"]);
    call(&mut con, &[b"REPLICAOF", b"NO", b"ONE"]);
    let promoted = acquire(&mut con, "d", 60_000, "me").unwrap();
    assert!(promoted >= fresh + 60_000_000, "{promoted} after {fresh}");

    let srv = Server::start_with(&["fence-jump", "0"], &[]);
    let mut con = srv.conn();
    let at = now_us();
    let plain = acquire(&mut con, "a", 1000, "me").unwrap();
    assert!(plain >= at && plain < at + 5_000_000, "{plain}");
}

/// A primary whose fences ran ahead of the wall clock (here an hour, from a loaded lock) makes
/// `last + 1` fences; its replica, cut off while the primary kept granting and then promoted,
/// still grants above every one of them, including those it never received.
#[test]
fn a_promoted_replica_grants_above_fences_it_never_received() {
    let ahead = now_us() + 3_600_000_000;
    let dir = new_dir();
    std::fs::write(
        dir.join("appendonly.aof"),
        aof_with_locks(&[("ahead", "tok")], 600_000, ahead),
    )
    .unwrap();
    let mut primary = Server::start_in(dir, &[], &["--appendonly", "yes"]);
    let mut pcon = primary.conn();
    let replica = primary.replica(&[]);
    let mut rcon = replica.conn();
    let replicated = take_locks(&mut pcon, "seen", 20);
    replica_caught_up(&mut pcon);
    // Cut the link: what the primary grants from now on is lost with it.
    call(&mut rcon, &[b"REPLICAOF", b"127.0.0.1", b"1"]);
    let lost = take_locks(&mut pcon, "lost", 500);
    assert!(lost.max_fence > replicated.max_fence && lost.max_fence > ahead);
    primary.kill();
    call(&mut rcon, &[b"REPLICAOF", b"NO", b"ONE"]);
    assert_eq!(
        info(&mut rcon, b"lost:3"),
        None,
        "the writes really were lost"
    );
    let first = acquire(&mut rcon, "lost:3", 1000, "new").unwrap();
    assert!(first > lost.max_fence, "{first} <= {}", lost.max_fence);
}

/// The module looks at keys of every type when their expiry changes, without side effects:
/// a string set with an expiry already past is not deleted inside its own SET (on Redis 7.0
/// that replicated a DEL ahead of the SET and left the key on the replica for good), and
/// RESTORE's IDLETIME and FREQ survive.
#[test]
fn expiry_events_of_other_keys_are_left_alone() {
    let primary = Server::start();
    let replica = primary.replica(&[]);
    let mut con = primary.conn();
    let mut rcon = replica.conn();
    call(&mut con, &[b"SET", b"past", b"v", b"PXAT", b"1"]);
    call(&mut con, &[b"SET", b"kept", b"v", b"EX", b"1000"]);
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"past"])), 0);
    call(&mut con, &[b"WAIT", b"1", b"5000"]);
    wait_for("the replica to drop the expired string", || {
        int(call(&mut rcon, &[b"DBSIZE"])) == 1
    });
    assert_eq!(int(call(&mut rcon, &[b"EXISTS", b"kept"])), 1);

    let Value::BulkString(dump) = call(&mut con, &[b"DUMP", b"kept"]) else {
        panic!("no dump")
    };
    call(
        &mut con,
        &[b"RESTORE", b"idle", b"0", &dump, b"IDLETIME", b"1000"],
    );
    let idle = int(call(&mut con, &[b"OBJECT", b"IDLETIME", b"idle"]));
    assert!(idle >= 1000, "{idle}");
    call(
        &mut con,
        &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lfu"],
    );
    call(&mut con, &[b"RESTORE", b"cold", b"0", &dump, b"FREQ", b"0"]);
    assert_eq!(int(call(&mut con, &[b"OBJECT", b"FREQ", b"cold"])), 0);
}

/// Jumps that follow each other faster than the clock add up only to half of
/// lock.fence-max-ahead, so new fences stay within reach of a server with the same settings.
#[test]
fn fence_jumps_add_up_only_to_half_the_bound() {
    let args = ["fence-jump", "60000", "fence-max-ahead", "100000"];
    let srv = Server::start_with(&args, &[]);
    let mut con = srv.conn();
    let mut fence = 0;
    for i in 0..4 {
        call(&mut con, &[b"DEBUG", b"RELOAD"]);
        let next = acquire(&mut con, &format!("k{i}"), 600_000, "me").unwrap();
        assert!(next > fence);
        fence = next;
    }
    assert!(fence < now_us() + 51_000_000, "{fence}");
    let Value::BulkString(dump) = call(&mut con, &[b"DUMP", b"k3"]) else {
        panic!("no dump")
    };
    let other = Server::start_with(&args, &[]);
    let mut ocon = other.conn();
    assert_eq!(
        call(&mut ocon, &[b"RESTORE", b"k3", b"0", &dump]),
        Value::Okay
    );
    assert_eq!(info(&mut ocon, b"k3").map(|i| i.0), Some(fence));
}
