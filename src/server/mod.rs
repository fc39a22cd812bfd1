//! The module's state and what runs on it: the one state (`state`), the fence clock over it
//! (`fences`), answering waiters (`answer`), running the hand-off machine's answers and the
//! timers (`runner`), blocked clients (`blocked`), the data type's callbacks (`datatype`),
//! server events (`events`), keyspace events (`keyspace`), ordered notifications
//! (`notices`), the eviction watch (`eviction`), the INFO lock section (`info`) and the
//! sweep for expired shared holders after a promotion (`sweep`).

pub mod answer;
pub mod blocked;
pub mod datatype;
pub mod events;
pub mod eviction;
pub mod fences;
pub mod info;
pub mod keyspace;
pub mod notices;
pub mod runner;
pub mod state;
pub mod sweep;
