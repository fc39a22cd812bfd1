//! Which connection each ephemeral hold (`EPHEMERAL`) is bound to, so that when a connection
//! closes, every hold bound to it can be ended at once.
//!
//! A binding names the hold by lock, token and fence. Fences are never reused on a server, so
//! a binding left behind by a path that did not unbind it (a RENAME, say) can never end a
//! later grant: the module ends a hold only if the lock still has that token with that fence.
//! Bindings live only in the primary's memory: they are not saved or replicated.
//!
//! A connection that holds nothing ephemeral costs nothing here.

use std::collections::{HashMap, HashSet};

pub use crate::queue::ClientId;
use crate::queue::LockId;
use crate::token::Token;

/// One hold: a lock and the holder's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hold {
    pub lock: LockId,
    pub token: Token,
}

/// A hold whose connection closed, to be ended if it is still the grant with `fence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub hold: Hold,
    pub fence: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bound {
    client: ClientId,
    fence: u64,
}

#[derive(Debug, Default)]
pub struct Bindings {
    /// Per lock, each bound holder by token.
    by_lock: HashMap<LockId, HashMap<Token, Bound>>,
    /// Per connection, the holds bound to it.
    by_client: HashMap<ClientId, HashSet<Hold>>,
    len: usize,
}

impl Bindings {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Holds bound, over all connections.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Connections with at least one bound hold.
    pub fn clients(&self) -> usize {
        self.by_client.len()
    }

    /// Bind the hold (`lock`, `token`), granted with `fence`, to `client`: a new grant, or a
    /// retry with EPHEMERAL, which moves the binding from wherever it was.
    pub fn bind(&mut self, lock: &LockId, token: &Token, fence: u64, client: ClientId) {
        let bound = Bound { client, fence };
        let holders = self.by_lock.entry(lock.clone()).or_default();
        match holders.insert(token.clone(), bound) {
            Some(old) if old.client == client => return,
            Some(old) => forget(&mut self.by_client, old.client, lock, token),
            None => self.len += 1,
        }
        self.by_client.entry(client).or_default().insert(Hold {
            lock: lock.clone(),
            token: token.clone(),
        });
    }

    /// Whether the hold granted with `fence` is bound to a connection.
    pub fn is_bound(&self, lock: &LockId, token: &Token, fence: u64) -> bool {
        self.bound(lock, token)
            .is_some_and(|bound| bound.fence == fence)
    }

    fn bound(&self, lock: &LockId, token: &Token) -> Option<Bound> {
        self.by_lock.get(lock)?.get(token).copied()
    }

    /// The hold ended (released, expired, taken back): its binding goes.
    pub fn unbind(&mut self, lock: &LockId, token: &Token) {
        let Some(holders) = self.by_lock.get_mut(lock) else {
            return;
        };
        let Some(old) = holders.remove(token) else {
            return;
        };
        if holders.is_empty() {
            self.by_lock.remove(lock);
        }
        self.len -= 1;
        forget(&mut self.by_client, old.client, lock, token);
    }

    /// The lock's key went (deleted, expired, replaced, renamed, moved away): every binding of
    /// its holds goes.
    pub fn lock_gone(&mut self, lock: &LockId) {
        let Some(holders) = self.by_lock.remove(lock) else {
            return;
        };
        self.len -= holders.len();
        for (token, old) in holders {
            forget(&mut self.by_client, old.client, lock, &token);
        }
    }

    /// `db` was flushed (None: every database).
    pub fn flushed(&mut self, db: Option<i32>) {
        let gone: Vec<LockId> = self
            .by_lock
            .keys()
            .filter(|lock| db.is_none_or(|db| lock.db == db))
            .cloned()
            .collect();
        for lock in gone {
            self.lock_gone(&lock);
        }
    }

    /// SWAPDB `a` `b`: the holds of each database are now in the other.
    pub fn swapped(&mut self, a: i32, b: i32) {
        let swap = |lock: &LockId| LockId {
            db: match lock.db {
                db if db == a => b,
                db if db == b => a,
                db => db,
            },
            key: lock.key.clone(),
        };
        self.by_lock = std::mem::take(&mut self.by_lock)
            .into_iter()
            .map(|(lock, holders)| (swap(&lock), holders))
            .collect();
        for holds in self.by_client.values_mut() {
            *holds = std::mem::take(holds)
                .into_iter()
                .map(|hold| Hold {
                    lock: swap(&hold.lock),
                    token: hold.token,
                })
                .collect();
        }
    }

