//! Replay protection: remembers each accepted token's (`iss`, `jti`) until the token could no
//! longer be accepted anyway (its `exp` plus the clock skew), so a captured token cannot be
//! sent a second time.
//!
//! The memory is bounded: entries leave in expiry order (a min-heap beside the map, so pruning
//! costs O(log n) per entry), and when the cache is full of unexpired entries a new token is
//! refused rather than an old entry forgotten — forgetting would silently reopen a replay
//! window. `max_token_lifetime_secs` keeps entries short-lived, so a sensible capacity is never
//! reached by honest traffic.
//!
//! The capacity is per issuer: one trusted issuer filling the memory with its own valid tokens
//! must not lock the others out (it did, for up to an hour). Issuers are configured, so memory
//! stays bounded by capacity times their number.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

/// A replay memory shared with other instances of the service (the audit store on
/// PostgreSQL), asked after this instance's own: remembers (`iss`, `jti`) until
/// `forget_after` and answers whether any instance had seen it. A trait, so `auth` does not
/// depend on the store; an implementation that cannot answer says `false` (and reports that
/// itself), since a call must not fail because a database is down.
pub trait SharedReplay: Send + Sync {
    fn seen_elsewhere<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        forget_after: u64,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// Outcome of [`ReplayCache::check_and_remember`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen before; now remembered.
    First,
    /// Seen before and not yet expired: a replay.
    Again,
    /// Not seen before, but there is no room to remember it.
    Full,
}

type Key = (String, String);

#[derive(Default)]
struct State {
    forget_after: HashMap<Key, u64>,
    by_expiry: BinaryHeap<Reverse<(u64, Key)>>,
    /// Entries per issuer.
    per_issuer: HashMap<String, usize>,
}

pub(crate) struct ReplayCache {
    capacity: usize,
    state: Mutex<State>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// Records (`iss`, `jti`) as used until `forget_after` (unix seconds), unless it is already
    /// recorded. `now` is the current unix time; entries whose `forget_after` is before it are
    /// dropped first.
    pub(crate) fn check_and_remember(
        &self,
        iss: &str,
        jti: &str,
        forget_after: u64,
        now: u64,
    ) -> Seen {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Reverse((when, _))) = state.by_expiry.peek() {
            if *when >= now {
                break;
            }
            if let Some(Reverse((_, key))) = state.by_expiry.pop()
                && state.forget_after.remove(&key).is_some()
                && let Some(n) = state.per_issuer.get_mut(&key.0)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.per_issuer.remove(&key.0);
                }
            }
        }
        let key = (iss.to_owned(), jti.to_owned());
        if state.forget_after.contains_key(&key) {
            return Seen::Again;
        }
        if state.per_issuer.get(iss).copied().unwrap_or(0) >= self.capacity {
            return Seen::Full;
        }
        *state.per_issuer.entry(iss.to_owned()).or_insert(0) += 1;
        state.forget_after.insert(key.clone(), forget_after);
        state.by_expiry.push(Reverse((forget_after, key)));
        Seen::First
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget_after
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_a_replay_until_expiry() {
        let c = ReplayCache::new(10);
        assert_eq!(c.check_and_remember("a", "1", 100, 50), Seen::First);
        assert_eq!(c.check_and_remember("a", "1", 100, 60), Seen::Again);
        assert_eq!(c.check_and_remember("a", "1", 100, 100), Seen::Again);
        // Same jti from another issuer is a different token.
        assert_eq!(c.check_and_remember("b", "1", 100, 60), Seen::First);
        // After its expiry the entry is gone (the token itself would fail the exp check).
        assert_eq!(c.check_and_remember("a", "1", 300, 101), Seen::First);
    }

    #[test]
    fn full_cache_fails_closed_and_recovers_after_expiry() {
        let c = ReplayCache::new(2);
        assert_eq!(c.check_and_remember("a", "1", 100, 0), Seen::First);
        assert_eq!(c.check_and_remember("a", "2", 200, 0), Seen::First);
        assert_eq!(c.check_and_remember("a", "3", 200, 50), Seen::Full);
        assert_eq!(
            c.check_and_remember("a", "1", 200, 50),
            Seen::Again,
            "still remembered"
        );
        assert_eq!(
            c.check_and_remember("a", "3", 200, 150),
            Seen::First,
            "jti 1 expired"
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn one_issuer_filling_its_memory_does_not_lock_out_another() {
        let c = ReplayCache::new(2);
        assert_eq!(c.check_and_remember("busy", "1", 100, 0), Seen::First);
        assert_eq!(c.check_and_remember("busy", "2", 100, 0), Seen::First);
        assert_eq!(c.check_and_remember("busy", "3", 100, 0), Seen::Full);
        assert_eq!(c.check_and_remember("other", "1", 100, 0), Seen::First);
        assert_eq!(c.check_and_remember("other", "2", 100, 0), Seen::First);
        // Expiry frees each issuer's own room.
        assert_eq!(c.check_and_remember("busy", "3", 300, 101), Seen::First);
        assert_eq!(c.len(), 1);
    }
}
