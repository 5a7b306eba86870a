//! What can go wrong training or predicting. Every variant is permanent: the same job, retried,
//! fails the same way, so a worker fails the job instead of retrying it.

/// A training job or a prediction request that cannot succeed. `Display` is the message the
/// user sees.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// The data object is malformed: bad JSON, the wrong shape, a ragged row, a non-finite
    /// number, a field of the wrong type, a null target, too few rows.
    #[error("invalid data: {0}")]
    Data(String),
    /// A hyper-parameter is unknown, of the wrong type or out of range.
    #[error("invalid parameter: {0}")]
    Param(String),
    /// The algorithm, the task and the target do not go together (a classifier on a
    /// continuous target, a single class, a regression on strings).
    #[error("{0}")]
    Task(String),
    /// The estimator refused the data (smartcore reported a failure, or a numeric breakdown).
    #[error("the model could not be fitted: {0}")]
    Fit(String),
    /// The model could not predict these rows.
    #[error("prediction failed: {0}")]
    Predict(String),
    /// A stored artifact could not be read back, or written.
    #[error("invalid model artifact: {0}")]
    Artifact(String),
}

impl LearnError {
    pub(crate) fn data(message: impl Into<String>) -> Self {
        Self::Data(message.into())
    }

    pub(crate) fn param(message: impl Into<String>) -> Self {
        Self::Param(message.into())
    }

    pub(crate) fn task(message: impl Into<String>) -> Self {
        Self::Task(message.into())
    }
}

/// Runs a smartcore fit or predict, turning its `Failed` into `wrap` and a panic into the same
/// error. The inputs are validated before (finite numbers, two classes, enough rows), so a panic
/// here is a last resort for a degenerate case smartcore does not report itself.
pub(crate) fn guarded<T, E: std::fmt::Display>(
    wrap: fn(String) -> LearnError,
    run: impl FnOnce() -> Result<T, E>,
) -> Result<T, LearnError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(wrap(e.to_string())),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "an internal error".to_string());
            Err(wrap(format!("the estimator gave up ({why})")))
        }
    }
}
