//! Holds that end with their connection (`EPHEMERAL`), hold labels (`META`) and
//! `LOCK.HOLDERS`, on a real server: every way a connection can close, a holder process killed
//! with SIGKILL, retries and renewals from other connections, shared holds and permits,
//! replicas, thousands of holds on one connection, MULTI and scripts, and the leader-election
//! recipe of the README.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `LOCK.ACQUIRE key ttl` with `options`, the reply as `(token, fence)` or None.
fn acquire_with(
    con: &mut redis::Connection,
    key: &str,
    ttl: u64,
    options: &[&str],
) -> Option<(Vec<u8>, i64)> {
    let ttl = ttl.to_string();
    let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", key.as_bytes(), ttl.as_bytes()];
    args.extend(options.iter().map(|o| o.as_bytes()));
    grant(&call(con, &args))
}

/// The same on a raw connection (which the test then closes its own way).
fn raw_acquire(raw: &mut Raw, key: &str, ttl: u64, options: &[&str]) -> (Vec<u8>, i64) {
    let ttl = ttl.to_string();
    let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", key.as_bytes(), ttl.as_bytes()];
    args.extend(options.iter().map(|o| o.as_bytes()));
    grant(&redis::parse_redis_value(&raw.cmd(&args)).unwrap()).expect("granted")
}

/// A raw connection that has sent `LOCK.ACQUIRE key ttl ... BLOCK 0` and waits.
fn raw_waiter(srv: &Server, key: &str, ttl: u64, options: &[&str]) -> Raw {
    let mut raw = srv.raw();
    let ttl = ttl.to_string();
    let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", key.as_bytes(), ttl.as_bytes()];
    args.extend(options.iter().map(|o| o.as_bytes()));
    args.extend([&b"BLOCK"[..], b"0"]);
    raw.send(&args);
    raw
}

/// One holder as LOCK.HOLDERS shows it.
#[derive(Debug, Clone, PartialEq)]
struct Holder {
    fields: Vec<String>,
    fence: i64,
    ttl: i64,
    mode: String,
    ephemeral: i64,
    meta: Option<Vec<u8>>,
}

/// LOCK.HOLDERS of `key` (RESP2 or RESP3), or None when the lock is free.
fn holders_of(con: &mut redis::Connection, key: &str) -> Option<Vec<Holder>> {
    parse_holders(call(con, &[b"LOCK.HOLDERS", key.as_bytes()]))
}

fn parse_holders(reply: Value) -> Option<Vec<Holder>> {
    let entries = match reply {
        Value::Nil => return None,
        Value::Array(entries) => entries,
        other => panic!("not a LOCK.HOLDERS reply: {other:?}"),
    };
    let holders = entries
        .into_iter()
        .map(|entry| {
            let pairs = info_pairs(entry).expect("an entry");
            let get = |name: &str| info_field_of(&pairs, name);
            let bytes = |v: Value| match v {
                Value::BulkString(b) => b,
                other => panic!("not a bulk string: {other:?}"),
            };
            Holder {
                fields: pairs.iter().map(|(k, _)| text_of(k)).collect(),
                fence: int(get("fence").expect("fence")),
                ttl: int(get("ttl").expect("ttl")),
                mode: String::from_utf8(bytes(get("mode").expect("mode"))).unwrap(),
                ephemeral: int(get("ephemeral").expect("ephemeral")),
                meta: get("meta").map(bytes),
            }
        })
        .collect();
    Some(holders)
}

/// The labels of the lock's holders, in grant order (none when it is free).
fn metas_of(con: &mut redis::Connection, key: &str) -> Vec<Option<Vec<u8>>> {
    holders_of(con, key)
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.meta)
        .collect()
}

/// LOCK.INFO's `meta`, if the lock is held and has one.
fn meta_of(con: &mut redis::Connection, key: &str) -> Option<Vec<u8>> {
    let pairs = info_pairs(call(con, &[b"LOCK.INFO", key.as_bytes()]))?;
    info_field_of(&pairs, "meta").map(|v| match v {
        Value::BulkString(b) => b,
        other => panic!("meta is not a bulk string: {other:?}"),
    })
}

fn stat(con: &mut redis::Connection, name: &str) -> u64 {
    info_lock_stat(con, name)
}

fn is_free(con: &mut redis::Connection, key: &str) -> bool {
    call(con, &[b"LOCK.INFO", key.as_bytes()]) == Value::Nil
}

