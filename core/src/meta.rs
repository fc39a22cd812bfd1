//! A hold's public label (`META value`): who holds it, for people and tools (LOCK.INFO's
//! `meta`, LOCK.HOLDERS). Any bytes, 0 to 1,024 of them; unlike the token it is no secret.

use crate::error::{LockError, LockResult};

/// The longest label.
pub const MAX_META: usize = 1024;

#[derive(Clone, PartialEq, Eq)]
pub struct Meta(Box<[u8]>);

impl Meta {
    pub fn parse(bytes: &[u8]) -> LockResult<Self> {
        if bytes.len() > MAX_META {
            return Err(LockError::MetaTooLong(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Heap bytes it owns.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Meta({:?})", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_0_to_1024_bytes_are_kept_as_given() {
        for len in [0, 1, MAX_META] {
            let bytes = vec![0xffu8; len];
            assert_eq!(Meta::parse(&bytes).unwrap().as_bytes(), &bytes[..]);
        }
        assert_eq!(
            Meta::parse(&[b'x'; MAX_META + 1]),
            Err(LockError::MetaTooLong(MAX_META + 1))
        );
        assert_eq!(std::mem::size_of::<Option<Meta>>(), 16);
    }
}
