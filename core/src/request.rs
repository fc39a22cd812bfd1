//! Typed requests parsed from the arguments that follow a command's key.
//!
//! Parsing is pure and complete before anything is read or written, so a malformed call
//! gets its error and changes nothing.

use crate::error::{shown, LockError, LockResult};
use crate::meta::Meta;
use crate::shared::MAX_LIMIT;
use crate::token::{Token, TokenRef};
use crate::value::Want;

/// LOCK.ACQUIRE key ttl [TOKEN token] [BLOCK timeout] [SHARED | LIMIT n] [EPHEMERAL]
/// [META value]
#[derive(Debug, PartialEq, Eq)]
pub struct AcquireRequest {
    pub ttl_ms: i64,
    pub token: Option<Token>,
    /// `Some(0)` waits without limit.
    pub block_ms: Option<i64>,
    pub want: Want,
    /// The hold ends when the connection that is granted it closes.
    pub ephemeral: bool,
    pub meta: Option<Meta>,
}

/// LOCK.RENEW key token ttl
#[derive(Debug, PartialEq, Eq)]
pub struct RenewRequest {
    pub token: Token,
    pub ttl_ms: i64,
}

impl AcquireRequest {
    /// `args`: `ttl` and the options. `max_ttl_ms` of 0 means no limit.
    pub fn parse(args: &[&[u8]], max_ttl_ms: i64) -> LockResult<Self> {
        let (ttl, options) = args
            .split_first()
            .ok_or(LockError::WrongArity("lock.acquire"))?;
        let ttl_ms = parse_ttl(ttl, max_ttl_ms)?;
        let mut token = None;
        let mut block_ms = None;
        let mut shared = false;
        let mut limit = None;
        let mut ephemeral = false;
        let mut meta = None;
        let mut rest = options;
        while let Some((name, after)) = rest.split_first() {
            let option = Opt::named(name).ok_or_else(|| LockError::UnknownOption(shown(name)))?;
            let repeated = match option {
                Opt::Token => token.is_some(),
                Opt::Block => block_ms.is_some(),
                Opt::Shared => shared,
                Opt::Limit => limit.is_some(),
                Opt::Ephemeral => ephemeral,
                Opt::Meta => meta.is_some(),
            };
            if repeated {
                return Err(LockError::RepeatedOption(option.name()));
            }
            rest = after;
            // The flags take no value.
            match option {
                Opt::Shared => shared = true,
                Opt::Ephemeral => ephemeral = true,
                _ => {
                    let (value, after) = rest
                        .split_first()
                        .ok_or(LockError::MissingValue(option.name()))?;
                    match option {
                        Opt::Token => token = Some(Token::parse(value)?),
                        Opt::Block => block_ms = Some(parse_timeout(value)?),
                        Opt::Limit => limit = Some(parse_limit(value)?),
                        _ => meta = Some(Meta::parse(value)?),
                    }
                    rest = after;
                }
            }
        }
        let want = match (shared, limit) {
            (true, Some(_)) => return Err(LockError::SharedWithLimit),
            (true, None) => Want::Shared { limit: None },
            (false, Some(n)) => Want::Shared { limit: Some(n) },
            (false, None) => Want::Exclusive,
        };
        Ok(Self {
            ttl_ms,
            token,
            block_ms,
            want,
            ephemeral,
            meta,
        })
    }
}

impl RenewRequest {
    /// `args`: `token ttl`.
    pub fn parse(args: &[&[u8]], max_ttl_ms: i64) -> LockResult<Self> {
        let [token, ttl] = args else {
            return Err(LockError::WrongArity("lock.renew"));
        };
        let (token, ttl_ms) = parse_renew_in_place([token, ttl], max_ttl_ms)?;
        Ok(Self {
            token: token.to_token(),
            ttl_ms,
        })
    }
}

/// The plain LOCK.ACQUIRE, `ttl [TOKEN token]` (the form nearly every call takes), as
/// `(ttl_ms, token)`: the request `AcquireRequest::parse` makes of the same arguments, read
/// without its general loop and with the token left in place (checked, not copied). None for
/// any other form and for anything `parse` refuses.
pub fn parse_plain_acquire<'a>(
    args: &[&'a [u8]],
    max_ttl_ms: i64,
) -> Option<(i64, Option<TokenRef<'a>>)> {
    let (ttl, token) = match *args {
        [ttl] => (ttl, None),
        [ttl, option, token] if option.eq_ignore_ascii_case(b"TOKEN") => (ttl, Some(token)),
        _ => return None,
    };
    let ttl_ms = parse_ttl(ttl, max_ttl_ms).ok()?;
    let token = match token {
        Some(token) => Some(TokenRef::check(token).ok()?),
        None => None,
    };
    Some((ttl_ms, token))
}