/// Whether the connection `id` is gone from CLIENT LIST (its close has been handled).
fn client_gone(con: &mut redis::Connection, id: &str) -> bool {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(con).unwrap();
    !list.lines().any(|l| l.starts_with(&format!("id={id} ")))
}

/// The ways a holder's connection can end, each by the client or by the server.
#[derive(Debug, Clone, Copy)]
enum Close {
    Quit,
    /// The socket closed with no QUIT, as a crashed client's is.
    Dropped,
    ClientKill,
}

#[test]
fn a_closed_connection_hands_its_lock_to_the_next_waiter_at_once() {
    let srv = Server::start();
    let mut admin = srv.conn();
    for close in [Close::Quit, Close::Dropped, Close::ClientKill] {
        let key = format!("job:{close:?}");
        let mut holder = srv.raw();
        let id = holder.client_id();
        let (_, first) = raw_acquire(&mut holder, &key, 60_000, &["TOKEN", "h", "EPHEMERAL"]);
        let mut waiter = raw_waiter(&srv, &key, 60_000, &["TOKEN", "w"]);
        wait_for("the waiter", || waiters(&mut admin, &key) == 1);
        let start = Instant::now();
        match close {
            Close::Quit => assert_eq!(holder.cmd(&[b"QUIT"]), b"+OK\r\n"),
            Close::Dropped => drop(holder),
            Close::ClientKill => {
                call(&mut admin, &[b"CLIENT", b"KILL", b"ID", id.as_bytes()]);
            }
        }
        // The lock's ttl is 60 s: a grant within seconds can only come from the close.
        let reply = waiter
            .reply_within(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{close:?}: the waiter was not served"));
        let took = start.elapsed();
        let (token, fence) = grant(&redis::parse_redis_value(&reply).unwrap()).unwrap();
        assert_eq!(token, b"w");
        assert!(fence > first, "{close:?}: a new fence");
        assert_eq!(fence_of(&mut admin, key.as_bytes()), Some(fence));
        eprintln!("{close:?}: the waiter was granted {took:?} after the close");
    }
    assert_eq!(stat(&mut admin, "closed_releases"), 3);
    assert_eq!(stat(&mut admin, "ephemeral_holds"), 0);
    srv.assert_alive();
}

#[test]
fn a_client_timeout_ends_an_ephemeral_hold_and_not_a_plain_one() {
    let srv = Server::start_with(&[], &["--timeout", "1"]);
    let mut ephemeral = srv.raw();
    let mut plain = srv.raw();
    raw_acquire(&mut ephemeral, "e", 60_000, &["EPHEMERAL"]);
    raw_acquire(&mut plain, "p", 60_000, &[]);
    let mut admin = srv.conn();
    // The server closes both idle connections after a second or two; only the ephemeral
    // hold ends with its connection.
    wait_for("the idle holder's lock", || is_free(&mut admin, "e"));
    let (_, ttl, _) = info(&mut admin, b"p").expect("the plain lock lives on");
    assert!(ttl > 50_000, "{ttl}");
    drop((ephemeral, plain));
}

/// Run as a child process by the next test: holds a lock through its own connection until
/// it is killed. Prints `HELD <fence>` once it holds it.
#[test]
#[ignore = "a holder process for killed_holder_processes (run by it, not on its own)"]
fn child_holder() {
    let port: u16 = std::env::var("CHILD_PORT").unwrap().parse().unwrap();
    let key = std::env::var("CHILD_KEY").unwrap();
    let ephemeral = std::env::var("CHILD_EPHEMERAL").unwrap() == "1";
    let mut raw = Raw::connect(port);
    let mut options = vec!["TOKEN", "child"];
    if ephemeral {
        options.push("EPHEMERAL");
    }
    let (_, fence) = raw_acquire(&mut raw, &key, 60_000, &options);
    println!("HELD {fence}");
    std::thread::sleep(Duration::from_secs(120));
}

/// Start `child_holder` for `key` and wait until it holds the lock.
fn spawn_holder(srv: &Server, key: &str, ephemeral: bool) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holder", "--ignored", "--nocapture"])
        .env("CHILD_PORT", srv.port.to_string())
        .env("CHILD_KEY", key)
        .env("CHILD_EPHEMERAL", if ephemeral { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let held = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("HELD "));
    assert!(held, "the holder process did not take the lock");
    child
}

#[test]
fn a_holder_process_killed_with_sigkill_frees_its_ephemeral_lock_at_once() {
    let srv = Server::start();
    let mut admin = srv.conn();
    let mut ephemeral = spawn_holder(&srv, "e", true);
    let mut plain = spawn_holder(&srv, "p", false);
    assert_eq!(stat(&mut admin, "ephemeral_holds"), 1);
    let mut waiter = raw_waiter(&srv, "e", 60_000, &["TOKEN", "next"]);
    wait_for("the waiter", || waiters(&mut admin, "e") == 1);
    let start = Instant::now();
    // Child::kill sends SIGKILL: the process cannot say goodbye; its kernel closes the socket.
    ephemeral.kill().unwrap();
    ephemeral.wait().unwrap();
    plain.kill().unwrap();
    plain.wait().unwrap();
    let reply = waiter
        .reply_within(Duration::from_secs(10))
        .expect("served");
    eprintln!(
        "SIGKILL: the waiter was granted {:?} after the kill",
        start.elapsed()
    );
    assert_eq!(
        grant(&redis::parse_redis_value(&reply).unwrap()).unwrap().0,
        b"next"
    );
    // The plain lock of the killed process waits for its ttl.
    std::thread::sleep(Duration::from_millis(200));
    let (_, ttl, _) = info(&mut admin, b"p").expect("the plain lock is still held");
    assert!(ttl > 50_000, "{ttl}");
}

#[test]
fn a_retry_with_ephemeral_moves_the_binding_and_others_leave_it_alone() {
    let srv = Server::start();
    let mut admin = srv.conn();
    let mut a = srv.raw();
    let a_id = a.client_id();
    let (_, fence) = raw_acquire(&mut a, "k", 60_000, &["TOKEN", "t", "EPHEMERAL"]);
    let mut b = srv.raw();
    let b_id = b.client_id();
    // The idempotent retry with EPHEMERAL from b: same fence, now bound to b.
    assert_eq!(
        raw_acquire(&mut b, "k", 60_000, &["TOKEN", "t", "EPHEMERAL"]).1,
        fence
    );
    // A retry without EPHEMERAL and a renewal from c do not move it.
    let mut c = srv.raw();
    let c_id = c.client_id();
    assert_eq!(raw_acquire(&mut c, "k", 60_000, &["TOKEN", "t"]).1, fence);
    assert_eq!(c.cmd(&[b"LOCK.RENEW", b"k", b"t", b"60000"]), b":1\r\n");
    drop(a);
    drop(c);
    wait_for("a and c closed", || {
        client_gone(&mut admin, &a_id) && client_gone(&mut admin, &c_id)
    });
    // Whatever the server does after a close has run by the next command plus a timer tick.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fence_of(&mut admin, b"k"), Some(fence), "bound to b only");
    assert_eq!(stat(&mut admin, "closed_releases"), 0);
    drop(b);
    wait_for("b closed", || client_gone(&mut admin, &b_id));
    wait_for("the lock freed with b", || is_free(&mut admin, "k"));
}

#[test]
fn renew_and_release_from_another_connection_keep_the_binding_to_that_grant() {
    let srv = Server::start();
    let mut admin = srv.conn();
    // RENEW from elsewhere: the hold still ends with its own connection.
    let mut a = srv.raw();
    raw_acquire(&mut a, "k", 1_000, &["TOKEN", "t", "EPHEMERAL"]);
    assert_eq!(
        int(call(&mut admin, &[b"LOCK.RENEW", b"k", b"t", b"60000"])),
        1
    );
    drop(a);
    wait_for("the renewed lock freed with its connection", || {
        is_free(&mut admin, "k")
    });

    // RELEASE from elsewhere, then a new grant with the same token on a plain connection:
    // the closing connection must not end that new grant (it has another fence).
    let mut a = srv.raw();
    let a_id = a.client_id();
    let (_, old) = raw_acquire(&mut a, "k", 60_000, &["TOKEN", "t", "EPHEMERAL"]);
    assert_eq!(int(call(&mut admin, &[b"LOCK.RELEASE", b"k", b"t"])), 1);
    assert_eq!(stat(&mut admin, "ephemeral_holds"), 0, "released: unbound");
    let new = acquire(&mut admin, "k", 60_000, "t").unwrap();
    assert!(new > old);
    drop(a);
    wait_for("a closed", || client_gone(&mut admin, &a_id));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fence_of(&mut admin, b"k"), Some(new));
}

