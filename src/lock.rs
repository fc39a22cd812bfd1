//! A lock's state and the decisions of the commands, in plain Rust.
//!
//! Times are Unix milliseconds as signed 64-bit numbers, like Redis's own expiry times.
//! A lock is held while `now < deadline`; from the deadline on it is free, whether or not
//! Redis has removed the key yet.

use std::fmt;
use std::mem::ManuallyDrop;

use crate::error::{LockError, LockResult};
use crate::fence::MAX_FENCE;
use crate::token::Token;

/// A lock as stored under its key: 32 bytes for the usual tokens, so that with the server's
/// own per-key headers a lock takes no more memory than a `SET NX PX` string lock.
///
/// The token is kept in the form that fits: 32 lowercase hex characters (the server's own
/// tokens, hex digests) or a lowercase UUID as their 16 bytes, a token of up to 15 bytes
/// inline, anything else on the heap. Which form is recorded in the two top bits of the
/// fence word; fences stay below 2^62.
pub struct Lock {
    pub deadline_ms: i64,
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

impl Lock {
    pub fn new(token: &Token, deadline_ms: i64, fence: u64) -> LockResult<Self> {
        if fence > MAX_FENCE {
            return Err(LockError::FenceExhausted);
        }
        let bytes = token.as_bytes();
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
            deadline_ms,
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
                spell_hex(unsafe { &self.token.inline }, &mut buf[..32]);
                &buf[..32]
            }
            Form::Uuid => {
                let inline = unsafe { &self.token.inline };
                let mut hex = [0u8; 32];
                spell_hex(inline, &mut hex);
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

    /// Heap bytes owned beyond the 32 of the lock itself.
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

    pub fn has_token(&self, token: &Token) -> bool {
        let mut buf = [0u8; INLINE_TEXT_MAX];
        self.token(&mut buf) == token.as_bytes()
    }
}

/// What LOCK.ACQUIRE does with the lock it finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Free (no lock, or its deadline has passed): a new grant with a new fence.
    Grant,
    /// Held by the caller's own token: an idempotent retry; new deadline, same fence.
    Retry,
    /// Held by someone else.
    Busy,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.form() == Form::Heap {
            // SAFETY: the heap field was written, and is dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.token.heap) };
        }
    }
}

impl PartialEq for Lock {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = ([0u8; INLINE_TEXT_MAX], [0u8; INLINE_TEXT_MAX]);
        self.deadline_ms == other.deadline_ms
            && self.fence() == other.fence()
            && self.token(&mut a) == other.token(&mut b)
    }
}

impl Eq for Lock {}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; INLINE_TEXT_MAX];
        f.debug_struct("Lock")
            .field("token", &String::from_utf8_lossy(self.token(&mut buf)))
            .field("deadline_ms", &self.deadline_ms)
            .field("fence", &self.fence())
            .finish()
    }
}

/// 32 lowercase hex digits as their 16 bytes.
fn hex_form(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
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

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn spell_hex(bytes: &[u8; 16], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

const _: () = assert!(std::mem::size_of::<Lock>() == 32);

impl Lock {
    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms < self.deadline_ms
    }

    /// Held, not expired, and by this token: the condition of RENEW, RELEASE and retries.
    pub fn is_held_by(&self, token: &Token, now_ms: i64) -> bool {
        self.is_live(now_ms) && self.has_token(token)
    }

    /// Milliseconds left before the deadline, 0 once it has passed.
    pub fn remaining_ms(&self, now_ms: i64) -> i64 {
        self.deadline_ms.saturating_sub(now_ms).max(0)
    }
}

pub fn decide_acquire(current: Option<&Lock>, token: Option<&Token>, now_ms: i64) -> Acquire {
    match current {
        Some(lock) if lock.is_live(now_ms) => match token {
            Some(t) if lock.has_token(t) => Acquire::Retry,
            _ => Acquire::Busy,
        },
        _ => Acquire::Grant,
    }
}

/// The live lock held by `token`, if that is what `current` is.
pub fn held_by<'a>(
    current: Option<&'a mut Lock>,
    token: &Token,
    now_ms: i64,
) -> Option<&'a mut Lock> {
    current.filter(|lock| lock.is_held_by(token, now_ms))
}