/// LOCK.RENEW's arguments, `token ttl`, as `RenewRequest::parse` reads them, with the token
/// left in place (checked, not copied).
pub fn parse_renew_in_place(args: [&[u8]; 2], max_ttl_ms: i64) -> LockResult<(TokenRef<'_>, i64)> {
    let [token, ttl] = args;
    let token = TokenRef::check(token)?;
    Ok((token, parse_ttl(ttl, max_ttl_ms)?))
}

/// LOCK.RELEASE's one argument: `token`.
pub fn parse_release(args: &[&[u8]]) -> LockResult<Token> {
    let [token] = args else {
        return Err(LockError::WrongArity("lock.release"));
    };
    Token::parse(token)
}

/// LOCK.ACQUIRE's options.
#[derive(Clone, Copy)]
enum Opt {
    Token,
    Block,
    Shared,
    Limit,
    Ephemeral,
    Meta,
}

impl Opt {
    const ALL: [Opt; 6] = [
        Opt::Token,
        Opt::Block,
        Opt::Shared,
        Opt::Limit,
        Opt::Ephemeral,
        Opt::Meta,
    ];

    /// The option `word` names, in any case.
    fn named(word: &[u8]) -> Option<Opt> {
        Self::ALL
            .into_iter()
            .find(|o| word.eq_ignore_ascii_case(o.name().as_bytes()))
    }

    fn name(self) -> &'static str {
        match self {
            Opt::Token => "TOKEN",
            Opt::Block => "BLOCK",
            Opt::Shared => "SHARED",
            Opt::Limit => "LIMIT",
            Opt::Ephemeral => "EPHEMERAL",
            Opt::Meta => "META",
        }
    }
}

fn parse_ttl(bytes: &[u8], max_ttl_ms: i64) -> LockResult<i64> {
    let ttl = parse_i64(bytes).ok_or_else(|| LockError::TtlNotInteger(shown(bytes)))?;
    if ttl < 1 {
        return Err(LockError::TtlNotPositive(ttl));
    }
    if max_ttl_ms > 0 && ttl > max_ttl_ms {
        return Err(LockError::TtlOverMax {
            ttl,
            max: max_ttl_ms,
        });
    }
    Ok(ttl)
}

fn parse_limit(bytes: &[u8]) -> LockResult<u32> {
    parse_i64(bytes)
        .filter(|n| (1..=i64::from(MAX_LIMIT)).contains(n))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| LockError::LimitInvalid(shown(bytes)))
}

fn parse_timeout(bytes: &[u8]) -> LockResult<i64> {
    parse_i64(bytes)
        .filter(|t| *t >= 0)
        .ok_or_else(|| LockError::TimeoutInvalid(shown(bytes)))
}