#[test]
fn shared_holds_and_permits_end_with_their_connections() {
    let srv = Server::start();
    let mut admin = srv.conn();
    // Three readers, each on its own connection, and a writer waiting for all of them.
    let mut readers: Vec<Raw> = (0..3)
        .map(|i| {
            let mut r = srv.raw();
            let token = format!("r{i}");
            raw_acquire(
                &mut r,
                "doc",
                60_000,
                &["TOKEN", &token, "SHARED", "EPHEMERAL"],
            );
            r
        })
        .collect();
    let mut writer = raw_waiter(&srv, "doc", 60_000, &["TOKEN", "w"]);
    wait_for("the writer", || waiters(&mut admin, "doc") == 1);
    let holders = holders_of(&mut admin, "doc").unwrap();
    assert_eq!(holders.len(), 3);
    assert!(holders
        .iter()
        .all(|h| h.ephemeral == 1 && h.mode == "shared"));
    drop(readers.remove(0));
    wait_for("two readers left", || {
        holders_of(&mut admin, "doc").map(|h| h.len()) == Some(2)
    });
    assert!(
        writer.reply_within(Duration::from_millis(100)).is_none(),
        "two still read"
    );
    readers.clear();
    let reply = writer
        .reply_within(Duration::from_secs(10))
        .expect("the writer is served");
    assert_eq!(
        grant(&redis::parse_redis_value(&reply).unwrap()).unwrap().0,
        b"w"
    );

    // A semaphore of 2: a permit holder's connection is killed, the waiter gets its permit.
    let mut p1 = srv.raw();
    let p1_id = p1.client_id();
    raw_acquire(
        &mut p1,
        "pool",
        60_000,
        &["LIMIT", "2", "EPHEMERAL", "META", "p1"],
    );
    let mut p2 = srv.raw();
    raw_acquire(
        &mut p2,
        "pool",
        60_000,
        &["LIMIT", "2", "EPHEMERAL", "META", "p2"],
    );
    let mut third = raw_waiter(
        &srv,
        "pool",
        60_000,
        &["LIMIT", "2", "EPHEMERAL", "META", "p3"],
    );
    wait_for("the third", || waiters(&mut admin, "pool") == 1);
    call(&mut admin, &[b"CLIENT", b"KILL", b"ID", p1_id.as_bytes()]);
    let reply = third
        .reply_within(Duration::from_secs(10))
        .expect("a permit");
    assert!(grant(&redis::parse_redis_value(&reply).unwrap()).is_some());
    let metas: Vec<Option<Vec<u8>>> = metas_of(&mut admin, "pool");
    assert_eq!(
        metas,
        [Some(b"p2".to_vec()), Some(b"p3".to_vec())],
        "in grant order"
    );
    // The waiter granted with EPHEMERAL is bound to its own connection.
    drop(third);
    wait_for("p3's permit back", || {
        holders_of(&mut admin, "pool").map(|h| h.len()) == Some(1)
    });
    drop(p2);
    wait_for("the semaphore free", || is_free(&mut admin, "pool"));
    assert_eq!(stat(&mut admin, "ephemeral_holds"), 0);
    assert_eq!(stat(&mut admin, "ephemeral_connections"), 0);
}

