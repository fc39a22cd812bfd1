//! Property tests of what EPHEMERAL and META added to the core: the bindings of holds to
//! connections against a plain map, and labeled locks of both kinds through the encoding and
//! the APPLY effect.

mod support;

use std::collections::HashMap;

use lock_core::bindings::{Bindings, ClientId};
use lock_core::codec::{decode_value, encode_value, Fields, CURRENT_VERSION};
use lock_core::compact::INLINE_TEXT_MAX;
use lock_core::effect::{parse_apply, Effect, HoldText};
use lock_core::lock::Lock;
use lock_core::meta::Meta;
use lock_core::queue::LockId;
use lock_core::shared::SharedLock;
use lock_core::token::Token;
use lock_core::value::{Held, Value, Want};
use proptest::collection::vec;
use proptest::prelude::*;
use support::{config, spelled, token};

#[derive(Debug, Clone)]
enum Op {
    Bind {
        lock: usize,
        token: usize,
        fence: u64,
        client: ClientId,
    },
    Unbind {
        lock: usize,
        token: usize,
    },
    LockGone(usize),
    Flushed(Option<i32>),
    Swapped(i32, i32),
    Closed(ClientId),
    Clear,
}

/// Locks over three databases, tokens and clients few enough to collide often.
fn lock_id(i: usize) -> LockId {
    LockId {
        db: (i % 3) as i32,
        key: format!("k{}", i / 3).into_bytes(),
    }
}

fn tok(i: usize) -> Token {
    token(format!("t{i}").as_bytes())
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6usize, 0..3usize, 0..5u64, 1..5u64).prop_map(|(lock, token, fence, client)| {
            Op::Bind { lock, token, fence, client }
        }),
        2 => (0..6usize, 0..3usize).prop_map(|(lock, token)| Op::Unbind { lock, token }),
        1 => (0..6usize).prop_map(Op::LockGone),
        1 => prop::option::of(0..3i32).prop_map(Op::Flushed),
        1 => (0..3i32, 0..3i32).prop_map(|(a, b)| Op::Swapped(a, b)),
        2 => (1..5u64).prop_map(Op::Closed),
        1 => Just(Op::Clear),
    ]
}

/// The model: each bound hold, its connection and fence.
type Model = HashMap<(LockId, Token), (ClientId, u64)>;

