//! The circuit breaker in front of the origin. It counts *attempts*, not whole fetches with
//! their retries, so it opens after `failures` failed attempts in a row rather than after
//! `failures × (retries + 1)` of them; while open, fetches fail at once. After the open
//! period, attempts go through again (half-open) and the next outcome closes or re-opens it;
//! a new connection to the origin closes it at once.
//!
//! Time comes in as an argument, so the tests step it instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

/// A consecutive-failure circuit breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `failures` (at least 1) failed attempts in a row, for `open_for`.
    pub(crate) fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            failures: failures.max(1),
            open_for,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(remaining)` while open.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.state().open_until {
            Some(until) if now < until => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records one attempt's outcome.
    pub(crate) fn record(&self, ok: bool, now: Instant) {
        let mut s = self.state();
        if ok {
            *s = State::default();
        } else {
            s.failures += 1;
            if s.failures >= self.failures {
                s.open_until = Some(now + self.open_for);
            }
        }
    }

    /// Closes the breaker (the origin is reachable again).
    pub(crate) fn reset(&self) {
        *self.state() = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failed_attempts_and_half_opens_after_the_period() {
        let b = Breaker::new(3, Duration::from_secs(2));
        let t0 = Instant::now();
        b.record(false, t0);
        b.record(false, t0);
        assert!(b.check(t0).is_ok(), "two failures: still closed");
        b.record(false, t0);
        assert_eq!(b.check(t0), Err(Duration::from_secs(2)));
        let later = t0 + Duration::from_millis(2100);
        assert!(b.check(later).is_ok(), "half-open after the period");
        b.record(false, later);
        assert!(b.check(later).is_err(), "a failed probe re-opens it");
        b.record(true, later);
        assert!(b.check(later).is_ok(), "a success closes it");
        b.record(false, later);
        b.record(false, later);
        assert!(b.check(later).is_ok(), "the count restarted");
        b.record(false, later);
        b.reset();
        assert!(b.check(later).is_ok(), "a new connection closes it");
    }
}
