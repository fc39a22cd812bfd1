//! Effects: what a primary sends its replicas and writes to its AOF instead of the command a
//! client typed (which would draw a new token and read the replica's clock). Each effect has
//! one form here, built by the module in one place for both the replication stream and AOF
//! rewrites; the parsers read every form an older server ever wrote.
//!
//! Forms written so far (all still read):
//! - `LOCK.APPLY key token deadline fence` (since 0.1): the lock as stored, with the primary's
//!   own token, absolute deadline (Unix ms) and fence.
//! - `DEL key` (since 0.1): the lock was freed (released, or a grant taken back).
//! - `LOCK.CLOCK fence` (since 0.1): the fence clock, written when the server forks, so a
//!   rewritten AOF without the RDB preamble keeps it.
//! - `LOCK.APPLY key token deadline fence SHARED` and `... LIMIT n` (since 0.2): one shared
//!   holder as stored, added or replaced by token.
//! - `LOCK.DROP key token` (since 0.2): one shared holder left (released, expired, taken back);
//!   the key goes with the last.
//! - Any `LOCK.APPLY` form followed by `META label` (since 0.3): the hold with its label.
//! - `LOCK.APPLY key deadline:fence:token [SHARED | LIMIT n] [META label]` (since 0.4): the
//!   same holder as one argument (`HoldText`), which every `LOCK.APPLY` now sends. The server
//!   makes, sends and frees a string for each argument of an effect, and the two arguments
//!   fewer saved 2.5% to 11% of a grant's or a renewal's instructions, depending on the
//!   server. The older form's second argument is a number, never an option word, which tells
//!   the two apart.

use std::ffi::CStr;

use crate::compact::INLINE_TEXT_MAX;
use crate::error::{shown, LockError, LockResult};
use crate::lock::Lock;
use crate::meta::Meta;
use crate::request::parse_i64;
use crate::token::Token;
use crate::value::Want;

pub const APPLY_COMMAND: &CStr = c"LOCK.APPLY";
pub const DROP_COMMAND: &CStr = c"LOCK.DROP";
pub const CLOCK_COMMAND: &CStr = c"LOCK.CLOCK";
pub const RELEASE_COMMAND: &CStr = c"DEL";

/// One effect, ready to be sent: the key, if any, is the module's to add.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    /// `LOCK.APPLY key token deadline fence [META label]`.
    Apply {
        token: &'a [u8],
        deadline_ms: i64,
        fence: i64,
        meta: Option<&'a [u8]>,
    },
    /// `LOCK.APPLY key token deadline fence SHARED` (limit None) or `... LIMIT n`, then
    /// `[META label]`.
    Share {
        token: &'a [u8],
        deadline_ms: i64,
        fence: i64,
        limit: Option<i64>,
        meta: Option<&'a [u8]>,
    },
    /// `DEL key`.
    Release,
    /// `LOCK.DROP key token`.
    DropHolder { token: &'a [u8] },
    /// `LOCK.CLOCK fence`.
    Clock { fence: i64 },
}

/// Whether `token` spells the token `lock` stores (for the debug checks of `apply_as`).
fn is_own_token(lock: &Lock, token: &[u8]) -> bool {
    let mut buf = [0u8; INLINE_TEXT_MAX];
    lock.token(&mut buf) == token
}

impl<'a> Effect<'a> {
    /// The effect that recreates `lock` with its label exactly; `buf` spells a compactly
    /// stored token.
    pub fn apply(
        lock: &'a Lock,
        meta: Option<&'a Meta>,
        buf: &'a mut [u8; INLINE_TEXT_MAX],
    ) -> Self {
        Self::apply_as(lock, lock.token(buf), meta)
    }

