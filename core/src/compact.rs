//! A token and a fence in 24 bytes: the compact storage behind every lock value (`unsafe`, as
//! are the lock value's pointer and the SSE2 hex calls in `token.rs`).
//!
//! The token is kept in the form that fits: 32 lowercase hex characters (the server's own
//! tokens, hex digests) or a lowercase UUID as their 16 bytes, a token of up to 15 bytes
//! inline, anything else on the heap. Which form is recorded in the two top bits of the
//! fence word; fences stay below 2^62.

use std::mem::ManuallyDrop;

use crate::error::{LockError, LockResult};
use crate::fence::MAX_FENCE;
use crate::token::{read_hex, spell_hex16, TokenRef};

pub struct CompactHold {
    fence_and_form: u64,
    token: Slot,
}

union Slot {
    inline: [u8; 16],
    heap: ManuallyDrop<Box<[u8]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `inline[..inline[15]]`.
    Short = 0,
    /// 32 lowercase hex characters, stored as 16 bytes.
    Hex = 1,
    /// A lowercase UUID, `8-4-4-4-12` hex digits, stored as 16 bytes.
    Uuid = 2,
    Heap = 3,
}

const FORM_SHIFT: u32 = 62;
const FENCE_MASK: u64 = (1 << FORM_SHIFT) - 1;
const SHORT_MAX: usize = 15;
/// The longest token an inline form spells out (a UUID).
pub const INLINE_TEXT_MAX: usize = 36;
const UUID_DASHES: [usize; 4] = [8, 13, 18, 23];

impl CompactHold {
    pub fn new<'t>(token: impl Into<TokenRef<'t>>, fence: u64) -> LockResult<Self> {
        if fence > MAX_FENCE {
            return Err(LockError::FenceExhausted);
        }
        let bytes = token.into().as_bytes();
        let (form, slot) = if bytes.len() <= SHORT_MAX {
            let mut inline = [0u8; 16];
            inline[..bytes.len()].copy_from_slice(bytes);
            inline[15] = bytes.len() as u8;
            (Form::Short, Slot { inline })
        } else if let Some(inline) = hex_form(bytes) {
            (Form::Hex, Slot { inline })
        } else if let Some(inline) = uuid_form(bytes) {
            (Form::Uuid, Slot { inline })
        } else {
            let heap = ManuallyDrop::new(bytes.to_vec().into_boxed_slice());
            (Form::Heap, Slot { heap })
        };
        Ok(Self {
            fence_and_form: fence | ((form as u64) << FORM_SHIFT),
            token: slot,
        })
    }

    pub fn fence(&self) -> u64 {
        self.fence_and_form & FENCE_MASK
    }

    fn form(&self) -> Form {
        match self.fence_and_form >> FORM_SHIFT {
            0 => Form::Short,
            1 => Form::Hex,
            2 => Form::Uuid,
            _ => Form::Heap,
        }
    }

    /// The token as the owner gave it, spelled into `buf` when it is stored compactly.
    pub fn token<'a>(&'a self, buf: &'a mut [u8; INLINE_TEXT_MAX]) -> &'a [u8] {
        // SAFETY: the form says which field of the union was written.
        match self.form() {
            Form::Short => {
                let inline = unsafe { &self.token.inline };
                &inline[..usize::from(inline[15]).min(SHORT_MAX)]
            }
            Form::Hex => {
                buf[..32].copy_from_slice(&spell_hex16(unsafe { &self.token.inline }));
                &buf[..32]
            }
            Form::Uuid => {
                let hex = spell_hex16(unsafe { &self.token.inline });
                let mut from = 0;
                for (at, out) in buf.iter_mut().enumerate() {
                    if UUID_DASHES.contains(&at) {
                        *out = b'-';
                    } else {
                        *out = hex[from];
                        from += 1;
                    }
                }
                &buf[..]
            }
            Form::Heap => unsafe { &self.token.heap },
        }
    }

    pub fn has_token<'t>(&self, token: impl Into<TokenRef<'t>>) -> bool {
        let given = token.into().as_bytes();
        match self.form() {
            // Compared as spelled, without the buffer and slice compare of `token`.
            Form::Hex => <&[u8; 32]>::try_from(given)
                // SAFETY: the form says the inline field was written.
                .is_ok_and(|given| *given == spell_hex16(unsafe { &self.token.inline })),
            _ => {
                let mut buf = [0u8; INLINE_TEXT_MAX];
                self.token(&mut buf) == given
            }
        }
    }

    /// Heap bytes owned beyond the hold itself.
    pub fn heap_bytes(&self) -> usize {
        match self.form() {
            // SAFETY: the form says the heap field was written.
            Form::Heap => unsafe { self.token.heap.len() },
            _ => 0,
        }
    }

    /// Active defragmentation of a heap token: `moved` gets its bytes' address and returns
    /// where it copied them (having freed the old ones), or null if it left them in place, as
    /// the server's `RedisModule_DefragAlloc` does.
    pub fn defrag_token(&mut self, moved: impl FnOnce(*mut u8) -> *mut u8) {
        if self.form() != Form::Heap {
            return;
        }
        // SAFETY: the form says the heap field was written.
        let heap = unsafe { &mut self.token.heap };
        let len = heap.len();
        let new = moved(heap.as_mut_ptr());
        if !new.is_null() {
            // SAFETY: `new` holds the same `len` bytes in an allocation of the same allocator;
            // the old box was freed by `moved`, so it is overwritten without being dropped.
            let bytes = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(new, len)) };
            self.token.heap = ManuallyDrop::new(bytes);
        }
    }
}

