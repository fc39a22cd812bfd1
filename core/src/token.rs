//! Owner tokens: who holds a lock. Either the caller's own (1 to 256 bytes, binary-safe) or
//! one the server draws: 128 bits from the OS's cryptographic random source, as 32 hex chars.
//! Also the one lowercase-hex spelling used by tokens and their compact storage.

use rand::rngs::SysRng;
use rand::TryRng;

use crate::error::{LockError, LockResult};

pub const MAX_TOKEN_LEN: usize = 256;

/// Tokens up to this length (a generated token's 32 hex characters, a UUID's 36) are kept
/// inline: parsing one for a command allocates nothing.
const INLINE: usize = 40;

#[derive(Clone)]
pub struct Token(Bytes);

#[derive(Clone)]
enum Bytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Token {
    /// A caller's token, checked for length.
    pub fn parse(bytes: &[u8]) -> LockResult<Self> {
        if bytes.is_empty() || bytes.len() > MAX_TOKEN_LEN {
            return Err(LockError::TokenLength(bytes.len()));
        }
        Ok(Self(match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0u8; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                Bytes::Inline { len, bytes: inline }
            }
            _ => Bytes::Heap(bytes.into()),
        }))
    }

    /// `parse`, from bytes already owned.
    pub fn from_vec(bytes: Vec<u8>) -> LockResult<Self> {
        Self::parse(&bytes)
    }

    /// A new server-made token. Drawn from the OS directly rather than a user-space generator,
    /// so a forked child or a restored snapshot can never repeat a token.
    pub fn generate() -> LockResult<Self> {
        let mut raw = [0u8; 16];
        SysRng
            .try_fill_bytes(&mut raw)
            .map_err(|e| LockError::RandomSource(e.to_string()))?;
        let mut text = [0u8; 32];
        spell_hex(&raw, &mut text);
        Self::parse(&text)
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Bytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Bytes::Heap(bytes) => bytes,
        }
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Token {}

impl std::hash::Hash for Token {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Token").field(&self.as_bytes()).finish()
    }
}

/// `bytes` as lowercase hex into `out`, which holds exactly two characters per byte.
pub(crate) fn spell_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// The value of one lowercase hex digit.
pub(crate) fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
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
    fn inline_and_heap_tokens_compare_by_their_bytes() {
        for len in [1, 39, 40, 41, 256] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let t = Token::parse(&bytes).unwrap();
            assert_eq!(t.as_bytes(), &bytes[..]);
            assert_eq!(t, Token::from_vec(bytes.clone()).unwrap());
            assert_ne!(
                t,
                Token::parse(&bytes[..len - 1]).unwrap_or(Token::parse(b"x").unwrap())
            );
        }
    }

    #[test]
    fn generated_tokens_are_32_lowercase_hex_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.as_bytes().len(), 32);
        assert!(a.as_bytes().iter().all(|&c| hex_digit(c).is_some()));
        assert_ne!(a, b);
    }

    #[test]
    fn hex_spells_every_nibble() {
        let mut out = [0u8; 8];
        spell_hex(&[0x00, 0x0f, 0xa5, 0xff], &mut out);
        assert_eq!(&out, b"000fa5ff");
        assert_eq!(hex_digit(b'f'), Some(15));
        assert_eq!(hex_digit(b'F'), None);
    }
}
