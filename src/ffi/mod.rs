//! Raw server access, knowing nothing of the module's state: API lookups, panic guards, the
//! clock, keys, RDB IO, blocked clients, timers, sending effects, event subscription, the
//! cluster probe, keyspace scans. The callbacks the server calls (the data type's, events',
//! blocked clients') live with what they do, in `server`; they take the server's raw
//! arguments and hand the rest to these files.

pub mod api;
pub mod block;
pub mod call;
pub mod clock;
pub mod cluster;
pub mod guard;
pub mod key;
pub mod propagate;
pub mod rdb;
pub mod scan;
pub mod subscribe;
pub mod timer;
