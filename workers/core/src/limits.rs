//! The two limits a stage keeps on itself: a rate of calls per second, and a watch on the share
//! of recent messages it dead-letters (an alarm, or a stop when a dependency is failing).

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

/// Why a message went to the dead letters, which decides what a flood of them means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterCause {
    /// The message itself can never succeed (undecodable, invalid, refused): what any producer
    /// of a public topic can send, so it must not stop the stage for everyone.
    Rejected,
    /// A dependency failed it: its attempts ran out on transient failures (the database, a
    /// provider), or the broker refuses a topic its outputs go to (unknown, not authorized).
    /// Such failures hit every message, and going on would empty the topic into the dead
    /// letters.
    DependencyFailing,
}

/// A change of a [`DeadLetterGuard`]'s alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    /// More than the share of recent messages were dead-lettered: why, for the operator.
    Raised(String),
    /// The share is back under the limit.
    Cleared,
}

/// Counts dead letters among the last `window` messages. Past `max_share` of a full window it
/// raises an alarm (the stage goes on: a producer's garbage is dead-lettered, not an outage),
/// and it stops the stage when a dependency failed that many ([`DeadLetterCause`]): going on
/// would empty a topic into the dead letters.
#[derive(Debug)]
pub struct DeadLetterGuard {
    recent: VecDeque<Option<DeadLetterCause>>,
    rejected: usize,
    dependency_failing: usize,
    window: usize,
    max_share: f64,
    alarmed: bool,
}

impl DeadLetterGuard {
    pub fn new(window: usize, max_share: f64) -> Self {
        Self {
            recent: VecDeque::with_capacity(window),
            rejected: 0,
            dependency_failing: 0,
            window,
            max_share,
            alarmed: false,
        }
    }

    fn count(&mut self, cause: Option<DeadLetterCause>, added: bool) {
        let count = match cause {
            None => return,
            Some(DeadLetterCause::Rejected) => &mut self.rejected,
            Some(DeadLetterCause::DependencyFailing) => &mut self.dependency_failing,
        };
        if added {
            *count += 1;
        } else {
            *count -= 1;
        }
    }

    fn over_share(&self, dead: usize) -> bool {
        self.max_share < 1.0 && dead as f64 > self.max_share * self.window as f64
    }

    /// Records one finished message: `None` if it was handled, or why it was dead-lettered.
    /// Says when the alarm changes; an error when the stage must stop.
    pub fn record(
        &mut self,
        dead_lettered: Option<DeadLetterCause>,
    ) -> Result<Option<Alarm>, PipelineError> {
        if self.recent.len() == self.window {
            let oldest = self.recent.pop_front().flatten();
            self.count(oldest, false);
        }
        self.recent.push_back(dead_lettered);
        self.count(dead_lettered, true);
        if self.over_share(self.dependency_failing) {
            return Err(PipelineError::TooManyDeadLetters {
                dead: self.dependency_failing,
                window: self.window,
                max_share: self.max_share,
            });
        }
        let dead = self.rejected + self.dependency_failing;
        let over = self.over_share(dead);
        if over == self.alarmed {
            return Ok(None);
        }
        self.alarmed = over;
        Ok(Some(if over {
            Alarm::Raised(format!(
                "{dead} of the last {} messages were dead-lettered ({} rejected as they were), \
                 over DEAD_LETTER_MAX_SHARE {}: see `sluice dlq list`",
                self.window, self.rejected, self.max_share
            ))
        } else {
            Alarm::Cleared
        }))
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
    fn a_failing_dependency_past_the_share_of_a_full_window_stops_the_stage() {
        let spent = Some(DeadLetterCause::DependencyFailing);
        let mut guard = DeadLetterGuard::new(10, 0.5);
        for _ in 0..5 {
            guard.record(spent).unwrap();
        }
        for _ in 0..20 {
            guard.record(None).unwrap();
        }
        for _ in 0..5 {
            guard.record(spent).unwrap();
        }
        let error = guard.record(spent).unwrap_err();
        assert!(error.to_string().contains("6 of the last 10"), "{error}");
        let mut off = DeadLetterGuard::new(10, 1.0);
        for _ in 0..30 {
            off.record(spent).unwrap();
        }
    }

    #[test]
    fn rejected_messages_past_the_share_raise_an_alarm_until_the_share_falls() {
        let rejected = Some(DeadLetterCause::Rejected);
        let mut guard = DeadLetterGuard::new(10, 0.5);
        for _ in 0..5 {
            assert_eq!(guard.record(rejected).unwrap(), None);
        }
        let Some(Alarm::Raised(reason)) = guard.record(rejected).unwrap() else {
            panic!("the sixth of ten raises the alarm");
        };
        assert!(reason.contains("6 of the last 10"), "{reason}");
        for _ in 0..100 {
            assert_eq!(guard.record(rejected).unwrap(), None, "raised once");
        }
        // A failing dependency counts towards the alarm, and alone towards stopping.
        for _ in 0..5 {
            assert_eq!(
                guard
                    .record(Some(DeadLetterCause::DependencyFailing))
                    .unwrap(),
                None
            );
        }
        for _ in 0..4 {
            assert_eq!(guard.record(None).unwrap(), None);
        }
        assert_eq!(guard.record(None).unwrap(), Some(Alarm::Cleared));
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
