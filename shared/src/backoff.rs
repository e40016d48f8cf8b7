//! The one retry pause of the crate: capped exponential backoff with full jitter.

use std::time::Duration;

/// Capped exponential backoff with full jitter: the store's retries (`store::BACKOFF`) and the
/// LLM providers' (configured) use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The bound of the first retry's pause.
    pub base: Duration,
    /// The bound of every pause.
    pub cap: Duration,
}

impl Backoff {
    /// A random pause from zero up to `base * 2^(attempt - 1)`, capped at `cap` (attempt 1 is the
    /// first retry). Full jitter spreads writers that collided, so they do not collide again.
    pub fn pause(&self, attempt: u32) -> Duration {
        self.bound(attempt).mul_f64(fastrand::f64())
    }

    fn bound(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
            .min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stay_under_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(500),
        };
        assert_eq!(backoff.bound(1), backoff.base);
        assert_eq!(backoff.bound(2), Duration::from_millis(20));
        assert_eq!(backoff.bound(40), backoff.cap);
        for attempt in [1, 2, 5, 40, u32::MAX] {
            for _ in 0..50 {
                assert!(backoff.pause(attempt) <= backoff.bound(attempt));
            }
        }
    }
}
