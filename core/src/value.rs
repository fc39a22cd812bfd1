//! What a lock key holds, of either kind, and what LOCK.ACQUIRE does with it.
//!
//! - An **exclusive** lock is one `Lock` of 32 bytes, so it costs what it did before shared
//!   holds existed.
//!   With a label (`META`) it is a `Labeled` lock of 48 bytes instead, so that a lock
//!   without one pays nothing for the option.
//! - A **shared** lock (`SHARED`, `LIMIT n`) is a `SharedLock` of any number of holders.
//!
//! The server keeps a key's value as one pointer. The three forms share it: a `Box<Lock>`
//! as it is, a `Box<SharedLock>` with its lowest bit set, a `Box<Labeled>` with the next bit
//! set (all are 8-aligned, so those bits are free). The module converts only through
//! `into_raw`, `from_raw` and `held`.

use std::ffi::c_void;

use crate::error::{LockError, LockResult};
use crate::lock::Lock;
use crate::meta::Meta;
use crate::shared::SharedLock;
use crate::token::Token;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Exclusive,
    /// `SHARED` (limit None) or `LIMIT n`.
    Shared {
        limit: Option<u32>,
    },
}

/// A lock value, owned (to be stored, or taken back from the server).
#[derive(Debug, PartialEq, Eq)]
pub enum Value {
    Exclusive(Box<Lock>),
    Labeled(Box<Labeled>),
    Shared(Box<SharedLock>),
}

/// An exclusive lock with its label.
#[derive(Debug, PartialEq, Eq)]
pub struct Labeled {
    pub lock: Lock,
    pub meta: Meta,
}

/// A lock value as stored under a key: an exclusive lock (with its label, if it has one), or
/// a shared one.
#[derive(Debug)]
pub enum Held<'a> {
    Exclusive(&'a mut Lock, Option<&'a Meta>),
    Shared(&'a mut SharedLock),
}

const SHARED_TAG: usize = 1;
const LABELED_TAG: usize = 2;
const TAGS: usize = SHARED_TAG | LABELED_TAG;

const _: () = assert!(std::mem::align_of::<Lock>() > TAGS);
const _: () = assert!(std::mem::align_of::<Labeled>() > TAGS);
const _: () = assert!(std::mem::align_of::<SharedLock>() > TAGS);

impl Value {
    /// An exclusive lock, labeled or not.
    #[inline(always)]
    pub fn exclusive(lock: Lock, meta: Option<Meta>) -> Value {
        match meta {
            None => Value::Exclusive(Box::new(lock)),
            Some(meta) => Value::Labeled(Box::new(Labeled { lock, meta })),
        }
    }

    /// The pointer the server keeps; `from_raw` or the server's free callback takes it back.
    pub fn into_raw(self) -> *mut c_void {
        match self {
            Value::Exclusive(lock) => Box::into_raw(lock).cast(),
            Value::Labeled(labeled) => Box::into_raw(labeled).map_addr(|a| a | LABELED_TAG).cast(),
            Value::Shared(shared) => Box::into_raw(shared).map_addr(|a| a | SHARED_TAG).cast(),
        }
    }

    /// The value behind a pointer made by `into_raw`.
    ///
    /// # Safety
    /// `raw` came from `into_raw` and is taken back once.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(raw: *mut c_void) -> Value {
        let at = raw.map_addr(|a| a & !TAGS);
        match raw.addr() & TAGS {
            0 => Value::Exclusive(unsafe { Box::from_raw(at.cast()) }),
            LABELED_TAG => Value::Labeled(unsafe { Box::from_raw(at.cast()) }),
            _ => Value::Shared(unsafe { Box::from_raw(at.cast()) }),
        }
    }

    pub fn held(&mut self) -> Held<'_> {
        match self {
            Value::Exclusive(lock) => Held::Exclusive(lock, None),
            Value::Labeled(labeled) => Held::Exclusive(&mut labeled.lock, Some(&labeled.meta)),
            Value::Shared(shared) => Held::Shared(shared),
        }
    }
}

/// The address of the allocation behind a value pointer (for the server's defragmenter), and
/// how to make a value pointer again from where it moved.
pub fn allocation(raw: *mut c_void) -> (*mut c_void, impl Fn(*mut c_void) -> *mut c_void) {
    let tag = raw.addr() & TAGS;
    (raw.map_addr(|a| a & !TAGS), move |moved: *mut c_void| {
        moved.map_addr(|a| a | tag)
    })
}

