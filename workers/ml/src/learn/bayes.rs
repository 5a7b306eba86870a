//! Gaussian naive Bayes. Written here rather than taken from smartcore: smartcore's
//! `GaussianNB` has no variance smoothing, so a feature constant within a class (any one-hot
//! column, often) gives ln(0) and NaN. This one adds scikit-learn's `var_smoothing` times the
//! largest feature variance to every variance.

use serde::{Deserialize, Serialize};

use super::{Encoded, LearnError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Bayes {
    classes: Vec<u32>,
    log_priors: Vec<f64>,
    /// Per class, per feature.
    means: Vec<f64>,
    vars: Vec<f64>,
    /// Per class: −½ Σ ln(2π var).
    norms: Vec<f64>,
}

impl Bayes {
    pub(crate) fn fit(x: &Encoded, y: &[u32], var_smoothing: f64) -> Result<Self, LearnError> {
        let d = x.width();
        let mut classes: Vec<u32> = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return Err(LearnError::task(
                "naive_bayes needs at least two classes in its training rows",
            ));
        }
        let k = classes.len();
        let slot = |c: u32| classes.binary_search(&c).unwrap_or(0);
        let mut counts = vec![0f64; k];
        let mut means = vec![0f64; k * d];
        for (row, &c) in x.row_iter().zip(y) {
            let s = slot(c);
            counts[s] += 1.0;
            for (m, v) in means[s * d..(s + 1) * d].iter_mut().zip(row) {
                *m += v;
            }
        }
        for s in 0..k {
            for m in &mut means[s * d..(s + 1) * d] {
                *m /= counts[s];
            }
        }
        let mut vars = vec![0f64; k * d];
        for (row, &c) in x.row_iter().zip(y) {
            let s = slot(c);
            for ((v, m), x) in vars[s * d..(s + 1) * d]
                .iter_mut()
                .zip(&means[s * d..(s + 1) * d])
                .zip(row)
            {
                *v += (x - m) * (x - m);
            }
        }
        // The largest variance of a feature over all rows, as scikit-learn scales its epsilon.
        let mut largest = 0f64;
        let n = x.rows() as f64;
        for c in 0..d {
            let mean = x.row_iter().map(|r| r[c]).sum::<f64>() / n;
            let var = x.row_iter().map(|r| (r[c] - mean).powi(2)).sum::<f64>() / n;
            largest = largest.max(var);
        }
        let epsilon = (var_smoothing * largest).max(f64::MIN_POSITIVE);
        for s in 0..k {
            for v in &mut vars[s * d..(s + 1) * d] {
                *v = *v / counts[s] + epsilon;
            }
        }
        let norms = (0..k)
            .map(|s| {
                -0.5 * vars[s * d..(s + 1) * d]
                    .iter()
                    .map(|v| (2.0 * std::f64::consts::PI * v).ln())
                    .sum::<f64>()
            })
            .collect();
        let log_priors = counts.iter().map(|c| (c / n).ln()).collect();
        Ok(Bayes {
            classes,
            log_priors,
            means,
            vars,
            norms,
        })
    }

    pub(crate) fn predict(&self, x: &Encoded) -> Vec<u32> {
        let d = x.width();
        x.row_iter()
            .map(|row| {
                // Every class's likelihood may underflow to −∞ (a value far from all of
                // them), or tie: the prior, not the first class, then decides.
                let prior = (0..self.classes.len())
                    .max_by(|&a, &b| self.log_priors[a].total_cmp(&self.log_priors[b]))
                    .unwrap_or(0);
                let mut best = (f64::NEG_INFINITY, prior);
                for s in 0..self.classes.len() {
                    let means = &self.means[s * d..(s + 1) * d];
                    let vars = &self.vars[s * d..(s + 1) * d];
                    let mut score = self.log_priors[s] + self.norms[s];
                    for ((x, m), v) in row.iter().zip(means).zip(vars) {
                        score -= (x - m) * (x - m) / (2.0 * v);
                    }
                    // A tie (likelihoods equal to the last bit, far from every class) goes
                    // to the likelier class.
                    let tie = score == best.0 && self.log_priors[s] > self.log_priors[best.1];
                    if score > best.0 || tie {
                        best = (score, s);
                    }
                }
                self.classes[best.1]
            })
            .collect()
    }
}
