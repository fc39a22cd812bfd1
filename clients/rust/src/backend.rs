//! What both APIs keep for a `Locks`: its plain connection (of each API's own kind), the
//! nodes its connections of their own go to (one server, or the owner of a key's slot in a
//! cluster, from a cached `CLUSTER SLOTS`), and its settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::{ConnectionInfo, IntoConnectionInfo, Value};

use crate::error::{Error, Failure, Result};
use crate::options::Settings;
use crate::proto::{self, SlotRange};
use crate::timing::{lock, Core};

/// Where connections of their own go.
pub(crate) enum Nodes {
    Single(redis::Client),
    Cluster {
        client: Box<ClusterClient>,
        /// The settings of one node, for connections to every other.
        template: Box<ConnectionInfo>,
        slots: Mutex<Vec<SlotRange>>,
    },
}

impl Nodes {
    pub(crate) fn cluster(client: ClusterClient, node: impl IntoConnectionInfo) -> Result<Nodes> {
        Ok(Nodes::Cluster {
            client: Box::new(client),
            template: Box::new(node.into_connection_info().map_err(Error::Connection)?),
            slots: Mutex::new(Vec::new()),
        })
    }
}

impl Nodes {
    /// The same nodes (the slot map is learnt again).
    fn same(&self) -> Nodes {
        match self {
            Nodes::Single(client) => Nodes::Single(client.clone()),
            Nodes::Cluster {
                client, template, ..
            } => Nodes::Cluster {
                client: client.clone(),
                template: template.clone(),
                slots: Mutex::new(Vec::new()),
            },
        }
    }
}

/// The plain connections of a cluster `Locks`, one per node (by address), each a `C` (an
/// API's slot for one shared connection), made on first use. The lock commands go over these,
/// never through the cluster client's connection, whose own re-sends could repeat an ACQUIRE
/// after a give-up released it, or a RELEASE after its first copy succeeded.
pub(crate) struct NodeCons<C> {
    by_addr: Mutex<HashMap<String, Arc<Node<C>>>>,
}

/// The shared plain connection of one node: its client and `C`, the API's slot for it.
pub(crate) struct Node<C> {
    pub client: redis::Client,
    pub con: C,
}

impl<C: Default> Node<C> {
    pub(crate) fn new(client: redis::Client) -> Self {
        Node {
            client,
            con: C::default(),
        }
    }
}

/// A reply, or why there is none.
pub(crate) type Reply = std::result::Result<Value, Failure>;

impl<C: Default> NodeCons<C> {
    pub(crate) fn new() -> Self {
        NodeCons {
            by_addr: Mutex::new(HashMap::new()),
        }
    }

    /// The shared connection of the node of `client`.
    pub(crate) fn of(&self, client: &redis::Client) -> Arc<Node<C>> {
        let addr = client.get_connection_info().addr().to_string();
        let mut by_addr = lock(&self.by_addr);
        let node = by_addr.entry(addr);
        node.or_insert_with(|| Arc::new(Node::new(client.clone())))
            .clone()
    }
}

/// The connections and settings of a `Locks`; `P` is its API's plain connection.
pub(crate) struct Backend<P> {
    pub plain: P,
    pub nodes: Nodes,
    pub settings: Settings,
}

/// Where a connection of its own for a key goes.
pub(crate) enum Target {
    /// This client (one server, or a cluster node already known to own the key).
    Client(redis::Client),
    /// Ask the cluster for its slot map first (`CLUSTER SLOTS` on the plain connection), then
    /// hand the reply to [`Backend::learn_owner`].
    AskSlots(u16),
}

impl<P> Backend<P> {
    pub(crate) fn new(plain: P, nodes: Nodes) -> Arc<Backend<P>> {
        Arc::new(Backend {
            plain,
            nodes,
            settings: Settings::default(),
        })
    }

    /// The same backend with `settings`: this one if nobody else shares it yet, else a new one
    /// to the same nodes (`plain` makes its plain connection from the shared one's).
    pub(crate) fn with_settings(
        this: Arc<Self>,
        settings: Settings,
        plain: impl FnOnce(&P) -> P,
    ) -> Arc<Self> {
        let settings = Settings {
            // No retry loop without a pause.
            retry_pause: settings.retry_pause.max(Duration::from_millis(1)),
            ..settings
        };
        match Arc::try_unwrap(this) {
            Ok(mut backend) => {
                backend.settings = settings;
                Arc::new(backend)
            }
            Err(shared) => Arc::new(Backend {
                plain: plain(&shared.plain),
                nodes: shared.nodes.same(),
                settings,
            }),
        }
    }

    /// Where a connection of its own for `key` goes, as far as is known.
    pub(crate) fn target(&self, key: &[u8]) -> std::result::Result<Target, Failure> {
        match &self.nodes {
            Nodes::Single(client) => Ok(Target::Client(client.clone())),
            Nodes::Cluster {
                template, slots, ..
            } => {
                let slot = proto::key_slot(key);
                match proto::owner_of(&lock(slots), slot) {
                    Some((host, port)) => node_client(template, &host, port).map(Target::Client),
                    None => Ok(Target::AskSlots(slot)),
                }
            }
        }
    }

