//! The one error type of the crate, and how a `redis` error is sorted: worth a retry on a new
//! connection, or final.

use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Everything that can go wrong in `fencelock`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server does not know `LOCK.*`: the module is not loaded there.
    #[error(
        "the lock module is not loaded on the server (it answered: {0}); load it with \
         `loadmodule /path/to/libredis_lock.so` in the server's configuration, or \
         `MODULE LOAD /path/to/libredis_lock.so`"
    )]
    ModuleNotLoaded(String),
    /// `Locks::lock` did not get the lock in time.
    #[error("the lock {name:?} was not acquired")]
    NotAcquired {
        /// The lock's name, lossily decoded.
        name: String,
    },
    /// Bad input from the caller (nothing was sent to the server).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An error reply from the server (such as WRONGTYPE or a refused argument), never
    /// retried.
    #[error("server error: {0}")]
    Server(RedisError),
    /// The server could not be reached, or the connection broke, within the time allowed.
    #[error("connection error: {0}")]
    Connection(RedisError),
    /// The server did not answer within the time allowed.
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    /// A reply of an unexpected shape.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
}

/// The crate's `Result`.
pub type Result<T> = std::result::Result<T, Error>;

/// A failed call, sorted.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection broke or the key lives elsewhere now (MOVED, ASK, TRYAGAIN, CLUSTERDOWN):
    /// open a new connection (look the owner up again) and retry.
    Retry(Error),
    /// Final: raise it as it is.
    Fatal(Error),
}

impl Failure {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Failure::Retry(e) | Failure::Fatal(e) => e,
        }
    }

    /// Whether the connection it came from is in doubt: broken, or (`timeouts`) left with a
    /// reply unread. Not for a server's answer (a MOVED or ASK is a fine reply).
    pub(crate) fn spoils_connection(&self, timeouts: bool) -> bool {
        match self {
            Failure::Retry(Error::Connection(e)) => !matches!(e.kind(), ErrorKind::Server(_)),
            Failure::Retry(Error::Timeout(_)) => timeouts,
            _ => false,
        }
    }
}

/// Sort an error of the `redis` crate.
pub(crate) fn classify(err: RedisError) -> Failure {
    match err.kind() {
        ErrorKind::Server(
            ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading,
        ) => Failure::Retry(Error::Connection(err)),
        ErrorKind::Server(_) | ErrorKind::Extension => {
            if is_unknown_lock_command(&err) {
                Failure::Fatal(Error::ModuleNotLoaded(err.to_string()))
            } else {
                Failure::Fatal(Error::Server(err))
            }
        }
        ErrorKind::Io | ErrorKind::Parse | ErrorKind::ClusterConnectionNotFound => {
            Failure::Retry(Error::Connection(err))
        }
        _ => Failure::Fatal(Error::Connection(err)),
    }
}

fn is_unknown_lock_command(err: &RedisError) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    text.contains("unknown command") && text.contains("lock.")
}

/// A timed-out call, as a failure worth a retry.
pub(crate) fn timed_out(after: Duration) -> Failure {
    Failure::Retry(Error::Timeout(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str, detail: &str) -> RedisError {
        let reply = format!("-{code} {detail}\r\n");
        match redis::parse_redis_value(reply.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_lock_command_is_module_not_loaded() {
        let e = server_error(
            "ERR",
            "unknown command 'LOCK.ACQUIRE', with args beginning with: 'k' '1000'",
        );
        match classify(e) {
            Failure::Fatal(Error::ModuleNotLoaded(text)) => assert!(text.contains("LOCK.ACQUIRE")),
            other => panic!("{other:?}"),
        }
        let shown = Error::ModuleNotLoaded("x".into()).to_string();
        assert!(shown.contains("not loaded") && shown.contains("loadmodule"));
    }

    #[test]
    fn server_errors_are_final_and_redirects_retried() {
        assert!(matches!(
            classify(server_error("WRONGTYPE", "Operation against a key")),
            Failure::Fatal(Error::Server(_))
        ));
        assert!(matches!(
            classify(server_error("ERR", "unknown command 'FOO'")),
            Failure::Fatal(Error::Server(_))
        ));
        assert!(matches!(
            classify(server_error("MOVED", "3999 127.0.0.1:6381")),
            Failure::Retry(Error::Connection(_))
        ));
        assert!(matches!(
            classify(server_error("ASK", "3999 127.0.0.1:6381")),
            Failure::Retry(_)
        ));
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert!(matches!(classify(io), Failure::Retry(Error::Connection(_))));
        assert!(matches!(
            timed_out(Duration::from_millis(5)),
            Failure::Retry(Error::Timeout(_))
        ));
    }
}
