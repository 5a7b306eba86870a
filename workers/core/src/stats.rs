//! Counters a stage updates as it works, read by the heartbeat: how much is in flight and
//! waiting, how much is done or dead-lettered, when work last finished (which tells busy from
//! stalled), and the dead-letter alarm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_messages::heartbeat::WorkerState;

/// How long after the last dead letter a raised alarm still shows. The alarm's share is
/// recomputed only as messages finish, so on a topic that went quiet after a burst of garbage
/// it would otherwise show until a window of good messages came.
pub const ALARM_FADES_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct WorkerStats {
    started: Instant,
    in_flight: AtomicU64,
    /// Received, not handed to the handler yet.
    waiting: AtomicU64,
    processed: AtomicU64,
    dead_lettered: AtomicU64,
    /// Why the stage's dead letters are over their share, while they are.
    alarm: Mutex<Option<String>>,
    /// Milliseconds after `started` of the last dead letter.
    last_dead_letter_ms: AtomicU64,
    /// Milliseconds after `started` when work last finished (or the stage became idle).
    last_progress_ms: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            alarm: Mutex::new(None),
            last_dead_letter_ms: AtomicU64::new(0),
            last_progress_ms: AtomicU64::new(0),
        }
    }
}

impl WorkerStats {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn started(&self, messages: usize) {
        if self.in_flight.fetch_add(messages as u64, Ordering::Relaxed) == 0 {
            // Idle until now: the stall clock starts with this work, not with the last finish.
            self.last_progress_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// `messages` left flight; `durable` of them were fully handled.
    pub fn finished(&self, messages: usize, durable: usize) {
        self.in_flight.fetch_sub(messages as u64, Ordering::Relaxed);
        self.processed.fetch_add(durable as u64, Ordering::Relaxed);
        self.last_progress_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// How many received messages wait for a slot.
    pub fn set_waiting(&self, messages: usize) {
        self.waiting.store(messages as u64, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn dead_lettered_one(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.last_dead_letter_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// Messages sent to the dead letters since the stage started.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    pub fn set_alarm(&self, reason: Option<String>) {
        *self
            .alarm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = reason;
    }

    /// The alarm raised, unless no message was dead-lettered for `fades_after`
    /// ([`ALARM_FADES_AFTER`]).
    pub fn alarm(&self, fades_after: Duration) -> Option<String> {
        let quiet = self
            .now_ms()
            .saturating_sub(self.last_dead_letter_ms.load(Ordering::Relaxed));
        if Duration::from_millis(quiet) >= fades_after {
            return None;
        }
        self.alarm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Idle with nothing to do, busy while work finishes, stalled when work is there and
    /// nothing has finished for `stall_after`.
    pub fn state(&self, stall_after: Duration) -> WorkerState {
        let pending = self.in_flight() + self.waiting.load(Ordering::Relaxed);
        if pending == 0 {
            return WorkerState::Idle;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last_progress_ms.load(Ordering::Relaxed));
        if Duration::from_millis(since) >= stall_after {
            WorkerState::Stalled
        } else {
            WorkerState::Busy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_without_progress_is_reported_stalled() {
        let stats = WorkerStats::default();
        let limit = Duration::from_millis(30);
        assert_eq!(stats.state(limit), WorkerState::Idle);
        stats.started(1);
        assert_eq!(stats.state(limit), WorkerState::Busy);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(stats.state(limit), WorkerState::Stalled);
        stats.finished(1, 1);
        assert_eq!(stats.state(limit), WorkerState::Idle);
        stats.set_waiting(3);
        assert_eq!(stats.state(limit), WorkerState::Busy);
    }

    #[test]
    fn an_alarm_fades_once_no_message_is_dead_lettered_for_a_while() {
        let stats = WorkerStats::default();
        let fades_after = Duration::from_millis(500);
        stats.dead_lettered_one();
        stats.set_alarm(Some("garbage".into()));
        assert_eq!(stats.alarm(fades_after).as_deref(), Some("garbage"));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(stats.alarm(fades_after), None, "quiet: faded");
        stats.dead_lettered_one();
        assert_eq!(
            stats.alarm(fades_after).as_deref(),
            Some("garbage"),
            "garbage again"
        );
    }
}