#[test]
fn replicas_follow_a_release_on_close_and_fences_keep_rising() {
    let primary = Server::start();
    let replica = primary.replica(&[]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut holder = primary.raw();
    let (_, first) = raw_acquire(
        &mut holder,
        "leader",
        60_000,
        &["EPHEMERAL", "META", "10.0.0.1:80"],
    );
    replica_caught_up(&mut p);
    let on_primary = holders_of(&mut p, "leader").unwrap();
    let on_replica = holders_of(&mut r, "leader").unwrap();
    assert_eq!((on_primary[0].ephemeral, on_primary[0].fence), (1, first));
    // The binding lives in the primary's memory only.
    assert_eq!((on_replica[0].ephemeral, on_replica[0].fence), (0, first));
    assert_eq!(on_replica[0].meta.as_deref(), Some(&b"10.0.0.1:80"[..]));
    drop(holder);
    wait_for("the replica sees the release", || is_free(&mut r, "leader"));
    let (_, second) = acquire_with(&mut p, "leader", 60_000, &["META", "10.0.0.2:80"]).unwrap();
    assert!(second > first);
    replica_caught_up(&mut p);
    assert_eq!(fence_of(&mut r, b"leader"), Some(second));
    assert_eq!(
        meta_of(&mut r, "leader").as_deref(),
        Some(&b"10.0.0.2:80"[..])
    );
    assert_eq!(stat(&mut r, "ephemeral_holds"), 0);
}

#[test]
fn five_thousand_ephemeral_holds_on_one_connection_go_when_it_closes() {
    const N: usize = 5_000;
    let srv = Server::start();
    let mut admin = srv.conn();
    let mut holder = srv.conn();
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("LOCK.ACQUIRE")
            .arg(format!("job:{i}"))
            .arg(60_000)
            .arg("EPHEMERAL");
    }
    let replies: Vec<Value> = pipe.query(&mut holder).unwrap();
    assert!(replies.iter().all(|r| grant(r).is_some()));
    assert_eq!(stat(&mut admin, "ephemeral_holds"), N as u64);
    assert_eq!(stat(&mut admin, "ephemeral_connections"), 1);
    let start = Instant::now();
    drop(holder);
    wait_for("every hold freed", || {
        redis::cmd("DBSIZE").query::<i64>(&mut admin).unwrap() == 0
    });
    eprintln!(
        "{N} ephemeral holds freed {:?} after the close",
        start.elapsed()
    );
    assert_eq!(stat(&mut admin, "closed_releases"), N as u64);
    assert_eq!(stat(&mut admin, "ephemeral_holds"), 0);
    assert_eq!(stat(&mut admin, "ephemeral_connections"), 0);
}