    /// Keep the slot map of a `CLUSTER SLOTS` reply; the client for the owner of `slot`.
    pub(crate) fn learn_owner(
        &self,
        reply: &Value,
        slot: u16,
    ) -> std::result::Result<redis::Client, Failure> {
        let Nodes::Cluster {
            template, slots, ..
        } = &self.nodes
        else {
            return Err(Failure::Fatal(Error::InvalidInput("not a cluster".into())));
        };
        let ranges = proto::parse_slots(reply).map_err(Failure::Fatal)?;
        let owner = proto::owner_of(&ranges, slot);
        *lock(slots) = ranges;
        let Some((host, port)) = owner else {
            return Err(Failure::Retry(Error::Protocol(format!(
                "no node serves slot {slot}"
            ))));
        };
        node_client(template, &host, port)
    }

    /// The node an `ASK` reply sends the command to (with `ASKING` first), if `reply` is one.
    pub(crate) fn asked(
        &self,
        reply: &std::result::Result<Value, Failure>,
    ) -> std::result::Result<Option<redis::Client>, Failure> {
        let (Err(Failure::Retry(Error::Connection(e))), Nodes::Cluster { template, .. }) =
            (reply, &self.nodes)
        else {
            return Ok(None);
        };
        if e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::Ask) {
            return Ok(None);
        }
        let Some((host, port)) = e
            .redirect_node()
            .and_then(|(addr, _)| addr.rsplit_once(':'))
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        else {
            return Ok(None);
        };
        node_client(template, host, port).map(Some)
    }

    /// A RENEW of `core` could not be sent (no connection): retry shortly, on a fresh route.
    pub(crate) fn not_sent(&self, core: &Core, f: Failure) -> Error {
        self.forget_owners();
        lock(&core.hold).not_sent(f)
    }

    /// Forget the slot map (after MOVED, ASK or a connection error), so the next connection
    /// of its own looks the owner up again.
    pub(crate) fn forget_owners(&self) {
        if let Nodes::Cluster { slots, .. } = &self.nodes {
            lock(slots).clear();
        }
    }
}

/// A plain command of a cluster `Locks`, the same in both APIs: expanded inside `impl Backend`
/// of each, with `{async} {.await}` or `{} {}`. The names it uses (`SharedCon`, `self.owner`,
/// `self.on_shared`) are those of the API that expands it.
macro_rules! on_owner_fn {
    ({$($kw:tt)*} {$($aw:tt)*}) => {
        /// One plain command for `key` in a cluster, on the shared connection to the owner of
        /// its slot (after an `ASK`: to the node it names, `ASKING` first), waiting at most
        /// `timeout`, finding the owner included.
        $($kw)* fn on_owner(
            &self,
            nodes: &crate::backend::NodeCons<SharedCon>,
            key: &[u8],
            cmd: &Cmd,
            timeout: Duration,
        ) -> crate::backend::Reply {
            let started = Instant::now();
            let client = self.owner(key, timeout)$($aw)*?;
            let left = || timeout.saturating_sub(started.elapsed());
            let mut reply = self
                .on_shared(&nodes.of(&client), cmd, false, left())$($aw)*;
            if let Some(asked) = self.asked(&reply)? {
                reply = self
                    .on_shared(&nodes.of(&asked), cmd, true, left())$($aw)*;
            }
            // MOVED, ASK or a connection error: the next try looks the owner up again.
            if matches!(reply, Err(Failure::Retry(_))) {
                self.forget_owners();
            }
            reply
        }
    };
}
pub(crate) use on_owner_fn;

fn node_client(
    template: &ConnectionInfo,
    host: &str,
    port: u16,
) -> std::result::Result<redis::Client, Failure> {
    redis::Client::open(proto::node_info(template, host, port)).map_err(crate::error::classify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_of_a_shared_backend_make_a_new_one() {
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let backend = Backend::new(7u8, Nodes::Single(client));
        let shared = backend.clone();
        let settings = Settings {
            ttl: Duration::from_secs(5),
            retry_pause: Duration::ZERO,
            ..Settings::default()
        };
        let changed = Backend::with_settings(backend, settings.clone(), |plain| plain + 1);
        assert_eq!((changed.settings.ttl, changed.plain), (settings.ttl, 8));
        // Never a retry loop without a pause.
        assert_eq!(changed.settings.retry_pause, Duration::from_millis(1));
        // The one it was shared with keeps its own settings.
        assert_eq!(shared.settings.ttl, Duration::from_secs(30));
        let alone = Backend::with_settings(shared, settings, |_| unreachable!());
        assert_eq!(
            (alone.settings.ttl, alone.plain),
            (Duration::from_secs(5), 7)
        );
    }
}
