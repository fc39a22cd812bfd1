//! Starts a real `redis-server` or `valkey-server` with the module on a free loopback port,
//! and stops it when dropped. Which server: `LOCK_SERVER` (default `redis-server`); which
//! module: `LOCK_MODULE` (default the release build).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use redis::Value;

pub mod cluster;

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    /// A program the server runs under (valgrind, for the bench's instruction counts); empty
    /// for none.
    wrapper: Vec<String>,
    module_args: Vec<String>,
    config: Vec<String>,
    env: Vec<(String, String)>,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

pub fn server_binary() -> String {
    std::env::var("LOCK_SERVER").unwrap_or_else(|_| "redis-server".into())
}

pub fn module_path() -> PathBuf {
    std::env::var("LOCK_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/libredis_lock.so")
        })
}

pub fn is_valkey() -> bool {
    server_binary().contains("valkey")
}

/// A new, empty data directory for one server.
pub fn new_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lock-test-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// `module_args` follow the module path on `--loadmodule`; `config` are extra
    /// `--name value` settings, which override the defaults (no persistence).
    pub fn start_with(module_args: &[&str], config: &[&str]) -> Self {
        Self::start_in(new_dir(), module_args, config)
    }

    /// With an AOF fsynced at every write, with the RDB preamble or not (`preamble` "yes" or
    /// "no").
    pub fn start_with_aof(preamble: &str) -> Self {
        Self::start_with(
            &[],
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--aof-use-rdb-preamble",
                preamble,
            ],
        )
    }

    /// Start on `dir`, which may hold data files from an earlier server.
    pub fn start_in(dir: PathBuf, module_args: &[&str], config: &[&str]) -> Self {
        Self::start_in_env(dir, module_args, config, &[])
    }

    /// Like `start_in`, with extra environment variables for the server process (such as
    /// `LD_PRELOAD`); `restart` uses them again unless `set_env` changed them.
    pub fn start_in_env(
        dir: PathBuf,
        module_args: &[&str],
        config: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let module_args: Vec<String> = module_args.iter().map(|s| s.to_string()).collect();
        let config: Vec<String> = config.iter().map(|s| s.to_string()).collect();
        let env = owned_env(env);
        let (port, child) = launch(&dir, &[], &module_args, &config, &env);
        Server {
            port,
            dir,
            child,
            wrapper: Vec::new(),
            module_args,
            config,
            env,
        }
    }

    /// Like `start_in`, with the server run under `wrapper` (a program and its arguments, the
    /// server's command line after them), which may take much longer to start.
    pub fn start_wrapped(
        dir: PathBuf,
        wrapper: &[&str],
        module_args: &[&str],
        config: &[&str],
    ) -> Self {
        let wrapper: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        let module_args: Vec<String> = module_args.iter().map(|s| s.to_string()).collect();
        let config: Vec<String> = config.iter().map(|s| s.to_string()).collect();
        let (port, child) = launch(&dir, &wrapper, &module_args, &config, &[]);
        Server {
            port,
            dir,
            child,
            wrapper,
            module_args,
            config,
            env: Vec::new(),
        }
    }

    /// The process ID of the server (or of its wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The environment variables of the next `restart`.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = owned_env(env);
    }

    /// Kill the server with SIGKILL: no save, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SHUTDOWN SAVE, and wait for the process to end.
    pub fn shutdown_save(&mut self) {
        let mut raw = self.raw();
        raw.send(&[b"SHUTDOWN", b"SAVE"]);
        let _ = self.child.wait();
    }

    /// Start again on the same data directory and settings (after `kill` or `shutdown_save`).
    pub fn restart(&mut self) {
        let _ = self.child.wait();
        let (port, child) = launch(
            &self.dir,
            &self.wrapper,
            &self.module_args,
            &self.config,
            &self.env,
        );
        self.port = port;
        self.child = child;
    }

    /// A new server replicating this one (with extra `config`), once its link is up.
    pub fn replica(&self, config: &[&str]) -> Server {
        let port = self.port.to_string();
        let mut all = vec!["--replicaof", "127.0.0.1", &port];
        all.extend_from_slice(config);
        let replica = Server::start_with(&[], &all);
        let mut con = replica.conn();
        wait_for("the replica link", || {
            info_field(&mut con, "replication", "master_link_status").as_deref() == Some("up")
        });
        replica
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn conn_resp3(&self) -> redis::Connection {
        redis::Client::open(format!("{}?protocol=resp3", self.url()))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The server still answers, and did not log a crash.
    pub fn assert_alive(&self) {
        let pong: String = redis::cmd("PING").query(&mut self.conn()).unwrap();
        assert_eq!(pong, "PONG");
        assert!(!self.log().contains("REDIS BUG REPORT"), "{}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn owned_env(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn launch(
    dir: &std::path::Path,
    wrapper: &[String],
    module_args: &[String],
    config: &[String],
    env: &[(String, String)],
) -> (u16, Child) {
    for _attempt in 0..5 {
        let port = free_port();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(server_binary());
                cmd
            }
            None => Command::new(server_binary()),
        };
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if config.iter().any(|c| c == "--cluster-enabled") {
            // The bus port defaults to port + 10000, which may be taken or out of range.
            cmd.arg("--cluster-port").arg(free_port().to_string());
        }
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("server.log"))
            .arg("--loadmodule")
            .arg(module_path())
            .args(module_args)
            .args(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("cannot start the server binary");
        // A server under a wrapper such as valgrind takes seconds to start.
        let patience = Duration::from_secs(if wrapper.is_empty() { 10 } else { 120 });
        if wait_ready(port, &mut child, patience) {
            return (port, child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "server did not start; log:\n{}",
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
    );
}

/// A free loopback port of at most 55535, so the cluster bus port (+10000) fits too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port <= 55535 {
            return port;
        }
    }
}

