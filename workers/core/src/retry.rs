//! Where a failed message goes: a delay-tier retry topic chosen by exponential backoff, or,
//! once its attempts are spent (or the failure is permanent), the dead-letter topic.
//!
//! A message waits in the tier whose delay is the smallest one not shorter than the policy's
//! delay, and is due exactly one tier delay after it was published there. Every message of a
//! tier partition therefore becomes due in publish order, which lets the retry service hold a
//! partition at its head message without anything due sooner queuing behind it.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use crate::config::RetryConfig;
use crate::envelope::{header, header_i64, header_str, rewrite_headers};
use crate::error::HandlerError;
use crate::kafka::Output;
use crate::pipeline::Job;
use crate::topics::Topics;

/// Longest error text kept in a header; the rest is cut.
const MAX_ERROR_LEN: usize = 2_000;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    /// The backoff policy's delay after the `failures`-th failure (1 for the first).
    pub fn delay_for(&self, failures: u32) -> Duration {
        let c = &self.config;
        let mut backoff = ExponentialBackoff {
            current_interval: c.initial_delay,
            initial_interval: c.initial_delay,
            randomization_factor: c.jitter,
            multiplier: c.multiplier,
            max_interval: c.max_delay,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        let mut delay = c.initial_delay;
        for _ in 0..failures.max(1) {
            delay = backoff.next_backoff().unwrap_or(c.max_delay);
        }
        // Jitter may push past the cap; the cap is what keeps every delay within a tier.
        delay.min(c.max_delay)
    }

    /// Index of the tier that holds a message for `delay`.
    pub fn tier_for(&self, delay: Duration) -> usize {
        let tiers = &self.config.tiers;
        tiers
            .iter()
            .position(|(_, tier)| *tier >= delay)
            .unwrap_or(tiers.len() - 1)
    }

    /// Turns a failed message into its next hop: a retry tier, or the dead-letter topic.
    pub fn route_failure(&self, topics: &Topics, job: &Job, error: &HandlerError) -> Output {
        let headers = job.headers.as_ref();
        let failures = job.attempt;
        let now_ms = Utc::now().timestamp_millis();
        let mut message = error.message();
        if message.len() > MAX_ERROR_LEN {
            let cut = (0..=MAX_ERROR_LEN)
                .rev()
                .find(|i| message.is_char_boundary(*i))
                .unwrap_or(0);
            message.truncate(cut);
        }
        let mut add = vec![
            (header::FAILURES, failures.to_string()),
            (header::ERROR_CLASS, error.class().to_string()),
            (header::ERROR, message),
            (
                header::ORIGINAL_TOPIC,
                header_str(headers, header::ORIGINAL_TOPIC)
                    .unwrap_or(&job.topic)
                    .to_string(),
            ),
            (
                header::ORIGINAL_PARTITION,
                header_i64(headers, header::ORIGINAL_PARTITION)
                    .unwrap_or(job.partition.into())
                    .to_string(),
            ),
            (
                header::ORIGINAL_OFFSET,
                header_i64(headers, header::ORIGINAL_OFFSET)
                    .unwrap_or(job.offset)
                    .to_string(),
            ),
            (
                header::FIRST_FAILURE_MS,
                header_i64(headers, header::FIRST_FAILURE_MS)
                    .unwrap_or(now_ms)
                    .to_string(),
            ),
        ];
        let topic = if error.is_retryable() && failures < self.config.max_attempts {
            let tier = self.tier_for(self.delay_for(failures));
            let (topic, tier_delay) = &topics.retry_tiers[tier];
            let due_ms = now_ms + tier_delay.as_millis() as i64;
            add.push((header::DUE_MS, due_ms.to_string()));
            topic.clone()
        } else {
            if let Some(id) = job_id_of(&job.payload) {
                add.push((header::JOB_ID, id.to_string()));
            }
            topics.dead_letters()
        };
        Output {
            topic,
            key: job.key.clone(),
            payload: job.payload.clone(),
            headers: Some(rewrite_headers(headers, &header::PER_FAILURE, &add)),
        }
    }
}

/// The job id of a payload that is at least an envelope's worth of JSON.
fn job_id_of(payload: &[u8]) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Uuid,
    }
    serde_json::from_slice::<IdOnly>(payload).ok().map(|e| e.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            tiers: ["1s", "5s", "30s", "2m", "10m"]
                .iter()
                .map(|t| (t.to_string(), crate::config::parse_duration(t).unwrap()))
                .collect(),
            initial_delay: Duration::from_secs(1),
            multiplier: 5.0,
            max_delay: Duration::from_secs(600),
            jitter,
            max_attempts: 5,
        })
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = policy(0.0);
        let delays: Vec<u64> = (1..=6).map(|f| p.delay_for(f).as_secs()).collect();
        assert_eq!(delays, vec![1, 5, 25, 125, 600, 600]);
    }

    #[test]
    fn jittered_delays_stay_within_the_jitter_and_the_cap() {
        let p = policy(0.3);
        for (failures, nominal) in [(1, 1.0), (2, 5.0), (3, 25.0), (4, 125.0), (5, 600.0)] {
            for _ in 0..50 {
                let delay = p.delay_for(failures).as_secs_f64();
                assert!(
                    delay >= nominal * 0.7 - 1e-9,
                    "{delay} after {failures} failures"
                );
                assert!(
                    delay <= (nominal * 1.3).min(600.0) + 1e-9,
                    "{delay} after {failures} failures"
                );
            }
        }
    }

    #[test]
    fn a_delay_waits_in_the_smallest_tier_not_shorter_than_it() {
        let p = policy(0.0);
        assert_eq!(p.tier_for(Duration::from_millis(900)), 0);
        assert_eq!(p.tier_for(Duration::from_secs(1)), 0);
        assert_eq!(p.tier_for(Duration::from_millis(1001)), 1);
        assert_eq!(p.tier_for(Duration::from_secs(25)), 2);
        assert_eq!(p.tier_for(Duration::from_secs(7200)), 4);
    }
}
