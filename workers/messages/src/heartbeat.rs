//! The liveness message every service publishes every `HEARTBEAT_INTERVAL`; the persister keeps
//! the latest per instance, and a worker counts as live while that one is young enough.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A worker is live while its last heartbeat is younger than this.
pub const LIVE_WITHIN_SECS: i64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Idle,
    Busy,
    /// Work is waiting and none has finished for longer than the stage's stall limit.
    Stalled,
    /// Sent once on a clean shutdown, so the worker stops counting as live at once.
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Stalled => "stalled",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub role: String,
    pub instance: String,
    pub host: String,
    pub state: WorkerState,
    pub in_flight: u64,
    pub processed: u64,
    /// Messages the instance sent to the dead letters so far (absent from older senders).
    #[serde(default)]
    pub dead_lettered: u64,
    /// Why the stage's dead letters are over their share of recent messages, while they are:
    /// the stage goes on, and `sluice health` fails with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    pub version: String,
    pub at: DateTime<Utc>,
}
