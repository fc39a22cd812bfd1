//! The lock logic of the `redis-lock` module, in plain Rust with no server calls: tokens and
//! their compact storage, the lock values of both kinds (exclusive, shared) and the commands'
//! decisions, hold labels and the bindings of ephemeral holds to connections, the fence clock, request
//! parsing, the one error type, the wait queues, the hand-off state machine, and the encodings
//! (values in RDB files, effects in the replication stream and the AOF).
//!
//! The module crate (`src/` beside this crate) reads the server, asks this crate what to do,
//! and does it.

// `unsafe` is confined to the compact token storage, the one-pointer lock value and the call of
// the SSE2 hex reader and speller (`token.rs`), where every use says why it is sound.
#![deny(unsafe_code)]

pub mod bindings;
pub mod codec;
#[allow(unsafe_code)]
pub mod compact;
pub mod effect;
pub mod error;
pub mod fence;
pub mod handoff;
pub mod lock;
pub mod meta;
pub mod queue;
pub mod request;
pub mod shared;
pub mod token;
#[allow(unsafe_code)]
pub mod value;

pub use error::{LockError, LockResult};
