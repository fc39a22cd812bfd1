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
        Ok(TokenRef::check(bytes)?.to_token())
    }

    /// A token of bytes `check` took.
    fn from_checked(bytes: &[u8]) -> Self {
        Self(match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0u8; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                Bytes::Inline { len, bytes: inline }
            }
            _ => Bytes::Heap(bytes.into()),
        })
    }

    /// Whether `bytes` may be a token (`parse` would take it), without making one.
    pub fn check(bytes: &[u8]) -> LockResult<()> {
        if bytes.is_empty() || bytes.len() > MAX_TOKEN_LEN {
            return Err(LockError::TokenLength(bytes.len()));
        }
        Ok(())
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
        Self::parse(&spell_hex16(&raw))
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Bytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Bytes::Heap(bytes) => bytes,
        }
    }
}

/// A caller's token, checked as `Token::parse` checks it but left where it is (a command's
/// argument): the hot paths make a lock of it, compare a lock with it, reply and replicate it
/// without copying it. Whatever takes a `TokenRef` also takes a `&Token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRef<'a>(&'a [u8]);

impl<'a> TokenRef<'a> {
    pub fn check(bytes: &'a [u8]) -> LockResult<Self> {
        Token::check(bytes)?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }

    /// The token as an owned `Token` (for what outlives the call: a waiter, a binding).
    pub fn to_token(self) -> Token {
        Token::from_checked(self.0)
    }
}

impl<'a> From<&'a Token> for TokenRef<'a> {
    fn from(token: &'a Token) -> Self {
        Self(token.as_bytes())
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

/// `bytes` as lowercase hex into `out`, which holds exactly two characters per byte (on x86-64,
/// only the tests' reference for `spell_hex16`).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn spell_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// 16 bytes as their 32 lowercase hex digits: how a compact token is spelled, and compared, on
/// every RENEW and RELEASE. On x86-64 all at once with SSE2; elsewhere by `spell_hex`.
#[allow(unsafe_code)]
pub(crate) fn spell_hex16(bytes: &[u8; 16]) -> [u8; 32] {
    // SAFETY: as in `read_hex`, SSE2 is always there on x86-64.
    #[cfg(target_arch = "x86_64")]
    return unsafe { spell_hex16_sse2(bytes) };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut out = [0u8; 32];
        spell_hex(bytes, &mut out);
        out
    }
}

/// `spell_hex16` with SSE2: each byte's high and low nibble side by side, then each nibble
/// `n` as `'0' + n`, plus 39 (from `'9' + 1` to `'a'`) where `n` is above 9.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn spell_hex16_sse2(bytes: &[u8; 16]) -> [u8; 32] {
    use std::arch::x86_64::*;

    let v = load16(bytes, 0);
    let low_nibbles = _mm_set1_epi8(0x0f);
    let high = _mm_and_si128(_mm_srli_epi16(v, 4), low_nibbles);
    let low = _mm_and_si128(v, low_nibbles);
    let digits = |n: __m128i| {
        let letter = _mm_cmpgt_epi8(n, _mm_set1_epi8(9));
        _mm_add_epi8(
            _mm_add_epi8(n, _mm_set1_epi8(b'0' as i8)),
            _mm_and_si128(letter, _mm_set1_epi8(39)),
        )
    };
    let (first, second) = (
        digits(_mm_unpacklo_epi8(high, low)),
        digits(_mm_unpackhi_epi8(high, low)),
    );
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&store16(first));
    out[16..].copy_from_slice(&store16(second));
    out
}

/// The 16 bytes of `bytes` from `at` as one register, the first in the lowest lane; read as two
/// words, so no pointer is cast.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn load16(bytes: &[u8], at: usize) -> std::arch::x86_64::__m128i {
    let word = |at: usize| {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&bytes[at..at + 8]);
        i64::from_le_bytes(eight)
    };
    std::arch::x86_64::_mm_set_epi64x(word(at + 8), word(at))
}

/// A register's 16 bytes, lowest lane first: `load16` undone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn store16(x: std::arch::x86_64::__m128i) -> [u8; 16] {
    use std::arch::x86_64::*;

    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&_mm_cvtsi128_si64(x).to_le_bytes());
    out[8..].copy_from_slice(&_mm_cvtsi128_si64(_mm_unpackhi_epi64(x, x)).to_le_bytes());
    out
}

/// Each byte's two lowercase hex digits: one lookup per byte.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
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

/// 32 lowercase hex digits as their 16 bytes; None if any is not one. Every token of the
/// server's own is read so on every command that names it: on x86-64, sixteen digits at a time
/// with SSE2 (which every x86-64 processor has); elsewhere eight at a time in a word.
#[allow(unsafe_code)]
pub(crate) fn read_hex(text: &[u8; 32]) -> Option<[u8; 16]> {
    // SAFETY: SSE2 is part of x86-64 itself (every x86-64 target has it enabled), so the
    // function's one requirement, that the processor has SSE2, always holds.
    #[cfg(target_arch = "x86_64")]
    return unsafe { read_hex_sse2(text) };
    #[cfg(not(target_arch = "x86_64"))]
    read_hex_words(text)
}

