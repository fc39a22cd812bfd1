//! Every malformed call gets an error reply that names the wrong argument, changes nothing,
//! and leaves the server running.

mod common;

use common::*;

/// (arguments, a word the error must contain)
fn bad_calls() -> Vec<(Vec<Vec<u8>>, &'static str)> {
    let long_token = vec![b'x'; 257];
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (vec![b"LOCK.ACQUIRE"], "wrong number of arguments"),
        (vec![b"LOCK.ACQUIRE", b"k"], "wrong number of arguments"),
        (vec![b"LOCK.ACQUIRE", b"k", b"abc"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b""], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"1.5"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"+5"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"0"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"-5"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"99999999999999999999"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"9223372036854775807"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"9223372000000000000"], "ttl"),
        (vec![b"LOCK.ACQUIRE", b"k", b"100", b"TOKEN"], "TOKEN"),
        (vec![b"LOCK.ACQUIRE", b"k", b"100", b"TOKEN", b""], "token"),
        (
            vec![b"LOCK.ACQUIRE", b"k", b"100", b"TOKEN", &long_token],
            "token",
        ),
        (
            vec![
                b"LOCK.ACQUIRE",
                b"k",
                b"100",
                b"TOKEN",
                b"a",
                b"TOKEN",
                b"a",
            ],
            "TOKEN",
        ),
        (
            vec![
                b"LOCK.ACQUIRE",
                b"k",
                b"100",
                b"token",
                b"a",
                b"Token",
                b"b",
            ],
            "TOKEN",
        ),
        (vec![b"LOCK.ACQUIRE", b"k", b"100", b"BLOCK"], "BLOCK"),
        (
            vec![b"LOCK.ACQUIRE", b"k", b"100", b"BLOCK", b"-1"],
            "BLOCK",
        ),
        (
            vec![b"LOCK.ACQUIRE", b"k", b"100", b"BLOCK", b"soon"],
            "BLOCK",
        ),
        (
            vec![b"LOCK.ACQUIRE", b"k", b"100", b"BLOCK", b"1.5"],
            "BLOCK",
        ),
        (
            vec![
                b"LOCK.ACQUIRE",
                b"k",
                b"100",
                b"BLOCK",
                b"1",
                b"block",
                b"1",
            ],
            "BLOCK",
        ),
        (
            vec![
                b"LOCK.ACQUIRE",
                b"k",
                b"100",
                b"BLOCK",
                b"9223372036854775807",
            ],
            "BLOCK",
        ),
        (vec![b"LOCK.ACQUIRE", b"k", b"100", b"NX"], "NX"),
        (
            vec![b"LOCK.ACQUIRE", b"k", b"100", b"TOKEN", b"a", b"PX"],
            "PX",
        ),
        (
            vec![b"LOCK.ACQUIRE", b"k", b"100", b"\x00\r\n"],
            "unknown option",
        ),
        (vec![b"LOCK.RENEW"], "wrong number of arguments"),
        (
            vec![b"LOCK.RENEW", b"k", b"owner"],
            "wrong number of arguments",
        ),
        (
            vec![b"LOCK.RENEW", b"k", b"owner", b"100", b"x"],
            "wrong number of arguments",
        ),
        (vec![b"LOCK.RENEW", b"k", b"owner", b"0"], "ttl"),
        (vec![b"LOCK.RENEW", b"k", b"owner", b"-1"], "ttl"),
        (vec![b"LOCK.RENEW", b"k", b"owner", b"soon"], "ttl"),
        (
            vec![b"LOCK.RENEW", b"k", b"owner", b"9223372036854775807"],
            "ttl",
        ),
        (vec![b"LOCK.RENEW", b"k", b"", b"100"], "token"),
        (vec![b"LOCK.RENEW", b"k", &long_token, b"100"], "token"),
        (vec![b"LOCK.RELEASE"], "wrong number of arguments"),
        (vec![b"LOCK.RELEASE", b"k"], "wrong number of arguments"),
        (
            vec![b"LOCK.RELEASE", b"k", b"owner", b"x"],
            "wrong number of arguments",
        ),
        (vec![b"LOCK.RELEASE", b"k", b""], "token"),
        (vec![b"LOCK.RELEASE", b"k", &long_token], "token"),
        (vec![b"LOCK.INFO"], "wrong number of arguments"),
        (
            vec![b"LOCK.INFO", b"k", b"extra"],
            "wrong number of arguments",
        ),
    ];
    cases
        .into_iter()
        .map(|(args, word)| (args.into_iter().map(<[u8]>::to_vec).collect(), word))
        .collect()
}

/// The state the bad calls must leave alone: a held lock `k` and no key `free`.
fn snapshot(con: &mut redis::Connection) -> (i64, i64, i64) {
    let (fence, _, _) = info(con, b"k").expect("k must still be held");
    let pttl = int(call(con, &[b"PTTL", b"k"]));
    let dbsize = int(call(con, &[b"DBSIZE"]));
    (fence, pttl, dbsize)
}

