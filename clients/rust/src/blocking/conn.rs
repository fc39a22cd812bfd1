//! Where the blocking API's commands go: one shared plain connection for non-waiting commands
//! (in a cluster one per node, to the primary that owns the key's slot; the sync cluster
//! connection only for `CLUSTER SLOTS`), and connections of their own, with read timeouts set
//! per call, for waits, the watchdog and ephemeral holds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::cluster::ClusterConnection;
use redis::{Cmd, Connection, Value};

use crate::backend::{NodeCons, Nodes, Reply, Target};
use crate::error::{classify, timed_out, Error, Failure};
use crate::proto;
use crate::timing::lock;

pub(crate) enum Plain {
    Single(Box<Node>),
    Cluster {
        /// The sync cluster connection, for `CLUSTER SLOTS` only.
        slots: Mutex<Option<Box<ClusterConnection>>>,
        /// The lock commands' connections, one per node, as `Single`'s.
        nodes: NodeCons<SharedCon>,
    },
}

/// One shared connection, opened on first use and again after an error; a call that finds it
/// busy uses a connection of its own.
pub(crate) type SharedCon = Mutex<Option<Connection>>;
pub(crate) type Node = crate::backend::Node<SharedCon>;

pub(crate) type Backend = crate::backend::Backend<Plain>;

/// A connection of its own.
pub(crate) type Con = Connection;

/// The smallest read timeout (zero is refused by sockets).
const TICK: Duration = Duration::from_millis(1);

/// A read timeout error (or would-block) as a timed-out call; others sorted as usual.
fn sort(err: redis::RedisError, timeout: Option<Duration>) -> Failure {
    match timeout {
        Some(t) if err.is_timeout() => timed_out(t),
        _ => classify(err),
    }
}

/// Send `cmd` on `con`, waiting at most `timeout` (None: without limit) for the reply.
pub(crate) fn query(
    con: &mut Connection,
    cmd: &Cmd,
    timeout: Option<Duration>,
) -> Result<Value, Failure> {
    let t = timeout.map(|t| t.max(TICK));
    con.set_read_timeout(t).map_err(classify)?;
    con.set_write_timeout(t).map_err(classify)?;
    cmd.query::<Value>(con).map_err(|e| sort(e, t))
}

/// `cmd` on `con` (after `ASKING`, in the same write, if `asking`), waiting at most `timeout`.
fn send(
    con: &mut Connection,
    cmd: &Cmd,
    asking: bool,
    timeout: Duration,
) -> Result<Value, Failure> {
    if !asking {
        return query(con, cmd, Some(timeout));
    }
    let t = Some(timeout.max(TICK));
    con.set_read_timeout(t).map_err(classify)?;
    con.set_write_timeout(t).map_err(classify)?;
    proto::asking_pipe(cmd)
        .query::<Value>(con)
        .map_err(|e| sort(e, t))
        .and_then(proto::asked_reply)
}

impl crate::backend::Backend<Plain> {
    /// One plain command for `key`, waiting at most `timeout` for its reply.
    pub(crate) fn plain_once(&self, key: &[u8], cmd: &Cmd, timeout: Duration) -> Reply {
        match (&self.plain, &self.nodes) {
            (Plain::Single(node), _) => self.on_shared(node, cmd, false, timeout),
            (Plain::Cluster { nodes, .. }, Nodes::Cluster { .. }) => {
                self.on_owner(nodes, key, cmd, timeout)
            }
            _ => Err(Failure::Fatal(Error::InvalidInput(
                "mismatched connections".into(),
            ))),
        }
    }