    /// `apply`, with the lock's own token spelled by the caller: a grant or a renewal has it
    /// at hand, and spelling it again from the compact form would cost the hot paths time.
    pub fn apply_as(lock: &Lock, token: &'a [u8], meta: Option<&'a Meta>) -> Self {
        debug_assert!(is_own_token(lock, token));
        Effect::Apply {
            deadline_ms: lock.deadline_ms,
            // Below 2^62 by construction of `Lock`.
            fence: lock.fence() as i64,
            token,
            meta: meta.map(Meta::as_bytes),
        }
    }

    /// The effect that adds or replaces the shared `holder` (with its label) of a lock with
    /// `limit`.
    pub fn share(
        holder: &'a Lock,
        limit: Option<u32>,
        meta: Option<&'a Meta>,
        buf: &'a mut [u8; INLINE_TEXT_MAX],
    ) -> Self {
        Self::share_as(holder, holder.token(buf), limit, meta)
    }

    /// `share`, with the holder's own token spelled by the caller (see `apply_as`).
    pub fn share_as(
        holder: &Lock,
        token: &'a [u8],
        limit: Option<u32>,
        meta: Option<&'a Meta>,
    ) -> Self {
        debug_assert!(is_own_token(holder, token));
        Effect::Share {
            deadline_ms: holder.deadline_ms,
            fence: holder.fence() as i64,
            limit: limit.map(i64::from),
            token,
            meta: meta.map(Meta::as_bytes),
        }
    }

    /// The fence clock at `last`.
    pub fn clock(last: u64) -> Self {
        Effect::Clock {
            fence: i64::try_from(last).unwrap_or(i64::MAX),
        }
    }

    pub fn command(&self) -> &'static CStr {
        match self {
            Effect::Apply { .. } | Effect::Share { .. } => APPLY_COMMAND,
            Effect::Release => RELEASE_COMMAND,
            Effect::DropHolder { .. } => DROP_COMMAND,
            Effect::Clock { .. } => CLOCK_COMMAND,
        }
    }
}

/// Room for a holder argument with a 32-digit or UUID token (and any up to 54 bytes) on the
/// stack; a longer one is spelled on the heap.
const INLINE_HOLD: usize = 96;

/// A holder as LOCK.APPLY's one holder argument spells it: `deadline:fence:token`, the
/// numbers in decimal, the token last and as given (it may hold colons itself).
pub enum HoldText {
    Inline { buf: [u8; INLINE_HOLD], len: usize },
    Heap(Vec<u8>),
}

impl HoldText {
    #[inline(always)]
    pub fn new(deadline_ms: i64, fence: i64, token: &[u8]) -> Self {
        let (mut deadline, mut fence_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        let parts = [
            deadline.format(deadline_ms).as_bytes(),
            b":",
            fence_text.format(fence).as_bytes(),
            b":",
            token,
        ];
        if parts.iter().map(|part| part.len()).sum::<usize>() > INLINE_HOLD {
            return HoldText::Heap(parts.concat());
        }
        let (mut buf, mut len) = ([0; INLINE_HOLD], 0);
        for part in parts {
            // Always some: the parts fit, as just counted.
            if let Some(to) = buf.get_mut(len..len + part.len()) {
                to.copy_from_slice(part);
                len += part.len();
            }
        }
        HoldText::Inline { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HoldText::Inline { buf, len } => buf.get(..*len).unwrap_or(buf),
            HoldText::Heap(text) => text,
        }
    }
}

/// `deadline:fence:token` back into its parts.
fn parse_hold(hold: &[u8]) -> LockResult<(Token, i64, u64)> {
    let mut parts = hold.splitn(3, |&b| b == b':');
    let (Some(deadline), Some(fence), Some(token)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(LockError::BadHold(shown(hold)));
    };
    parse_holder(token, deadline, fence)
}

/// A holder's token, deadline and fence, however the effect's form laid them out.
fn parse_holder(token: &[u8], deadline: &[u8], fence: &[u8]) -> LockResult<(Token, i64, u64)> {
    Ok((
        Token::parse(token)?,
        effect_number("deadline", deadline)?,
        effect_number("fence", fence)?.unsigned_abs(),
    ))
}

/// Whether `word` is one of LOCK.APPLY's option words (after the holder in every form).
fn is_option_word(word: &[u8]) -> bool {
    [&b"SHARED"[..], b"LIMIT", b"META"]
        .iter()
        .any(|option| word.eq_ignore_ascii_case(option))
}

/// A lock as an APPLY effect carries it, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    pub token: Token,
    pub deadline_ms: i64,
    pub fence: u64,
    /// Exclusive, or a shared holder and the lock's limit.
    pub want: Want,
    pub meta: Option<Meta>,
}