#[test]
fn ephemeral_in_multi_binds_the_caller_and_scripts_refuse_it() {
    let srv = Server::start();
    let mut admin = srv.conn();
    let mut tx = srv.raw();
    tx.cmd(&[b"MULTI"]);
    tx.cmd(&[
        b"LOCK.ACQUIRE",
        b"m",
        b"60000",
        b"EPHEMERAL",
        b"BLOCK",
        b"0",
    ]);
    let exec = redis::parse_redis_value(&tx.cmd(&[b"EXEC"])).unwrap();
    let Value::Array(replies) = exec else {
        panic!("{exec:?}")
    };
    assert!(grant(&replies[0]).is_some());
    assert_eq!(stat(&mut admin, "ephemeral_holds"), 1);
    drop(tx);
    wait_for("the MULTI hold freed with its connection", || {
        is_free(&mut admin, "m")
    });

    // A script's commands run on the script's own client, which never closes, and the server
    // does not say whose script it is: EPHEMERAL is refused there, and nothing changes.
    let script = b"return redis.call('LOCK.ACQUIRE', KEYS[1], '60000', 'EPHEMERAL')";
    let err = call_err(&mut admin, &[b"EVAL", script, b"1", b"s"]);
    assert!(
        err.contains("EPHEMERAL cannot be used inside a script"),
        "{err}"
    );
    assert!(is_free(&mut admin, "s"));
    // META alone is fine in a script.
    let script = b"return redis.call('LOCK.ACQUIRE', KEYS[1], '60000', 'META', 'from-lua')";
    assert!(grant(&call(&mut admin, &[b"EVAL", script, b"1", b"s"])).is_some());
    assert_eq!(meta_of(&mut admin, "s").as_deref(), Some(&b"from-lua"[..]));
}

