//! Linear and logistic regression, fitted by smartcore (`LinearRegression` with its SVD or QR
//! solver, `LogisticRegression` with L-BFGS) and kept as plain coefficients, so that predicting
//! is a dot product per row with no matrix built.

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::linear_regression::{
    LinearRegression, LinearRegressionParameters, LinearRegressionSolverName,
};
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use super::error::guarded;
use super::{Encoded, LearnError};

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Ordinary least squares: y = w·x + b.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Linear {
    weights: Vec<f64>,
    intercept: f64,
}

impl Linear {
    pub(crate) fn fit(x: &Encoded, y: &[f64], solver: &str) -> Result<Self, LearnError> {
        if x.rows() <= x.width() {
            return Err(LearnError::Fit(format!(
                "linear_regression needs more rows ({}) than features ({})",
                x.rows(),
                x.width()
            )));
        }
        let solver = if solver == "qr" {
            LinearRegressionSolverName::QR
        } else {
            LinearRegressionSolverName::SVD
        };
        let matrix = x.to_dense()?;
        let y = y.to_vec();
        let model = guarded(LearnError::Fit, || {
            LinearRegression::fit(
                &matrix,
                &y,
                LinearRegressionParameters::default().with_solver(solver),
            )
        })?;
        let weights: Vec<f64> = model.coefficients().iterator(0).copied().collect();
        let intercept = *model.intercept();
        if weights.len() != x.width()
            || !intercept.is_finite()
            || weights.iter().any(|w| !w.is_finite())
        {
            return Err(LearnError::Fit(
                "the least-squares solution is not finite (collinear or constant features?)".into(),
            ));
        }
        Ok(Linear { weights, intercept })
    }

    pub(crate) fn predict(&self, x: &Encoded) -> Vec<f64> {
        x.row_iter()
            .map(|row| dot(&self.weights, row) + self.intercept)
            .collect()
    }
}

/// Multinomial (or, for two classes, binary) logistic regression with an L2 penalty.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Logistic {
    /// The class indices the model saw, in the order of its rows of weights.
    classes: Vec<u32>,
    /// One row of weights per class (a single row for two classes: class 1's log-odds).
    weights: Vec<f64>,
    intercepts: Vec<f64>,
}

impl Logistic {
    pub(crate) fn fit(x: &Encoded, y: &[u32], alpha: f64) -> Result<Self, LearnError> {
        let matrix = x.to_dense()?;
        let y = y.to_vec();
        let model: LogisticRegression<f64, u32, DenseMatrix<f64>, Vec<u32>> =
            guarded(LearnError::Fit, || {
                LogisticRegression::fit(
                    &matrix,
                    &y,
                    LogisticRegressionParameters::default().with_alpha(alpha),
                )
            })?;
        let coefficients = model.coefficients();
        let (k, d) = coefficients.shape();
        if d != x.width() {
            return Err(LearnError::Fit("unexpected coefficient shape".into()));
        }
        let mut weights = Vec::with_capacity(k * d);
        for r in 0..k {
            for c in 0..d {
                weights.push(*coefficients.get((r, c)));
            }
        }
        let intercept = model.intercept();
        let intercepts: Vec<f64> = (0..k).map(|r| *intercept.get((r, 0))).collect();
        if weights.iter().chain(&intercepts).any(|w| !w.is_finite()) {
            return Err(LearnError::Fit("the logistic fit diverged".into()));
        }
        Ok(Logistic {
            classes: model.classes().clone(),
            weights,
            intercepts,
        })
    }

    pub(crate) fn predict(&self, x: &Encoded) -> Vec<u32> {
        let d = x.width();
        x.row_iter()
            .map(|row| {
                if self.intercepts.len() == 1 {
                    let z = dot(&self.weights, row) + self.intercepts[0];
                    self.classes[usize::from(z > 0.0)]
                } else {
                    let mut best = (f64::NEG_INFINITY, 0);
                    for (k, b) in self.intercepts.iter().enumerate() {
                        let z = dot(&self.weights[k * d..(k + 1) * d], row) + b;
                        if z > best.0 {
                            best = (z, k);
                        }
                    }
                    self.classes[best.1]
                }
            })
            .collect()
    }
}
