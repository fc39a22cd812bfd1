//! The wire: the LOCK commands' arguments, their replies, and where a key lives in a
//! cluster (its slot, the owner from `CLUSTER SLOTS`).

use redis::{Cmd, ConnectionAddr, ConnectionInfo, Value};

use crate::error::{Error, Result};
use crate::options::{Mode, Request};

/// `LOCK.ACQUIRE key ttl TOKEN t [BLOCK ms] [SHARED | LIMIT n] [EPHEMERAL] [META m]`.
pub(crate) fn acquire_cmd(req: &Request, block_ms: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("LOCK.ACQUIRE");
    cmd.arg(&req.key[..])
        .arg(req.ttl_ms)
        .arg("TOKEN")
        .arg(&req.token[..]);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    match req.mode {
        Mode::Exclusive => {}
        Mode::Shared => {
            cmd.arg("SHARED");
        }
        Mode::Limit(n) => {
            cmd.arg("LIMIT").arg(n);
        }
    }
    if req.ephemeral {
        cmd.arg("EPHEMERAL");
    }
    if let Some(meta) = &req.meta {
        cmd.arg("META").arg(&meta[..]);
    }
    cmd
}

/// `LOCK.RENEW key token ttl`.
pub(crate) fn renew_cmd(key: &[u8], token: &[u8], ttl_ms: u64) -> Cmd {
    let mut cmd = redis::cmd("LOCK.RENEW");
    cmd.arg(key).arg(token).arg(ttl_ms);
    cmd
}

/// `LOCK.RELEASE key token`.
pub(crate) fn release_cmd(key: &[u8], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("LOCK.RELEASE");
    cmd.arg(key).arg(token);
    cmd
}

/// `ASKING` then `cmd`, in one write (so nothing else on a shared connection comes between),
/// both replies kept: see [`asked_reply`].
pub(crate) fn asking_pipe(cmd: &Cmd) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("ASKING").add_command(cmd.clone()).ignore_errors();
    pipe
}

/// The reply to the command of an [`asking_pipe`].
pub(crate) fn asked_reply(v: Value) -> std::result::Result<Value, crate::error::Failure> {
    let classify = crate::error::classify;
    match v {
        Value::Array(replies) => match <[Value; 2]>::try_from(replies) {
            Ok([asking, reply]) => {
                asking.extract_error().map_err(classify)?;
                reply.extract_error().map_err(classify)
            }
            Err(other) => Err(crate::error::Failure::Fatal(Error::Protocol(format!(
                "ASKING and one command: {other:?}"
            )))),
        },
        other => Err(crate::error::Failure::Fatal(Error::Protocol(format!(
            "ASKING and one command: {other:?}"
        )))),
    }
}

/// `CLUSTER SLOTS`.
pub(crate) fn slots_cmd() -> Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    cmd
}

fn unexpected<T>(what: &str, v: &Value) -> Result<T> {
    Err(Error::Protocol(format!("{what}: {v:?}")))
}

/// An ACQUIRE reply: the fence of a grant to `token`, or None for null.
pub(crate) fn parse_grant(v: &Value, token: &[u8]) -> Result<Option<i64>> {
    match v {
        Value::Nil => Ok(None),
        Value::Array(items) => match items.as_slice() {
            [Value::BulkString(t), Value::Int(fence)] if t == token => Ok(Some(*fence)),
            _ => unexpected("not a grant to this token", v),
        },
        Value::ServerError(e) => Err(crate::error::classify(e.clone().into()).into_error()),
        _ => unexpected("not a grant or null", v),
    }
}

/// A RENEW or RELEASE reply: true for 1, false for 0.
pub(crate) fn parse_flag(v: &Value) -> Result<bool> {
    match v {
        Value::Int(1) => Ok(true),
        Value::Int(0) => Ok(false),
        Value::ServerError(e) => Err(crate::error::classify(e.clone().into()).into_error()),
        _ => unexpected("not 0 or 1", v),
    }
}

/// The cluster slot of `key` (CRC16/XMODEM of the key or its `{hash tag}`, mod 16384).
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// One range of a `CLUSTER SLOTS` reply: first slot, last slot, primary host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub host: String,
    pub port: u16,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn small(v: &Value) -> Option<u16> {
    match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    }
}

