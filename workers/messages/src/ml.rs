//! Machine learning over the pipeline (seeds 000 and 001): training jobs, prediction requests,
//! and the answers the ML workers give them.
//!
//! A training job is an [`Envelope`](crate::Envelope) of kind [`KIND_TRAIN`] on the
//! `ml.train` topic; its answer ([`TrainOutput`]) is the job's result once the model is stored
//! in the registry. A prediction request is an envelope of kind [`KIND_PREDICT`] on
//! `ml.predict`; its answer ([`PredictOutput`]) carries one prediction per row. A job that
//! cannot succeed (bad data, an unknown model) is answered `{"ok": false, "error": "…"}`: a
//! failed job, not a retry.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Envelope and result kind of a training job.
pub const KIND_TRAIN: &str = "ml.train";
/// Envelope and result kind of a prediction request.
pub const KIND_PREDICT: &str = "ml.predict";
/// Role of the ML workers' training stage: consumer group, heartbeats, `TRAINER_*` settings.
pub const TRAINER_ROLE: &str = "trainer";
/// Role of the ML workers' prediction stage.
pub const PREDICTOR_ROLE: &str = "predictor";
/// Longest model name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A training job's payload: `{"algorithm": "svm", "data": {"X": [[1.0, 1.0], …], "y": [0.0,
/// …]}}`, or with records: `{"algorithm": "auto", "name": "listings", "data": {"records":
/// [{…}], "target": "sold"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    pub algorithm: String,
    /// The model's name in the registry; by default the algorithm's, so seed 000's
    /// `train_model/svm` then `predict_model/svm` works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `classification` or `regression`; inferred from the target when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Hyper-parameters of the algorithm; each has a documented default.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// `{"X": [[…]], "y": […]}` or `{"records": [{…}], "target": "column"}`, kept as written:
    /// the worker parses it once, with the model's own checks.
    pub data: Box<RawValue>,
}

impl TrainRequest {
    /// The name the model is stored under.
    pub fn model_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.algorithm)
    }
}

/// A prediction request's payload: `{"model": "svm", "data": {"X": [[4.0, 4.0]]}}` or
/// `{"model": "listings", "version": 3, "data": {"records": [{…}]}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub model: String,
    /// A pinned version; the latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// `{"X": [[…]]}` or `{"records": [{…}]}`, the shape the model was trained on.
    pub data: Box<RawValue>,
}

/// Why a model name cannot be used, if it cannot: 1 to [`MAX_NAME_BYTES`] letters, digits,
/// `_`, `-` or `.`, starting with a letter or digit, so it is safe in a command line (no
/// option), a log and a URL (no `.` or `..`) alike.
pub fn check_model_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "a model name is 1 to {MAX_NAME_BYTES} characters, not {}",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        let shown: String = name.chars().take(40).collect();
        return Err(format!(
            "model name {shown:?} may hold only letters, digits, '_', '-' and '.', and starts with a letter or digit"
        ));
    }
    Ok(())
}

/// How well a model fits: accuracy (classification) or R² (regression), measured on the
/// training data or by cross-validation (`auto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub on: String,
}

/// A training job's answer, once its model is in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutput {
    pub ok: bool,
    /// Always `trained`: the seed's answer.
    pub status: String,
    pub model: String,
    pub version: i32,
    pub algorithm: String,
    pub task: String,
    pub rows: u64,
    pub training_ms: u64,
    pub metric: Metric,
    /// `auto` only: every candidate's cross-validated metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderboard: Option<Value>,
}

/// A prediction request's answer: one prediction per row, in the rows' order, by the model
/// version that made them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictOutput {
    pub ok: bool,
    pub model: String,
    pub version: i32,
    pub predictions: Vec<Value>,
}

/// A job's answer when it cannot succeed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    pub ok: bool,
    pub error: String,
}

/// Longest error kept in a failed job's answer, in characters: a reason may quote its input
/// (a parameter's name, a category), which may be long.
pub const MAX_ERROR_CHARS: usize = 1_000;

impl Failed {
    pub fn new(error: impl Into<String>) -> Self {
        let mut error = error.into();
        if let Some((cut, _)) = error.char_indices().nth(MAX_ERROR_CHARS) {
            error.truncate(cut);
            error.push('…');
        }
        Self { ok: false, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_start_of_a_long_reason() {
        let failed = Failed::new("é".repeat(5_000));
        assert_eq!(failed.error.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(failed.error.ends_with('…'));
        assert_eq!(Failed::new("short").error, "short");
    }

    #[test]
    fn model_names_are_checked() {
        assert!(check_model_name("svm").is_ok());
        assert!(check_model_name("listings-v2.1_a").is_ok());
        assert!(check_model_name("").is_err());
        assert!(check_model_name("a b").is_err());
        assert!(check_model_name("../x").is_err());
        assert!(check_model_name("..").is_err());
        assert!(check_model_name("-rf").is_err());
        assert!(check_model_name(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn a_training_job_names_its_model_after_the_algorithm_by_default() {
        let job: TrainRequest =
            serde_json::from_str(r#"{"algorithm": "svm", "data": {"X": [[1.0]], "y": [0.0]}}"#)
                .unwrap();
        assert_eq!(job.model_name(), "svm");
        assert!(job.params.is_empty());
        let named = TrainRequest {
            name: Some("listings".into()),
            ..job
        };
        assert_eq!(named.model_name(), "listings");
    }
}