/// `read_hex` with SSE2: each digit's value as a byte (`c - '0'` where that is below 10,
/// `c - 'a' + 10` where `c - 'a'` is below 6, and the whole read fails if neither), then each
/// pair of values as one byte.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn read_hex_sse2(text: &[u8; 32]) -> Option<[u8; 16]> {
    use std::arch::x86_64::*;

    // Per 16 digits: the values, and whether all are digits.
    let values = |x: __m128i| {
        let digit = _mm_sub_epi8(x, _mm_set1_epi8(b'0' as i8));
        let letter = _mm_sub_epi8(x, _mm_set1_epi8(b'a' as i8));
        let is_digit = _mm_cmpeq_epi8(_mm_min_epu8(digit, _mm_set1_epi8(9)), digit);
        let is_letter = _mm_cmpeq_epi8(_mm_min_epu8(letter, _mm_set1_epi8(5)), letter);
        let value = _mm_or_si128(
            _mm_and_si128(is_digit, digit),
            _mm_and_si128(is_letter, _mm_add_epi8(letter, _mm_set1_epi8(10))),
        );
        let valid = _mm_movemask_epi8(_mm_or_si128(is_digit, is_letter)) == 0xffff;
        // Each 16-bit lane holds a pair (first digit low): first << 4 | second.
        let high = _mm_slli_epi16(_mm_and_si128(value, _mm_set1_epi16(0x00ff)), 4);
        (_mm_or_si128(high, _mm_srli_epi16(value, 8)), valid)
    };
    let ((first, first_valid), (second, second_valid)) =
        (values(load16(text, 0)), values(load16(text, 16)));
    if !(first_valid && second_valid) {
        return None;
    }
    Some(store16(_mm_packus_epi16(first, second)))
}

/// `read_hex` eight digits at a time, in a word.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn read_hex_words(text: &[u8; 32]) -> Option<[u8; 16]> {
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
    fn a_token_ref_takes_what_parse_takes_and_keeps_it_in_place() {
        for len in [0, 1, 39, 40, 41, 256, 257] {
            let bytes = vec![b'k'; len];
            let in_place = TokenRef::check(&bytes);
            assert_eq!(
                in_place.as_ref().err(),
                Token::parse(&bytes).as_ref().err(),
                "length {len}"
            );
            if let Ok(in_place) = in_place {
                assert!(std::ptr::eq(in_place.as_bytes(), &bytes[..]), "not copied");
                assert_eq!(in_place.to_token(), Token::parse(&bytes).unwrap());
                let owned = in_place.to_token();
                assert_eq!(TokenRef::from(&owned), in_place);
            }
        }
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

    proptest::proptest! {
        /// The 16-byte speller agrees with the plain one, and reads back to its bytes.
        #[test]
        fn spelling_16_bytes_at_once_agrees_with_the_table(bytes in proptest::array::uniform16(0u8..)) {
            let mut plain = [0u8; 32];
            spell_hex(&bytes, &mut plain);
            proptest::prop_assert_eq!(spell_hex16(&bytes), plain);
            proptest::prop_assert_eq!(read_hex(&plain), Some(bytes));
        }
    }

    #[test]
    fn hex_spells_every_nibble() {
        let every: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
        assert_eq!(&spell_hex16(&every), b"00112233445566778899aabbccddeeff");
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

    /// The SSE2 and word readers agree on every byte value at every position, and with the
    /// digit-by-digit reading.
    #[test]
    fn both_hex_readers_read_digit_by_digit() {
        let base = *b"0123456789abcdeffedcba9876543210";
        for at in 0..32 {
            for c in 0..=255u8 {
                let mut text = base;
                text[at] = c;
                let slow: Option<Vec<u8>> = text
                    .chunks_exact(2)
                    .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
                    .collect();
                assert_eq!(read_hex_words(&text).map(|b| b.to_vec()), slow, "{text:?}");
                assert_eq!(read_hex(&text).map(|b| b.to_vec()), slow, "{text:?}");
            }
        }
        // Every digit value in every position.
        for shift in 0..16u8 {
            let mut text = [0u8; 32];
            for (i, c) in text.iter_mut().enumerate() {
                *c = b"0123456789abcdef"[(i + usize::from(shift)) % 16];
            }
            let slow: Vec<u8> = text
                .chunks_exact(2)
                .map(|pair| (digit(pair[0]).unwrap() << 4) | digit(pair[1]).unwrap())
                .collect();
            assert_eq!(read_hex(&text).map(|b| b.to_vec()), Some(slow));
        }
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
