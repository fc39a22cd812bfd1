//! The lock value in RDB files and DUMP payloads, and the module's aux data (the fence clock),
//! by encoding version. The server hands `rdb_load` the version the value was written with, so
//! every version ever written stays readable here; values are always written in the newest.
//!
//! Versions:
//! - 1 (since 0.1): an exclusive lock: token (string), deadline in Unix ms (signed), fence
//!   (unsigned). Aux data: the fence clock's last fence (unsigned), before the keyspace.
//! - 2 (since 0.2, shared holds): the kind (unsigned), then
//!   - 0, exclusive: token, deadline, fence, as in version 1;
//!   - 1, shared: the limit (unsigned, 0 for `SHARED`), the number of holders (unsigned),
//!     then each holder's token, deadline and fence, in grant order.
//!
//!   Aux data as in version 1.
//!
//!   Since 0.3 (labels, `META`), two more kinds, written only for labeled locks, so every other
//!   lock is written as 0.2 wrote it and an 0.2 server still loads files without labels:
//!   - 2, exclusive with a label: token, deadline, fence, then the label (string);
//!   - 3, shared with labels: as kind 1, with after each holder whether it has a label
//!     (unsigned, 0 or 1) and then the label.

use std::collections::VecDeque;

use crate::error::{LockError, LockResult};
use crate::lock::Lock;
use crate::meta::Meta;
use crate::shared::{SharedLock, MAX_LIMIT};
use crate::token::Token;
use crate::value::{Held, Value};

/// The version values are written in (the data type's registered version).
pub const CURRENT_VERSION: i32 = 2;

const EXCLUSIVE: u64 = 0;
const SHARED: u64 = 1;
const EXCLUSIVE_LABELED: u64 = 2;
const SHARED_LABELED: u64 = 3;

/// Reads the fields of one value, in order; None when the data ends or is unreadable.
pub trait ValueReader {
    fn bytes(&mut self) -> Option<Vec<u8>>;
    fn signed(&mut self) -> Option<i64>;
    fn unsigned(&mut self) -> Option<u64>;
}

/// Writes the fields of one value, in order.
pub trait ValueWriter {
    fn bytes(&mut self, bytes: &[u8]);
    fn signed(&mut self, value: i64);
    fn unsigned(&mut self, value: u64);
}

/// A lock value written in `version`.
pub fn decode_value(version: i32, from: &mut impl ValueReader) -> LockResult<Value> {
    match version {
        1 => Ok(Value::Exclusive(Box::new(decode_holder(from)?))),
        2 => match from.unsigned().ok_or(LockError::BadEncoding("kind"))? {
            EXCLUSIVE => Ok(Value::Exclusive(Box::new(decode_holder(from)?))),
            SHARED => decode_shared(from, false),
            EXCLUSIVE_LABELED => {
                let lock = decode_holder(from)?;
                Ok(Value::exclusive(lock, Some(decode_meta(from)?)))
            }
            SHARED_LABELED => decode_shared(from, true),
            _ => Err(LockError::BadEncoding("kind (not 0 to 3)")),
        },
        _ => Err(LockError::UnknownEncoding(version)),
    }
}

fn decode_shared(from: &mut impl ValueReader, labeled: bool) -> LockResult<Value> {
    let limit = match from.unsigned().ok_or(LockError::BadEncoding("limit"))? {
        0 => None,
        n => Some(
            u32::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_LIMIT)
                .ok_or(LockError::BadEncoding("limit (over 1000000)"))?,
        ),
    };
    let count = from.unsigned().ok_or(LockError::BadEncoding("holders"))?;
    if count == 0 {
        return Err(LockError::BadEncoding("holders (none)"));
    }
    let mut shared = SharedLock::new(limit);
    // Read one by one: a corrupt count ends with the data, never allocates ahead.
    for _ in 0..count {
        let holder = decode_holder(from)?;
        let meta = match labeled {
            false => None,
            true => match from.unsigned() {
                Some(0) => None,
                Some(1) => Some(decode_meta(from)?),
                _ => return Err(LockError::BadEncoding("label flag")),
            },
        };
        shared.upsert(holder, meta);
    }
    Ok(Value::Shared(Box::new(shared)))
}