fn wait_ready(port: u16, child: &mut Child, patience: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < patience {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            if s.write_all(b"PING\r\n").is_ok() {
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Every write sent on `con` so far has reached the server's one replica (`WAIT 1`, up to
/// 5 s): a test that reads the replica, or promotes it, must not run ahead of replication.
pub fn replica_caught_up(con: &mut redis::Connection) {
    assert_eq!(
        int(call(con, &[b"WAIT", b"1", b"5000"])),
        1,
        "the replica did not acknowledge the writes"
    );
}

/// Send a command, get the reply value (an error reply fails the test).
pub fn call(con: &mut redis::Connection, args: &[&[u8]]) -> Value {
    command(args)
        .query::<Value>(con)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A command from raw arguments (the first is the command name).
pub fn command(args: &[&[u8]]) -> redis::Cmd {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd
}

/// Like `call`, but the reply must be an error: returns its full text ("ERR ...").
pub fn call_err(con: &mut redis::Connection, args: &[&[u8]]) -> String {
    match try_call(con, args) {
        Err(text) => text,
        Ok(v) => panic!("expected an error for {args:?}, got {v:?}"),
    }
}

/// The reply, or the full text of an error reply ("ERR ...") for calls that may be refused.
pub fn try_call(con: &mut redis::Connection, args: &[&[u8]]) -> Result<Value, String> {
    reply_or_error(command(args).query::<Value>(con))
}

/// A reply value as `try_call` gives it: an error reply (also one nested in an EXEC
/// reply) becomes its text.
pub fn reply_or_error(reply: redis::RedisResult<Value>) -> Result<Value, String> {
    match reply {
        Ok(Value::ServerError(e)) => Err(format!("{} {}", e.code(), e.details().unwrap_or(""))),
        Ok(v) => Ok(v),
        Err(e) => {
            let code = e.code().unwrap_or("ERR").to_string();
            Err(format!("{code} {}", e.detail().unwrap_or("")))
        }
    }
}

/// `[token, fence]` from an ACQUIRE reply, or None for a null reply.
pub fn grant(v: &Value) -> Option<(Vec<u8>, i64)> {
    match v {
        Value::Nil => None,
        Value::Array(items) => match items.as_slice() {
            [Value::BulkString(token), Value::Int(fence)] => Some((token.clone(), *fence)),
            _ => panic!("not a grant: {v:?}"),
        },
        _ => panic!("not a grant or null: {v:?}"),
    }
}

pub fn acquire(con: &mut redis::Connection, key: &str, ttl: u64, token: &str) -> Option<i64> {
    let v = call(
        con,
        &[
            b"LOCK.ACQUIRE",
            key.as_bytes(),
            ttl.to_string().as_bytes(),
            b"TOKEN",
            token.as_bytes(),
        ],
    );
    grant(&v).map(|(t, f)| {
        assert_eq!(t, token.as_bytes());
        f
    })
}

pub fn int(v: Value) -> i64 {
    match v {
        Value::Int(i) => i,
        other => panic!("not an integer: {other:?}"),
    }
}

/// LOCK.INFO as (fence, ttl, waiters), or None when free.
pub fn info(con: &mut redis::Connection, key: &[u8]) -> Option<(i64, i64, i64)> {
    info_reply(call(con, &[b"LOCK.INFO", key]))
}

/// The fence of the lock held at `key` (LOCK.INFO), or None when it is free.
pub fn fence_of(con: &mut redis::Connection, key: &[u8]) -> Option<i64> {
    info(con, key).map(|(fence, _, _)| fence)
}

/// A LOCK.INFO reply (RESP2 or RESP3) as (fence, ttl, waiters), or None for null.
pub fn info_reply(reply: Value) -> Option<(i64, i64, i64)> {
    let pairs = info_pairs(reply)?;
    let field = |name: &str| {
        info_field_of(&pairs, name)
            .map(int)
            .unwrap_or_else(|| panic!("no field {name} in {pairs:?}"))
    };
    Some((field("fence"), field("ttl"), field("waiters")))
}

/// The field/value pairs of a LOCK.INFO reply (a RESP3 map or a RESP2 flat array), or None
/// for null.
pub fn info_pairs(reply: Value) -> Option<Vec<(Value, Value)>> {
    match reply {
        Value::Nil => None,
        Value::Map(pairs) => Some(pairs),
        Value::Array(flat) => {
            assert_eq!(flat.len() % 2, 0, "field/value pairs: {flat:?}");
            Some(
                flat.chunks(2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect(),
            )
        }
        other => panic!("unexpected LOCK.INFO reply {other:?}"),
    }
}

/// The value of field `name` among LOCK.INFO's pairs.
pub fn info_field_of(pairs: &[(Value, Value)], name: &str) -> Option<Value> {
    pairs
        .iter()
        .find(|(k, _)| {
            matches!(k, Value::BulkString(b) if b == name.as_bytes())
                || matches!(k, Value::SimpleString(s) if s == name)
        })
        .map(|(_, v)| v.clone())
}

/// A LOCK.INFO reply, every field it has.
#[derive(Debug, Clone, PartialEq)]
pub struct LockInfo {
    /// The field names, in the order of the reply.
    pub fields: Vec<String>,
    pub fence: i64,
    pub holders: i64,
    pub limit: Option<i64>,
    pub mode: String,
    pub ttl: i64,
    pub waiters: i64,
}

pub fn text_of(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        Value::SimpleString(s) => s.clone(),
        other => panic!("not a field name: {other:?}"),
    }
}

/// A LOCK.INFO reply (RESP2 flat array or RESP3 map), or None for null.
pub fn parse_lock_info(reply: Value) -> Option<LockInfo> {
    let pairs = info_pairs(reply)?;
    let fields: Vec<String> = pairs.iter().map(|(k, _)| text_of(k)).collect();
    let get = |name: &str| info_field_of(&pairs, name);
    let number =
        |name: &str| int(get(name).unwrap_or_else(|| panic!("no field {name} in {pairs:?}")));
    let mode = match get("mode") {
        Some(Value::BulkString(b)) => String::from_utf8(b).unwrap(),
        other => panic!("mode is not a bulk string: {other:?} in {pairs:?}"),
    };
    Some(LockInfo {
        fields,
        fence: number("fence"),
        holders: number("holders"),
        limit: get("limit").map(int),
        mode,
        ttl: number("ttl"),
        waiters: number("waiters"),
    })
}

/// Every field of the LOCK.INFO of `key`, or None when the lock is free.
pub fn lock_info_of(con: &mut redis::Connection, key: &[u8]) -> Option<LockInfo> {
    parse_lock_info(call(con, &[b"LOCK.INFO", key]))
}

/// The `INFO lock` section as (name, value) pairs.
pub fn info_lock(con: &mut redis::Connection) -> Vec<(String, u64)> {
    let text: String = redis::cmd("INFO").arg("lock").query(con).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().parse().unwrap()))
        .collect()
}

/// One counter of `INFO lock` (`name` without the `lock_` prefix).
pub fn info_lock_stat(con: &mut redis::Connection, name: &str) -> u64 {
    info_lock(con)
        .into_iter()
        .find(|(k, _)| k == &format!("lock_{name}"))
        .unwrap_or_else(|| panic!("no lock_{name} in INFO lock"))
        .1
}

/// MIGRATE `keys` from `con`'s server to the server on `port` (database 0, 5 s timeout).
pub fn migrate(con: &mut redis::Connection, port: u16, keys: &[&[u8]]) -> Value {
    let port = port.to_string();
    let mut args: Vec<&[u8]> = vec![
        b"MIGRATE",
        b"127.0.0.1",
        port.as_bytes(),
        b"",
        b"0",
        b"5000",
        b"KEYS",
    ];
    args.extend_from_slice(keys);
    call(con, &args)
}

/// RESTORE every truncation of the DUMP `payload` (re-signed, so only the module judges it)
/// under the key `cut`: each is refused with an error and leaves nothing, or loads as
/// something `loaded` can look at (then it is deleted). How many were refused.
pub fn restore_truncations(
    con: &mut redis::Connection,
    payload: &[u8],
    mut loaded: impl FnMut(&mut redis::Connection),
) -> usize {
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = &footer[..2];
    assert_eq!(signed_dump(body, version), payload);
    let mut refused = 0;
    for cut in 1..body.len() {
        let cut_payload = signed_dump(&body[..cut], version);
        match command(&[b"RESTORE", b"cut", b"0", &cut_payload]).query::<Value>(con) {
            Ok(Value::Okay) => {
                loaded(con);
                call(con, &[b"DEL", b"cut"]);
            }
            Err(e) if e.code() == Some("ERR") => {
                refused += 1;
                assert_eq!(int(call(con, &[b"EXISTS", b"cut"])), 0);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    refused
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A raw RESP connection, to check replies byte for byte.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Send one command and return the bytes of its whole reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.read_reply()
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.write_all(&resp(args));
    }

    /// `LOCK.ACQUIRE key ttl TOKEN token BLOCK timeout`, without reading the reply.
    pub fn send_acquire_blocking(&mut self, key: &str, ttl: u64, token: &str, timeout: u64) {
        self.send(&[
            b"LOCK.ACQUIRE",
            key.as_bytes(),
            ttl.to_string().as_bytes(),
            b"TOKEN",
            token.as_bytes(),
            b"BLOCK",
            timeout.to_string().as_bytes(),
        ]);
    }

    /// This connection's `CLIENT ID`.
    pub fn client_id(&mut self) -> String {
        let reply = String::from_utf8(self.cmd(&[b"CLIENT", b"ID"])).unwrap();
        reply.trim_start_matches(':').trim_end().to_string()
    }

    /// Bytes as they are, e.g. several commands in one packet.
    pub fn write_all(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next reply if one arrives within `wait`, else None (the connection stays usable).
    pub fn reply_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let start = Instant::now();
        let reply = loop {
            if let Some(n) = reply_len(&self.buf) {
                break Some(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) if start.elapsed() >= wait => break None,
                Err(_) => {}
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        reply
    }

    /// The next reply, parsed.
    pub fn value(&mut self) -> Value {
        let bytes = self.read_reply();
        redis::parse_redis_value(&bytes).unwrap()
    }

    pub fn read_reply(&mut self) -> Vec<u8> {
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("reply timed out");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A hand-written AOF that grants `locks` (key, token) for `ttl_ms` from now, with `fence`.
pub fn aof_with_locks(locks: &[(&str, &str)], ttl_ms: i64, fence: i64) -> Vec<u8> {
    let deadline = (now_us() / 1000 + ttl_ms).to_string();
    let fence = fence.to_string();
    let mut aof = resp(&[b"SELECT", b"0"]);
    for (key, token) in locks {
        aof.extend(resp(&[
            b"LOCK.APPLY",
            key.as_bytes(),
            token.as_bytes(),
            deadline.as_bytes(),
            fence.as_bytes(),
        ]));
    }
    aof
}

/// A DUMP payload of a lock held by `token` for `ttl_ms`, whose fence is `fence` (far above
/// any clock, to show that receiving it raises a server's fence clock). Made on a server
/// started from a hand-written AOF.
pub fn dump_of_lock(key: &str, token: &str, ttl_ms: i64, fence: i64) -> Vec<u8> {
    let dir = new_dir();
    std::fs::write(
        dir.join("appendonly.aof"),
        aof_with_locks(&[(key, token)], ttl_ms, fence),
    )
    .unwrap();
    let srv = Server::start_in(dir, &[], &["--appendonly", "yes"]);
    match call(&mut srv.conn(), &[b"DUMP", key.as_bytes()]) {
        Value::BulkString(payload) => payload,
        other => panic!("no lock to dump: {other:?}\n{}", srv.log()),
    }
}

/// Redis's CRC-64 (Jones, reflected), as DUMP payloads carry it.
pub fn crc64(bytes: &[u8]) -> u64 {
    let mut crc = 0u64;
    for &b in bytes {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x95ac_9329_ac4b_c9b5
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A DUMP payload made of a serialized value `body`, the 2-byte RDB `version` and a valid
/// CRC-64 over both, so the server hands the body to the value's loader.
pub fn signed_dump(body: &[u8], version: &[u8]) -> Vec<u8> {
    let mut payload = body.to_vec();
    payload.extend_from_slice(version);
    let crc = crc64(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    payload
}

/// One command in RESP.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The commands in the AOF files of a server's `appendonlydir` (base before incremental,
/// each a RESP array of bulk strings), in the order they replay.
pub fn aof_commands(dir: &std::path::Path) -> Vec<Vec<Vec<u8>>> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("appendonlydir"))
        .expect("the AOF directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "aof"))
        .collect();
    // appendonly.aof.N.base.aof sorts before appendonly.aof.N.incr.aof.
    files.sort();
    let mut commands = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let mut at = 0;
        let line = |at: &mut usize| {
            let end = *at + bytes[*at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let text = std::str::from_utf8(&bytes[*at + 1..end])
                .unwrap()
                .to_string();
            *at = end + 2;
            text
        };
        while at < bytes.len() {
            assert_eq!(bytes[at], b'*', "{}: not a command at {at}", file.display());
            let n: usize = line(&mut at).parse().unwrap();
            let mut args = Vec::with_capacity(n);
            for _ in 0..n {
                let len: usize = line(&mut at).parse().unwrap();
                args.push(bytes[at..at + len].to_vec());
                at += len + 2;
            }
            commands.push(args);
        }
    }
    commands
}

/// Length of the first complete RESP2/RESP3 reply in `buf`, if there is one.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&buf[1..line_end]).ok()?;
    let after = line_end + 2;
    match buf.first()? {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Some(after),
        b'$' | b'=' | b'!' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n: i64 = head.parse().ok()?;
            let items = if n < 0 {
                0
            } else if matches!(buf[0], b'%' | b'|') {
                2 * n as usize
            } else {
                n as usize
            };
            let mut pos = after;
            for _ in 0..items {
                pos += reply_len(&buf[pos..])?;
            }
            if buf[0] == b'|' {
                pos += reply_len(&buf[pos..])?;
            }
            Some(pos)
        }
        _ => panic!("bad RESP: {:?}", String::from_utf8_lossy(buf)),
    }
}

/// A new connection to `srv` that has sent a blocking ACQUIRE (its reply not read yet).
pub fn blocked_client(srv: &Server, key: &str, ttl: u64, token: &str, timeout: u64) -> Raw {
    let mut raw = srv.raw();
    raw.send_acquire_blocking(key, ttl, token, timeout);
    raw
}

/// How many clients wait for the lock (LOCK.INFO's `waiters`; 0 when it is free).
pub fn waiters(con: &mut redis::Connection, key: &str) -> i64 {
    info(con, key.as_bytes()).map_or(0, |(_, _, waiters)| waiters)
}

/// One `name:value` field of `INFO section`.
pub fn info_field(con: &mut redis::Connection, section: &str, name: &str) -> Option<String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_string))
}

/// A keyspace notification on `__keyevent@0__:<event>` as (event, key), from the bytes of a
/// pub/sub reply; None for another reply (such as the confirmation of a subscription).
pub fn keyevent(reply: &[u8]) -> Option<(String, String)> {
    let Value::Array(parts) = redis::parse_redis_value(reply).unwrap() else {
        return None;
    };
    match (parts.get(2), parts.get(3)) {
        (Some(Value::BulkString(channel)), Some(Value::BulkString(key))) => {
            let channel = String::from_utf8(channel.clone()).unwrap();
            let event = channel.trim_start_matches("__keyevent@0__:").to_string();
            Some((event, String::from_utf8(key.clone()).unwrap()))
        }
        _ => None,
    }
}

/// Wait up to 10 s for `cond`.
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_within(what, Duration::from_secs(10), cond)
}

/// Wait up to `limit` for `cond`.
pub fn wait_for_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start a server whose module must refuse to load with `module_args`: it exits by itself
/// (killed after 10 s if not), and its log is returned.
pub fn start_refused(module_args: &[&str]) -> String {
    let dir = new_dir();
    let mut child = Command::new(server_binary())
        .args(["--port", &free_port().to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join("server.log"))
        .arg("--loadmodule")
        .arg(module_path())
        .args(module_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the server binary");
    let start = Instant::now();
    let exited = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    assert!(exited, "the server started with {module_args:?}:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
    log
}

/// Whether this server is newer than Redis 7.0 (Redis 7.2+ or Valkey), the first with the
/// module APIs below.
fn after_redis_7_0(con: &mut redis::Connection) -> bool {
    is_valkey()
        || !info_field(con, "server", "redis_version")
            .unwrap_or_default()
            .starts_with("7.0.")
}

/// Whether this server has ACL categories for module commands.
pub fn has_module_acl_categories(con: &mut redis::Connection) -> bool {
    after_redis_7_0(con)
}

/// Whether this server runs post-notification jobs (writes at the end of the command that
/// fired a keyspace event).
pub fn has_post_notification_jobs(con: &mut redis::Connection) -> bool {
    after_redis_7_0(con)
}

/// Whether this server tells modules the time its command started
/// (`RedisModule_CachedMicroseconds`), which the lock commands then take as theirs.
pub fn has_command_time(con: &mut redis::Connection) -> bool {
    after_redis_7_0(con)
}

/// A server started without the module (for clients that must notice it is missing); killed
/// when dropped.
pub struct PlainServer {
    pub port: u16,
    child: Child,
}

impl PlainServer {
    pub fn start() -> Self {
        let port = free_port();
        let mut child = Command::new(server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the server binary");
        assert!(
            wait_ready(port, &mut child, Duration::from_secs(10)),
            "the plain server did not start"
        );
        PlainServer { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `calls` of `cmdstat_<name>` in INFO commandstats (0 if never called).
pub fn command_calls(con: &mut redis::Connection, name: &str) -> u64 {
    info_field(con, "commandstats", &format!("cmdstat_{name}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls=").map(str::to_string))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The ids of the connections blocked in a command (CLIENT LIST's `flags` has `b`).
pub fn blocked_client_ids(con: &mut redis::Connection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(con).unwrap();
    list.lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|v| v.contains('b')))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect()
}