/// The value a pointer made by `into_raw` points at, borrowed.
///
/// # Safety
/// `raw` is null or came from `into_raw` and is still the server's; nothing else borrows it
/// for `'a`.
#[allow(unsafe_code)]
pub unsafe fn held<'a>(raw: *mut c_void) -> Option<Held<'a>> {
    let at = raw.map_addr(|a| a & !TAGS);
    match raw.addr() & TAGS {
        0 => unsafe { at.cast::<Lock>().as_mut() }.map(|lock| Held::Exclusive(lock, None)),
        LABELED_TAG => unsafe { at.cast::<Labeled>().as_mut() }
            .map(|l| Held::Exclusive(&mut l.lock, Some(&l.meta))),
        _ => unsafe { at.cast::<SharedLock>().as_mut() }.map(Held::Shared),
    }
}

/// One live holder as LOCK.HOLDERS shows it.
#[derive(Debug)]
pub struct HolderView<'a> {
    pub lock: &'a Lock,
    pub meta: Option<&'a Meta>,
    pub shared: bool,
}

impl Held<'_> {
    /// Some holder's deadline has not passed.
    pub fn is_live(&self, now_ms: i64) -> bool {
        match self {
            Held::Exclusive(lock, _) => lock.is_live(now_ms),
            Held::Shared(shared) => shared.latest_deadline().is_some_and(|d| now_ms < d),
        }
    }

    /// The latest holder deadline: the key's expiry. None for a shared lock without holders.
    pub fn deadline(&self) -> Option<i64> {
        match self {
            Held::Exclusive(lock, _) => Some(lock.deadline_ms),
            Held::Shared(shared) => shared.latest_deadline(),
        }
    }

    /// When the lock may next have room: its holder's deadline, or a shared lock's soonest.
    pub fn next_deadline(&self) -> Option<i64> {
        match self {
            Held::Exclusive(lock, _) => Some(lock.deadline_ms),
            Held::Shared(shared) => shared.earliest_deadline(),
        }
    }

    /// Holders that must be removed at their own deadline, before the key's expiry: the lock
    /// needs a timer at `next_deadline` even when nobody waits.
    pub fn holders_expire_first(&self) -> bool {
        matches!(self, Held::Shared(shared) if shared.len() > 1)
    }

    pub fn live_holders(&self, now_ms: i64) -> usize {
        match self {
            Held::Exclusive(lock, _) => usize::from(lock.is_live(now_ms)),
            Held::Shared(shared) => shared.live(now_ms),
        }
    }

    /// The highest fence among live holders.
    pub fn fence(&self, now_ms: i64) -> Option<u64> {
        match self {
            Held::Exclusive(lock, _) => lock.is_live(now_ms).then(|| lock.fence()),
            Held::Shared(shared) => shared.max_live_fence(now_ms),
        }
    }

    /// The highest fence of any holder, live or not (a loaded value raises the fence clock to
    /// it).
    pub fn highest_fence(&self) -> u64 {
        match self {
            Held::Exclusive(lock, _) => lock.fence(),
            Held::Shared(shared) => shared.highest_fence().unwrap_or(0),
        }
    }

    /// The live holder with `token`: the condition of RENEW, RELEASE and retries.
    pub fn holder(&self, token: &Token, now_ms: i64) -> Option<&Lock> {
        let holder = match self {
            Held::Exclusive(lock, _) => Some(&**lock).filter(|l| l.has_token(token)),
            Held::Shared(shared) => shared.holder(token),
        };
        holder.filter(|h| h.is_live(now_ms))
    }

    /// The label of the live holder with `token`.
    pub fn meta(&self, token: &Token, now_ms: i64) -> Option<&Meta> {
        self.holder(token, now_ms)?;
        match self {
            Held::Exclusive(_, meta) => *meta,
            Held::Shared(shared) => shared.meta(token),
        }
    }

    /// The live holders, in grant order.
    pub fn live(&self, now_ms: i64) -> Vec<HolderView<'_>> {
        match self {
            Held::Exclusive(lock, meta) => [HolderView {
                lock,
                meta: *meta,
                shared: false,
            }]
            .into_iter()
            .filter(|h| h.lock.is_live(now_ms))
            .collect(),
            Held::Shared(shared) => shared
                .entries()
                .filter(|(lock, _)| lock.is_live(now_ms))
                .map(|(lock, meta)| HolderView {
                    lock,
                    meta,
                    shared: true,
                })
                .collect(),
        }
    }

    /// The limit of live shared holders: `Some(None)` for `SHARED`, `Some(Some(n))` for
    /// `LIMIT n`, None when no shared holder lives.
    fn shared_limit(&self, now_ms: i64) -> Option<Option<u32>> {
        match self {
            Held::Shared(shared) if shared.live(now_ms) > 0 => Some(shared.limit()),
            _ => None,
        }
    }

    /// Whether a request for `want` could be granted now, waiters aside.
    pub fn admits(&self, want: Want, now_ms: i64) -> bool {
        if !self.is_live(now_ms) {
            return true;
        }
        match (self, want) {
            (Held::Shared(shared), Want::Shared { .. }) => shared.has_room(now_ms),
            _ => false,
        }
    }
}

