//! Owner tokens: who holds a lock. Either the caller's own (1 to 256 bytes, binary-safe) or
//! one the server draws: 128 bits from the OS's cryptographic random source, as 32 hex chars.

use rand::rngs::SysRng;
use rand::TryRng;

use crate::error::{LockError, LockResult};

pub const MAX_TOKEN_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl Token {
    /// A caller's token, checked for length.
    pub fn parse(bytes: &[u8]) -> LockResult<Self> {
        if bytes.is_empty() || bytes.len() > MAX_TOKEN_LEN {
            return Err(LockError::TokenLength(bytes.len()));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// A new server-made token. Drawn from the OS directly rather than a user-space generator,
    /// so a forked child or a restored snapshot can never repeat a token.
    pub fn generate() -> LockResult<Self> {
        let mut raw = [0u8; 16];
        SysRng
            .try_fill_bytes(&mut raw)
            .map_err(|e| LockError::RandomSource(e.to_string()))?;
        Ok(Self(hex(&raw).into_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_length() {
        assert_eq!(Token::parse(b""), Err(LockError::TokenLength(0)));
        assert!(Token::parse(&[0u8; 256]).is_ok());
        assert_eq!(Token::parse(&[0u8; 257]), Err(LockError::TokenLength(257)));
        assert_eq!(Token::parse(b"a\0b").unwrap().as_bytes(), b"a\0b");
    }

    #[test]
    fn generated_tokens_are_32_lowercase_hex_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.as_bytes().len(), 32);
        assert!(a
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        assert_ne!(a, b);
    }

    #[test]
    fn hex_encodes_every_nibble() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
