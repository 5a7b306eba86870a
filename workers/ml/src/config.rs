//! The ML workers' settings, read once from the environment (defaults here and in
//! `.env.example`). The stages' shapes come from the core's `TRAINER_*` and `PREDICTOR_*`
//! variables.

use std::time::Duration;

use sluice_core::config::{env_duration, env_or, ConfigError};

#[derive(Debug, Clone)]
pub struct MlConfig {
    /// Largest `data` object a training job or a prediction request may carry, in bytes
    /// (`ML_MAX_DATA_BYTES`); a larger one is a failed job.
    pub max_data_bytes: usize,
    /// Address space a fit may take (`ML_TRAIN_MEMORY_MB`, 0 for no limit): a fit past it
    /// fails alone, in its own process, and the worker keeps serving.
    pub train_memory_bytes: Option<u64>,
    /// Largest model artifact a fit may make (`ML_MAX_ARTIFACT_MB`); a larger one fails its job
    /// (the registry's `bytea` holds at most 1 GiB, and the worker holds the artifact whole).
    pub max_artifact_bytes: usize,
    /// Longest a fit may run (`ML_TRAIN_TIME_LIMIT`); a longer one is killed and its job fails.
    pub train_time_limit: Duration,
    /// Artifacts kept deserialized in memory, at most this many bytes of them
    /// (`ML_MODEL_CACHE_MB`); the least recently used go first.
    pub model_cache_bytes: usize,
    /// Threads encoding and predicting batches (`ML_PREDICT_THREADS`).
    pub predict_threads: usize,
}

const MIB: u64 = 1024 * 1024;

impl MlConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let max_data_bytes: usize = env_or("ML_MAX_DATA_BYTES", 3_900_000)?;
        if max_data_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "ML_MAX_DATA_BYTES".into(),
                value: "0".into(),
                reason: "must be above 0".into(),
            });
        }
        let memory_mb: u64 = env_or("ML_TRAIN_MEMORY_MB", 2048)?;
        let train_time_limit = env_duration("ML_TRAIN_TIME_LIMIT", "30m")?;
        if train_time_limit.is_zero() {
            return Err(ConfigError::Invalid {
                name: "ML_TRAIN_TIME_LIMIT".into(),
                value: "0".into(),
                reason: "must be above 0: a fit needs a bound".into(),
            });
        }
        let cache_mb: u64 = env_or("ML_MODEL_CACHE_MB", 512)?;
        let artifact_mb: u64 = env_or("ML_MAX_ARTIFACT_MB", 256)?;
        if !(1..=1000).contains(&artifact_mb) {
            return Err(ConfigError::Invalid {
                name: "ML_MAX_ARTIFACT_MB".into(),
                value: artifact_mb.to_string(),
                reason: "must be from 1 to 1000 (PostgreSQL's bytea holds at most 1 GiB)".into(),
            });
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            max_data_bytes,
            train_memory_bytes: (memory_mb > 0).then(|| memory_mb.saturating_mul(MIB)),
            max_artifact_bytes: (artifact_mb * MIB) as usize,
            train_time_limit,
            model_cache_bytes: usize::try_from(cache_mb.saturating_mul(MIB)).unwrap_or(usize::MAX),
            predict_threads: env_or("ML_PREDICT_THREADS", cores)?.max(1),
        })
    }
}
