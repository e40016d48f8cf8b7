//! The one retry pause of the crate: capped exponential backoff with full jitter.

use std::time::Duration;

/// A capped exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The pause before retry `attempt` (1 is the first retry).
    pub fn pause(&self, attempt: u32) -> Duration {
        full_jitter(self.base, self.cap, attempt)
    }
}

/// The store's retries of a collided or timed-out write.
pub const STORE_RETRY: Backoff = Backoff {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(500),
};

/// A random pause from zero up to `base * 2^(attempt - 1)`, capped at `cap` (attempt 1 is the
/// first retry). Full jitter spreads writers that collided, so they do not collide again.
pub fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let bound = base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(cap);
    bound.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stay_under_the_cap() {
        let (base, cap) = (Duration::from_millis(10), Duration::from_millis(500));
        for attempt in [1, 2, 5, 40, u32::MAX] {
            let bound = base
                .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
                .min(cap);
            for _ in 0..50 {
                assert!(full_jitter(base, cap, attempt) <= bound);
            }
        }
        assert!(full_jitter(base, cap, 1) <= base);
    }
}
