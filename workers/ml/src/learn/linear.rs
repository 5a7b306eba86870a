//! Linear and logistic regression, kept as plain coefficients, so that predicting is a dot
//! product per row with no matrix built. Least squares is solved here (normal equations by
//! Cholesky, or a pivoted QR): smartcore's `LinearRegression` took 6× scikit-learn's time on
//! 10,000 × 20, copying the data into its matrices and factoring all of it by SVD or QR where
//! the 20 × 20 XᵀX suffices. Logistic regression is smartcore's (L-BFGS).

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use super::error::guarded;
use super::{Encoded, LearnError};

#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
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

/// A pivot below this fraction of the largest diagonal entry of XᵀX (or of the largest column
/// norm, for QR) counts as zero: the column is, numerically, a combination of the others.
const RANK_TOLERANCE: f64 = 1e-10;

impl Linear {
    /// Solves least squares on the centered features (the intercept is then the mean of y
    /// minus w·mean(x)). `"cholesky"` forms XᵀX (d × d: one pass over the rows, the whole cost
    /// on data much taller than wide) and factors it, falling back to QR when it is not
    /// numerically positive definite; `"qr"` goes straight to a Householder QR of X with
    /// column pivoting, which squares no condition number. A column QR finds dependent (a
    /// constant column, or a full one-hot group beside the intercept) gets weight 0: every
    /// least-squares solution fits the training rows equally.
    pub(crate) fn fit(x: &Encoded, y: &[f64], solver: &str) -> Result<Self, LearnError> {
        let (n, d) = (x.rows(), x.width());
        if n <= d || y.len() != n {
            return Err(LearnError::Fit(format!(
                "linear_regression needs more rows ({n}) than features ({d})"
            )));
        }
        let mut means = vec![0.0; d];
        for row in x.row_iter() {
            for (m, v) in means.iter_mut().zip(row) {
                *m += v;
            }
        }
        means.iter_mut().for_each(|m| *m /= n as f64);
        let y_mean = y.iter().sum::<f64>() / n as f64;
        let cholesky = if solver == "qr" {
            None
        } else {
            normal_equations(x, y, &means, y_mean)
        };
        let weights = match cholesky {
            Some(w) => w,
            None => pivoted_qr(x, y, &means, y_mean),
        };
        let intercept = y_mean - dot(&weights, &means);
        if !intercept.is_finite() || weights.iter().any(|w| !w.is_finite()) {
            return Err(LearnError::Fit(
                "the least-squares solution is not finite".into(),
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

/// Solves (XᵀX) w = Xᵀy on centered data by Cholesky, or none if XᵀX is not numerically
/// positive definite (collinear or constant columns).
fn normal_equations(x: &Encoded, y: &[f64], means: &[f64], y_mean: f64) -> Option<Vec<f64>> {
    let d = means.len();
    // The upper triangle of XᵀX, row by row, and Xᵀy.
    let mut a = vec![0.0; d * d];
    let mut b = vec![0.0; d];
    let mut centered = vec![0.0; d];
    for (row, &t) in x.row_iter().zip(y) {
        for ((c, v), m) in centered.iter_mut().zip(row).zip(means) {
            *c = v - m;
        }
        let t = t - y_mean;
        for i in 0..d {
            let ci = centered[i];
            b[i] += ci * t;
            let out = &mut a[i * d + i..(i + 1) * d];
            for (o, cj) in out.iter_mut().zip(&centered[i..]) {
                *o += ci * cj;
            }
        }
    }
    let largest = (0..d).map(|i| a[i * d + i]).fold(0.0, f64::max);
    // A = LLᵀ in place (L in the lower triangle, read from the upper one).
    for j in 0..d {
        let mut pivot = a[j * d + j];
        for k in 0..j {
            pivot -= a[j * d + k] * a[j * d + k];
        }
        if pivot.is_nan() || pivot <= RANK_TOLERANCE * largest {
            return None;
        }
        let pivot = pivot.sqrt();
        a[j * d + j] = pivot;
        for i in j + 1..d {
            let mut v = a[j * d + i];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / pivot;
        }
    }
    // L z = b, then Lᵀ w = z.
    for i in 0..d {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * d + k] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
    for i in (0..d).rev() {
        let mut v = b[i];
        for k in i + 1..d {
            v -= a[k * d + i] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
    Some(b)
}

/// Least squares by Householder QR with column pivoting on the centered data; the columns
/// past the numerical rank get weight 0.
fn pivoted_qr(x: &Encoded, y: &[f64], means: &[f64], y_mean: f64) -> Vec<f64> {
    let (n, d) = (x.rows(), means.len());
    // Column-major, so that a column is contiguous.
    let mut a: Vec<Vec<f64>> = (0..d)
        .map(|c| x.row_iter().map(|row| row[c] - means[c]).collect())
        .collect();
    let mut b: Vec<f64> = y.iter().map(|t| t - y_mean).collect();
    let mut order: Vec<usize> = (0..d).collect();
    let mut norms: Vec<f64> = a.iter().map(|col| dot(col, col)).collect();
    let largest = norms.iter().copied().fold(0.0, f64::max).sqrt();
    let mut rank = 0;
    for k in 0..d.min(n) {
        // The column of largest remaining norm goes next.
        let p = (k..d)
            .max_by(|&i, &j| norms[i].total_cmp(&norms[j]))
            .unwrap_or(k);
        a.swap(k, p);
        norms.swap(k, p);
        order.swap(k, p);
        let alpha = dot(&a[k][k..], &a[k][k..]).sqrt();
        if alpha.is_nan() || alpha <= RANK_TOLERANCE * largest {
            break;
        }
        rank += 1;
        // v = column − (−sign·α)e_k, kept in place of the column below the diagonal.
        let alpha = if a[k][k] > 0.0 { -alpha } else { alpha };
        let (head, tail) = a.split_at_mut(k + 1);
        let v = &mut head[k];
        v[k] -= alpha;
        let vv = dot(&v[k..], &v[k..]);
        if vv > 0.0 {
            for col in tail.iter_mut() {
                let s = dot(&v[k..], &col[k..]) / vv * 2.0;
                col[k..]
                    .iter_mut()
                    .zip(&v[k..])
                    .for_each(|(c, vi)| *c -= s * vi);
            }
            let s = dot(&v[k..], &b[k..]) / vv * 2.0;
            b[k..]
                .iter_mut()
                .zip(&v[k..])
                .for_each(|(c, vi)| *c -= s * vi);
        }
        v[k] = alpha;
        for (i, col) in tail.iter().enumerate() {
            norms[k + 1 + i] = dot(&col[k + 1..], &col[k + 1..]);
        }
    }
    // R w = Qᵀb on the first `rank` columns; R's diagonal is a[k][k], its upper part a[j][k].
    let mut w = vec![0.0; rank];
    for k in (0..rank).rev() {
        let mut v = b[k];
        for j in k + 1..rank {
            v -= a[j][k] * w[j];
        }
        w[k] = v / a[k][k];
    }
    let mut weights = vec![0.0; d];
    for (k, value) in w.into_iter().enumerate() {
        weights[order[k]] = value;
    }
    weights
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows (a, b, c) with y = 1 + 2a − 3b + 0.5c plus a little deterministic noise.
    fn data(columns: impl Fn(f64, f64, f64) -> Vec<f64>) -> (Encoded, Vec<f64>) {
        let mut values = Vec::new();
        let mut y = Vec::new();
        let mut width = 0;
        for i in 0..50 {
            let t = i as f64;
            let (a, b, c) = ((t * 0.37).sin(), (t * 0.91).cos(), (t * 0.13).sin() * 2.0);
            let row = columns(a, b, c);
            width = row.len();
            values.extend(row);
            y.push(1.0 + 2.0 * a - 3.0 * b + 0.5 * c + 0.01 * (t * 7.1).sin());
        }
        (Encoded::new(50, width, values), y)
    }

    #[test]
    fn cholesky_and_qr_agree_on_a_full_rank_problem() {
        let (x, y) = data(|a, b, c| vec![a, b, c]);
        let chol = Linear::fit(&x, &y, "cholesky").unwrap();
        let qr = Linear::fit(&x, &y, "qr").unwrap();
        for (w, q) in chol.weights.iter().zip(&qr.weights) {
            assert!(
                (w - q).abs() < 1e-9,
                "{:?} vs {:?}",
                chol.weights,
                qr.weights
            );
        }
        assert!((chol.intercept - qr.intercept).abs() < 1e-9);
        assert!((chol.weights[0] - 2.0).abs() < 0.05 && (chol.weights[1] + 3.0).abs() < 0.05);
    }

    #[test]
    fn dependent_and_constant_columns_get_weight_zero_and_the_same_fit() {
        let (full, y) = data(|a, b, c| vec![a, b, c]);
        // A constant column and a duplicate of a: Cholesky fails and QR takes over.
        let (x, _) = data(|a, b, c| vec![a, 4.0, b, a, c]);
        let reference = Linear::fit(&full, &y, "cholesky").unwrap().predict(&full);
        for solver in ["cholesky", "qr"] {
            let model = Linear::fit(&x, &y, solver).unwrap();
            assert_eq!(model.weights[1], 0.0, "{solver}: {:?}", model.weights);
            assert!(model.weights[0] == 0.0 || model.weights[3] == 0.0);
            for (p, r) in model.predict(&x).iter().zip(&reference) {
                assert!((p - r).abs() < 1e-9, "{solver}");
            }
        }
    }
}
