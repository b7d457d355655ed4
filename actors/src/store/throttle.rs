//! The embedded default's rate limits: token buckets on `governor` (GCRA),
//! one keyed limiter per distinct rate.
//!
//! Two things the [`EphemeralStore::rate_limit`](super::EphemeralStore)
//! contract asks for that governor does not do by itself:
//!
//! - **Each call carries its rate** (rates come from the configuration, per
//!   kind of action), while a governor limiter has one quota. So there is one
//!   keyed limiter per (burst, rate): a login throttle and a message bucket
//!   never share state, and each limiter forgets its own idle keys by its own
//!   quota (`retain_recent`), never by another caller's rate.
//! - **A cost of 0 only looks** (an address with no failed logins left is
//!   refused before its password is hashed), and governor cannot read a
//!   key's state without taking a cell. So when a take leaves a key empty,
//!   or is refused, the time its next cell comes is recorded in `empty_until`
//!   (exact: a refused check changes nothing and says when), and a look only
//!   reads that record.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Keys a limiter holds before it forgets the full ones (then not again
/// until it has doubled, so a sweep that frees little is not repeated on
/// every call).
const SWEEP_AT: usize = 100_000;

struct Bucket {
    limiter: Limiter,
    sweep_at: usize,
}

/// A rate: (burst, cells per second as f64 bits).
type RateId = (u32, u64);

/// Every rate limit of one node (see the module docs).
#[derive(Default)]
pub struct Throttles {
    clock: DefaultClock,
    /// One limiter per (burst, rate as f64 bits).
    limiters: Mutex<HashMap<RateId, Arc<Mutex<Bucket>>>>,
    /// Keys left empty, and when each has a cell again.
    empty_until: Mutex<HashMap<(u32, u64, String), Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Throttles {
    /// Takes `cost` cells from `key`'s bucket (`burst` cells, refilled at
    /// `per_second`; 0 only looks). None when it held enough (at least one
    /// cell), else how long until it does; then nothing is taken.
    pub fn take(&self, key: &str, burst: u32, per_second: f64, cost: u32) -> Option<Duration> {
        let (Some(burst_cells), true) = (NonZeroU32::new(burst), per_second > 0.0) else {
            // A bucket that never holds anything (refused by config validation).
            return Some(Duration::MAX);
        };
        let id = (burst, per_second.to_bits());
        let now = Instant::now();
        let empty_key = (id.0, id.1, key.to_string());
        if cost == 0 {
            let mut empty = lock(&self.empty_until);
            return match empty.get(&empty_key) {
                Some(until) if *until > now => Some(*until - now),
                Some(_) => {
                    empty.remove(&empty_key);
                    None
                }
                None => None,
            };
        }
        let bucket = lock(&self.limiters)
            .entry(id)
            .or_insert_with(|| {
                let period = Duration::try_from_secs_f64(1.0 / per_second)
                    .unwrap_or(Duration::MAX)
                    .max(Duration::from_nanos(1));
                let quota = Quota::with_period(period)
                    .expect("a period of at least 1 ns")
                    .allow_burst(burst_cells);
                Arc::new(Mutex::new(Bucket {
                    limiter: RateLimiter::keyed(quota).with_middleware(),
                    sweep_at: SWEEP_AT,
                }))
            })
            .clone();
        let mut bucket = lock(&bucket);
        if bucket.limiter.len() >= bucket.sweep_at {
            // Forget keys whose bucket is full again: they hold no information.
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
            bucket.sweep_at = (bucket.limiter.len() * 2).max(SWEEP_AT);
            lock(&self.empty_until).retain(|_, until| *until > now);
        }
        let cells = NonZeroU32::new(cost).expect("cost is not 0 here");
        let key = key.to_string();
        match bucket.limiter.check_key_n(&key, cells) {
            Ok(Ok(state)) => {
                if state.remaining_burst_capacity() == 0 {
                    // Empty now: when does the next cell come? A refused
                    // check says so without taking anything.
                    if let Ok(Err(not_until)) = bucket.limiter.check_key_n(&key, NonZeroU32::MIN) {
                        let wait = not_until.wait_time_from(self.clock.now());
                        lock(&self.empty_until).insert(empty_key, now + wait);
                    }
                }
                None
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                if cost == 1 {
                    lock(&self.empty_until).insert(empty_key, now + wait);
                }
                Some(wait)
            }
            // More than the bucket ever holds.
            Err(_) => {
                Some(Duration::try_from_secs_f64(cost as f64 / per_second).unwrap_or(Duration::MAX))
            }
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        lock(&self.limiters)
            .values()
            .map(|b| lock(b).limiter.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_says_how_long_until_it_refills() {
        let t = Throttles::default();
        for _ in 0..3 {
            assert_eq!(t.take("k", 3, 0.5, 1), None);
        }
        let wait = t.take("k", 3, 0.5, 1).expect("empty: a wait");
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2));
        // The same key at another rate is another bucket.
        assert_eq!(t.take("k", 3, 1000.0, 1), None);
    }

    #[test]
    fn a_look_takes_nothing_and_sees_an_empty_bucket() {
        let t = Throttles::default();
        for _ in 0..10 {
            assert_eq!(t.take("addr", 2, 0.01, 0), None, "looking takes nothing");
        }
        assert_eq!(t.take("addr", 2, 0.01, 1), None);
        assert_eq!(t.take("addr", 2, 0.01, 0), None, "one cell left");
        assert_eq!(t.take("addr", 2, 0.01, 1), None);
        let wait = t.take("addr", 2, 0.01, 0).expect("empty after two takes");
        assert!(wait > Duration::from_secs(90), "{wait:?}");
        assert!(t.take("addr", 2, 0.01, 1).is_some());
        // Refilled: a fast bucket is open again once its cell came.
        assert_eq!(t.take("fast", 1, 1000.0, 1), None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.take("fast", 1, 1000.0, 0), None);
        assert_eq!(t.take("fast", 1, 1000.0, 1), None);
    }

    #[test]
    fn a_sweep_forgets_only_full_buckets_each_by_its_own_rate() {
        let t = Throttles::default();
        // A slow login throttle, emptied: it must survive the sweeps that
        // many fast message buckets trigger.
        for _ in 0..3 {
            t.take("login:addr:1.2.3.4", 3, 0.001, 1);
        }
        for i in 0..150_000 {
            t.take(&format!("msg:{i}"), 10, 1e9, 1);
        }
        assert!(t.keys() < 150_000, "full buckets were swept: {}", t.keys());
        assert!(
            t.take("login:addr:1.2.3.4", 3, 0.001, 1).is_some(),
            "the emptied login bucket is still empty after the sweep"
        );
        assert!(t.take("login:addr:1.2.3.4", 3, 0.001, 0).is_some());
    }

    #[test]
    fn more_than_the_burst_is_refused_with_a_wait() {
        let t = Throttles::default();
        assert!(t.take("k", 2, 1.0, 5).is_some());
        assert_eq!(t.take("k", 2, 1.0, 2), None, "nothing was taken");
    }
}
