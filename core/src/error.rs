//! The one error type of the lock commands. Every variant's text is the error reply a client sees,
//! so each starts with `ERR` or a server prefix such as `WRONGTYPE`, and names the argument.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LockError {
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),

    #[error("ERR invalid ttl '{0}': must be a whole number of milliseconds, 1 or more")]
    TtlNotInteger(String),

    #[error("ERR invalid ttl {0}: must be 1 or more milliseconds")]
    TtlNotPositive(i64),

    #[error("ERR invalid ttl {ttl}: over lock.max-ttl ({max} ms)")]
    TtlOverMax { ttl: i64, max: i64 },

    #[error("ERR invalid ttl {0}: now + ttl overflows 64 bits")]
    TtlOverflow(i64),

    #[error("ERR invalid BLOCK timeout '{0}': must be a whole number of milliseconds, 0 or more")]
    TimeoutInvalid(String),

    #[error("ERR invalid token: must be 1 to 256 bytes, got {0}")]
    TokenLength(usize),

    #[error(
        "ERR unknown option '{0}' (LOCK.ACQUIRE takes TOKEN token, BLOCK timeout, SHARED, \
         LIMIT n, EPHEMERAL and META value)"
    )]
    UnknownOption(String),

    #[error("ERR invalid LIMIT '{0}': must be a whole number from 1 to 1000000")]
    LimitInvalid(String),

    #[error("ERR SHARED and LIMIT cannot be combined: LIMIT n is itself a shared hold")]
    SharedWithLimit,

    #[error("{}", limit_mismatch(*.0))]
    LimitMismatch(Option<u32>),

    #[error("ERR this token holds the lock shared; it cannot also hold it exclusively")]
    HeldShared,

    #[error("ERR this token holds the lock exclusively; it cannot also hold it shared")]
    HeldExclusively,

    #[error("ERR invalid META: at most 1024 bytes, got {0}")]
    MetaTooLong(usize),

    #[error(
        "ERR EPHEMERAL cannot be used inside a script or function: the server does not tell \
         modules which connection runs it; call LOCK.ACQUIRE directly or inside MULTI"
    )]
    EphemeralInScript,

    #[error("ERR option {0} given more than once")]
    RepeatedOption(&'static str),

    #[error("ERR option {0} needs a value")]
    MissingValue(&'static str),

    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,

    #[error(
        "ERR LOCK.ACQUIRE refused: maxmemory is set with an eviction policy, so this server may \
         evict lock keys and silently lose locks; set maxmemory-policy noeviction"
    )]
    EvictionPossible,

    #[error(
        "ERR LOCK.ACQUIRE BLOCK refused: {0} clients already wait for this lock (lock.max-waiters)"
    )]
    TooManyWaiters(usize),

    #[error("ERR invalid BLOCK timeout {0}: now + timeout overflows 64 bits")]
    TimeoutOverflow(i64),

    #[error(
        "TRYAGAIN the lock's hash slot is moving or has moved to another node; retry the command"
    )]
    SlotMoved,

    #[error("CLUSTERDOWN the cluster is down; retry the command later")]
    ClusterDown,

    #[error("ERR {0} only accepts the primary's replication stream and AOF replay")]
    InternalCommand(&'static str),

    #[error("ERR invalid {name} '{value}': must be a whole number, 0 or more")]
    BadEffectArgument { name: &'static str, value: String },

    #[error("ERR invalid hold '{0}': must be deadline:fence:token")]
    BadHold(String),

    #[error("ERR fencing numbers are exhausted on this server")]
    FenceExhausted,

    #[error("ERR the OS random source failed: {0}")]
    RandomSource(String),

    #[error("ERR unreadable lock value: bad or missing {0}")]
    BadEncoding(&'static str),

    #[error("ERR unknown lock value encoding version {0}")]
    UnknownEncoding(i32),

    #[error("ERR internal error in the lock module: {0}")]
    Internal(String),
}

pub type LockResult<T> = Result<T, LockError>;

/// The lock's limit, and how to ask for it.
fn limit_mismatch(limit: Option<u32>) -> String {
    match limit {
        Some(n) => format!("ERR the lock is shared with LIMIT {n}; ask with LIMIT {n}"),
        None => "ERR the lock is shared without a limit; ask with SHARED".into(),
    }
}

/// How client bytes are shown inside an error text: printable ASCII as is, the rest escaped,
/// and cut short, so an error reply never carries CR, LF, NUL or megabytes of input.
pub fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for &b in bytes.iter().take(MAX) {
        match b {
            b'\'' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_control_bytes_and_truncates() {
        assert_eq!(shown(b"abc"), "abc");
        assert_eq!(shown(b"a\r\nb\0"), "a\\x0d\\x0ab\\x00");
        assert_eq!(shown(b"it's"), "it\\'s");
        let long = vec![b'x'; 100];
        let s = shown(&long);
        assert!(s.ends_with("..."));
        assert_eq!(s.len(), 64 + 3);
    }

    #[test]
    fn every_error_text_starts_with_a_prefix() {
        let all = [
            LockError::WrongArity("lock.info"),
            LockError::TtlNotInteger("x".into()),
            LockError::TtlNotPositive(0),
            LockError::TtlOverMax { ttl: 5, max: 1 },
            LockError::TtlOverflow(1),
            LockError::TimeoutInvalid("x".into()),
            LockError::TokenLength(0),
            LockError::UnknownOption("x".into()),
            LockError::LimitInvalid("0".into()),
            LockError::SharedWithLimit,
            LockError::LimitMismatch(Some(3)),
            LockError::LimitMismatch(None),
            LockError::HeldShared,
            LockError::HeldExclusively,
            LockError::RepeatedOption("TOKEN"),
            LockError::MissingValue("TOKEN"),
            LockError::WrongType,
            LockError::EvictionPossible,
            LockError::TimeoutOverflow(1),
            LockError::TooManyWaiters(3),
            LockError::InternalCommand("LOCK.APPLY"),
            LockError::BadHold("5:4".into()),
            LockError::FenceExhausted,
            LockError::SlotMoved,
            LockError::ClusterDown,
            LockError::RandomSource("x".into()),
            LockError::BadEncoding("token"),
            LockError::UnknownEncoding(9),
            LockError::Internal("x".into()),
        ];
        for e in all {
            let text = e.to_string();
            assert!(
                ["ERR ", "WRONGTYPE ", "TRYAGAIN ", "CLUSTERDOWN "]
                    .iter()
                    .any(|prefix| text.starts_with(prefix)),
                "{text}"
            );
            assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        }
    }
}