/// `now + ttl`, refused rather than wrapped when it leaves the 64-bit range.
pub fn deadline(now_ms: i64, ttl_ms: i64) -> LockResult<i64> {
    now_ms
        .checked_add(ttl_ms)
        .ok_or(LockError::TtlOverflow(ttl_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Token {
        Token::parse(s.as_bytes()).unwrap()
    }

    fn lock(owner: &str, deadline_ms: i64) -> Lock {
        Lock::new(&tok(owner), deadline_ms, 7).unwrap()
    }

    fn stored_token(lock: &Lock) -> Vec<u8> {
        let mut buf = [0u8; INLINE_TEXT_MAX];
        lock.token(&mut buf).to_vec()
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
            let l = Lock::new(&Token::parse(bytes).unwrap(), 5, 9).unwrap();
            assert_eq!(
                stored_token(&l),
                bytes,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(l.fence(), 9);
            assert!(l.has_token(&Token::parse(bytes).unwrap()));
            assert_eq!(Lock::new(&Token::parse(bytes).unwrap(), 5, 9).unwrap(), l);
        }
    }

    #[test]
    fn usual_tokens_need_no_heap() {
        for bytes in [
            &b"0123456789abcdef0123456789abcdef"[..],
            b"123e4567-e89b-12d3-a456-426614174000",
            b"worker-7",
        ] {
            let l = Lock::new(&Token::parse(bytes).unwrap(), 5, 9).unwrap();
            assert_eq!(l.heap_bytes(), 0);
        }
        let l = Lock::new(&Token::parse(&[b'x'; 40]).unwrap(), 5, 9).unwrap();
        assert_eq!(l.heap_bytes(), 40);
        // UUID-shaped but with a fifth dash: kept as given, on the heap.
        let fifth_dash = b"123e4567-e89b-12d3-a456-42661417-000";
        let l = Lock::new(&Token::parse(fifth_dash).unwrap(), 5, 9).unwrap();
        assert_eq!(l.heap_bytes(), 36);
        let generated = Token::generate().unwrap();
        assert_eq!(Lock::new(&generated, 5, 9).unwrap().heap_bytes(), 0);
    }

    #[test]
    fn a_defragmented_heap_token_keeps_its_bytes() {
        let bytes = [b'x'; 40];
        let mut l = Lock::new(&Token::parse(&bytes).unwrap(), 5, 9).unwrap();
        let mut old_address = std::ptr::null_mut();
        l.defrag_token(|old| {
            old_address = old;
            // As DefragAlloc does: copy to a new allocation, free the old one.
            let old = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(old, 40)) };
            let new = old.clone();
            drop(old);
            Box::into_raw(new).cast::<u8>()
        });
        assert!(!old_address.is_null());
        assert_eq!(stored_token(&l), bytes);
        l.defrag_token(|_| std::ptr::null_mut());
        assert_eq!(stored_token(&l), bytes, "left in place");
        let mut short = lock("a", 5);
        short.defrag_token(|_| panic!("an inline token has nothing to move"));
        assert_eq!(stored_token(&short), b"a");
    }

    #[test]
    fn fences_above_the_limit_are_refused_not_mangled() {
        assert!(Lock::new(&tok("a"), 1, MAX_FENCE).is_ok());
        assert_eq!(
            Lock::new(&tok("a"), 1, MAX_FENCE + 1).err(),
            Some(LockError::FenceExhausted)
        );
    }

    #[test]
    fn free_lock_is_granted() {
        assert_eq!(decide_acquire(None, None, 100), Acquire::Grant);
        assert_eq!(decide_acquire(None, Some(&tok("a")), 100), Acquire::Grant);
    }

    #[test]
    fn expired_lock_is_granted_to_anyone() {
        let l = lock("a", 100);
        assert_eq!(
            decide_acquire(Some(&l), Some(&tok("b")), 100),
            Acquire::Grant
        );
        assert_eq!(decide_acquire(Some(&l), None, 101), Acquire::Grant);
        // Even the old owner gets a new grant (and so a new fence), not a retry.
        assert_eq!(
            decide_acquire(Some(&l), Some(&tok("a")), 100),
            Acquire::Grant
        );
    }

    #[test]
    fn live_lock_is_a_retry_for_its_owner_and_busy_for_others() {
        let l = lock("a", 100);
        assert_eq!(
            decide_acquire(Some(&l), Some(&tok("a")), 99),
            Acquire::Retry
        );
        assert_eq!(decide_acquire(Some(&l), Some(&tok("b")), 99), Acquire::Busy);
        assert_eq!(decide_acquire(Some(&l), None, 99), Acquire::Busy);
    }

    #[test]
    fn held_by_needs_the_token_and_a_live_deadline() {
        let mut l = lock("a", 100);
        assert!(held_by(Some(&mut l), &tok("a"), 99).is_some());
        assert!(held_by(Some(&mut l), &tok("a"), 100).is_none());
        assert!(held_by(Some(&mut l), &tok("b"), 99).is_none());
        assert!(held_by(None, &tok("a"), 0).is_none());
    }

    #[test]
    fn remaining_never_goes_negative() {
        let l = lock("a", 100);
        assert_eq!(l.remaining_ms(40), 60);
        assert_eq!(l.remaining_ms(100), 0);
        assert_eq!(l.remaining_ms(500), 0);
        assert_eq!(l.remaining_ms(i64::MIN), i64::MAX);
    }

    #[test]
    fn deadline_is_checked() {
        assert_eq!(deadline(1_000, 500), Ok(1_500));
        assert_eq!(deadline(i64::MAX - 1, 1), Ok(i64::MAX));
        assert_eq!(deadline(i64::MAX - 1, 2), Err(LockError::TtlOverflow(2)));
    }
}
