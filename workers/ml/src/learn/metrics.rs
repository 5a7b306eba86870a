//! The two metrics: accuracy (share of rows whose class is right) for classification, R²
//! (1 − residual sum of squares / total sum of squares) for regression.

use super::algorithms::Output;
use super::target::Targets;
use super::Task;

/// The metric's name for a task.
pub(crate) fn name(task: Task) -> &'static str {
    match task {
        Task::Classification => "accuracy",
        Task::Regression => "r2",
    }
}

/// Scores predictions against the truth. R² of a constant truth is 1 when predicted exactly
/// and 0 otherwise, as scikit-learn has it; a prediction of the wrong kind scores 0.
pub(crate) fn score(truth: &Targets, predicted: &Output) -> f64 {
    match (truth, predicted) {
        (Targets::Classes { index, .. }, Output::Classes(p)) if !index.is_empty() => {
            let right = index.iter().zip(p).filter(|(a, b)| a == b).count();
            right as f64 / index.len() as f64
        }
        (Targets::Values(y), Output::Values(p)) if !y.is_empty() => {
            let mean = y.iter().sum::<f64>() / y.len() as f64;
            let total: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
            let residual: f64 = y.iter().zip(p).map(|(v, q)| (v - q).powi(2)).sum();
            if total > 0.0 {
                1.0 - residual / total
            } else if residual == 0.0 {
                1.0
            } else {
                0.0
            }
        }
        _ => 0.0,
    }
}