#[test]
fn meta_shows_in_lock_info_and_lock_holders_in_both_protocols() {
    let srv = Server::start();
    for resp3 in [false, true] {
        let mut con = if resp3 { srv.conn_resp3() } else { srv.conn() };
        call(&mut con, &[b"FLUSHALL"]);
        let (token, fence) = acquire_with(
            &mut con,
            "k",
            60_000,
            &["EPHEMERAL", "META", "10.0.0.7:8080"],
        )
        .unwrap();
        let info = lock_info_of(&mut con, b"k").unwrap();
        assert_eq!(
            info.fields,
            ["fence", "holders", "meta", "mode", "ttl", "waiters"]
        );
        assert_eq!(
            meta_of(&mut con, "k").as_deref(),
            Some(&b"10.0.0.7:8080"[..])
        );
        let holders = holders_of(&mut con, "k").unwrap();
        assert_eq!(holders.len(), 1);
        let h = &holders[0];
        assert_eq!(h.fields, ["ephemeral", "fence", "meta", "mode", "ttl"]);
        assert_eq!(
            (h.fence, h.ephemeral, h.mode.as_str()),
            (fence, 1, "exclusive")
        );
        assert!(h.ttl > 59_000 && h.ttl <= 60_000, "{}", h.ttl);
        // Never the token, in any reply.
        let raw = srv.raw().cmd(&[b"LOCK.HOLDERS", b"k"]);
        assert!(!raw.windows(token.len()).any(|w| w == token.as_slice()));

        // A retry with META relabels; without, it keeps the label.
        let t = String::from_utf8(token).unwrap();
        acquire_with(&mut con, "k", 60_000, &["TOKEN", &t, "META", "moved"]).unwrap();
        assert_eq!(meta_of(&mut con, "k").as_deref(), Some(&b"moved"[..]));
        acquire_with(&mut con, "k", 60_000, &["TOKEN", &t]).unwrap();
        assert_eq!(meta_of(&mut con, "k").as_deref(), Some(&b"moved"[..]));
        assert_eq!(
            holders_of(&mut con, "k").unwrap()[0].ephemeral,
            1,
            "still bound"
        );

        // Shared holders in grant order; an empty label is a label; no label, no field.
        acquire_with(&mut con, "s", 60_000, &["SHARED", "META", "b-first"]).unwrap();
        acquire_with(&mut con, "s", 60_000, &["SHARED"]).unwrap();
        acquire_with(&mut con, "s", 60_000, &["SHARED", "META", ""]).unwrap();
        let metas: Vec<Option<Vec<u8>>> = metas_of(&mut con, "s");
        assert_eq!(metas, [Some(b"b-first".to_vec()), None, Some(Vec::new())]);
        let fences: Vec<i64> = holders_of(&mut con, "s")
            .unwrap()
            .iter()
            .map(|h| h.fence)
            .collect();
        assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
        assert!(holders_of(&mut con, "s")
            .unwrap()
            .iter()
            .all(|h| h.ephemeral == 0));
        assert!(!lock_info_of(&mut con, b"s")
            .unwrap()
            .fields
            .contains(&"meta".to_string()));
        assert_eq!(holders_of(&mut con, "free"), None);
    }
    let mut con = srv.conn();
    let long = vec![b'x'; 1025];
    let err = call_err(&mut con, &[b"LOCK.ACQUIRE", b"n", b"1000", b"META", &long]);
    assert_eq!(err, "ERR invalid META: at most 1024 bytes, got 1025");
    let max = vec![0xffu8; 1024];
    assert!(grant(&call(
        &mut con,
        &[b"LOCK.ACQUIRE", b"n", b"60000", b"META", &max]
    ))
    .is_some());
    assert_eq!(meta_of(&mut con, "n"), Some(max));
    for bad in [
        &[&b"LOCK.ACQUIRE"[..], b"x", b"1000", b"META"][..],
        &[b"LOCK.ACQUIRE", b"x", b"1000", b"EPHEMERAL", b"EPHEMERAL"],
        &[b"LOCK.ACQUIRE", b"x", b"1000", b"META", b"a", b"META", b"b"],
        &[b"LOCK.HOLDERS"],
        &[b"LOCK.HOLDERS", b"x", b"y"],
    ] {
        assert!(try_call(&mut con, bad).is_err(), "{bad:?}");
    }
    assert!(is_free(&mut con, "x"));
    call(&mut con, &[b"SET", b"str", b"v"]);
    assert!(call_err(&mut con, &[b"LOCK.HOLDERS", b"str"]).starts_with("WRONGTYPE"));
    // COMMAND INFO: read-only, one read-only key at argv[1].
    let info = format!(
        "{:?}",
        call(&mut con, &[b"COMMAND", b"INFO", b"lock.holders"])
    );
    assert!(info.contains("readonly"), "{info}");
    assert!(info.contains("RO"), "{info}");
    let docs = format!(
        "{:?}",
        call(&mut con, &[b"COMMAND", b"DOCS", b"lock.acquire"])
    );
    assert!(
        docs.contains("EPHEMERAL") && docs.contains("META"),
        "{docs}"
    );
}

