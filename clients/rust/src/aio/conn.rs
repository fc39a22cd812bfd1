//! Where the async API's commands go: the plain connection (shared, for non-waiting
//! commands; in a cluster one per node, to the primary that owns the key's slot) and
//! connections of their own (waits, the watchdog, ephemeral holds) to the server, or to the
//! primary that owns the key's slot.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};

use crate::backend::{NodeCons, Nodes, Reply, Target};
use crate::error::{classify, timed_out, Error, Failure};
use crate::proto;

pub(crate) enum Plain {
    /// A multiplexed connection of the `Locks`' own, opened on first use and again after an
    /// error.
    Own(Node),
    Multiplexed(MultiplexedConnection),
    Manager(ConnectionManager),
    Cluster {
        /// The cluster client's connection (opened on first use), for `CLUSTER SLOTS` only.
        slots: tokio::sync::OnceCell<ClusterConnection>,
        /// The lock commands' connections, one per node, as `Own`'s.
        nodes: NodeCons<SharedCon>,
    },
}

/// One shared multiplexed connection, opened on first use and again after it broke.
pub(crate) type SharedCon = tokio::sync::Mutex<Option<MultiplexedConnection>>;
pub(crate) type Node = crate::backend::Node<SharedCon>;

pub(crate) type Backend = crate::backend::Backend<Plain>;

/// A connection of its own.
pub(crate) type Con = MultiplexedConnection;

/// Send `cmd` on `con`, waiting at most `timeout` (None: without limit) for the reply.
pub(crate) async fn query(
    con: &mut MultiplexedConnection,
    cmd: &Cmd,
    timeout: Option<Duration>,
) -> Result<Value, Failure> {
    bounded(timeout, cmd.query_async::<Value>(con)).await
}

async fn bounded(
    timeout: Option<Duration>,
    call: impl std::future::Future<Output = redis::RedisResult<Value>>,
) -> Result<Value, Failure> {
    let reply = match timeout {
        None => call.await,
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(reply) => reply,
            Err(_) => return Err(timed_out(t)),
        },
    };
    reply.map_err(classify)
}

impl crate::backend::Backend<Plain> {
    /// One plain command for `key`, waiting at most `timeout` for its reply.
    pub(crate) async fn plain_once(&self, key: &[u8], cmd: &Cmd, timeout: Duration) -> Reply {
        match (&self.plain, &self.nodes) {
            (Plain::Own(node), _) => self.on_shared(node, cmd, false, timeout).await,
            (Plain::Multiplexed(con), _) => query(&mut con.clone(), cmd, Some(timeout)).await,
            (Plain::Manager(con), _) => {
                bounded(Some(timeout), cmd.query_async::<Value>(&mut con.clone())).await
            }
            (Plain::Cluster { nodes, .. }, Nodes::Cluster { .. }) => {
                self.on_owner(nodes, key, cmd, timeout).await
            }
            _ => Err(Failure::Fatal(Error::InvalidInput(
                "mismatched connections".into(),
            ))),
        }
    }

    /// `cmd` (after `ASKING` if `asking`) on the shared connection of `node`, opened if there
    /// is none, waiting at most `timeout` (also for another task's connect).
    async fn on_shared(&self, node: &Node, cmd: &Cmd, asking: bool, timeout: Duration) -> Reply {
        let (slot, client) = (&node.con, &node.client);
        let started = Instant::now();
        let con = match tokio::time::timeout(timeout, self.shared(slot, client)).await {
            Ok(con) => con?,
            Err(_) => return Err(timed_out(timeout)),
        };
        let left = Some(timeout.saturating_sub(started.elapsed()));
        let mut con = con.clone();
        let reply = if asking {
            let pipe = proto::asking_pipe(cmd);
            bounded(left, pipe.query_async::<Value>(&mut con))
                .await
                .and_then(proto::asked_reply)
        } else {
            query(&mut con, cmd, left).await
        };
        // A broken connection is replaced. One that timed out is kept: what is sent next (a
        // retry, a release by token) then runs after the command that timed out, never
        // before it.
        if reply.as_ref().is_err_and(|f| f.spoils_connection(false)) {
            *slot.lock().await = None;
        }
        reply
    }

    /// The shared connection of `slot` to `client`, opened if there is none.
    async fn shared(
        &self,
        slot: &SharedCon,
        client: &redis::Client,
    ) -> Result<MultiplexedConnection, Failure> {
        let mut guard = slot.lock().await;
        if let Some(con) = guard.as_ref() {
            return Ok(con.clone());
        }
        let con = self.open(client).await?;
        *guard = Some(con.clone());
        Ok(con)
    }

    /// A plain command for `key`, retried on connection errors for up to `budget`.
    pub(crate) async fn plain(
        &self,
        key: &[u8],
        cmd: &Cmd,
        budget: Duration,
    ) -> crate::error::Result<Value> {
        let deadline = crate::timing::soon(budget);
        let pause = self.settings.retry_pause;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.plain_once(key, cmd, left.max(pause)).await {
                Ok(v) => return Ok(v),
                Err(failure) => {
                    let wait = crate::timing::after_failure(failure, Some(deadline), pause)?;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The client of the node serving `key` (in a cluster: from the cached slot map, or a
    /// `CLUSTER SLOTS` through the cluster client), within `timeout`.
    async fn owner(&self, key: &[u8], timeout: Duration) -> Result<redis::Client, Failure> {
        match self.target(key)? {
            Target::Client(client) => Ok(client),
            Target::AskSlots(slot) => {
                let reply = self.cluster_slots(timeout).await?;
                self.learn_owner(&reply, slot)
            }
        }
    }

    crate::backend::on_owner_fn!({async} {.await});

    /// `CLUSTER SLOTS` through the cluster client's connection (opened on first use; that
    /// counts against `timeout` too).
    async fn cluster_slots(&self, timeout: Duration) -> Result<Value, Failure> {
        let (Plain::Cluster { slots, .. }, Nodes::Cluster { client, .. }) =
            (&self.plain, &self.nodes)
        else {
            return Err(Failure::Fatal(Error::InvalidInput(
                "no cluster client".into(),
            )));
        };
        let started = Instant::now();
        let opening = slots.get_or_try_init(|| client.get_async_connection());
        let con = match tokio::time::timeout(timeout, opening).await {
            Ok(con) => con.map_err(classify)?,
            Err(_) => return Err(timed_out(timeout)),
        };
        let left = timeout.saturating_sub(started.elapsed());
        let cmd = proto::slots_cmd();
        bounded(Some(left), cmd.query_async::<Value>(&mut con.clone())).await
    }

    /// A new connection of its own for `key`, and the client of the node it went to.
    pub(crate) async fn dedicated(
        &self,
        key: &[u8],
    ) -> Result<(MultiplexedConnection, redis::Client), Failure> {
        let client = self.owner(key, self.settings.retry_budget).await?;
        Ok((self.open(&client).await?, client))
    }

    /// A new connection of its own to `client`: no response timeout (the caller bounds each
    /// call), no automatic re-send.
    pub(crate) async fn open(
        &self,
        client: &redis::Client,
    ) -> Result<MultiplexedConnection, Failure> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(None);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(classify)
    }

    crate::giveup::give_up_fns!({async} {.await} tokio::time::sleep);
}
