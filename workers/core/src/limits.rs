//! The two limits a stage keeps on itself: a rate of calls per second, and a cap on the share
//! of recent messages it dead-letters.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::PipelineError;

/// The lowest rate a [`RateLimiter`] keeps: one an hour. The wait for the next token is
/// `1 / per_sec`, and a rate such as `1e-30` (or a subnormal one, whose inverse is infinite)
/// would make a wait no `Duration` or `Instant` can hold; a lower rate is taken as this one.
/// Rates come from the configuration, which should refuse those below it.
pub const MIN_RATE_PER_SEC: f64 = 1.0 / 3_600.0;

/// A token bucket: on average `per_sec` takes a second, with bursts of a tenth of a second's
/// worth (at least one).
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// `per_sec` should be positive and finite (the configuration checks it); anything below
    /// [`MIN_RATE_PER_SEC`], `NaN` included, counts as that, so no wait can overflow.
    pub fn new(per_sec: f64) -> Self {
        let per_sec = per_sec.max(MIN_RATE_PER_SEC);
        let burst = (per_sec / 10.0).max(1.0);
        Self {
            per_sec,
            burst,
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
    }

    /// Takes a token if there is one; otherwise says when the next one comes.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_sec;
            Err(now + Duration::from_secs_f64(wait))
        }
    }
}

/// Counts dead letters among the last `window` messages and refuses to go on past
/// `max_share` of a full window, so a broken dependency or producer stops the stage loudly
/// instead of emptying a topic into the dead letters.
#[derive(Debug)]
pub struct DeadLetterGuard {
    recent: VecDeque<bool>,
    dead: usize,
    window: usize,
    max_share: f64,
}

impl DeadLetterGuard {
    pub fn new(window: usize, max_share: f64) -> Self {
        Self {
            recent: VecDeque::with_capacity(window),
            dead: 0,
            window,
            max_share,
        }
    }

    /// Records one finished message.
    pub fn record(&mut self, dead_lettered: bool) -> Result<(), PipelineError> {
        if self.recent.len() == self.window && self.recent.pop_front() == Some(true) {
            self.dead -= 1;
        }
        self.recent.push_back(dead_lettered);
        self.dead += usize::from(dead_lettered);
        if self.max_share < 1.0 && self.dead as f64 > self.max_share * self.window as f64 {
            return Err(PipelineError::TooManyDeadLetters {
                dead: self.dead,
                window: self.window,
                max_share: self.max_share,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_holds_the_rate_after_a_small_burst() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(100.0);
        let mut taken = 0;
        let mut now = start;
        // Ask every millisecond for one simulated second.
        while now < start + Duration::from_secs(1) {
            if limiter.try_take(now).is_ok() {
                taken += 1;
            }
            now += Duration::from_millis(1);
        }
        assert!((100..=111).contains(&taken), "{taken} in one second");
        let next = limiter.try_take(now).map(|_| now).unwrap_or_else(|at| at);
        assert!(next <= now + Duration::from_millis(10));
    }

    #[test]
    fn the_guard_trips_past_its_share_of_a_full_window() {
        let mut guard = DeadLetterGuard::new(10, 0.5);
        for _ in 0..5 {
            guard.record(true).unwrap();
        }
        for _ in 0..20 {
            guard.record(false).unwrap();
        }
        for _ in 0..5 {
            guard.record(true).unwrap();
        }
        let error = guard.record(true).unwrap_err();
        assert!(error.to_string().contains("6 of the last 10"), "{error}");
        let mut off = DeadLetterGuard::new(10, 1.0);
        for _ in 0..30 {
            off.record(true).unwrap();
        }
    }

    #[test]
    fn the_limiter_bounds_its_wait_whatever_the_rate() {
        let now = Instant::now();
        let longest = Duration::from_secs_f64(1.0 / MIN_RATE_PER_SEC);
        for rate in [1e-30, 1e-320, f64::MIN_POSITIVE, 0.0, -1.0, f64::NAN] {
            let mut limiter = RateLimiter::new(rate);
            assert!(
                limiter.try_take(now).is_ok(),
                "rate {rate}: the first token"
            );
            let next = limiter.try_take(now).unwrap_err();
            assert!(next <= now + longest, "rate {rate}: waits {:?}", next - now);
            // Waking then finds the token there (a millisecond later: the wait is rounded).
            let woken = next + Duration::from_millis(1);
            assert!(
                limiter.try_take(woken).is_ok(),
                "rate {rate}: the token after the wait"
            );
        }
    }
}
