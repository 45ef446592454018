//! Limits per user: a token bucket per user on each replica for the writes one account
//! could flood a thread with (SendMessage, EditMessage).
//!
//! governor's keyed limiter (GCRA, one small state per user). Its map keeps every user
//! who wrote until `forget_idle` drops those whose bucket has refilled, which the
//! server does every few seconds, so memory follows the users writing now, not every
//! user ever seen.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How fast one user may write: `per_second` on average, `burst` at once. A rate of 0
/// turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl SendLimit {
    /// No limit.
    pub const OFF: SendLimit = SendLimit {
        per_second: 0.0,
        burst: 1,
    };
}

/// The buckets of this replica's writers. Cloning is shallow.
#[derive(Clone)]
pub struct SendLimits {
    limiter: Option<Arc<DefaultKeyedRateLimiter<i64>>>,
    clock: DefaultClock,
}

impl SendLimits {
    pub fn new(limit: SendLimit) -> Result<Self, String> {
        let limiter = if limit.per_second == 0.0 {
            None
        } else {
            if !limit.per_second.is_finite() || limit.per_second < 0.0 {
                return Err(format!(
                    "the send rate must be 0 (off) or a positive number per second, got {}",
                    limit.per_second
                ));
            }
            let burst = NonZeroU32::new(limit.burst)
                .ok_or("the send burst must be at least 1 when the rate is on")?;
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / limit.per_second))
                .ok_or("the send rate is too high to measure")?
                .allow_burst(burst);
            Some(Arc::new(DefaultKeyedRateLimiter::keyed(quota)))
        };
        Ok(Self {
            limiter,
            clock: DefaultClock::default(),
        })
    }

    /// Takes one write from `user_id`'s bucket, or says how long until there is one.
    pub fn take(&self, user_id: i64) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter
                .check_key(&user_id)
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Forgets users whose bucket is full again: they are as if never seen.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many users this replica tracks now.
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_nothing_remembered() {
        let limits = SendLimits::new(SendLimit {
            per_second: 5.0,
            burst: 3,
        })
        .unwrap();
        for _ in 0..3 {
            assert!(limits.take(7).is_ok());
        }
        let wait = limits.take(7).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(
            limits.take(8).is_ok(),
            "another user has a bucket of their own"
        );
        assert_eq!(limits.tracked(), 2);
    }

    #[test]
    fn off_is_off() {
        let limits = SendLimits::new(SendLimit::OFF).unwrap();
        assert!((0..1000).all(|_| limits.take(1).is_ok()));
        assert_eq!(limits.tracked(), 0);
        assert!(
            SendLimits::new(SendLimit {
                per_second: 5.0,
                burst: 0
            })
            .is_err()
        );
        assert!(
            SendLimits::new(SendLimit {
                per_second: -1.0,
                burst: 1
            })
            .is_err()
        );
    }
}