#[test]
fn labels_survive_restart_aof_dump_restore_and_migrate() {
    // RDB: the label stays; the binding does not (the hold lives on until its deadline).
    let mut srv = Server::start_with(&[], &["--save", "3600 1"]);
    {
        let mut holder = srv.conn();
        acquire_with(&mut holder, "e", 60_000, &["EPHEMERAL", "META", "rdb"]).unwrap();
        acquire_with(&mut holder, "s", 60_000, &["LIMIT", "3", "META", "s1"]).unwrap();
        acquire_with(&mut holder, "s", 60_000, &["LIMIT", "3"]).unwrap();
        srv.shutdown_save();
    }
    srv.restart();
    let mut con = srv.conn();
    let h = &holders_of(&mut con, "e").expect("still held after the restart")[0];
    assert_eq!((h.meta.as_deref(), h.ephemeral), (Some(&b"rdb"[..]), 0));
    let metas: Vec<Option<Vec<u8>>> = metas_of(&mut con, "s");
    assert_eq!(metas, [Some(b"s1".to_vec()), None]);

    // DUMP/RESTORE and MIGRATE carry the label.
    let dump = call(&mut con, &[b"DUMP", b"e"]);
    let Value::BulkString(payload) = dump else {
        panic!("{dump:?}")
    };
    call(&mut con, &[b"RESTORE", b"e2", b"0", &payload]);
    assert_eq!(meta_of(&mut con, "e2").as_deref(), Some(&b"rdb"[..]));
    let other = Server::start();
    migrate(&mut con, other.port, &[b"e", b"s"]);
    let mut there = other.conn();
    assert_eq!(meta_of(&mut there, "e").as_deref(), Some(&b"rdb"[..]));
    assert_eq!(
        holders_of(&mut there, "s").unwrap()[0].meta.as_deref(),
        Some(&b"s1"[..])
    );

    // AOF with and without the RDB preamble, through a rewrite and a kill -9.
    for preamble in ["no", "yes"] {
        let mut srv = Server::start_with_aof(preamble);
        let mut con = srv.conn();
        acquire_with(&mut con, "e", 60_000, &["META", "aof"]).unwrap();
        acquire_with(&mut con, "s", 60_000, &["SHARED", "META", "r1"]).unwrap();
        call(&mut con, &[b"BGREWRITEAOF"]);
        wait_for("the rewrite", || {
            info_field(&mut con, "persistence", "aof_rewrite_in_progress").as_deref() == Some("0")
        });
        acquire_with(&mut con, "s", 60_000, &["SHARED", "META", "r2"]).unwrap();
        srv.kill();
        srv.restart();
        let mut con = srv.conn();
        assert_eq!(
            meta_of(&mut con, "e").as_deref(),
            Some(&b"aof"[..]),
            "preamble {preamble}"
        );
        let metas: Vec<Option<Vec<u8>>> = metas_of(&mut con, "s");
        assert_eq!(
            metas,
            [Some(b"r1".to_vec()), Some(b"r2".to_vec())],
            "preamble {preamble}"
        );
    }
}

#[test]
fn a_replica_and_its_primary_agree_on_labels_byte_for_byte() {
    let primary = Server::start_with(&[], &["--enable-debug-command", "yes"]);
    let replica = primary.replica(&["--enable-debug-command", "yes"]);
    let mut p = primary.conn();
    acquire_with(&mut p, "e", 60_000, &["META", "one"]).unwrap();
    let (t, _) = acquire_with(&mut p, "s", 60_000, &["LIMIT", "2", "META", "two"]).unwrap();
    // A retry relabels on the replica too.
    let t = String::from_utf8(t).unwrap();
    acquire_with(
        &mut p,
        "s",
        60_000,
        &["LIMIT", "2", "TOKEN", &t, "META", "three"],
    )
    .unwrap();
    replica_caught_up(&mut p);
    let mut r = replica.conn();
    assert_eq!(
        holders_of(&mut r, "s").unwrap()[0].meta.as_deref(),
        Some(&b"three"[..])
    );
    for key in [&b"e"[..], b"s"] {
        let digest = |con: &mut redis::Connection| call(con, &[b"DEBUG", b"DIGEST-VALUE", key]);
        assert_eq!(digest(&mut p), digest(&mut r));
    }
}

