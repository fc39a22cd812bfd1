//! Giving up a wait without leaving a "ghost" grant behind.
//!
//! A wait connection that is closed is not gone at once for the server: until it has processed
//! the close, it may still hand the lock to that waiter (a release by its holder), and a grant
//! made then stays until its ttl. A RELEASE by token sent on another connection before that
//! moment answers 0 and frees nothing. So every wait connection learns its server-side id
//! (`CLIENT ID`) when it is opened; a give-up closes it, polls `CLIENT LIST ID <id>` on another
//! connection to the same node until the server no longer lists it (it can no longer be
//! granted anything), and only then releases by token. Where the CLIENT commands are refused
//! (ACL: NOPERM) or the poll cannot tell, it releases now and once more a little later.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Cmd, Value};

/// How long a give-up waits for the server to let go of a closed wait connection.
pub(crate) const SETTLE_WITHIN: Duration = Duration::from_secs(1);
/// How often it asks meanwhile.
pub(crate) const SETTLE_POLL: Duration = Duration::from_millis(2);
/// When the server could not be asked: the delay before the second release by token.
pub(crate) const SECOND_RELEASE_AFTER: Duration = Duration::from_millis(100);

/// A wait connection as the server knows it: the node it went to and its `CLIENT ID` (None if
/// the server refused to tell).
#[derive(Clone)]
pub(crate) struct Abandoned {
    pub client: redis::Client,
    pub id: Option<i64>,
}

/// The wait connection of the attempt in progress, if any: set when it is opened, cleared
/// when its attempt ends with an answer (a grant or a null). Whatever is left in it was
/// abandoned, and must be settled before a retry or a release by token.
pub(crate) type Waiting = Mutex<Option<Abandoned>>;

/// `CLIENT ID`.
pub(crate) fn client_id_cmd() -> Cmd {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("ID");
    cmd
}

/// `CLIENT LIST ID id`.
pub(crate) fn client_list_cmd(id: i64) -> Cmd {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("LIST").arg("ID").arg(id);
    cmd
}

/// The id in a `CLIENT ID` reply.
pub(crate) fn parse_id(v: &Value) -> Option<i64> {
    match v {
        Value::Int(id) => Some(*id),
        _ => None,
    }
}

/// Whether a `CLIENT LIST ID` reply still lists a client (None: a reply of another shape).
pub(crate) fn still_listed(v: &Value) -> Option<bool> {
    let text: &[u8] = match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        Value::VerbatimString { text, .. } => text.as_bytes(),
        _ => return None,
    };
    Some(text.iter().any(|b| !b.is_ascii_whitespace()))
}

/// The give-up steps of a backend, the same in both APIs: expanded inside `impl Backend` of
/// each, with `{async} {.await} tokio::time::sleep` or `{} {} std::thread::sleep`. The names it
/// uses (`query`, `self.open`, `self.plain`) are those of the API that expands it.
macro_rules! give_up_fns {
    ({$($kw:tt)*} {$($aw:tt)*} $sleep:path) => {
        /// The id of a new wait connection: None if the server refuses to tell (ACL); a
        /// connection error is a failed attempt.
        pub(crate) $($kw)* fn wait_id(
            &self,
            con: &mut Con,
        ) -> std::result::Result<Option<i64>, crate::error::Failure> {
            let budget = self.settings.retry_budget;
            match query(con, &crate::giveup::client_id_cmd(), Some(budget))$($aw)* {
                Ok(v) => Ok(crate::giveup::parse_id(&v)),
                Err(f @ crate::error::Failure::Retry(_)) => Err(f),
                Err(crate::error::Failure::Fatal(_)) => Ok(None),
            }
        }

        /// After a wait connection was closed: true once the server no longer lists it (so it
        /// can no longer grant it the lock), false if that could not be learnt within
        /// `SETTLE_WITHIN` (no id, CLIENT refused, no connection).
        pub(crate) $($kw)* fn settle(&self, abandoned: &crate::giveup::Abandoned) -> bool {
            use crate::giveup::{client_list_cmd, still_listed, SETTLE_POLL, SETTLE_WITHIN};
            let Some(id) = abandoned.id else {
                return false;
            };
            let start = std::time::Instant::now();
            let Ok(mut con) = self.open(&abandoned.client)$($aw)* else {
                return false;
            };
            loop {
                let left = SETTLE_WITHIN.saturating_sub(start.elapsed());
                match query(&mut con, &client_list_cmd(id), Some(left.max(SETTLE_POLL)))$($aw)* {
                    Ok(v) if still_listed(&v) == Some(false) => return true,
                    Ok(v) if still_listed(&v).is_none() => return false,
                    Ok(_) if !left.is_zero() => $sleep(SETTLE_POLL)$($aw)*,
                    _ => return false,
                }
            }
        }

        /// A give-up of an acquire: settle its abandoned wait connection, if any, then release
        /// by token (best effort, bounded, errors swallowed). If the server could not be asked,
        /// release once more a little later, in case the first came before the server let go
        /// of the connection.
        pub(crate) $($kw)* fn give_up(
            &self,
            key: &[u8],
            token: &[u8],
            abandoned: Option<crate::giveup::Abandoned>,
        ) {
            let settled = match &abandoned {
                Some(a) => self.settle(a)$($aw)*,
                None => true,
            };
            let release = crate::proto::release_cmd(key, token);
            let budget = self.settings.retry_budget;
            if self.plain(key, &release, budget)$($aw)*.is_ok() && !settled {
                $sleep(crate::giveup::SECOND_RELEASE_AFTER)$($aw)*;
                let _ = self.plain(key, &release, budget)$($aw)*;
            }
        }
    };
}
pub(crate) use give_up_fns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_id(&Value::Int(42)), Some(42));
        assert_eq!(parse_id(&Value::Nil), None);
        let line = b"id=42 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name= age=0\n";
        assert_eq!(still_listed(&Value::BulkString(line.to_vec())), Some(true));
        assert_eq!(still_listed(&Value::BulkString(Vec::new())), Some(false));
        assert_eq!(
            still_listed(&Value::VerbatimString {
                format: redis::VerbatimFormat::Text,
                text: "\n".into()
            }),
            Some(false)
        );
        assert_eq!(still_listed(&Value::Int(0)), None);
        let cmd = client_list_cmd(7);
        let args: Vec<_> = cmd.args_iter().collect();
        assert_eq!(
            args,
            [
                redis::Arg::Simple(&b"CLIENT"[..]),
                redis::Arg::Simple(b"LIST"),
                redis::Arg::Simple(b"ID"),
                redis::Arg::Simple(b"7"),
            ]
        );
    }
}