/// What LOCK.ACQUIRE does with the lock it finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A new grant with a new fence: a new lock, or one more shared holder.
    Grant,
    /// The caller's token holds it in the asked mode: same fence, new deadline.
    Retry,
    /// No room for the caller (or others wait first).
    Busy,
}

/// The decision on `want` with `token` for the lock `current`, while `queued` is the limit of
/// the shared requests waiting for it (see `Queues::shared_limit`) and `others_wait` says
/// whether anyone waits at all (then nobody overtakes).
pub fn decide(
    current: Option<&Held>,
    want: Want,
    token: Option<&Token>,
    now_ms: i64,
    queued: Option<Option<u32>>,
    others_wait: bool,
) -> LockResult<Acquire> {
    let holder = token.and_then(|t| current.and_then(|held| held.holder(t, now_ms)));
    if holder.is_some() {
        return match (current, want) {
            (Some(Held::Exclusive(..)), Want::Exclusive) => Ok(Acquire::Retry),
            (Some(Held::Exclusive(..)), Want::Shared { .. }) => Err(LockError::HeldExclusively),
            (Some(Held::Shared(_)), Want::Exclusive) => Err(LockError::HeldShared),
            (Some(Held::Shared(shared)), Want::Shared { limit }) => {
                check_limit(Some(shared.limit()), limit)?;
                Ok(Acquire::Retry)
            }
            (None, _) => Ok(Acquire::Grant),
        };
    }
    if let Want::Shared { limit } = want {
        check_limit(current.and_then(|held| held.shared_limit(now_ms)), limit)?;
        check_limit(queued, limit)?;
    }
    if others_wait || !current.is_none_or(|held| held.admits(want, now_ms)) {
        return Ok(Acquire::Busy);
    }
    Ok(Acquire::Grant)
}