/// A decimal integer as Redis reads one: an optional `-`, digits, no `+`, no spaces, no
/// leading zeros, within 64 bits.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, bytes),
    };
    let well_formed = !digits.is_empty()
        && (digits[0] != b'0' || digits.len() == 1)
        && !(negative && digits == b"0");
    if !well_formed {
        return None;
    }
    // Accumulated on the negative side, which reaches i64::MIN.
    let mut n: i64 = 0;
    for &c in digits {
        let digit = i64::from(c.wrapping_sub(b'0'));
        if digit > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(digit)?;
    }
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(args: &[&str]) -> LockResult<AcquireRequest> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        AcquireRequest::parse(&args, 0)
    }

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"1500"), Some(1500));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+5",
            b" 5",
            b"5 ",
            b"05",
            b"-0",
            b"1.5",
            b"1e3",
            b"9223372036854775808",
            b"abc",
            b"\xff",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn acquire_with_only_a_ttl() {
        assert_eq!(
            acquire(&["1000"]),
            Ok(AcquireRequest {
                ttl_ms: 1000,
                token: None,
                block_ms: None,
                want: Want::Exclusive,
                ephemeral: false,
                meta: None,
            })
        );
    }

    #[test]
    fn acquire_ephemeral_with_a_label() {
        let r = acquire(&["10", "ephemeral", "META", "10.0.0.7:8080", "LIMIT", "2"]).unwrap();
        assert!(r.ephemeral);
        assert_eq!(r.meta.unwrap().as_bytes(), b"10.0.0.7:8080");
        assert_eq!(r.want, Want::Shared { limit: Some(2) });
        let r = acquire(&["10", "meta", ""]).unwrap();
        assert_eq!(r.meta.unwrap().as_bytes(), b"", "an empty label is a label");
        assert!(!r.ephemeral);
        let long = "x".repeat(1025);
        for (args, error) in [
            (
                vec!["10", "EPHEMERAL", "ephemeral"],
                LockError::RepeatedOption("EPHEMERAL"),
            ),
            (
                vec!["10", "META", "a", "META", "b"],
                LockError::RepeatedOption("META"),
            ),
            (vec!["10", "META"], LockError::MissingValue("META")),
            (
                vec!["10", "META", long.as_str()],
                LockError::MetaTooLong(1025),
            ),
            (
                vec!["10", "EPHEMERAL", "1"],
                LockError::UnknownOption("1".into()),
            ),
        ] {
            assert_eq!(acquire(&args), Err(error), "{args:?}");
        }
    }

    #[test]
    fn acquire_shared_or_with_a_limit() {
        let r = acquire(&["10", "shared", "TOKEN", "me"]).unwrap();
        assert_eq!(r.want, Want::Shared { limit: None });
        let r = acquire(&["10", "LIMIT", "3", "BLOCK", "0"]).unwrap();
        assert_eq!(r.want, Want::Shared { limit: Some(3) });
        assert_eq!(
            acquire(&["10", "LiMiT", "1000000"]).unwrap().want,
            Want::Shared {
                limit: Some(1_000_000)
            }
        );
        for bad in ["0", "-1", "1000001", "x", "1.5", "", "4294967297"] {
            assert_eq!(
                acquire(&["10", "LIMIT", bad]),
                Err(LockError::LimitInvalid(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            acquire(&["10", "SHARED", "LIMIT", "2"]),
            Err(LockError::SharedWithLimit)
        );
        assert_eq!(
            acquire(&["10", "LIMIT", "2", "SHARED"]),
            Err(LockError::SharedWithLimit)
        );
        assert_eq!(
            acquire(&["10", "SHARED", "shared"]),
            Err(LockError::RepeatedOption("SHARED"))
        );
        assert_eq!(
            acquire(&["10", "LIMIT", "2", "LIMIT", "2"]),
            Err(LockError::RepeatedOption("LIMIT"))
        );
        assert_eq!(
            acquire(&["10", "LIMIT"]),
            Err(LockError::MissingValue("LIMIT"))
        );
    }

    #[test]
    fn acquire_options_in_any_order_and_case() {
        let r = acquire(&["10", "block", "0", "ToKeN", "me"]).unwrap();
        assert_eq!(r.block_ms, Some(0));
        assert_eq!(r.token.unwrap().as_bytes(), b"me");
        let r = acquire(&["10", "TOKEN", "me", "BLOCK", "250"]).unwrap();
        assert_eq!(r.block_ms, Some(250));
    }

    #[test]
    fn acquire_rejects_bad_ttls() {
        assert_eq!(acquire(&["0"]), Err(LockError::TtlNotPositive(0)));
        assert_eq!(acquire(&["-5"]), Err(LockError::TtlNotPositive(-5)));
        assert_eq!(
            acquire(&["1.5"]),
            Err(LockError::TtlNotInteger("1.5".into()))
        );
        assert_eq!(acquire(&[]), Err(LockError::WrongArity("lock.acquire")));
        let args: Vec<&[u8]> = vec![b"501"];
        assert_eq!(
            AcquireRequest::parse(&args, 500),
            Err(LockError::TtlOverMax { ttl: 501, max: 500 })
        );
        assert!(AcquireRequest::parse(&[b"500"], 500).is_ok());
    }

    #[test]
    fn acquire_rejects_bad_options() {
        assert_eq!(
            acquire(&["10", "NX"]),
            Err(LockError::UnknownOption("NX".into()))
        );
        assert_eq!(
            acquire(&["10", "TOKEN", "a", "token", "b"]),
            Err(LockError::RepeatedOption("TOKEN"))
        );
        assert_eq!(
            acquire(&["10", "BLOCK", "1", "BLOCK", "1"]),
            Err(LockError::RepeatedOption("BLOCK"))
        );
        assert_eq!(
            acquire(&["10", "TOKEN"]),
            Err(LockError::MissingValue("TOKEN"))
        );
        assert_eq!(
            acquire(&["10", "BLOCK"]),
            Err(LockError::MissingValue("BLOCK"))
        );
        assert_eq!(
            acquire(&["10", "TOKEN", ""]),
            Err(LockError::TokenLength(0))
        );
        assert_eq!(
            acquire(&["10", "BLOCK", "-1"]),
            Err(LockError::TimeoutInvalid("-1".into()))
        );
        assert_eq!(
            acquire(&["10", "BLOCK", "soon"]),
            Err(LockError::TimeoutInvalid("soon".into()))
        );
    }

    #[test]
    fn renew_and_release_take_exact_arguments() {
        assert_eq!(RenewRequest::parse(&[b"t", b"100"], 0).unwrap().ttl_ms, 100);
        assert_eq!(
            RenewRequest::parse(&[b"t"], 0),
            Err(LockError::WrongArity("lock.renew"))
        );
        assert_eq!(
            RenewRequest::parse(&[b"", b"100"], 0),
            Err(LockError::TokenLength(0))
        );
        assert_eq!(
            RenewRequest::parse(&[b"t", b"0"], 0),
            Err(LockError::TtlNotPositive(0))
        );
        assert_eq!(parse_release(&[b"t"]).unwrap().as_bytes(), b"t");
        assert_eq!(
            parse_release(&[b"t", b"x"]),
            Err(LockError::WrongArity("lock.release"))
        );
        assert_eq!(
            parse_release(&[&[7u8; 257]]),
            Err(LockError::TokenLength(257))
        );
    }
}
