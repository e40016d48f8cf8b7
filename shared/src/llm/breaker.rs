//! A circuit breaker per provider: after `failures` consecutive failures the provider is skipped
//! for `cool_down`; then one probe request is let through, and its outcome closes or reopens it.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy)]
pub(super) struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub(super) failures: u32,
    /// How long an open breaker refuses calls before it lets one probe through.
    pub(super) cool_down: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is under way since `since`; a probe that never reports back is replaced after a
    /// cool-down.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub(super) struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub(super) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may go ahead now. When an open breaker's cool-down has passed, the caller
    /// that gets `true` is the probe.
    pub(super) fn try_acquire(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::HalfOpen { since: until } if now < until => false,
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen {
                    since: now + self.config.cool_down,
                };
                true
            }
        }
    }

    pub(super) fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    pub(super) fn failure(&self) {
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + self.config.cool_down,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.config.failures => State::Closed {
                failures: failures + 1,
            },
            _ => open,
        };
    }

    /// When a call will next be let through, if the breaker refuses calls now.
    pub(super) fn refusing_until(&self) -> Option<Instant> {
        match *self.lock() {
            State::Open { until } | State::HalfOpen { since: until } if Instant::now() < until => {
                Some(until)
            }
            _ => None,
        }
    }

    /// `closed`, `open` or `half_open`, for logs and tests.
    pub(super) fn state(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written: recover it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cool_down_ms: u64) -> Breaker {
        Breaker::new(BreakerConfig {
            failures: 3,
            cool_down: Duration::from_millis(cool_down_ms),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let breaker = breaker(60_000);
        breaker.failure();
        breaker.failure();
        breaker.success();
        breaker.failure();
        breaker.failure();
        assert!(breaker.try_acquire(), "a success reset the count");
        breaker.failure();
        assert_eq!(breaker.state(), "open");
        assert!(!breaker.try_acquire());
        assert!(breaker.refusing_until().is_some());
    }

    #[test]
    fn lets_one_probe_through_after_the_cool_down() {
        let breaker = breaker(0);
        for _ in 0..3 {
            breaker.failure();
        }
        assert_eq!(breaker.state(), "open");
        assert!(breaker.try_acquire(), "the probe");
        assert_eq!(breaker.state(), "half_open");
        breaker.failure();
        assert_eq!(breaker.state(), "open", "a failed probe reopens");
        assert!(breaker.try_acquire());
        breaker.success();
        assert_eq!(breaker.state(), "closed", "a successful probe closes");
    }

    #[test]
    fn only_one_probe_at_a_time() {
        let breaker = breaker(60_000);
        for _ in 0..3 {
            breaker.failure();
        }
        // Pretend the cool-down has passed.
        *breaker.lock() = State::Open {
            until: Instant::now(),
        };
        assert!(breaker.try_acquire());
        assert!(
            !breaker.try_acquire(),
            "a second caller waits for the probe"
        );
    }
}
