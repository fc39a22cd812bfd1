//! The lock value in RDB files and DUMP payloads, and the module's aux data (the fence clock),
//! by encoding version. The server hands `rdb_load` the version the value was written with, so
//! every version ever written stays readable here; values are always written in the newest.
//!
//! Versions:
//! - 1 (since 0.1): token (string), deadline in Unix ms (signed), fence (unsigned).
//!   Aux data: the fence clock's last fence (unsigned), before the keyspace.

use std::collections::VecDeque;

use crate::error::{LockError, LockResult};
use crate::lock::Lock;
use crate::token::Token;

/// The version values are written in (the data type's registered version).
pub const CURRENT_VERSION: i32 = 1;

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

/// A lock written in `version`.
pub fn decode_lock(version: i32, from: &mut impl ValueReader) -> LockResult<Lock> {
    match version {
        1 => {
            let token = from.bytes().ok_or(LockError::BadEncoding("token"))?;
            let token = Token::from_vec(token)
                .map_err(|_| LockError::BadEncoding("token (empty or over 256 bytes)"))?;
            let deadline_ms = from.signed().ok_or(LockError::BadEncoding("deadline"))?;
            let fence = from.unsigned().ok_or(LockError::BadEncoding("fence"))?;
            Lock::new(&token, deadline_ms, fence)
                .map_err(|_| LockError::BadEncoding("fence (above 2^62-1)"))
        }
        _ => Err(LockError::UnknownEncoding(version)),
    }
}

/// `lock` in `CURRENT_VERSION`.
pub fn encode_lock(lock: &Lock, to: &mut impl ValueWriter) {
    let mut buf = [0u8; crate::compact::INLINE_TEXT_MAX];
    to.bytes(lock.token(&mut buf));
    to.signed(lock.deadline_ms);
    to.unsigned(lock.fence());
}

/// The fence clock from aux data written in `version`.
pub fn decode_clock(version: i32, from: &mut impl ValueReader) -> LockResult<u64> {
    match version {
        1 => from.unsigned().ok_or(LockError::BadEncoding("fence clock")),
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

    fn v1(fields: Vec<Field>) -> Fields {
        Fields(fields.into())
    }

    #[test]
    fn version_1_reads_token_deadline_fence() {
        let mut from = v1(vec![
            Field::Bytes(b"worker-7".to_vec()),
            Field::Signed(1_700_000_000_000),
            Field::Unsigned(42),
        ]);
        let lock = decode_lock(1, &mut from).unwrap();
        let expected = Lock::new(&Token::parse(b"worker-7").unwrap(), 1_700_000_000_000, 42);
        assert_eq!(lock, expected.unwrap());
        let mut again = Fields::default();
        encode_lock(&lock, &mut again);
        assert_eq!(decode_lock(CURRENT_VERSION, &mut again).unwrap(), lock);
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
            (0, vec![token(), Field::Signed(1), Field::Unsigned(1)]),
        ];
        for (version, fields) in cases {
            assert!(
                decode_lock(version, &mut v1(fields.clone())).is_err(),
                "{fields:?}"
            );
        }
        assert_eq!(
            decode_lock(2, &mut v1(vec![])),
            Err(LockError::UnknownEncoding(2))
        );
    }

    #[test]
    fn the_clock_round_trips() {
        let mut to = Fields::default();
        encode_clock(99, &mut to);
        assert_eq!(decode_clock(CURRENT_VERSION, &mut to), Ok(99));
        assert!(decode_clock(1, &mut to).is_err(), "nothing left");
        assert!(decode_clock(7, &mut v1(vec![Field::Unsigned(1)])).is_err());
    }
}