#[test]
fn a_demoted_primary_forgets_its_bindings() {
    let old = Server::start();
    let new = Server::start();
    let mut holder = old.raw();
    raw_acquire(&mut holder, "k", 60_000, &["EPHEMERAL"]);
    let mut con = old.conn();
    assert_eq!(stat(&mut con, "ephemeral_holds"), 1);
    let port = new.port.to_string();
    call(&mut con, &[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    wait_for("the link", || {
        info_field(&mut con, "replication", "master_link_status").as_deref() == Some("up")
    });
    assert_eq!(stat(&mut con, "ephemeral_holds"), 0);
    assert_eq!(stat(&mut con, "ephemeral_connections"), 0);
}

/// The README's leader-election recipe, step by step.
#[test]
fn leader_election_recipe() {
    let srv = Server::start();
    let mut admin = srv.conn();
    call(
        &mut admin,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"Kd"],
    );
    let mut watcher = srv.raw();
    watcher.cmd(&[b"SUBSCRIBE", b"__keyspace@0__:service:leader"]);
    let campaign =
        |addr: &str| raw_waiter(&srv, "service:leader", 10_000, &["EPHEMERAL", "META", addr]);
    // Two candidates campaign; the first wins at once, the second waits.
    let mut a = campaign("10.0.0.1:7000");
    let (a_token, a_term) = grant(&a.value()).unwrap();
    let mut b = campaign("10.0.0.2:7000");
    wait_for("b waits", || waiters(&mut admin, "service:leader") == 1);
    // Anyone finds the leader with LOCK.INFO.
    assert_eq!(
        meta_of(&mut admin, "service:leader").as_deref(),
        Some(&b"10.0.0.1:7000"[..])
    );
    // The leader renews well within its ttl.
    let renew = [&b"LOCK.RENEW"[..], b"service:leader", &a_token, b"10000"];
    assert_eq!(a.cmd(&renew), b":1\r\n");
    // The leader dies: b leads at once, with a higher term.
    drop(a);
    let reply = b.reply_within(Duration::from_secs(10)).expect("b leads");
    let (b_token, b_term) = grant(&redis::parse_redis_value(&reply).unwrap()).unwrap();
    assert!(b_term > a_term, "the fence is the term");
    assert_eq!(
        meta_of(&mut admin, "service:leader").as_deref(),
        Some(&b"10.0.0.2:7000"[..])
    );
    // b resigns.
    assert_eq!(
        b.cmd(&[b"LOCK.RELEASE", b"service:leader", &b_token]),
        b":1\r\n"
    );
    assert!(is_free(&mut admin, "service:leader"));
    // The watcher saw every change, in order.
    let mut events = Vec::new();
    while let Some(reply) = watcher.reply_within(Duration::from_millis(300)) {
        if let Value::Array(parts) = redis::parse_redis_value(&reply).unwrap() {
            if let Some(Value::BulkString(event)) = parts.get(2) {
                events.push(String::from_utf8(event.clone()).unwrap());
            }
        }
    }
    assert_eq!(
        events,
        [
            "lock.acquired",
            "lock.renewed",
            "lock.released",
            "lock.handed-off",
            "lock.released"
        ]
    );
}

#[test]
fn an_ephemeral_hold_still_ends_at_its_deadline_while_its_connection_stays_open() {
    let srv = Server::start();
    let mut admin = srv.conn();
    let mut holder = srv.raw();
    raw_acquire(&mut holder, "short", 300, &["TOKEN", "t", "EPHEMERAL"]);
    assert_eq!(stat(&mut admin, "ephemeral_holds"), 1);
    std::thread::sleep(Duration::from_millis(400));
    // The connection is open and idle; the deadline ends the hold, and its binding with it.
    assert!(is_free(&mut admin, "short"));
    assert_eq!(
        holder.cmd(&[b"LOCK.RENEW", b"short", b"t", b"1000"]),
        b":0\r\n"
    );
    wait_for("the binding to go with the key", || {
        stat(&mut admin, "ephemeral_holds") == 0
    });
    drop(holder);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        stat(&mut admin, "closed_releases"),
        0,
        "nothing left to release"
    );
}

#[test]
fn after_a_failover_an_ephemeral_hold_lives_on_until_its_deadline() {
    let primary = Server::start();
    let replica = primary.replica(&[]);
    let mut p = primary.conn();
    let mut holder = primary.raw();
    let (_, fence) = raw_acquire(&mut holder, "leader", 60_000, &["TOKEN", "t", "EPHEMERAL"]);
    replica_caught_up(&mut p);
    let mut r = replica.conn();
    call(&mut r, &[b"REPLICAOF", b"NO", b"ONE"]);
    // The binding stayed on the old primary: closing the holder's connection there does not
    // end the hold on the promoted replica, which keeps it to its deadline.
    drop(holder);
    wait_for("the old primary releases it", || is_free(&mut p, "leader"));
    let h = &holders_of(&mut r, "leader").expect("held on the new primary")[0];
    assert_eq!((h.fence, h.ephemeral), (fence, 0));
    assert!(h.ttl > 50_000, "{}", h.ttl);
    assert_eq!(
        int(call(&mut r, &[b"LOCK.RENEW", b"leader", b"t", b"60000"])),
        1
    );
}