/// The ranges of a `CLUSTER SLOTS` reply (ranges of another shape are skipped).
pub(crate) fn parse_slots(v: &Value) -> Result<Vec<SlotRange>> {
    let Value::Array(ranges) = v else {
        return unexpected("not a CLUSTER SLOTS reply", v);
    };
    Ok(ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(items) = range else {
                return None;
            };
            let (first, last) = (small(items.first()?)?, small(items.get(1)?)?);
            let Value::Array(primary) = items.get(2)? else {
                return None;
            };
            Some(SlotRange {
                first,
                last,
                host: text(primary.first()?)?,
                port: small(primary.get(1)?)?,
            })
        })
        .collect())
}

/// The primary serving `slot`, if a range has it.
pub(crate) fn owner_of(ranges: &[SlotRange], slot: u16) -> Option<(String, u16)> {
    ranges
        .iter()
        .find(|r| (r.first..=r.last).contains(&slot))
        .map(|r| (r.host.clone(), r.port))
}

/// `template`'s settings (credentials, database, protocol, TLS) for the node `host:port`. An
/// empty host (a node that does not know its own address) keeps the template's host.
pub(crate) fn node_info(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            host: own,
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: if host.is_empty() {
                own.clone()
            } else {
                host.into()
            },
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        ConnectionAddr::Tcp(own, _) if host.is_empty() => ConnectionAddr::Tcp(own.clone(), port),
        _ => ConnectionAddr::Tcp(host.into(), port),
    };
    template.clone().set_addr(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{LockOptions, Settings};
    use redis::IntoConnectionInfo;

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<other>".into(),
            })
            .collect()
    }

    #[test]
    fn acquire_arguments() {
        let opts = LockOptions::new()
            .ttl(std::time::Duration::from_millis(500))
            .token("t")
            .limit(3)
            .ephemeral()
            .meta("who");
        let req = Request::new(b"k", opts, &Settings::default()).unwrap();
        assert_eq!(
            args(&acquire_cmd(&req, Some(0))),
            [
                "LOCK.ACQUIRE",
                "k",
                "500",
                "TOKEN",
                "t",
                "BLOCK",
                "0",
                "LIMIT",
                "3",
                "EPHEMERAL",
                "META",
                "who"
            ]
        );
        let shared = Request::new(
            b"k",
            LockOptions::new().shared().token("t"),
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(
            args(&acquire_cmd(&shared, None)),
            ["LOCK.ACQUIRE", "k", "30000", "TOKEN", "t", "SHARED"]
        );
        assert_eq!(
            args(&renew_cmd(b"k", b"t", 9)),
            ["LOCK.RENEW", "k", "t", "9"]
        );
        assert_eq!(args(&release_cmd(b"k", b"t")), ["LOCK.RELEASE", "k", "t"]);
    }

    #[test]
    fn replies() {
        let grant = Value::Array(vec![Value::BulkString(b"t".to_vec()), Value::Int(7)]);
        assert_eq!(parse_grant(&grant, b"t").unwrap(), Some(7));
        assert!(parse_grant(&grant, b"other").is_err());
        assert_eq!(parse_grant(&Value::Nil, b"t").unwrap(), None);
        assert!(matches!(
            parse_grant(&Value::Int(1), b"t"),
            Err(Error::Protocol(_))
        ));
        assert!(parse_flag(&Value::Int(1)).unwrap());
        assert!(!parse_flag(&Value::Int(0)).unwrap());
        assert!(parse_flag(&Value::Int(2)).is_err());
        assert!(parse_flag(&Value::Nil).is_err());
    }

    #[test]
    fn slots() {
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{}x"), key_slot(b"{}x"));
        assert_ne!(key_slot(b"{}x"), key_slot(b"x"));
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node(7000)]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node(7001)]),
            Value::Int(3),
        ]);
        let ranges = parse_slots(&reply).unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(owner_of(&ranges, 5460), Some(("127.0.0.1".into(), 7000)));
        assert_eq!(owner_of(&ranges, 5461), Some(("127.0.0.1".into(), 7001)));
        assert!(parse_slots(&Value::Nil).is_err());
        assert_eq!(owner_of(&[], 1), None);
    }

    #[test]
    fn node_info_keeps_settings() {
        let template = "redis://:secret@10.0.0.1:7000/"
            .into_connection_info()
            .unwrap();
        let info = node_info(&template, "10.0.0.2", 7002);
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("10.0.0.2".into(), 7002));
        assert_eq!(info.redis_settings().password(), Some("secret"));
        let same_host = node_info(&template, "", 7003);
        assert_eq!(
            same_host.addr(),
            &ConnectionAddr::Tcp("10.0.0.1".into(), 7003)
        );
    }
}