#[test]
fn every_bad_call_gets_an_error_and_changes_nothing() {
    let srv = Server::start();
    let mut con = srv.conn();
    acquire(&mut con, "k", 600_000, "owner").unwrap();
    let (fence, pttl, dbsize) = snapshot(&mut con);
    for (args, word) in bad_calls() {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let err = call_err(&mut con, &refs);
        assert!(err.starts_with("ERR "), "{refs:?}: {err}");
        assert!(
            err.to_lowercase().contains(&word.to_lowercase()),
            "{refs:?}: {err} should name {word}"
        );
        let (f, p, n) = snapshot(&mut con);
        assert_eq!(f, fence, "{refs:?} changed the fence");
        assert!(p <= pttl, "{refs:?} moved the deadline");
        assert_eq!(n, dbsize, "{refs:?} created or removed a key");
        // The same call on a free key creates nothing.
        let mut on_free = refs.clone();
        if on_free.len() > 1 {
            on_free[1] = b"free";
            let _ = call_err(&mut con, &on_free);
            assert_eq!(int(call(&mut con, &[b"EXISTS", b"free"])), 0, "{on_free:?}");
        }
    }
    srv.assert_alive();
}

#[test]
fn ttl_over_max_ttl_is_refused_for_acquire_and_renew() {
    let srv = Server::start();
    let mut con = srv.conn();
    call(&mut con, &[b"CONFIG", b"SET", b"lock.max-ttl", b"1000"]);
    let err = call_err(&mut con, &[b"LOCK.ACQUIRE", b"k", b"1001"]);
    assert!(err.contains("ttl") && err.contains("max-ttl"), "{err}");
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"k"])), 0);
    acquire(&mut con, "k", 1000, "me").unwrap();
    let err = call_err(&mut con, &[b"LOCK.RENEW", b"k", b"me", b"1001"]);
    assert!(err.contains("max-ttl"), "{err}");
    assert!(int(call(&mut con, &[b"PTTL", b"k"])) <= 1000);
    call(&mut con, &[b"CONFIG", b"SET", b"lock.max-ttl", b"0"]);
    assert_eq!(
        int(call(&mut con, &[b"LOCK.RENEW", b"k", b"me", b"86400000"])),
        1
    );
}

#[test]
fn the_internal_effect_command_refuses_ordinary_clients() {
    let srv = Server::start();
    let mut con = srv.conn();
    for args in [
        &[&b"LOCK.APPLY"[..], b"k", b"tok", b"99999999999999", b"1"][..],
        &[b"LOCK.APPLY", b"k", b"tok", b"1", b"99999999999999999"],
        &[b"LOCK.APPLY", b"k", b"99999999999999:1:tok"],
        &[b"LOCK.APPLY", b"k", b"1:99999999999999999:tok", b"SHARED"],
        &[b"LOCK.APPLY", b"k"],
    ] {
        let err = call_err(&mut con, args);
        assert!(err.starts_with("ERR"), "{err}");
    }
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"k"])), 0);
    // It did not raise the fence clock either.
    let f = acquire(&mut con, "k", 1000, "me").unwrap();
    assert!(f < 99_999_999_999_999_999 && f < now_us() + 120_000_000);
    // Nor from a script.
    let err = call_err(
        &mut con,
        &[
            b"EVAL",
            b"return redis.call('LOCK.APPLY', KEYS[1], 'x', '99999999999999', '1')",
            b"1",
            b"z",
        ],
    );
    assert!(err.starts_with("ERR"), "{err}");
    assert_eq!(int(call(&mut con, &[b"EXISTS", b"z"])), 0);
}

/// Random arguments, bounded in count: the server answers every call and stays up.
#[test]
fn random_arguments_never_crash_the_server() {
    let srv = Server::start();
    let mut con = srv.conn();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words: [&[u8]; 14] = [
        b"TOKEN",
        b"BLOCK",
        b"token",
        b"0",
        b"1",
        b"-1",
        b"100",
        b"9223372036854775807",
        b"-9223372036854775808",
        b"",
        b"\x00",
        b"k",
        b"abc",
        b"18446744073709551616",
    ];
    let commands: [&[u8]; 6] = [
        b"LOCK.ACQUIRE",
        b"LOCK.RENEW",
        b"LOCK.RELEASE",
        b"LOCK.INFO",
        b"LOCK.APPLY",
        b"LOCK.CLOCK",
    ];
    // A call that waits (BLOCK on a held lock) is abandoned after a moment: the connection
    // is dropped, which also exercises a waiter disconnecting.
    let short = |con: &mut redis::Connection| {
        con.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
    };
    short(&mut con);
    for _ in 0..3000 {
        let mut args: Vec<Vec<u8>> = vec![commands[(next() % 6) as usize].to_vec()];
        for _ in 0..(next() % 7) {
            let arg = if next() % 4 == 0 {
                (0..(next() % 300)).map(|_| next() as u8).collect()
            } else {
                words[(next() % words.len() as u64) as usize].to_vec()
            };
            args.push(arg);
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        // Any reply at all, error or not, is fine; a dead server is not.
        if let Err(e) = command(&refs).query::<Value>(&mut con) {
            if e.is_timeout() {
                con = srv.conn();
                short(&mut con);
            }
        }
    }
    srv.assert_alive();
    // Every abandoned waiter left with its connection.
    let mut con = srv.conn();
    wait_for("no blocked clients", || {
        info_field(&mut con, "clients", "blocked_clients").as_deref() == Some("0")
    });
}