    /// Every binding goes (the server became a replica: its data is its primary's now).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// `client`'s connection closed: the holds bound to it, to be ended (with the fence each
    /// was granted with), and unbound. Nothing for a connection that held nothing ephemeral.
    pub fn closed(&mut self, client: ClientId) -> Vec<Orphan> {
        let Some(holds) = self.by_client.remove(&client) else {
            return Vec::new();
        };
        let mut orphans = Vec::with_capacity(holds.len());
        for hold in holds {
            let Some(holders) = self.by_lock.get_mut(&hold.lock) else {
                continue;
            };
            let Some(bound) = holders.remove(&hold.token) else {
                continue;
            };
            if holders.is_empty() {
                self.by_lock.remove(&hold.lock);
            }
            self.len -= 1;
            orphans.push(Orphan {
                hold,
                fence: bound.fence,
            });
        }
        orphans
    }
}

/// Take the hold out of `client`'s set (and the set out when it empties).
fn forget(
    by_client: &mut HashMap<ClientId, HashSet<Hold>>,
    client: ClientId,
    lock: &LockId,
    token: &Token,
) {
    if let Some(holds) = by_client.get_mut(&client) {
        holds.remove(&Hold {
            lock: lock.clone(),
            token: token.clone(),
        });
        if holds.is_empty() {
            by_client.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(db: i32, key: &str) -> LockId {
        LockId {
            db,
            key: key.as_bytes().to_vec(),
        }
    }

    fn tok(s: &str) -> Token {
        Token::parse(s.as_bytes()).unwrap()
    }

    fn tokens(orphans: &[Orphan]) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = orphans
            .iter()
            .map(|o| {
                let key = String::from_utf8_lossy(&o.hold.lock.key).into_owned();
                (key, o.fence)
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_closed_connection_gives_up_its_holds_and_only_its_own() {
        let mut b = Bindings::new();
        b.bind(&lock(0, "a"), &tok("t1"), 1, 7);
        b.bind(&lock(0, "b"), &tok("t2"), 2, 7);
        b.bind(&lock(0, "c"), &tok("t3"), 3, 8);
        assert_eq!((b.len(), b.clients()), (3, 2));
        assert!(b.is_bound(&lock(0, "a"), &tok("t1"), 1));
        assert!(!b.is_bound(&lock(0, "a"), &tok("t1"), 9), "another grant");
        let gone = b.closed(7);
        assert_eq!(tokens(&gone), vec![("a".into(), 1), ("b".into(), 2)]);
        assert!(b.closed(7).is_empty(), "once");
        assert!(b.closed(99).is_empty());
        assert_eq!((b.len(), b.clients()), (1, 1));
    }

    #[test]
    fn a_retry_moves_the_binding_and_renewals_do_not_touch_it() {
        let mut b = Bindings::new();
        b.bind(&lock(0, "a"), &tok("t"), 5, 1);
        b.bind(&lock(0, "a"), &tok("t"), 5, 1);
        assert_eq!(b.len(), 1);
        b.bind(&lock(0, "a"), &tok("t"), 5, 2);
        assert_eq!((b.len(), b.clients()), (1, 1));
        assert!(b.closed(1).is_empty(), "moved away");
        assert_eq!(b.closed(2).len(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn ended_holds_leave_no_binding_behind() {
        let mut b = Bindings::new();
        b.bind(&lock(0, "s"), &tok("r1"), 1, 1);
        b.bind(&lock(0, "s"), &tok("r2"), 2, 1);
        b.bind(&lock(0, "s"), &tok("r3"), 3, 2);
        b.bind(&lock(1, "s"), &tok("r1"), 4, 1);
        b.unbind(&lock(0, "s"), &tok("r1"));
        b.unbind(&lock(0, "s"), &tok("nobody"));
        assert_eq!(b.len(), 3);
        b.lock_gone(&lock(0, "s"));
        assert_eq!((b.len(), b.clients()), (1, 1));
        b.flushed(Some(0));
        assert_eq!(b.len(), 1, "db 1 is not flushed");
        b.flushed(None);
        assert!(b.is_empty() && b.clients() == 0);
    }

    #[test]
    fn swapped_databases_keep_their_bindings() {
        let mut b = Bindings::new();
        b.bind(&lock(0, "a"), &tok("t"), 1, 1);
        b.bind(&lock(1, "a"), &tok("t"), 2, 1);
        b.bind(&lock(2, "a"), &tok("t"), 3, 1);
        b.swapped(0, 1);
        assert!(b.is_bound(&lock(1, "a"), &tok("t"), 1));
        assert!(b.is_bound(&lock(0, "a"), &tok("t"), 2));
        assert!(b.is_bound(&lock(2, "a"), &tok("t"), 3));
        let gone = b.closed(1);
        let mut dbs: Vec<(i32, u64)> = gone.iter().map(|o| (o.hold.lock.db, o.fence)).collect();
        dbs.sort();
        assert_eq!(dbs, vec![(0, 2), (1, 1), (2, 3)]);
    }
}