/// A shared request's limit must be the lock's, once the lock has one.
pub fn check_limit(lock: Option<Option<u32>>, asked: Option<u32>) -> LockResult<()> {
    match lock {
        Some(limit) if limit != asked => Err(LockError::LimitMismatch(limit)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Token {
        Token::parse(s.as_bytes()).unwrap()
    }

    fn exclusive(owner: &str, deadline: i64) -> Value {
        Value::Exclusive(Box::new(Lock::new(&tok(owner), deadline, 7).unwrap()))
    }

    fn shared(limit: Option<u32>, holders: &[(&str, i64)]) -> Value {
        let mut s = SharedLock::new(limit);
        for (i, (t, deadline)) in holders.iter().enumerate() {
            s.insert(Lock::new(&tok(t), *deadline, i as u64 + 1).unwrap(), None);
        }
        Value::Shared(Box::new(s))
    }

    const SHARED: Want = Want::Shared { limit: None };
    const LIMIT2: Want = Want::Shared { limit: Some(2) };

    fn d(value: &mut Value, want: Want, token: &str, now: i64) -> LockResult<Acquire> {
        decide(
            Some(&value.held()),
            want,
            Some(&tok(token)),
            now,
            None,
            false,
        )
    }

    #[test]
    fn both_kinds_go_through_one_pointer_and_come_back() {
        let labeled = Value::exclusive(
            Lock::new(&tok("a"), 5, 7).unwrap(),
            Some(Meta::parse(b"10.0.0.7:80").unwrap()),
        );
        for value in [
            exclusive("a", 5),
            labeled,
            shared(Some(3), &[("a", 5), ("b", 6)]),
        ] {
            let expected = match &value {
                Value::Exclusive(l) => format!("{l:?} None"),
                Value::Labeled(l) => format!("{:?} {:?}", l.lock, Some(&l.meta)),
                Value::Shared(s) => format!("{s:?}"),
            };
            let raw = value.into_raw();
            let seen = match unsafe { held(raw) } {
                Some(Held::Exclusive(l, meta)) => format!("{l:?} {meta:?}"),
                Some(Held::Shared(s)) => format!("{s:?}"),
                None => String::new(),
            };
            assert_eq!(seen, expected);
            let (at, back) = allocation(raw);
            assert_eq!(back(at), raw);
            drop(unsafe { Value::from_raw(raw) });
        }
        assert!(unsafe { held(std::ptr::null_mut()) }.is_none());
    }

    #[test]
    fn an_exclusive_lock_decides_as_before() {
        let mut v = exclusive("a", 100);
        assert_eq!(d(&mut v, Want::Exclusive, "a", 99), Ok(Acquire::Retry));
        assert_eq!(d(&mut v, Want::Exclusive, "b", 99), Ok(Acquire::Busy));
        assert_eq!(d(&mut v, Want::Exclusive, "a", 100), Ok(Acquire::Grant));
        assert_eq!(d(&mut v, SHARED, "b", 99), Ok(Acquire::Busy));
        assert_eq!(d(&mut v, SHARED, "a", 99), Err(LockError::HeldExclusively));
        assert_eq!(d(&mut v, LIMIT2, "b", 100), Ok(Acquire::Grant));
        assert_eq!(
            decide(None, Want::Exclusive, None, 0, None, false),
            Ok(Acquire::Grant)
        );
    }

    #[test]
    fn shared_holders_admit_shared_requests_up_to_the_limit() {
        let mut v = shared(None, &[("a", 100), ("b", 200)]);
        assert_eq!(d(&mut v, SHARED, "c", 50), Ok(Acquire::Grant));
        assert_eq!(d(&mut v, SHARED, "a", 50), Ok(Acquire::Retry));
        assert_eq!(
            d(&mut v, Want::Exclusive, "a", 50),
            Err(LockError::HeldShared)
        );
        assert_eq!(d(&mut v, Want::Exclusive, "c", 150), Ok(Acquire::Busy));
        assert_eq!(d(&mut v, Want::Exclusive, "c", 200), Ok(Acquire::Grant));
        assert_eq!(
            d(&mut v, LIMIT2, "c", 50),
            Err(LockError::LimitMismatch(None))
        );
        let mut v = shared(Some(2), &[("a", 100), ("b", 200)]);
        assert_eq!(d(&mut v, LIMIT2, "c", 50), Ok(Acquire::Busy));
        assert_eq!(d(&mut v, LIMIT2, "c", 100), Ok(Acquire::Grant), "a expired");
        assert_eq!(
            d(&mut v, SHARED, "c", 50),
            Err(LockError::LimitMismatch(Some(2)))
        );
        assert_eq!(
            d(&mut v, SHARED, "c", 200),
            Ok(Acquire::Grant),
            "all expired"
        );
        assert_eq!(
            d(&mut v, SHARED, "a", 50),
            Err(LockError::LimitMismatch(Some(2)))
        );
    }

    #[test]
    fn waiters_come_first_and_set_the_limit_when_nobody_shares() {
        let mut v = exclusive("a", 100);
        let held = v.held();
        let got = |want, token: &str, queued, wait| {
            decide(Some(&held), want, Some(&tok(token)), 50, queued, wait)
        };
        assert_eq!(
            got(LIMIT2, "b", Some(Some(3)), true),
            Err(LockError::LimitMismatch(Some(3)))
        );
        assert_eq!(got(LIMIT2, "b", Some(Some(2)), true), Ok(Acquire::Busy));
        assert_eq!(got(Want::Exclusive, "a", None, true), Ok(Acquire::Retry));
        assert_eq!(
            decide(None, SHARED, None, 0, None, true),
            Ok(Acquire::Busy),
            "no overtaking"
        );
    }

    #[test]
    fn a_shared_lock_needs_a_timer_only_with_two_holders() {
        let mut one = shared(None, &[("a", 100)]);
        let mut two = shared(None, &[("a", 100), ("b", 50)]);
        assert!(!one.held().holders_expire_first());
        assert!(two.held().holders_expire_first());
        assert_eq!(two.held().next_deadline(), Some(50));
        assert_eq!(two.held().deadline(), Some(100));
        assert_eq!(two.held().fence(60), Some(1));
        assert_eq!(two.held().live_holders(60), 1);
        assert!(!exclusive("a", 1).held().holders_expire_first());
    }

    #[test]
    fn labels_are_found_by_token_and_listed_in_grant_order() {
        let meta = Meta::parse(b"host-1").unwrap();
        let mut v = Value::exclusive(Lock::new(&tok("a"), 100, 7).unwrap(), Some(meta.clone()));
        assert_eq!(v.held().meta(&tok("a"), 50), Some(&meta));
        assert_eq!(v.held().meta(&tok("b"), 50), None);
        assert_eq!(v.held().meta(&tok("a"), 100), None, "expired");
        let mut s = SharedLock::new(None);
        s.insert(Lock::new(&tok("b"), 300, 9).unwrap(), None);
        s.insert(Lock::new(&tok("a"), 100, 8).unwrap(), Some(meta.clone()));
        s.insert(Lock::new(&tok("c"), 50, 10).unwrap(), None);
        let mut v = Value::Shared(Box::new(s));
        let held = v.held();
        let live: Vec<(u64, Option<&Meta>, bool)> = held
            .live(60)
            .iter()
            .map(|h| (h.lock.fence(), h.meta, h.shared))
            .collect();
        assert_eq!(live, vec![(8, Some(&meta), true), (9, None, true)]);
        assert_eq!(held.meta(&tok("a"), 60), Some(&meta));
        assert!(exclusive("a", 10).held().live(10).is_empty());
    }
}