fn decode_meta(from: &mut impl ValueReader) -> LockResult<Meta> {
    let meta = from.bytes().ok_or(LockError::BadEncoding("label"))?;
    Meta::parse(&meta).map_err(|_| LockError::BadEncoding("label (over 1024 bytes)"))
}

/// A holder as every version writes it: token, deadline, fence.
fn decode_holder(from: &mut impl ValueReader) -> LockResult<Lock> {
    let token = from.bytes().ok_or(LockError::BadEncoding("token"))?;
    let token = Token::from_vec(token)
        .map_err(|_| LockError::BadEncoding("token (empty or over 256 bytes)"))?;
    let deadline_ms = from.signed().ok_or(LockError::BadEncoding("deadline"))?;
    let fence = from.unsigned().ok_or(LockError::BadEncoding("fence"))?;
    Lock::new(&token, deadline_ms, fence)
        .map_err(|_| LockError::BadEncoding("fence (above 2^62-1)"))
}

/// A lock value in `CURRENT_VERSION`.
pub fn encode_value(value: &Held, to: &mut impl ValueWriter) {
    match value {
        Held::Exclusive(lock, None) => {
            to.unsigned(EXCLUSIVE);
            encode_holder(lock, to);
        }
        Held::Exclusive(lock, Some(meta)) => {
            to.unsigned(EXCLUSIVE_LABELED);
            encode_holder(lock, to);
            to.bytes(meta.as_bytes());
        }
        Held::Shared(shared) => {
            let labeled = shared.labeled();
            to.unsigned(if labeled { SHARED_LABELED } else { SHARED });
            to.unsigned(shared.limit().map_or(0, u64::from));
            to.unsigned(shared.len() as u64);
            for (holder, meta) in shared.entries() {
                encode_holder(holder, to);
                if labeled {
                    to.unsigned(u64::from(meta.is_some()));
                    if let Some(meta) = meta {
                        to.bytes(meta.as_bytes());
                    }
                }
            }
        }
    }
}

fn encode_holder(lock: &Lock, to: &mut impl ValueWriter) {
    let mut buf = [0u8; crate::compact::INLINE_TEXT_MAX];
    to.bytes(lock.token(&mut buf));
    to.signed(lock.deadline_ms);
    to.unsigned(lock.fence());
}

/// The fence clock from aux data written in `version`.
pub fn decode_clock(version: i32, from: &mut impl ValueReader) -> LockResult<u64> {
    match version {
        1 | 2 => from.unsigned().ok_or(LockError::BadEncoding("fence clock")),
        _ => Err(LockError::UnknownEncoding(version)),
    }
}

/// The fence clock's aux data in `CURRENT_VERSION`.
pub fn encode_clock(last: u64, to: &mut impl ValueWriter) {
    to.unsigned(last);
}

/// One field of a value, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Bytes(Vec<u8>),
    Signed(i64),
    Unsigned(u64),
}

/// Fields kept in memory: a writer, and a reader of what was written (tests, fixtures).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields(pub VecDeque<Field>);

impl ValueWriter for Fields {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.push_back(Field::Bytes(bytes.to_vec()));
    }
    fn signed(&mut self, value: i64) {
        self.0.push_back(Field::Signed(value));
    }
    fn unsigned(&mut self, value: u64) {
        self.0.push_back(Field::Unsigned(value));
    }
}

