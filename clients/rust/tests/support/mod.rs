//! What the tests of both APIs share: a fenced resource, LOCK.HOLDERS, a hold's lost time.
#![allow(dead_code)]

use std::sync::Mutex;
use std::time::Duration;

use redis::Value;

pub const MS: Duration = Duration::from_millis(1);

/// Options with a ttl of `ms` milliseconds.
pub fn ttl(ms: u32) -> fencelock::LockOptions {
    fencelock::LockOptions::new().ttl(ms * MS)
}

/// Settings that give up on an unreachable server after 300 ms.
pub fn quick_retries() -> fencelock::Settings {
    fencelock::Settings {
        retry_budget: 300 * MS,
        ..fencelock::Settings::default()
    }
}

/// Whether `key` exists on `srv`.
pub fn exists(srv: &crate::common::Server, key: &str) -> bool {
    let reply = crate::common::call(&mut srv.conn(), &[b"EXISTS", key.as_bytes()]);
    crate::common::int(reply) == 1
}

/// A resource protected by fencing numbers: it refuses a fence lower than the highest it has
/// seen, and records who is inside, to assert that no two workers ever are at once.
#[derive(Default)]
pub struct FencedResource {
    state: Mutex<ResourceState>,
}

#[derive(Default)]
struct ResourceState {
    highest: i64,
    inside: Option<usize>,
    log: Vec<(i64, usize)>,
    refused: usize,
}

impl FencedResource {
    /// Enter with `fence`: false (refused) if a higher fence was seen. Panics if someone is
    /// inside.
    pub fn enter(&self, fence: i64, worker: usize) -> bool {
        let mut s = self.state.lock().unwrap();
        if fence < s.highest {
            s.refused += 1;
            return false;
        }
        assert!(
            s.inside.is_none(),
            "worker {worker} entered while {:?} was inside",
            s.inside
        );
        s.highest = fence;
        s.inside = Some(worker);
        s.log.push((fence, worker));
        true
    }

    pub fn leave(&self, worker: usize) {
        let mut s = self.state.lock().unwrap();
        assert_eq!(s.inside, Some(worker));
        s.inside = None;
    }

    /// The (fence, worker) entries, in order.
    pub fn log(&self) -> Vec<(i64, usize)> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Every worker of `workers` entered `rounds` times, with strictly increasing fences.
    pub fn assert_complete(&self, workers: usize, rounds: usize) {
        let log = self.log();
        assert_eq!(log.len(), workers * rounds, "{log:?}");
        assert!(log.windows(2).all(|w| w[0].0 < w[1].0), "{log:?}");
        for w in 0..workers {
            assert_eq!(log.iter().filter(|(_, who)| *who == w).count(), rounds);
        }
        assert_eq!(self.refused(), 0);
    }
}

/// One holder of LOCK.HOLDERS as (field, value) text pairs.
pub type Holder = Vec<(String, String)>;

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// LOCK.HOLDERS of `key` (empty when free).
pub fn holders(con: &mut redis::Connection, key: &str) -> Vec<Holder> {
    let reply: Value = redis::cmd("LOCK.HOLDERS").arg(key).query(con).unwrap();
    let Value::Array(entries) = reply else {
        assert_eq!(reply, Value::Nil);
        return Vec::new();
    };
    entries
        .iter()
        .map(|e| match e {
            Value::Array(flat) => flat
                .chunks(2)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect(),
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
            other => panic!("{other:?}"),
        })
        .collect()
}

pub fn field<'a>(holder: &'a Holder, name: &str) -> Option<&'a str> {
    holder
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A key whose slot is in `node`'s share of a cluster of `nodes` primaries (as
/// `Cluster::start` splits them), named after `base`.
pub fn key_on_node(con: &mut redis::Connection, base: &str, node: usize, nodes: usize) -> String {
    let per = 16384 / nodes;
    (0..)
        .map(|i| format!("{base}:{i}"))
        .find(|k| {
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(k)
                .query(con)
                .unwrap();
            let owner = (slot as usize / per).min(nodes - 1);
            owner == node
        })
        .unwrap()
}

/// INFO clients' `connected_clients`.
pub fn connected_clients(con: &mut redis::Connection) -> u64 {
    crate::common::info_field(con, "clients", "connected_clients")
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// A client of a loopback port (at most 55535) that accepts connections and never answers: a
/// server that hangs. The connections stay open until the process ends.
pub fn silent_server() -> redis::Client {
    let listener = loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        if l.local_addr().unwrap().port() <= 55535 {
            break l;
        }
    };
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for con in listener.incoming().flatten() {
            open.push(con);
        }
    });
    redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap()
}

/// The outcome of a call to a server that cannot be reached, or does not answer.
pub fn assert_unreachable<T: std::fmt::Debug>(outcome: fencelock::Result<T>) {
    match outcome {
        Err(fencelock::Error::Connection(_) | fencelock::Error::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
}
