//! Distributed locks with fencing numbers on the lock module for Redis and Valkey
//! (`LOCK.ACQUIRE` / `LOCK.RENEW` / `LOCK.RELEASE`): server-side waiting, a watchdog that
//! renews, and a lost signal that fires at a safe deadline computed on the local clock.
//!
//! The async API (tokio) is [`Locks`]; the blocking API is [`blocking::Locks`]. See the
//! crate's README for the guarantees and their limits.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aio;
mod backend;
pub mod blocking;
mod error;
mod giveup;
mod options;
mod proto;
mod timing;

pub use aio::{Held, Locks};
pub use error::{Error, Result};
pub use options::{LockOptions, Settings, Wait};
pub use timing::LostReason;

#[cfg(test)]
mod tests {
    fn shareable<T: Send + Sync>() {}

    #[test]
    fn handles_can_cross_threads() {
        shareable::<crate::Locks>();
        shareable::<crate::Held>();
        shareable::<crate::blocking::Locks>();
        shareable::<crate::blocking::Held>();
        shareable::<crate::blocking::LostSignal>();
        shareable::<crate::Error>();
    }
}