impl ValueReader for Fields {
    fn bytes(&mut self) -> Option<Vec<u8>> {
        match self.0.pop_front()? {
            Field::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }
    fn signed(&mut self) -> Option<i64> {
        match self.0.pop_front()? {
            Field::Signed(value) => Some(value),
            _ => None,
        }
    }
    fn unsigned(&mut self) -> Option<u64> {
        match self.0.pop_front()? {
            Field::Unsigned(value) => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::MAX_FENCE;

    fn fields(fields: Vec<Field>) -> Fields {
        Fields(fields.into())
    }

    fn holder_fields(token: &str, deadline: i64, fence: u64) -> Vec<Field> {
        vec![
            Field::Bytes(token.as_bytes().to_vec()),
            Field::Signed(deadline),
            Field::Unsigned(fence),
        ]
    }

    fn round_trip(mut value: Value) {
        let mut to = Fields::default();
        encode_value(&value.held(), &mut to);
        assert_eq!(decode_value(CURRENT_VERSION, &mut to).unwrap(), value);
        assert!(to.0.is_empty(), "every field read");
    }

    #[test]
    fn version_1_reads_token_deadline_fence() {
        let mut from = fields(holder_fields("worker-7", 1_700_000_000_000, 42));
        let value = decode_value(1, &mut from).unwrap();
        let expected = Lock::new(&Token::parse(b"worker-7").unwrap(), 1_700_000_000_000, 42);
        assert_eq!(value, Value::Exclusive(Box::new(expected.unwrap())));
        round_trip(value);
    }

    #[test]
    fn version_2_reads_both_kinds() {
        let mut exclusive = vec![Field::Unsigned(0)];
        exclusive.extend(holder_fields("w", 5, 6));
        let value = decode_value(2, &mut fields(exclusive)).unwrap();
        assert!(matches!(value, Value::Exclusive(_)));
        round_trip(value);

        let mut shared = vec![Field::Unsigned(1), Field::Unsigned(3), Field::Unsigned(2)];
        shared.extend(holder_fields("a", 100, 7));
        shared.extend(holder_fields("b", 50, 9));
        let mut value = decode_value(2, &mut fields(shared)).unwrap();
        let Held::Shared(s) = value.held() else {
            panic!("{value:?}")
        };
        assert_eq!(
            (s.limit(), s.len(), s.latest_deadline()),
            (Some(3), 2, Some(100))
        );
        assert_eq!(value.held().highest_fence(), 9);
        round_trip(value);

        let mut unlimited = vec![Field::Unsigned(1), Field::Unsigned(0), Field::Unsigned(1)];
        unlimited.extend(holder_fields("a", 100, 7));
        let mut value = decode_value(2, &mut fields(unlimited)).unwrap();
        assert!(matches!(value.held(), Held::Shared(s) if s.limit().is_none()));
        round_trip(value);
    }

    #[test]
    fn labeled_locks_use_kinds_2_and_3_and_others_stay_as_0_2_wrote_them() {
        let meta = |m: &str| Meta::parse(m.as_bytes()).unwrap();
        let mut exclusive = vec![Field::Unsigned(2)];
        exclusive.extend(holder_fields("w", 5, 6));
        exclusive.push(Field::Bytes(b"10.0.0.7:80".to_vec()));
        let mut value = decode_value(2, &mut fields(exclusive.clone())).unwrap();
        assert_eq!(
            value.held().meta(&Token::parse(b"w").unwrap(), 0),
            Some(&meta("10.0.0.7:80"))
        );
        let mut written = Fields::default();
        encode_value(&value.held(), &mut written);
        assert_eq!(written, fields(exclusive));

        let mut shared = vec![Field::Unsigned(3), Field::Unsigned(0), Field::Unsigned(2)];
        shared.extend(holder_fields("a", 100, 7));
        shared.push(Field::Unsigned(0));
        shared.extend(holder_fields("b", 50, 9));
        shared.push(Field::Unsigned(1));
        shared.push(Field::Bytes(vec![]));
        let mut value = decode_value(2, &mut fields(shared.clone())).unwrap();
        let Held::Shared(s) = value.held() else {
            panic!("{value:?}")
        };
        assert_eq!(s.meta(&Token::parse(b"b").unwrap()), Some(&meta("")));
        assert_eq!(s.meta(&Token::parse(b"a").unwrap()), None);
        let mut written = Fields::default();
        encode_value(&value.held(), &mut written);
        assert_eq!(written, fields(shared));

        // A shared lock whose labels are all gone is written as kind 1 again.
        let Held::Shared(s) = value.held() else {
            panic!("{value:?}")
        };
        s.set_meta(&Token::parse(b"b").unwrap(), None);
        let mut written = Fields::default();
        encode_value(&value.held(), &mut written);
        assert_eq!(written.0.front(), Some(&Field::Unsigned(1)));
        round_trip(value);
    }

    #[test]
    fn bad_values_and_unknown_versions_are_refused() {
        let token = || Field::Bytes(b"t".to_vec());
        let cases = [
            (1, vec![token(), Field::Signed(1)]),
            (
                1,
                vec![Field::Bytes(vec![]), Field::Signed(1), Field::Unsigned(1)],
            ),
            (
                1,
                vec![
                    Field::Bytes(vec![1; 257]),
                    Field::Signed(1),
                    Field::Unsigned(1),
                ],
            ),
            (
                1,
                vec![token(), Field::Signed(1), Field::Unsigned(MAX_FENCE + 1)],
            ),
            (1, vec![token(), Field::Unsigned(1), Field::Unsigned(1)]),
            (2, vec![token(), Field::Signed(1), Field::Unsigned(1)]),
            (
                2,
                vec![
                    Field::Unsigned(2),
                    token(),
                    Field::Signed(1),
                    Field::Unsigned(1),
                ],
            ),
            (
                2,
                vec![Field::Unsigned(1), Field::Unsigned(0), Field::Unsigned(0)],
            ),
            (
                2,
                vec![
                    Field::Unsigned(1),
                    Field::Unsigned(1_000_001),
                    Field::Unsigned(1),
                ],
            ),
            (
                2,
                vec![
                    Field::Unsigned(1),
                    Field::Unsigned(0),
                    Field::Unsigned(u64::MAX),
                    token(),
                    Field::Signed(1),
                    Field::Unsigned(1),
                ],
            ),
            (
                2,
                vec![
                    Field::Unsigned(2),
                    token(),
                    Field::Signed(1),
                    Field::Unsigned(1),
                    Field::Bytes(vec![0; 1025]),
                ],
            ),
            (
                2,
                vec![
                    Field::Unsigned(3),
                    Field::Unsigned(0),
                    Field::Unsigned(1),
                    token(),
                    Field::Signed(1),
                    Field::Unsigned(1),
                    Field::Unsigned(2),
                ],
            ),
            (
                2,
                vec![
                    Field::Unsigned(4),
                    token(),
                    Field::Signed(1),
                    Field::Unsigned(1),
                ],
            ),
            (3, vec![token(), Field::Signed(1), Field::Unsigned(1)]),
            (0, vec![token(), Field::Signed(1), Field::Unsigned(1)]),
        ];
        for (version, f) in cases {
            assert!(
                decode_value(version, &mut fields(f.clone())).is_err(),
                "{f:?}"
            );
        }
        assert_eq!(
            decode_value(3, &mut fields(vec![])),
            Err(LockError::UnknownEncoding(3))
        );
    }

    #[test]
    fn the_clock_round_trips() {
        let mut to = Fields::default();
        encode_clock(99, &mut to);
        assert_eq!(decode_clock(CURRENT_VERSION, &mut to), Ok(99));
        assert!(decode_clock(1, &mut to).is_err(), "nothing left");
        assert_eq!(
            decode_clock(1, &mut fields(vec![Field::Unsigned(5)])),
            Ok(5)
        );
        assert!(decode_clock(7, &mut fields(vec![Field::Unsigned(1)])).is_err());
    }
}
