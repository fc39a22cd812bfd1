//! Answering a waiting client: what it is answered with, and handing it back to the server.

use lock_core::queue::LockId;
use lock_core::token::Token;
use lock_core::LockError;

use crate::ffi::block::{self, Blocked};
use crate::ffi::timer;
use crate::server::state;

/// What a blocked client is answered with, handed to the server on unblocking.
pub enum Reply {
    Granted {
        lock: LockId,
        token: Token,
        fence: u64,
        /// Set by the reply callback; a grant never delivered is taken back.
        delivered: bool,
    },
    Error(String),
    /// The BLOCK timeout passed: null.
    TimedOut,
}

/// The timer data of a waiter's BLOCK timeout: which waiter (handle and serial), and when.
pub struct BlockTimeout {
    pub handle: usize,
    pub serial: u64,
    pub at: std::time::Instant,
}

/// Hand waiter `serial` back to the server with its reply (None: no reply is due, the client
/// is gone or was answered by the server), and stop its timeout timer.
pub fn unblock(handle: Blocked, serial: u64, reply: Option<Reply>) {
    if let Some(timer) = state::with(|s| s.handoff.answered(serial)).ok().flatten() {
        if let Some(ctx) = state::detached() {
            // False only if it has fired, which is then no matter.
            timer::stop::<BlockTimeout>(&ctx, timer);
        }
    }
    if let Err(e) = block::unblock(handle, reply.map(Box::new)) {
        state::log_warning(&format!(
            "lock: a waiting client could not be answered: {e}"
        ));
    }
}

pub fn unblock_with_error(handle: Blocked, serial: u64, error: &LockError) {
    unblock(handle, serial, Some(Reply::Error(error.to_string())));
}
