//! The async API (tokio): [`Locks`] and its [`Held`] locks.

mod conn;
mod held;

use std::sync::Arc;
use std::time::Instant;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::IntoConnectionInfo;

use self::conn::{query, Backend, Plain};
use self::held::Grant;
pub use self::held::Held;
use crate::backend::{NodeCons, Nodes};
use crate::error::{Error, Failure, Result};
use crate::giveup::Waiting;
use crate::options::{LockOptions, Request, Settings};
use crate::timing::{lock, prepare, Acquisition, AttemptFlow, Exchange};

/// The entry point of the async API: acquires locks on one server or a cluster. Cheap to
/// clone (all clones share their connections).
#[derive(Clone)]
pub struct Locks {
    backend: Arc<Backend>,
}

impl Locks {
    /// Locks on the server of `client`: plain commands on a multiplexed connection of its own
    /// (opened on first use), waits, watchdogs and ephemeral holds on connections of their own.
    pub fn new(client: redis::Client) -> Locks {
        Locks {
            backend: Backend::new(
                Plain::Own(crate::backend::Node::new(client.clone())),
                Nodes::Single(client),
            ),
        }
    }

    /// Like [`Locks::new`], with your multiplexed connection for the plain commands.
    pub fn with_connection(client: redis::Client, con: MultiplexedConnection) -> Locks {
        Locks {
            backend: Backend::new(Plain::Multiplexed(con), Nodes::Single(client)),
        }
    }

    /// Like [`Locks::new`], with your connection manager for the plain commands.
    pub fn with_manager(client: redis::Client, con: ConnectionManager) -> Locks {
        Locks {
            backend: Backend::new(Plain::Manager(con), Nodes::Single(client)),
        }
    }

    /// Locks on a cluster: every LOCK command goes to the primary owning its key's slot, over
    /// the `Locks`' own connections (plain commands on one shared multiplexed connection per
    /// node, waits, watchdogs and ephemeral holds on connections of their own), with the
    /// settings (credentials, TLS, protocol) of `node`, one of the cluster's nodes. The
    /// cluster client only tells the slot map (`CLUSTER SLOTS`): its connection's re-sends
    /// never carry a lock command.
    pub fn cluster(client: ClusterClient, node: impl IntoConnectionInfo) -> Result<Locks> {
        Ok(Locks {
            backend: Backend::new(
                Plain::Cluster {
                    slots: tokio::sync::OnceCell::new(),
                    nodes: NodeCons::new(),
                },
                Nodes::cluster(client, node)?,
            ),
        })
    }

    /// The same `Locks` with other settings (a clone keeps its own; the held locks keep theirs).
    pub fn with_settings(self, settings: Settings) -> Locks {
        Locks {
            backend: Backend::with_settings(self.backend, settings, |plain| match plain {
                Plain::Own(node) => Plain::Own(crate::backend::Node::new(node.client.clone())),
                Plain::Multiplexed(con) => Plain::Multiplexed(con.clone()),
                Plain::Manager(con) => Plain::Manager(con.clone()),
                Plain::Cluster { slots, .. } => Plain::Cluster {
                    slots: match slots.get() {
                        Some(con) => tokio::sync::OnceCell::new_with(Some(con.clone())),
                        None => tokio::sync::OnceCell::new(),
                    },
                    nodes: NodeCons::new(),
                },
            }),
        }
    }

    /// Acquire `name`: `Ok(None)` when it was not acquired (held by others, or the wait ran
    /// out). If this future is dropped before it resolves, its wait connection is closed and
    /// a release by token is sent in the background once the server has let go of that
    /// connection, so no grant is left to nobody.
    pub async fn acquire(&self, name: impl AsRef<[u8]>, opts: LockOptions) -> Result<Option<Held>> {
        let (req, acq) = prepare(name.as_ref(), opts, &self.backend.settings)?;
        let mut give_up = GiveUp {
            backend: Some(self.backend.clone()),
            key: req.key.clone(),
            token: req.token.clone(),
            waiting: Arc::new(Waiting::default()),
        };
        let outcome = self.attempts(&req, &acq, &give_up.waiting).await;
        match outcome {
            Ok(Some(grant)) => {
                give_up.backend = None;
                Ok(Some(Held::start(self.backend.clone(), &req, grant)))
            }
            Ok(None) => {
                give_up.backend = None;
                Ok(None)
            }
            Err(e) => {
                // A grant whose reply was lost must not stay behind (a task of its own, so
                // that dropping this future does not stop it).
                if let Some(release) = give_up.spawn() {
                    let _ = release.await;
                }
                Err(e)
            }
        }
    }

    /// Acquire `name`, or `Err(Error::NotAcquired)`.
    pub async fn lock(&self, name: impl AsRef<[u8]>, opts: LockOptions) -> Result<Held> {
        let name = name.as_ref();
        self.acquire(name, opts)
            .await?
            .ok_or_else(|| Error::NotAcquired {
                name: String::from_utf8_lossy(name).into_owned(),
            })
    }

    crate::timing::attempt_loop!({async} {.await} tokio::time::sleep);
}

/// Sends a release by token in the background if dropped while armed (the acquire future
/// was cancelled mid-attempt), after settling the abandoned wait connection.
struct GiveUp {
    backend: Option<Arc<Backend>>,
    key: Vec<u8>,
    token: Vec<u8>,
    waiting: Arc<Waiting>,
}

impl GiveUp {
    /// The give-up as a task of its own (None if disarmed, or outside a runtime).
    fn spawn(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let backend = self.backend.take()?;
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        let abandoned = lock(&self.waiting).take();
        let rt = tokio::runtime::Handle::try_current().ok()?;
        Some(rt.spawn(async move { backend.give_up(&key, &token, abandoned).await }))
    }
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        let _ = self.spawn();
    }
}