impl Drop for CompactHold {
    fn drop(&mut self) {
        if self.form() == Form::Heap {
            // SAFETY: the heap field was written, and is dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.token.heap) };
        }
    }
}

impl PartialEq for CompactHold {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = ([0u8; INLINE_TEXT_MAX], [0u8; INLINE_TEXT_MAX]);
        self.fence() == other.fence() && self.token(&mut a) == other.token(&mut b)
    }
}

impl Eq for CompactHold {}

/// 32 lowercase hex digits as their 16 bytes.
fn hex_form(text: &[u8]) -> Option<[u8; 16]> {
    read_hex(text.try_into().ok()?)
}

/// A lowercase UUID (`8-4-4-4-12` hex digits) as its 16 bytes.
fn uuid_form(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != INLINE_TEXT_MAX || UUID_DASHES.iter().any(|&at| text[at] != b'-') {
        return None;
    }
    // Any dash elsewhere leaves a 0 byte among the digits, which is not hex.
    let mut digits = [0u8; 32];
    for (digit, &b) in digits.iter_mut().zip(text.iter().filter(|&&b| b != b'-')) {
        *digit = b;
    }
    hex_form(&digits)
}

const _: () = assert!(std::mem::size_of::<CompactHold>() == 24);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    fn hold(bytes: &[u8]) -> CompactHold {
        CompactHold::new(&Token::parse(bytes).unwrap(), 9).unwrap()
    }

    fn stored_token(hold: &CompactHold) -> Vec<u8> {
        let mut buf = [0u8; INLINE_TEXT_MAX];
        hold.token(&mut buf).to_vec()
    }

    #[test]
    fn every_token_form_gives_back_the_exact_bytes() {
        let long = vec![b'x'; 256];
        let cases: Vec<&[u8]> = vec![
            b"a",
            b"fifteen-bytes!!",
            b"sixteen-bytes!!!",
            b"0123456789abcdef0123456789abcdef",
            b"0123456789ABCDEF0123456789abcdef", // upper case: not the hex form
            b"0123456789abcdef0123456789abcdeg",
            b"123e4567-e89b-12d3-a456-426614174000",
            b"123e4567-e89b-12d3-a456-42661417400g",
            b"123e4567ae89b-12d3-a456-426614174000",
            b"123e4567-e89b-12d3-a456-42661417-000", // a fifth dash: not the UUID form
            b"\x00\xff\x00",
            &long,
        ];
        for bytes in cases {
            let h = hold(bytes);
            assert_eq!(
                stored_token(&h),
                bytes,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(h.fence(), 9);
            assert!(h.has_token(&Token::parse(bytes).unwrap()));
            assert!(hold(bytes) == h);
        }
    }

    proptest::proptest! {
        /// A hold owns exactly the token it spells back, whatever its form: lowercase hex and
        /// UUIDs (the compact forms), the same in upper case, and any bytes; the token given is
        /// the stored one, the stored one with one byte changed, or another.
        #[test]
        fn a_hold_has_exactly_the_token_it_spells(
            stored in "[0-9a-f]{32}|[0-9a-fA-F]{32}|[0-9a-f-]{36}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[\\x00-\\x7f]{1,40}",
            other in "[0-9a-f]{32}|[\\x00-\\x7f]{1,40}",
            (how, at, byte) in (0..3u8, 0..40usize, proptest::num::u8::ANY),
        ) {
            let h = hold(stored.as_bytes());
            let mut given = stored.clone().into_bytes();
            match how {
                0 => {}
                1 => { let at = at % given.len(); given[at] = byte; }
                _ => given = other.into_bytes(),
            }
            let given = Token::parse(&given).unwrap();
            proptest::prop_assert_eq!(
                h.has_token(&given),
                stored_token(&h) == given.as_bytes()
            );
            proptest::prop_assert!(h.has_token(&Token::parse(stored.as_bytes()).unwrap()));
        }
    }

    #[test]
    fn a_hex_hold_is_not_held_by_its_token_in_upper_case_or_one_digit_off() {
        let h = hold(b"0123456789abcdef0123456789abcdef");
        for other in [
            &b"0123456789ABCDEF0123456789abcdef"[..],
            b"0123456789abcdef0123456789abcdee",
            b"0123456789abcdef0123456789abcde",
            b"0123456789abcdef0123456789abcdef0",
        ] {
            assert!(!h.has_token(&Token::parse(other).unwrap()));
        }
    }

    #[test]
    fn usual_tokens_need_no_heap() {
        for bytes in [
            &b"0123456789abcdef0123456789abcdef"[..],
            b"123e4567-e89b-12d3-a456-426614174000",
            b"worker-7",
        ] {
            assert_eq!(hold(bytes).heap_bytes(), 0);
        }
        assert_eq!(hold(&[b'x'; 40]).heap_bytes(), 40);
        // UUID-shaped but with a fifth dash: kept as given, on the heap.
        assert_eq!(
            hold(b"123e4567-e89b-12d3-a456-42661417-000").heap_bytes(),
            36
        );
        let generated = Token::generate().unwrap();
        assert_eq!(CompactHold::new(&generated, 9).unwrap().heap_bytes(), 0);
    }

    #[test]
    fn a_defragmented_heap_token_keeps_its_bytes() {
        let bytes = [b'x'; 40];
        let mut h = hold(&bytes);
        let mut old_address = std::ptr::null_mut();
        h.defrag_token(|old| {
            old_address = old;
            // As DefragAlloc does: copy to a new allocation, free the old one.
            let old = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(old, 40)) };
            let new = old.clone();
            drop(old);
            Box::into_raw(new).cast::<u8>()
        });
        assert!(!old_address.is_null());
        assert_eq!(stored_token(&h), bytes);
        h.defrag_token(|_| std::ptr::null_mut());
        assert_eq!(stored_token(&h), bytes, "left in place");
        let mut short = hold(b"a");
        short.defrag_token(|_| panic!("an inline token has nothing to move"));
        assert_eq!(stored_token(&short), b"a");
    }

    #[test]
    fn fences_above_the_limit_are_refused_not_mangled() {
        let t = Token::parse(b"a").unwrap();
        assert_eq!(CompactHold::new(&t, MAX_FENCE).unwrap().fence(), MAX_FENCE);
        assert_eq!(
            CompactHold::new(&t, MAX_FENCE + 1).err(),
            Some(LockError::FenceExhausted)
        );
    }
}