    /// `cmd` (after `ASKING` if `asking`) on the shared connection of `node`, opened if there
    /// is none, waiting at most `timeout`.
    fn on_shared(&self, node: &Node, cmd: &Cmd, asking: bool, timeout: Duration) -> Reply {
        let (slot, client) = (&node.con, &node.client);
        let mut guard = match slot.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            // Busy with another thread's round trip (which may take its whole timeout):
            // this call gets a connection of its own, bounded by its own.
            Err(std::sync::TryLockError::WouldBlock) => {
                let started = Instant::now();
                let mut con = self.open_within(client, timeout)?;
                let left = timeout.saturating_sub(started.elapsed());
                return send(&mut con, cmd, asking, left);
            }
        };
        let started = Instant::now();
        if guard.is_none() {
            *guard = Some(self.open_within(client, timeout)?);
        }
        let Some(con) = guard.as_mut() else {
            return Err(Failure::Retry(Error::Protocol("no connection".into())));
        };
        let left = timeout.saturating_sub(started.elapsed());
        let reply = send(con, cmd, asking, left);
        if reply.as_ref().is_err_and(|f| f.spoils_connection(true)) {
            *guard = None;
        }
        reply
    }

    /// A plain command for `key`, retried on connection errors for up to `budget`.
    pub(crate) fn plain(
        &self,
        key: &[u8],
        cmd: &Cmd,
        budget: Duration,
    ) -> crate::error::Result<Value> {
        let deadline = crate::timing::soon(budget);
        let pause = self.settings.retry_pause;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.plain_once(key, cmd, left.max(pause)) {
                Ok(v) => return Ok(v),
                Err(failure) => std::thread::sleep(crate::timing::after_failure(
                    failure,
                    Some(deadline),
                    pause,
                )?),
            }
        }
    }

    /// The client of the node serving `key` (in a cluster: from the cached slot map, or a
    /// `CLUSTER SLOTS` through the cluster client, waiting at most `timeout` for its reply).
    fn owner(&self, key: &[u8], timeout: Duration) -> Result<redis::Client, Failure> {
        match self.target(key)? {
            Target::Client(client) => Ok(client),
            Target::AskSlots(slot) => {
                let reply = self.cluster_slots(timeout)?;
                self.learn_owner(&reply, slot)
            }
        }
    }

    crate::backend::on_owner_fn!({} {});

    /// `CLUSTER SLOTS` through the sync cluster connection (opened on first use, and again
    /// after an error).
    fn cluster_slots(&self, timeout: Duration) -> Result<Value, Failure> {
        let (Plain::Cluster { slots, .. }, Nodes::Cluster { client, .. }) =
            (&self.plain, &self.nodes)
        else {
            return Err(Failure::Fatal(Error::InvalidInput(
                "no cluster client".into(),
            )));
        };
        let t = Some(timeout.max(TICK));
        let mut guard = lock(slots);
        if guard.is_none() {
            *guard = Some(Box::new(client.get_connection().map_err(classify)?));
        }
        let Some(con) = guard.as_mut() else {
            return Err(Failure::Retry(Error::Protocol("no connection".into())));
        };
        con.set_read_timeout(t).map_err(classify)?;
        con.set_write_timeout(t).map_err(classify)?;
        let reply = proto::slots_cmd()
            .query::<Value>(&mut **con)
            .map_err(|e| sort(e, t));
        if let Err(Failure::Retry(_)) = reply {
            *guard = None;
        }
        reply
    }

    /// A new connection to `client` (each call sets its own read timeout).
    pub(crate) fn open(&self, client: &redis::Client) -> Result<Connection, Failure> {
        client
            .get_connection_with_timeout(self.settings.connect_timeout)
            .map_err(classify)
    }

    /// A new connection to `client`, opened within `timeout` at most.
    fn open_within(
        &self,
        client: &redis::Client,
        timeout: Duration,
    ) -> Result<Connection, Failure> {
        let within = self.settings.connect_timeout.min(timeout).max(TICK);
        client.get_connection_with_timeout(within).map_err(classify)
    }

    /// A new connection of its own for `key`, and the client of the node it went to.
    pub(crate) fn dedicated(&self, key: &[u8]) -> Result<(Connection, redis::Client), Failure> {
        let client = self.owner(key, self.settings.retry_budget)?;
        Ok((self.open(&client)?, client))
    }

    crate::giveup::give_up_fns!({} {} std::thread::sleep);
}
