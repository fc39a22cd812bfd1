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
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// Each byte's two lowercase hex digits: one lookup per byte on the hot paths.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
        b += 1;
    }
    pairs
};

/// 32 lowercase hex digits as their 16 bytes, eight digits at a time; None if any is not one.
pub(crate) fn read_hex(text: &[u8; 32]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    for (digits, four) in text.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(digits);
        four.copy_from_slice(&read_hex_word(u64::from_le_bytes(word))?.to_le_bytes());
    }
    Some(out)
}

/// Eight lowercase hex digits (the first in the lowest byte) as four bytes, if all are digits.
/// Each byte is range-checked in its own lane: with every byte below 0x80 no sum carries into
/// the next.
fn read_hex_word(x: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    // Top bit of each lane: the byte is in lo..=hi.
    let within = |lo: u8, hi: u8| {
        let at_least_lo = x.wrapping_add(u64::from(0x80 - lo) * ONES);
        let above_hi = x.wrapping_add(u64::from(0x7f - hi) * ONES);
        at_least_lo & !above_hi & TOPS
    };
    if x & TOPS != 0 {
        return None;
    }
    let letters = within(b'a', b'f');
    if (within(b'0', b'9') | letters) != TOPS {
        return None;
    }
    // '0'..'9' keep their low nibble; 'a'..'f' have 1..6 there, plus 9.
    let nibbles = (x & (ONES * 0x0f)) + (letters >> 7) * 9;
    // Each 16-bit lane holds two digits, the first low: make it one byte, first digit high.
    let lanes = ((nibbles & 0x000f_000f_000f_000f) << 4) | ((nibbles >> 8) & 0x000f_000f_000f_000f);
    let pairs = (lanes | (lanes >> 8)) & 0x0000_ffff_0000_ffff;
    Some(((pairs | (pairs >> 16)) & 0xffff_ffff) as u32)
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
        assert!(read_hex(a.as_bytes().try_into().unwrap()).is_some());
        assert!(a
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        assert_ne!(a, b);
    }

    #[test]
    fn hex_spells_every_nibble() {
        let mut out = [0u8; 8];
        spell_hex(&[0x00, 0x0f, 0xa5, 0xff], &mut out);
        assert_eq!(&out, b"000fa5ff");
    }

    /// The value of one lowercase hex digit, the plain way: what the word reader must agree
    /// with.
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }

    #[test]
    fn hex_words_read_as_digit_by_digit() {
        // Every byte value at every position of a word of otherwise valid digits.
        for at in 0..8 {
            for c in 0..=255u8 {
                let mut text = *b"0123abcd";
                text[at] = c;
                let slow: Option<Vec<u8>> = text
                    .chunks_exact(2)
                    .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
                    .collect();
                let fast = read_hex_word(u64::from_le_bytes(text)).map(|w| w.to_le_bytes());
                assert_eq!(fast.map(|f| f.to_vec()), slow, "{text:?}");
            }
        }
        let out = read_hex(b"00112233445566778899aabbccddeeff");
        assert_eq!(
            out,
            Some([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ])
        );
    }

    #[test]
    fn hex_reads_exactly_lowercase_digits() {
        for at in [0, 9, 31] {
            for c in 0..=255u8 {
                let mut text = *b"000fa5ff000fa5ff000fa5ff000fa5ff";
                text[at] = c;
                assert_eq!(
                    read_hex(&text).is_some(),
                    digit(c).is_some(),
                    "{c:#x} at {at}"
                );
            }
        }
    }
}