proptest! {
    #![proptest_config(config(512))]

    /// Every operation leaves the bindings as a plain map says, and a closed connection
    /// gives back exactly the holds bound to it, each once, with its fence.
    #[test]
    fn bindings_agree_with_a_plain_map(ops in vec(any_op(), 1..60)) {
        let mut b = Bindings::new();
        let mut model: Model = HashMap::new();
        for op in ops {
            match op.clone() {
                Op::Bind { lock, token, fence, client } => {
                    b.bind(&lock_id(lock), &tok(token), fence, client);
                    model.insert((lock_id(lock), tok(token)), (client, fence));
                }
                Op::Unbind { lock, token } => {
                    b.unbind(&lock_id(lock), &tok(token));
                    model.remove(&(lock_id(lock), tok(token)));
                }
                Op::LockGone(lock) => {
                    b.lock_gone(&lock_id(lock));
                    model.retain(|(l, _), _| *l != lock_id(lock));
                }
                Op::Flushed(db) => {
                    b.flushed(db);
                    model.retain(|(l, _), _| db.is_some_and(|db| l.db != db));
                }
                Op::Swapped(x, y) => {
                    b.swapped(x, y);
                    model = model
                        .into_iter()
                        .map(|((mut l, t), v)| {
                            l.db = if l.db == x { y } else if l.db == y { x } else { l.db };
                            ((l, t), v)
                        })
                        .collect();
                }
                Op::Closed(client) => {
                    let mut got: Vec<(LockId, Token, u64)> = b
                        .closed(client)
                        .into_iter()
                        .map(|o| (o.hold.lock, o.hold.token, o.fence))
                        .collect();
                    let mut expected: Vec<(LockId, Token, u64)> = model
                        .iter()
                        .filter(|(_, (c, _))| *c == client)
                        .map(|((l, t), (_, f))| (l.clone(), t.clone(), *f))
                        .collect();
                    let key = |e: &(LockId, Token, u64)| (e.0.db, e.0.key.clone(), e.1.as_bytes().to_vec());
                    got.sort_by_key(key);
                    expected.sort_by_key(key);
                    prop_assert_eq!(got, expected, "{:?}", op);
                    model.retain(|_, (c, _)| *c != client);
                }
                Op::Clear => {
                    b.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(b.len(), model.len(), "after {:?}", op);
            prop_assert_eq!(b.is_empty(), model.is_empty());
            let mut clients: Vec<ClientId> = model.values().map(|(c, _)| *c).collect();
            clients.sort_unstable();
            clients.dedup();
            prop_assert_eq!(b.clients(), clients.len(), "after {:?}", op);
            for lock in 0..6 {
                for t in 0..3 {
                    for fence in 0..5 {
                        let bound = model.get(&(lock_id(lock), tok(t))).is_some_and(|(_, f)| *f == fence);
                        prop_assert_eq!(b.is_bound(&lock_id(lock), &tok(t), fence), bound);
                    }
                }
            }
        }
    }

    /// A labeled exclusive lock, and a shared lock whose holders are labeled or not, come
    /// back the same through the encoding; a labeled holder comes back the same through its
    /// APPLY effect.
    #[test]
    fn labeled_locks_round_trip(
        holders in vec((vec(any::<u8>(), 1..40), 0..i64::MAX, prop::option::of(vec(any::<u8>(), 0..1025))), 1..8),
        limit in prop::option::of(1..10u32),
    ) {
        let mut shared = SharedLock::new(limit);
        for (i, (t, deadline, meta)) in holders.iter().enumerate() {
            let lock = Lock::new(&token(t), *deadline, i as u64 + 1).unwrap();
            shared.upsert(lock, meta.as_ref().map(|m| Meta::parse(m).unwrap()));
        }
        let (t, deadline, meta) = &holders[0];
        let exclusive = Value::exclusive(
            Lock::new(&token(t), *deadline, 9).unwrap(),
            meta.as_ref().map(|m| Meta::parse(m).unwrap()),
        );
        for mut value in [exclusive, Value::Shared(Box::new(shared))] {
            let mut to = Fields::default();
            encode_value(&value.held(), &mut to);
            let mut back = decode_value(CURRENT_VERSION, &mut to).unwrap();
            prop_assert!(to.0.is_empty());
            prop_assert_eq!(&back, &value);
            // Each holder through its effect: the same lock, mode and label.
            let held = back.held();
            for holder in held.live(i64::MIN) {
                let mut buf = [0u8; INLINE_TEXT_MAX];
                let effect = match &held {
                    Held::Exclusive(..) => Effect::apply(holder.lock, holder.meta, &mut buf),
                    Held::Shared(s) => Effect::share(holder.lock, s.limit(), holder.meta, &mut buf),
                };
                let (d, f) = (holder.lock.deadline_ms.to_string(), holder.lock.fence().to_string());
                let limit_text;
                let mut args: Vec<&[u8]> = vec![&[], d.as_bytes(), f.as_bytes()];
                let (token_bytes, meta_bytes, want) = match effect {
                    Effect::Apply { token, meta, .. } => (token, meta, Want::Exclusive),
                    Effect::Share { token, meta, limit, .. } => {
                        match limit {
                            None => args.push(b"SHARED"),
                            Some(n) => {
                                limit_text = n.to_string();
                                args.extend([&b"LIMIT"[..], limit_text.as_bytes()]);
                            }
                        }
                        (token, meta, Want::Shared { limit: limit.map(|n| n as u32) })
                    }
                    other => panic!("{other:?}"),
                };
                args[0] = token_bytes;
                if let Some(m) = meta_bytes {
                    args.extend([&b"META"[..], m]);
                }
                // The form written before 0.4 (token deadline fence), and the one sent since
                // (deadline:fence:token), with the same options after.
                let hold = HoldText::new(holder.lock.deadline_ms, holder.lock.fence() as i64, token_bytes);
                let mut one: Vec<&[u8]> = vec![hold.as_bytes()];
                one.extend(&args[3..]);
                for args in [&args, &one] {
                    let applied = parse_apply(args).unwrap();
                    prop_assert_eq!(applied.want, want);
                    prop_assert_eq!(applied.meta.as_ref(), holder.meta);
                    prop_assert_eq!(&spelled(&applied.into_lock().unwrap()), &spelled(holder.lock));
                }
            }
        }
    }
}