impl Applied {
    pub fn into_lock(self) -> LockResult<Lock> {
        Lock::new(&self.token, self.deadline_ms, self.fence)
    }
}

/// The arguments of LOCK.APPLY after the key, in any form ever written.
pub fn parse_apply(args: &[&[u8]]) -> LockResult<Applied> {
    enum Holder<'b> {
        /// Since 0.4: `deadline:fence:token`.
        One(&'b [u8]),
        /// Before: `token deadline fence`.
        Three(&'b [u8], &'b [u8], &'b [u8]),
    }
    let (holder, kind) = match args {
        [hold, kind @ ..] if kind.first().is_none_or(|word| is_option_word(word)) => {
            (Holder::One(hold), kind)
        }
        [token, deadline, fence, kind @ ..] => (Holder::Three(token, deadline, fence), kind),
        _ => return Err(LockError::WrongArity("lock.apply")),
    };
    let (want, label) = match kind {
        [shared, label @ ..] if shared.eq_ignore_ascii_case(b"SHARED") => {
            (Want::Shared { limit: None }, label)
        }
        [limit, n, label @ ..] if limit.eq_ignore_ascii_case(b"LIMIT") => {
            let limit = u32::try_from(effect_number("limit", n)?)
                .map_err(|_| LockError::LimitInvalid(shown(n)))?;
            (Want::Shared { limit: Some(limit) }, label)
        }
        label => (Want::Exclusive, label),
    };
    let meta = match label {
        [] => None,
        [meta, value] if meta.eq_ignore_ascii_case(b"META") => Some(Meta::parse(value)?),
        _ => return Err(LockError::WrongArity("lock.apply")),
    };
    let (token, deadline_ms, fence) = match holder {
        Holder::One(hold) => parse_hold(hold)?,
        Holder::Three(token, deadline, fence) => parse_holder(token, deadline, fence)?,
    };
    Ok(Applied {
        token,
        deadline_ms,
        fence,
        want,
        meta,
    })
}

/// LOCK.DROP's one argument after the key: the holder's token.
pub fn parse_drop(args: &[&[u8]]) -> LockResult<Token> {
    let [token] = args else {
        return Err(LockError::WrongArity("lock.drop"));
    };
    Token::parse(token)
}

/// LOCK.CLOCK's one argument: the fence the clock must reach.
pub fn parse_clock(args: &[&[u8]]) -> LockResult<u64> {
    let [fence] = args else {
        return Err(LockError::WrongArity("lock.clock"));
    };
    Ok(effect_number("fence", fence)?.unsigned_abs())
}

/// A number in an effect command: whole, 0 or more.
fn effect_number(name: &'static str, bytes: &[u8]) -> LockResult<i64> {
    parse_i64(bytes)
        .filter(|n| *n >= 0)
        .ok_or_else(|| LockError::BadEffectArgument {
            name,
            value: shown(bytes),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::MAX_TOKEN_LEN;

    #[test]
    fn apply_reads_absolute_values() {
        let r = parse_apply(&[b"tok", b"1700000000000", b"42"]).unwrap();
        assert_eq!(r.deadline_ms, 1_700_000_000_000);
        assert_eq!(r.fence, 42);
        assert_eq!(r.token.as_bytes(), b"tok");
        assert!(parse_apply(&[b"tok", b"-1", b"42"]).is_err());
        assert!(parse_apply(&[b"tok", b"1", b"x"]).is_err());
        assert_eq!(
            parse_apply(&[b"tok", b"1"]),
            Err(LockError::WrongArity("lock.apply"))
        );
    }

    #[test]
    fn a_lock_goes_out_and_comes_back_the_same() {
        let token = Token::parse(b"123e4567-e89b-12d3-a456-426614174000").unwrap();
        let lock = Lock::new(&token, 1_700_000_000_000, 42).unwrap();
        let mut buf = [0u8; INLINE_TEXT_MAX];
        let effect = Effect::apply(&lock, None, &mut buf);
        assert_eq!(effect.command(), c"LOCK.APPLY");
        let Effect::Apply {
            token,
            deadline_ms,
            fence,
            meta: None,
        } = effect
        else {
            panic!("{effect:?}");
        };
        let (deadline, fence) = (deadline_ms.to_string(), fence.to_string());
        let back = parse_apply(&[token, deadline.as_bytes(), fence.as_bytes()]).unwrap();
        assert_eq!(back.want, Want::Exclusive);
        assert_eq!(back.into_lock().unwrap(), lock);
    }

    #[test]
    fn a_shared_holder_goes_out_with_its_limit() {
        let lock = Lock::new(&Token::parse(b"r1").unwrap(), 5_000, 42).unwrap();
        let mut buf = [0u8; INLINE_TEXT_MAX];
        let effect = Effect::share(&lock, Some(3), None, &mut buf);
        assert_eq!(effect.command(), c"LOCK.APPLY");
        assert!(matches!(
            effect,
            Effect::Share {
                limit: Some(3),
                fence: 42,
                ..
            }
        ));
        let r = parse_apply(&[b"r1", b"5000", b"42", b"LIMIT", b"3"]).unwrap();
        assert_eq!(r.want, Want::Shared { limit: Some(3) });
        let r = parse_apply(&[b"r1", b"5000", b"42", b"SHARED"]).unwrap();
        assert_eq!(r.want, Want::Shared { limit: None });
        assert!(parse_apply(&[b"r1", b"5000", b"42", b"LIMIT"]).is_err());
        assert!(parse_apply(&[b"r1", b"5000", b"42", b"LIMIT", b"-1"]).is_err());
        assert!(parse_apply(&[b"r1", b"5000", b"42", b"OTHER"]).is_err());
        assert_eq!(parse_drop(&[b"r1"]).unwrap().as_bytes(), b"r1");
        assert_eq!(parse_drop(&[]), Err(LockError::WrongArity("lock.drop")));
        assert_eq!(Effect::DropHolder { token: b"r1" }.command(), c"LOCK.DROP");
    }

    #[test]
    fn a_label_follows_any_form() {
        let meta = Meta::parse(b"10.0.0.7:80").unwrap();
        let lock = Lock::new(&Token::parse(b"r1").unwrap(), 5_000, 42).unwrap();
        let mut buf = [0u8; INLINE_TEXT_MAX];
        assert!(matches!(
            Effect::apply(&lock, Some(&meta), &mut buf),
            Effect::Apply {
                meta: Some(b"10.0.0.7:80"),
                ..
            }
        ));
        let mut buf = [0u8; INLINE_TEXT_MAX];
        assert!(matches!(
            Effect::share(&lock, None, Some(&meta), &mut buf),
            Effect::Share {
                meta: Some(b"10.0.0.7:80"),
                limit: None,
                ..
            }
        ));
        for (args, want) in [
            (
                &[&b"r1"[..], b"5", b"4", b"META", b"m"][..],
                Want::Exclusive,
            ),
            (
                &[b"r1", b"5", b"4", b"SHARED", b"meta", b"m"],
                Want::Shared { limit: None },
            ),
            (
                &[b"r1", b"5", b"4", b"LIMIT", b"2", b"META", b"m"],
                Want::Shared { limit: Some(2) },
            ),
        ] {
            let r = parse_apply(args).unwrap();
            assert_eq!((r.want, r.meta.unwrap().as_bytes()), (want, &b"m"[..]));
        }
        let empty = parse_apply(&[b"r1", b"5", b"4", b"META", b""]).unwrap();
        assert_eq!(empty.meta.unwrap().as_bytes(), b"");
        for bad in [
            &[&b"r1"[..], b"5", b"4", b"META"][..],
            &[b"r1", b"5", b"4", b"META", b"m", b"x"],
            &[b"r1", b"5", b"4", b"LABEL", b"m"],
        ] {
            assert!(parse_apply(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_holder_goes_as_one_argument_and_either_form_is_read() {
        let hold = HoldText::new(1_700_000_000_000, 42, b"a:b");
        assert_eq!(hold.as_bytes(), b"1700000000000:42:a:b");
        // The longest on the stack, and one byte more on the heap, spelled alike.
        for extra in [0, 1] {
            let token = vec![b'x'; INLINE_HOLD - "1:2:".len() + extra];
            let hold = HoldText::new(1, 2, &token);
            assert_eq!(matches!(hold, HoldText::Heap(_)), extra == 1);
            assert_eq!(hold.as_bytes(), [&b"1:2:"[..], &token].concat());
        }
        let longest = [b'x'; MAX_TOKEN_LEN];
        let back = parse_apply(&[HoldText::new(7, 8, &longest).as_bytes()]).unwrap();
        assert_eq!(back.token.as_bytes(), &longest[..]);
        let lowest = HoldText::new(i64::MIN, i64::MIN, &longest);
        assert!(lowest
            .as_bytes()
            .starts_with(b"-9223372036854775808:-9223372036854775808:x"));
        let one = parse_apply(&[hold.as_bytes()]).unwrap();
        let three = parse_apply(&[b"a:b", b"1700000000000", b"42"]).unwrap();
        assert_eq!(one, three);
        assert_eq!(
            (one.token.as_bytes(), one.deadline_ms, one.fence),
            (&b"a:b"[..], 1_700_000_000_000, 42)
        );
        for (args, want) in [
            (
                &[&b"5:4:r1"[..], b"shared"][..],
                Want::Shared { limit: None },
            ),
            (
                &[b"5:4:r1", b"LIMIT", b"2"],
                Want::Shared { limit: Some(2) },
            ),
            (&[b"5:4:r1", b"META", b"m"], Want::Exclusive),
            (
                &[b"5:4:r1", b"LIMIT", b"2", b"META", b"m"],
                Want::Shared { limit: Some(2) },
            ),
        ] {
            let r = parse_apply(args).unwrap();
            assert_eq!((r.want, r.deadline_ms, r.fence), (want, 5, 4), "{args:?}");
        }
        for bad in [
            "5:4", "5", "", ":4:r1", "5::r1", "x:4:r1", "5:-4:r1", "5:4:",
        ] {
            assert!(parse_apply(&[bad.as_bytes()]).is_err(), "{bad}");
        }
        assert_eq!(
            parse_apply(&[b"5:4"]),
            Err(LockError::BadHold("5:4".into()))
        );
        assert_eq!(
            parse_apply(&[b"5:4:r1", b"LIMIT", b"99999999999"]),
            Err(LockError::LimitInvalid("99999999999".into()))
        );
        // Neither form: a holder followed by something that is no option.
        assert_eq!(
            parse_apply(&[b"5:4:r1", b"r2"]),
            Err(LockError::WrongArity("lock.apply"))
        );
    }

    #[test]
    fn clock_takes_one_number() {
        assert_eq!(parse_clock(&[b"77"]), Ok(77));
        assert_eq!(Effect::clock(77), Effect::Clock { fence: 77 });
        assert_eq!(Effect::clock(u64::MAX), Effect::Clock { fence: i64::MAX });
        assert_eq!(parse_clock(&[]), Err(LockError::WrongArity("lock.clock")));
        assert!(parse_clock(&[b"-3"]).is_err());
        assert_eq!(Effect::Release.command(), c"DEL");
    }
}
