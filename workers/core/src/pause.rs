//! Waiting out something that is down (the broker, the database): a pause that doubles after
//! every failed attempt, up to a cap, and gives way to shutdown. Every wait with back-off in
//! sluice is one of these, on the `backoff` crate's exponential policy.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio_util::sync::CancellationToken;

/// The longest pause between two attempts.
const LONGEST: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Pause {
    policy: ExponentialBackoff,
}

impl Pause {
    pub fn starting_at(first: Duration) -> Self {
        Self {
            policy: ExponentialBackoff {
                current_interval: first,
                initial_interval: first,
                multiplier: 2.0,
                randomization_factor: 0.0,
                max_interval: LONGEST,
                max_elapsed_time: None,
                ..ExponentialBackoff::default()
            },
        }
    }

    /// How long the next [`Pause::wait`] sleeps.
    pub fn next(&self) -> Duration {
        self.policy.current_interval
    }

    /// Sleeps the current pause and doubles the next one; false when `stop` fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.policy.next_backoff().unwrap_or(LONGEST);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_double_up_to_the_cap_and_give_way_to_shutdown() {
        let stop = CancellationToken::new();
        let mut pause = Pause::starting_at(Duration::from_millis(2));
        assert!(pause.wait(&stop).await);
        assert_eq!(pause.next(), Duration::from_millis(4));
        stop.cancel();
        let mut long = Pause::starting_at(Duration::from_secs(4));
        assert!(!long.wait(&stop).await, "shutdown cuts the pause short");
        assert_eq!(long.next(), LONGEST);
    }
}
