//! Support vector machines, fitted by smartcore (`SVC`, its LASVM solver, one-vs-one over the
//! class pairs for more than two classes; `SVR` for regression) and kept as their support
//! vectors, weights and bias. smartcore's fitted `SVC`/`SVR` borrow their parameters and lose
//! the kernel when deserialized, so the model keeps what prediction needs and evaluates the
//! same decision function, f(x) = b + Σ wᵢ K(svᵢ, x), itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::svm::svc::{SVCParameters, SVC};
use smartcore::svm::svr::{SVRParameters, SVR};
use smartcore::svm::Kernels;

use super::error::guarded;
use super::{Encoded, LearnError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Kernel {
    Linear,
    Rbf { gamma: f64 },
}

impl Kernel {
    fn smartcore(self) -> Kernels {
        match self {
            Kernel::Linear => Kernels::linear(),
            Kernel::Rbf { gamma } => Kernels::rbf().with_gamma(gamma),
        }
    }

    #[inline]
    fn apply(self, a: &[f64], b: &[f64]) -> f64 {
        match self {
            Kernel::Linear => a.iter().zip(b).map(|(x, y)| x * y).sum(),
            Kernel::Rbf { gamma } => {
                let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                (-gamma * d2).exp()
            }
        }
    }
}

/// The settings of one fit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SvmConfig {
    pub(crate) kernel: Kernel,
    pub(crate) c: f64,
    pub(crate) tol: f64,
    pub(crate) epochs: usize,
    pub(crate) epsilon: f64,
    pub(crate) seed: u64,
}

/// One decision function.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Machine {
    vectors: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

impl Machine {
    /// Reads the fitted state out of a serialized smartcore SVC or SVR.
    fn from_smartcore(fitted: Value, width: usize) -> Result<Self, LearnError> {
        let broken = || LearnError::Fit("the SVM's fitted state is unreadable".into());
        let numbers =
            |v: &Value| -> Option<Vec<f64>> { v.as_array()?.iter().map(Value::as_f64).collect() };
        let mut vectors = Vec::new();
        for sv in fitted["instances"].as_array().ok_or_else(broken)? {
            let sv = numbers(sv).ok_or_else(broken)?;
            if sv.len() != width {
                return Err(broken());
            }
            vectors.extend(sv);
        }
        let weights = numbers(&fitted["w"]).ok_or_else(broken)?;
        let bias = fitted["b"].as_f64().ok_or_else(broken)?;
        if weights.len() * width != vectors.len()
            || !bias.is_finite()
            || weights.iter().chain(&vectors).any(|x| !x.is_finite())
        {
            return Err(broken());
        }
        Ok(Machine {
            vectors,
            weights,
            bias,
        })
    }

    #[inline]
    fn decide(&self, kernel: Kernel, row: &[f64]) -> f64 {
        let width = row.len();
        let mut f = self.bias;
        for (w, sv) in self.weights.iter().zip(self.vectors.chunks_exact(width)) {
            f += w * kernel.apply(sv, row);
        }
        f
    }
}

/// A classifier: one machine per pair of classes, voting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Svc {
    kernel: Kernel,
    classes: Vec<u32>,
    /// (i, j, machine): a positive decision votes for `classes[j]`, otherwise `classes[i]`.
    pairs: Vec<(usize, usize, Machine)>,
}

impl Svc {
    pub(crate) fn fit(x: &Encoded, y: &[u32], config: &SvmConfig) -> Result<Self, LearnError> {
        let mut classes = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return Err(LearnError::task(
                "svm needs at least two classes in its training rows",
            ));
        }
        let mut pairs = Vec::new();
        for i in 0..classes.len() {
            for j in i + 1..classes.len() {
                let rows: Vec<usize> = (0..y.len())
                    .filter(|&r| y[r] == classes[i] || y[r] == classes[j])
                    .collect();
                // smartcore 0.7's SVC reads only the first `rows` features of each row (it
                // takes the row count where it means the width), so with fewer rows than
                // features the rows are repeated, and C divided by the copies: the same optimum.
                let copies = x.width().div_ceil(rows.len()).max(1);
                let rows: Vec<usize> = (0..copies).flat_map(|_| rows.iter().copied()).collect();
                let params: SVCParameters<f64, u32, DenseMatrix<f64>, Vec<u32>> =
                    SVCParameters::default()
                        .with_c(config.c / copies as f64)
                        .with_tol(config.tol)
                        .with_epoch(config.epochs)
                        .with_seed(Some(config.seed))
                        .with_kernel(config.kernel.smartcore());
                let sub = x.select(&rows);
                let labels: Vec<u32> = rows
                    .iter()
                    .map(|&r| u32::from(y[r] == classes[j]))
                    .collect();
                let matrix = sub.to_dense()?;
                let fitted = guarded(LearnError::Fit, || {
                    SVC::fit(&matrix, &labels, &params).and_then(|svc| {
                        serde_json::to_value(&svc).map_err(|e| {
                            smartcore::error::Failed::fit(&format!("unserializable SVC: {e}"))
                        })
                    })
                })?;
                // smartcore's SVC sorts its two labels: a positive decision is label 1, class j.
                pairs.push((i, j, Machine::from_smartcore(fitted, x.width())?));
            }
        }
        Ok(Svc {
            kernel: config.kernel,
            classes,
            pairs,
        })
    }

    pub(crate) fn predict(&self, x: &Encoded) -> Vec<u32> {
        let mut votes = vec![0u32; self.classes.len()];
        x.row_iter()
            .map(|row| {
                votes.fill(0);
                for (i, j, machine) in &self.pairs {
                    let winner = if machine.decide(self.kernel, row) > 0.0 {
                        *j
                    } else {
                        *i
                    };
                    votes[winner] += 1;
                }
                // Ties go to the lower class, as in scikit-learn.
                let best = (0..votes.len())
                    .max_by(|&a, &b| votes[a].cmp(&votes[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                self.classes[best]
            })
            .collect()
    }
}

/// A regressor, on standardized targets (so that `epsilon` is in units of the target's
/// standard deviation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Svr {
    kernel: Kernel,
    machine: Machine,
    mean: f64,
    std: f64,
}

impl Svr {
    pub(crate) fn fit(x: &Encoded, y: &[f64], config: &SvmConfig) -> Result<Self, LearnError> {
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n;
        let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let std = if std > 0.0 && std.is_finite() {
            std
        } else {
            1.0
        };
        let scaled: Vec<f64> = y.iter().map(|v| (v - mean) / std).collect();
        let params: SVRParameters<f64> = SVRParameters::default()
            .with_c(config.c)
            .with_tol(config.tol)
            .with_eps(config.epsilon)
            .with_kernel(config.kernel.smartcore());
        let matrix = x.to_dense()?;
        let fitted = guarded(LearnError::Fit, || {
            SVR::fit(&matrix, &scaled, &params).and_then(|svr| {
                serde_json::to_value(&svr)
                    .map_err(|e| smartcore::error::Failed::fit(&format!("unserializable SVR: {e}")))
            })
        })?;
        Ok(Svr {
            kernel: config.kernel,
            machine: Machine::from_smartcore(fitted, x.width())?,
            mean,
            std,
        })
    }

    pub(crate) fn predict(&self, x: &Encoded) -> Vec<f64> {
        x.row_iter()
            .map(|row| self.mean + self.std * self.machine.decide(self.kernel, row))
            .collect()
    }
}
