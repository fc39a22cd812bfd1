//! A cluster of real servers with the module on loopback ports: every node a primary, the
//! slots split evenly, joined with CLUSTER MEET. Dropped with its servers.

use super::*;

pub struct Cluster {
    pub nodes: Vec<Server>,
}

pub const SLOTS: u16 = 16384;

impl Cluster {
    pub fn start(primaries: usize) -> Self {
        let config = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
        let nodes: Vec<Server> = (0..primaries)
            .map(|_| Server::start_with(&[], &config))
            .collect();
        let per = SLOTS as usize / primaries;
        for (i, node) in nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == primaries {
                SLOTS as usize - 1
            } else {
                (i + 1) * per - 1
            };
            let (first, last) = (first.to_string(), last.to_string());
            call(
                &mut node.conn(),
                &[
                    b"CLUSTER",
                    b"ADDSLOTSRANGE",
                    first.as_bytes(),
                    last.as_bytes(),
                ],
            );
        }
        let cluster = Cluster { nodes };
        let mut first = cluster.nodes[0].conn();
        for node in &cluster.nodes[1..] {
            let bus = config_get(&mut node.conn(), "cluster-port");
            call(
                &mut first,
                &[
                    b"CLUSTER",
                    b"MEET",
                    b"127.0.0.1",
                    node.port.to_string().as_bytes(),
                    bus.as_bytes(),
                ],
            );
        }
        for node in &cluster.nodes {
            let mut con = node.conn();
            // A new primary may hold its state back for up to the node timeout (5 s) before
            // it says ok; on a loaded machine forming took 12 s once (CI, beside other tests).
            wait_for_within("the cluster to form", Duration::from_secs(30), || {
                info_cluster(&mut con, "cluster_state") == "ok"
                    && info_cluster(&mut con, "cluster_known_nodes") == primaries.to_string()
            });
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }

    /// A cluster-aware connection (routes by key, follows MOVED and ASK).
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Start moving `slot` from node `from` to node `to`: IMPORTING on the target, MIGRATING
    /// on the source, as resharding does before it MIGRATEs the keys.
    pub fn start_moving(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.id(from), self.id(to));
        let mut target = self.nodes[to].conn();
        let mut source = self.nodes[from].conn();
        let importing: [&[u8]; 5] = [
            b"CLUSTER",
            b"SETSLOT",
            slot.as_bytes(),
            b"IMPORTING",
            from_id.as_bytes(),
        ];
        call(&mut target, &importing);
        let migrating: [&[u8]; 5] = [
            b"CLUSTER",
            b"SETSLOT",
            slot.as_bytes(),
            b"MIGRATING",
            to_id.as_bytes(),
        ];
        call(&mut source, &migrating);
    }

    /// Valkey 9: move `slot` from node `from` to node `to` with CLUSTER MIGRATESLOTS, and
    /// wait until the cluster says `to` serves it (both nodes' logs if it does not, in 10 s).
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let slot_arg = slot.to_string();
        let to_id = self.id(to);
        let migrate: [&[u8]; 7] = [
            b"CLUSTER",
            b"MIGRATESLOTS",
            b"SLOTSRANGE",
            slot_arg.as_bytes(),
            slot_arg.as_bytes(),
            b"NODE",
            to_id.as_bytes(),
        ];
        let reply = call(&mut self.nodes[from].conn(), &migrate);
        assert_eq!(reply, Value::Okay, "{}", self.nodes[from].log());
        let start = Instant::now();
        while self.owner(slot) != to {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the slot did not move\n--- source\n{}\n--- target\n{}",
                self.nodes[from].log(),
                self.nodes[to].log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// End the move of `slot`: every node learns that node `to` serves it.
    pub fn finish_moving(&self, slot: u16, to: usize) {
        let (slot, to_id) = (slot.to_string(), self.id(to));
        for node in &self.nodes {
            let node_is: [&[u8]; 5] = [
                b"CLUSTER",
                b"SETSLOT",
                slot.as_bytes(),
                b"NODE",
                to_id.as_bytes(),
            ];
            call(&mut node.conn(), &node_is);
        }
    }

    pub fn id(&self, node: usize) -> String {
        let id = call(&mut self.nodes[node].conn(), &[b"CLUSTER", b"MYID"]);
        match id {
            Value::BulkString(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// Which node serves `slot` (as set up by `start`, or moved by `set_owner`).
    pub fn owner(&self, slot: u16) -> usize {
        let reply = call(&mut self.nodes[0].conn(), &[b"CLUSTER", b"SLOTS"]);
        let Value::Array(ranges) = reply else {
            panic!("{reply:?}")
        };
        for range in ranges {
            let Value::Array(items) = range else { continue };
            let (Value::Int(lo), Value::Int(hi), Value::Array(master)) =
                (&items[0], &items[1], &items[2])
            else {
                continue;
            };
            if (*lo..=*hi).contains(&i64::from(slot)) {
                let Value::Int(port) = master[1] else {
                    panic!("{master:?}")
                };
                return self
                    .nodes
                    .iter()
                    .position(|n| i64::from(n.port) == port)
                    .unwrap();
            }
        }
        panic!("slot {slot} is not served")
    }
}

/// After a slot moved away: nothing was granted on its old node, and nobody waits there.
pub fn assert_source_left_alone(src: &mut redis::Connection) {
    assert_eq!(
        int(call(src, &[b"DBSIZE"])),
        0,
        "nothing was granted on the source"
    );
    assert_eq!(
        info_field(src, "clients", "blocked_clients").as_deref(),
        Some("0")
    );
}

pub fn key_slot(con: &mut redis::Connection, key: &[u8]) -> u16 {
    int(call(con, &[b"CLUSTER", b"KEYSLOT", key])) as u16
}

pub fn config_get(con: &mut redis::Connection, name: &str) -> String {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(con)
        .unwrap();
    reply[1].clone()
}

fn info_cluster(con: &mut redis::Connection, field: &str) -> String {
    let text: String = redis::cmd("CLUSTER").arg("INFO").query(con).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
        .unwrap_or_default()
}
