//! Where the async API's commands go: the plain connection (shared, for non-waiting
//! commands) and connections of their own (waits, the watchdog, ephemeral holds) to the
//! server, or to the primary that owns the key's slot.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};

use crate::backend::{Nodes, Target};
use crate::error::{classify, timed_out, Error, Failure};
use crate::proto;

pub(crate) enum Plain {
    /// A multiplexed connection of the `Locks`' own, opened on first use and again after an
    /// error.
    Own(tokio::sync::Mutex<Option<MultiplexedConnection>>),
    Multiplexed(MultiplexedConnection),
    Manager(ConnectionManager),
    Cluster(tokio::sync::OnceCell<ClusterConnection>),
}

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
    /// One plain command, waiting at most `timeout` for its reply.
    pub(crate) async fn plain_once(&self, cmd: &Cmd, timeout: Duration) -> Result<Value, Failure> {
        match &self.plain {
            Plain::Own(slot) => {
                // Waiting for another task's connect counts against the same bound.
                let started = Instant::now();
                let con = match tokio::time::timeout(timeout, self.own_plain(slot)).await {
                    Ok(con) => con?,
                    Err(_) => return Err(timed_out(timeout)),
                };
                let left = timeout.saturating_sub(started.elapsed());
                let reply = query(&mut con.clone(), cmd, Some(left)).await;
                // A broken connection is replaced. One that timed out is kept: what is sent
                // next (a retry, a release by token) then runs after the command that timed
                // out, never before it.
                if let Err(Failure::Retry(e)) = &reply {
                    if !matches!(e, Error::Timeout(_)) {
                        *slot.lock().await = None;
                    }
                }
                reply
            }
            Plain::Multiplexed(con) => query(&mut con.clone(), cmd, Some(timeout)).await,
            Plain::Manager(con) => {
                bounded(Some(timeout), cmd.query_async::<Value>(&mut con.clone())).await
            }
            Plain::Cluster(cell) => {
                let Nodes::Cluster { client, .. } = &self.nodes else {
                    return Err(Failure::Fatal(Error::InvalidInput(
                        "no cluster client".into(),
                    )));
                };
                // Opening the cluster connection counts against the same bound.
                let started = Instant::now();
                let opening = cell.get_or_try_init(|| client.get_async_connection());
                let con = match tokio::time::timeout(timeout, opening).await {
                    Ok(con) => con.map_err(classify)?,
                    Err(_) => return Err(timed_out(timeout)),
                };
                let left = timeout.saturating_sub(started.elapsed());
                bounded(Some(left), cmd.query_async::<Value>(&mut con.clone())).await
            }
        }
    }

    /// The `Locks`' own multiplexed connection, opened if there is none.
    async fn own_plain(
        &self,
        slot: &tokio::sync::Mutex<Option<MultiplexedConnection>>,
    ) -> Result<MultiplexedConnection, Failure> {
        let mut guard = slot.lock().await;
        if let Some(con) = guard.as_ref() {
            return Ok(con.clone());
        }
        let Nodes::Single(client) = &self.nodes else {
            return Err(Failure::Fatal(Error::InvalidInput(
                "no client for the plain connection".into(),
            )));
        };
        let con = self.open(client).await?;
        *guard = Some(con.clone());
        Ok(con)
    }

    /// A plain command, retried on connection errors for up to `budget`.
    pub(crate) async fn plain(&self, cmd: &Cmd, budget: Duration) -> crate::error::Result<Value> {
        let deadline = crate::timing::soon(budget);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .plain_once(cmd, left.max(self.settings.retry_pause))
                .await
            {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    if deadline.saturating_duration_since(Instant::now())
                        <= self.settings.retry_pause
                    {
                        return Err(e);
                    }
                    tokio::time::sleep(self.settings.retry_pause).await;
                }
            }
        }
    }

    /// A new connection of its own for `key`, and the client of the node it went to.
    pub(crate) async fn dedicated(
        &self,
        key: &[u8],
    ) -> Result<(MultiplexedConnection, redis::Client), Failure> {
        let client = match self.target(key)? {
            Target::Client(client) => client,
            Target::AskSlots(slot) => {
                let reply = self
                    .plain_once(&proto::slots_cmd(), self.settings.retry_budget)
                    .await?;
                self.learn_owner(&reply, slot)?
            }
        };
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
