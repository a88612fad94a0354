//! A per-peer bound on refused tokens.
//!
//! A token with valid-looking claims and a bad signature costs a signature check: a flood of
//! them can keep every core busy and slow every other call (BENCHMARKS.md, "hostile peers").
//! A client sending valid tokens is never refused, so the bound is on refusals, not on calls:
//! an EHR's normal traffic (many calls a second from a few addresses) is never throttled, and
//! a peer whose tokens keep failing is answered `429` with `Retry-After`, without any
//! signature work, until its budget refills. Counting uses `governor`'s keyed GCRA limiter
//! (a well-kept crate; the arithmetic is subtle); this module adds the "blocked until" memory
//! and the bound on how many peers are tracked.
//!
//! Peers are keyed by IPv4 address, or IPv6 /64 prefix (one host usually owns a whole /64,
//! so keying by full address would let it rotate through 2^64 keys).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Peers with recent refusals tracked at most; past it, peers not yet tracked share one key
/// (they are then limited together rather than not at all).
const MAX_TRACKED_PEERS: usize = 100_000;

/// The key of an address: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// The key untracked peers are counted under once [`MAX_TRACKED_PEERS`] are tracked (each is
/// still blocked under its own key).
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

pub struct RefusalLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Peers over their budget, and until when. Small: only peers that passed the budget.
    blocked: Mutex<std::collections::HashMap<IpAddr, Instant>>,
    /// Refusals counted, to forget refilled peers every so often.
    refusals: AtomicU64,
    /// [`MAX_TRACKED_PEERS`] (smaller in tests).
    max_tracked: usize,
}

impl std::fmt::Debug for RefusalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl RefusalLimiter {
    /// `per_minute` refusals a minute on average, `burst` at once, per peer; `per_minute` 0
    /// turns the bound off.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            governor::RateLimiter::dashmap(Quota::per_minute(rate).allow_burst(burst))
        });
        Self {
            limiter,
            blocked: Mutex::new(std::collections::HashMap::new()),
            refusals: AtomicU64::new(0),
            max_tracked: MAX_TRACKED_PEERS,
        }
    }

    /// `Some(wait)` when `peer` is over its refusal budget: answer 429 without checking its
    /// token. Only the peer's own block counts: a peer that was never refused is never blocked,
    /// whatever others did.
    pub fn blocked(&self, peer: Option<IpAddr>) -> Option<Duration> {
        self.limiter.as_ref()?;
        let key = peer_key(peer?);
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&key)?;
        let now = Instant::now();
        if until > now {
            return Some(until - now);
        }
        blocked.remove(&key);
        None
    }

    /// Count a refusal from `peer`; returns whether the peer is now blocked.
    pub fn refused(&self, peer: Option<IpAddr>) -> bool {
        let (Some(limiter), Some(peer)) = (&self.limiter, peer) else {
            return false;
        };
        let own = peer_key(peer);
        // Forget peers whose budget has refilled now and then (a scan of the whole map, so not
        // on every refusal); past the bound, new peers are counted together.
        if self
            .refusals
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let counted = if limiter.len() >= self.max_tracked {
            OVERFLOW
        } else {
            own
        };
        match limiter.check_key(&counted) {
            Ok(()) => false,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let now = Instant::now();
                let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
                if blocked.len() >= self.max_tracked {
                    blocked.retain(|_, until| *until > now);
                }
                if blocked.len() >= self.max_tracked {
                    // Still full of live blocks: this peer's tokens keep being checked (and
                    // refused); the bound on memory wins over the bound on work.
                    return false;
                }
                // The block is the peer's own, also when it was counted with the overflow.
                blocked.insert(own, now + wait.max(Duration::from_millis(100)));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_blocked_after_its_burst_and_others_are_not() {
        let l = RefusalLimiter::new(60, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.blocked(Some(a)), None);
        let blocked_after = (0..10).position(|_| l.refused(Some(a)));
        assert_eq!(
            blocked_after,
            Some(3),
            "the burst of 3 passes, the 4th blocks"
        );
        assert!(l.blocked(Some(a)).is_some());
        assert_eq!(l.blocked(Some(b)), None);
        assert!(!l.refused(Some(b)));
    }

    #[test]
    fn the_budget_refills() {
        // 1,000 a second: a cell comes back every millisecond; a block lasts at least 100 ms.
        let l = RefusalLimiter::new(60_000, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!l.refused(Some(a)));
        assert!(l.refused(Some(a)));
        assert!(l.blocked(Some(a)).is_some());
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(l.blocked(Some(a)), None);
        assert!(!l.refused(Some(a)));
    }

    #[test]
    fn ipv6_peers_are_keyed_by_their_64() {
        let l = RefusalLimiter::new(60, 1);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(!l.refused(Some(one)));
        assert!(l.refused(Some(same_64)));
        assert!(l.blocked(Some(one)).is_some());
        assert_eq!(l.blocked(Some(other_64)), None);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(peer_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    /// Past the bound on tracked peers, new refusing peers are counted together, but a peer
    /// that was never refused is never blocked by what they did.
    #[test]
    fn the_overflow_never_blocks_a_peer_that_was_not_refused() {
        let l = RefusalLimiter {
            max_tracked: 2,
            ..RefusalLimiter::new(60, 1)
        };
        let peer = |n: u8| Some(IpAddr::from([192, 0, 2, n]));
        assert!(!l.refused(peer(1)));
        assert!(!l.refused(peer(2)));
        // tracked peers are full: 3 and 4 share the overflow budget of 1
        assert!(!l.refused(peer(3)));
        assert!(l.refused(peer(4)), "the overflow's budget is spent");
        assert!(l.blocked(peer(4)).is_some());
        assert_eq!(l.blocked(peer(5)), None, "never refused, never blocked");
        assert_eq!(l.blocked(peer(1)), None);
    }

    #[test]
    fn zero_turns_it_off() {
        let l = RefusalLimiter::new(0, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..1000).all(|_| !l.refused(Some(a))));
        assert_eq!(l.blocked(Some(a)), None);
    }
}
