//! The blocking API: the same operations as the async one on threads and the sync
//! `redis::Connection` (no tokio runtime needed). [`Held`] renews from a watchdog thread, and
//! its [`LostSignal`] can be checked or waited on from any thread.

mod conn;
mod held;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::cluster::ClusterClient;
use redis::IntoConnectionInfo;

use self::conn::{query, Backend, Plain};
use self::held::Grant;
pub use self::held::{Held, LostSignal};
use crate::backend::{NodeCons, Nodes};
use crate::error::{Error, Failure, Result};
use crate::giveup::Waiting;
use crate::options::{LockOptions, Request, Settings};
use crate::timing::{lock, prepare, Acquisition, AttemptFlow, Exchange};

/// The entry point of the blocking API, to share between threads: clones share one plain
/// connection, which each command holds only for its own round trip.
#[derive(Clone)]
pub struct Locks {
    backend: Arc<Backend>,
}

impl Locks {
    /// Locks on the server of `client`. Plain commands (attempts without waiting, RELEASE)
    /// use one connection of its own, opened on first use; waits, watchdogs and ephemeral
    /// holds use connections of their own.
    pub fn new(client: redis::Client) -> Locks {
        let plain = Plain::Single(Box::new(crate::backend::Node::new(client.clone())));
        let backend = Backend::new(plain, Nodes::Single(client));
        Locks { backend }
    }

    /// Locks on a cluster: every LOCK command goes to the primary owning its key's slot, over
    /// the `Locks`' own connections (plain commands on one shared connection per node, or one
    /// of its own while that one is busy; waits, watchdogs and ephemeral holds on connections
    /// of their own), with the settings (credentials, TLS, protocol) of `node`, one of the
    /// cluster's nodes. The cluster client only tells the slot map (`CLUSTER SLOTS`): its
    /// connection's re-sends never carry a lock command.
    pub fn cluster(client: ClusterClient, node: impl IntoConnectionInfo) -> Result<Locks> {
        Ok(Locks {
            backend: Backend::new(
                Plain::Cluster {
                    slots: Mutex::new(None),
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
                Plain::Single(node) => {
                    Plain::Single(Box::new(crate::backend::Node::new(node.client.clone())))
                }
                Plain::Cluster { .. } => Plain::Cluster {
                    slots: Mutex::new(None),
                    nodes: NodeCons::new(),
                },
            }),
        }
    }

    /// Acquire `name`: `Ok(None)` when it was not acquired (held by others, or the wait ran
    /// out).
    pub fn acquire(&self, name: impl AsRef<[u8]>, opts: LockOptions) -> Result<Option<Held>> {
        let (req, acq) = prepare(name.as_ref(), opts, &self.backend.settings)?;
        let waiting = Waiting::default();
        match self.attempts(&req, &acq, &waiting) {
            Ok(Some(grant)) => Ok(Some(Held::start(self.backend.clone(), &req, grant)?)),
            Ok(None) => Ok(None),
            Err(e) => {
                // A grant whose reply was lost must not stay behind.
                let abandoned = lock(&waiting).take();
                self.backend.give_up(&req.key, &req.token, abandoned);
                Err(e)
            }
        }
    }

    /// Acquire `name`, or `Err(Error::NotAcquired)`.
    pub fn lock(&self, name: impl AsRef<[u8]>, opts: LockOptions) -> Result<Held> {
        let name = name.as_ref();
        self.acquire(name, opts)?.ok_or_else(|| Error::NotAcquired {
            name: String::from_utf8_lossy(name).into_owned(),
        })
    }

    crate::timing::attempt_loop!({} {} std::thread::sleep);
}
