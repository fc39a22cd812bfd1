//! Where the blocking API's commands go: one shared plain connection (or the sync cluster
//! connection) for non-waiting commands, and connections of their own, with read timeouts
//! set per call, for waits, the watchdog and ephemeral holds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::cluster::ClusterConnection;
use redis::{Cmd, Connection, Value};

use crate::backend::{Nodes, Target};
use crate::error::{classify, timed_out, Error, Failure};
use crate::proto;
use crate::timing::lock;

pub(crate) enum Plain {
    Single(Mutex<Option<Connection>>),
    Cluster(Mutex<Option<Box<ClusterConnection>>>),
}

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

impl crate::backend::Backend<Plain> {
    /// One plain command, waiting at most `timeout` for its reply. The connection is opened
    /// on first use and again after an error.
    pub(crate) fn plain_once(&self, cmd: &Cmd, timeout: Duration) -> Result<Value, Failure> {
        let t = Some(timeout.max(TICK));
        match (&self.plain, &self.nodes) {
            (Plain::Single(slot), Nodes::Single(client)) => {
                let mut guard = match slot.try_lock() {
                    Ok(guard) => guard,
                    Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                    // Busy with another thread's round trip (which may take its whole
                    // timeout): this call gets a connection of its own, bounded by its own.
                    Err(std::sync::TryLockError::WouldBlock) => {
                        let mut con = self.open_within(client, timeout)?;
                        return query(&mut con, cmd, t);
                    }
                };
                if guard.is_none() {
                    *guard = Some(self.open_within(client, timeout)?);
                }
                let Some(con) = guard.as_mut() else {
                    return Err(Failure::Retry(Error::Protocol("no connection".into())));
                };
                let reply = query(con, cmd, t);
                if let Err(Failure::Retry(_)) = reply {
                    *guard = None;
                }
                reply
            }
            (Plain::Cluster(slot), Nodes::Cluster { client, .. }) => {
                let mut guard = lock(slot);
                if guard.is_none() {
                    *guard = Some(Box::new(client.get_connection().map_err(classify)?));
                }
                let Some(con) = guard.as_mut() else {
                    return Err(Failure::Retry(Error::Protocol("no connection".into())));
                };
                con.set_read_timeout(t).map_err(classify)?;
                con.set_write_timeout(t).map_err(classify)?;
                let reply = cmd.query::<Value>(&mut **con).map_err(|e| sort(e, t));
                if let Err(Failure::Retry(_)) = reply {
                    *guard = None;
                }
                reply
            }
            _ => Err(Failure::Fatal(Error::InvalidInput(
                "mismatched connections".into(),
            ))),
        }
    }

    /// A plain command, retried on connection errors for up to `budget`.
    pub(crate) fn plain(&self, cmd: &Cmd, budget: Duration) -> crate::error::Result<Value> {
        let deadline = crate::timing::soon(budget);
        let pause = self.settings.retry_pause;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.plain_once(cmd, left.max(pause)) {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) if left <= pause => return Err(e),
                Err(Failure::Retry(_)) => std::thread::sleep(pause),
            }
        }
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
        let client = match self.target(key)? {
            Target::Client(client) => client,
            Target::AskSlots(slot) => {
                let reply = self.plain_once(&proto::slots_cmd(), self.settings.retry_budget)?;
                self.learn_owner(&reply, slot)?
            }
        };
        Ok((self.open(&client)?, client))
    }

    crate::giveup::give_up_fns!({} {} std::thread::sleep);
}
