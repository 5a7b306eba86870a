//! The calculator's messages (seed 002): requests, answers in the seed client's shapes, and the
//! ranges of a split sum_squares job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Number;
use uuid::Uuid;

/// Envelope kind of a compute job.
pub const KIND_JOB: &str = "compute";
/// Envelope kind of one range of a split sum_squares job; its id is the job's.
pub const KIND_PART: &str = "compute.part";
/// Role name of the compute workers: consumer group, heartbeats, configuration prefix.
pub const ROLE: &str = "compute";

/// A compute job's payload: `{"op": "add", "a": 10, "b": 5}` or
/// `{"op": "sum_squares", "n": 9, "parts": 3}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalcRequest {
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    /// Kept as written so that values beyond 64 bits are refused with a clear answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

/// One range of a sum_squares answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartOutput {
    pub a: u64,
    pub b: u64,
    pub result: Number,
}

/// A calculator answer. Field order is the seed's: `ok`, then `error` or
/// `result`, `a`, `b`, `op` (basic operations) or `result`, `parts` (sum_squares).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalcOutput {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<PartOutput>>,
}

impl CalcOutput {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            result: None,
            a: None,
            b: None,
            op: None,
            parts: None,
        }
    }
}

/// One range of a split job, published to the parts topic under the job's id. `n` and `parts`
/// name the split it belongs to: parts of different splits of one job are never combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartRequest {
    pub n: u64,
    pub part: u32,
    pub parts: u32,
    pub a: u64,
    pub b: u64,
}

/// A computed range, published for the persister on the results topic, told from a job's
/// result by its `kind`, [`KIND_PART`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartResult {
    pub kind: String,
    pub job_id: Uuid,
    pub n: u64,
    pub part: u32,
    pub parts: u32,
    pub a: u64,
    pub b: u64,
    pub result: Number,
    pub worker: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}
