//! What the module reports and is told, as leaves every layer may use: the counters of
//! `INFO lock` (`stats`), keyspace notifications (`notify`), the settings (`config`), and what
//! `COMMAND DOCS` says (`command_info`). (The INFO section itself and the eviction watch read
//! the module's state, so they live in `server`.)

pub mod command_info;
pub mod config;
pub mod notify;
pub mod stats;
