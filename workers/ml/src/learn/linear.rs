//! Linear and logistic regression, kept as plain coefficients, so that predicting is a dot
//! product per row with no matrix built. Least squares is solved here (normal equations by
//! Cholesky, or a pivoted QR): smartcore's `LinearRegression` took 6× scikit-learn's time on
//! 10,000 × 20, copying the data into its matrices and factoring all of it by SVD or QR where
//! the 20 × 20 XᵀX suffices. Logistic regression is solved here too, by Newton's method
//! (L-BFGS for wide models): smartcore's L-BFGS took 3.5× scikit-learn's time on 10,000 × 20.

use serde::{Deserialize, Serialize};

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
    solve_spd(&mut a, &mut b, d).then_some(b)
}

/// Solves A x = b in place (x into `b`) for a symmetric positive definite d × d `a` given by
/// its upper triangle, row-major; the factor L overwrites the lower triangle. False, with `a`
/// and `b` spoilt, when a pivot falls below [`RANK_TOLERANCE`] of the largest diagonal entry:
/// A is not numerically positive definite.
pub(crate) fn solve_spd(a: &mut [f64], b: &mut [f64], d: usize) -> bool {
    let largest = (0..d).map(|i| a[i * d + i]).fold(0.0, f64::max);
    // A = LLᵀ in place (L in the lower triangle, read from the upper one).
    for j in 0..d {
        let mut pivot = a[j * d + j];
        for k in 0..j {
            pivot -= a[j * d + k] * a[j * d + k];
        }
        if pivot.is_nan() || pivot <= RANK_TOLERANCE * largest {
            return false;
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
    // L z = b, then Lᵀ x = z.
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
    true
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

/// Above this many coefficients (rows of weights × (features + 1)) the fit is L-BFGS rather
/// than Newton: a Newton step costs rows × coefficients² / 2 to form the Hessian, which on
/// 10,000 rows is a few milliseconds at 200 coefficients and grows quadratically past it.
const NEWTON_MAX_COEFFICIENTS: usize = 200;
/// Iterations at most. Newton from zero needs about ten on well-posed data, L-BFGS a few
/// hundred; the cap only ends an unpenalized (alpha 0) fit of separable classes, whose weights
/// grow without bound while the loss keeps falling.
const NEWTON_MAX_ITERATIONS: usize = 100;
const LBFGS_MAX_ITERATIONS: usize = 1000;
/// Converged when the largest gradient entry, per row of data, is below this.
const GRADIENT_TOLERANCE: f64 = 1e-9;
/// The correction pairs L-BFGS keeps.
const LBFGS_MEMORY: usize = 10;

/// The penalized multinomial log-loss on standardized features, scikit-learn's objective: the
/// sum of the rows' log-losses + alpha/2 · ‖w‖², intercepts unpenalized. Coefficients are
/// `rows` blocks of `d + 1`: a class's weights, then its intercept. With two classes there is
/// one block, class 1's, and class 0's logit is an implicit 0 (scikit-learn's binary model);
/// with more, a block per class, all penalized alike (its multinomial model).
struct Objective<'a> {
    x: &'a Encoded,
    /// Each row's class, as a position in the model's classes.
    target: Vec<usize>,
    rows: usize,
    implicit: bool,
    alpha: f64,
}

impl Objective<'_> {
    fn width(&self) -> usize {
        self.x.width() + 1
    }

    /// The block of the data row's class, none for the implicit class 0.
    fn block_of(&self, t: usize) -> Option<usize> {
        if self.implicit {
            t.checked_sub(1)
        } else {
            Some(t)
        }
    }

    /// Turns the logits `z` into probabilities in place, returning log Σ exp (the implicit 0
    /// logit included).
    fn softmax(&self, z: &mut [f64]) -> f64 {
        let top = z.iter().copied().fold(
            if self.implicit {
                0.0
            } else {
                f64::NEG_INFINITY
            },
            f64::max,
        );
        let mut sum = if self.implicit { (-top).exp() } else { 0.0 };
        for v in z.iter_mut() {
            *v = (*v - top).exp();
            sum += *v;
        }
        z.iter_mut().for_each(|v| *v /= sum);
        top + sum.ln()
    }

    fn logits(&self, theta: &[f64], row: &[f64], z: &mut [f64]) {
        let w = self.width();
        for (k, zk) in z.iter_mut().enumerate() {
            let block = &theta[k * w..(k + 1) * w];
            *zk = dot(&block[..w - 1], row) + block[w - 1];
        }
    }

    fn penalty(&self, theta: &[f64]) -> f64 {
        let w = self.width();
        theta
            .chunks_exact(w)
            .map(|block| dot(&block[..w - 1], &block[..w - 1]))
            .sum::<f64>()
            * self.alpha
            / 2.0
    }

    fn value(&self, theta: &[f64]) -> f64 {
        let mut z = vec![0.0; self.rows];
        let mut loss = self.penalty(theta);
        for (row, &t) in self.x.row_iter().zip(&self.target) {
            self.logits(theta, row, &mut z);
            let own = self.block_of(t).map_or(0.0, |k| z[k]);
            loss += self.softmax(&mut z) - own;
        }
        loss
    }

    /// The objective and its gradient into `grad`, and when `hessian` is given the upper
    /// triangle of the Hessian into it (row-major, coefficients × coefficients). Each block of
    /// classes (k, l) is c_kl · Σ x̃x̃ᵀ, symmetric itself, so only its upper triangle is summed
    /// over the rows and the rest of the off-diagonal blocks is mirrored once at the end.
    fn evaluate(&self, theta: &[f64], grad: &mut [f64], mut hessian: Option<&mut [f64]>) -> f64 {
        let (w, p) = (self.width(), theta.len());
        grad.fill(0.0);
        if let Some(h) = hessian.as_deref_mut() {
            h.fill(0.0);
        }
        let mut z = vec![0.0; self.rows];
        let mut xt = vec![1.0; w];
        let mut loss = self.penalty(theta);
        for (row, &t) in self.x.row_iter().zip(&self.target) {
            xt[..w - 1].copy_from_slice(row);
            self.logits(theta, row, &mut z);
            let own = self.block_of(t);
            loss += -own.map_or(0.0, |k| z[k]) + self.softmax(&mut z);
            for (k, &pk) in z.iter().enumerate() {
                let r = pk - f64::from(u8::from(own == Some(k)));
                grad[k * w..(k + 1) * w]
                    .iter_mut()
                    .zip(&xt)
                    .for_each(|(g, v)| *g += r * v);
            }
            let Some(h) = hessian.as_deref_mut() else {
                continue;
            };
            for k in 0..self.rows {
                for l in k..self.rows {
                    let c = if k == l {
                        z[k] * (1.0 - z[k])
                    } else {
                        -z[k] * z[l]
                    };
                    for i in 0..w {
                        let ci = c * xt[i];
                        let out =
                            &mut h[(k * w + i) * p + l * w + i..(k * w + i) * p + (l + 1) * w];
                        out.iter_mut().zip(&xt[i..]).for_each(|(o, v)| *o += ci * v);
                    }
                }
            }
        }
        if let Some(h) = hessian.as_deref_mut() {
            for k in 0..self.rows {
                for l in k + 1..self.rows {
                    for i in 1..w {
                        for j in 0..i {
                            h[(k * w + i) * p + l * w + j] = h[(k * w + j) * p + l * w + i];
                        }
                    }
                }
            }
        }
        for (k, block) in theta.chunks_exact(w).enumerate() {
            for i in 0..w - 1 {
                grad[k * w + i] += self.alpha * block[i];
                if let Some(h) = hessian.as_deref_mut() {
                    h[(k * w + i) * p + k * w + i] += self.alpha;
                }
            }
        }
        loss
    }

    fn converged(&self, grad: &[f64]) -> bool {
        let largest = grad.iter().fold(0.0_f64, |m, g| m.max(g.abs()));
        largest <= GRADIENT_TOLERANCE * self.x.rows() as f64
    }

    /// Backtracking along `theta − t·step` from t = 1 until the objective falls enough
    /// (Armijo); the new point, or none when no step length helps (converged to precision).
    fn line_search(
        &self,
        theta: &[f64],
        loss: f64,
        grad: &[f64],
        step: &[f64],
    ) -> Option<Vec<f64>> {
        let slope = dot(grad, step);
        // Not a descent direction (or NaN): nothing to search along.
        if slope.is_nan() || slope <= 0.0 {
            return None;
        }
        let mut t = 1.0;
        for _ in 0..60 {
            let next: Vec<f64> = theta.iter().zip(step).map(|(a, s)| a - t * s).collect();
            let value = self.value(&next);
            if value <= loss - 1e-4 * t * slope {
                return Some(next);
            }
            t /= 2.0;
        }
        None
    }

    /// Newton's method (IRLS): each step solves the Hessian system by Cholesky, damped by a
    /// growing ridge when the Hessian is singular (the multinomial intercepts are only defined
    /// up to a common shift; collinear columns with alpha 0).
    fn newton(&self, theta: &mut Vec<f64>) {
        let p = theta.len();
        let mut grad = vec![0.0; p];
        let mut hessian = vec![0.0; p * p];
        for _ in 0..NEWTON_MAX_ITERATIONS {
            let loss = self.evaluate(theta, &mut grad, Some(&mut hessian));
            if self.converged(&grad) {
                return;
            }
            let largest = (0..p).map(|i| hessian[i * p + i]).fold(0.0, f64::max);
            let mut ridge = 0.0;
            let step = loop {
                let mut a = hessian.clone();
                (0..p).for_each(|i| a[i * p + i] += ridge);
                let mut step = grad.clone();
                if solve_spd(&mut a, &mut step, p) {
                    break Some(step);
                }
                ridge = if ridge == 0.0 {
                    1e-10 * largest.max(1.0)
                } else {
                    ridge * 100.0
                };
                if ridge > largest.max(1.0) {
                    break None;
                }
            };
            match step.and_then(|s| self.line_search(theta, loss, &grad, &s)) {
                Some(next) => *theta = next,
                None => return,
            }
        }
    }

    /// L-BFGS with the same line search, for models too wide for Newton's Hessian.
    fn lbfgs(&self, theta: &mut Vec<f64>) {
        let p = theta.len();
        let mut grad = vec![0.0; p];
        let mut loss = self.evaluate(theta, &mut grad, None);
        let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
            std::collections::VecDeque::new();
        let mut next_grad = vec![0.0; p];
        for _ in 0..LBFGS_MAX_ITERATIONS {
            if self.converged(&grad) {
                return;
            }
            // The two-loop recursion: step ≈ H⁻¹ grad.
            let mut q = grad.clone();
            let mut coefficients = Vec::with_capacity(pairs.len());
            for (s, y, rho) in pairs.iter().rev() {
                let a = rho * dot(s, &q);
                q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
                coefficients.push(a);
            }
            let scale = match pairs.back() {
                Some((s, y, _)) => dot(s, y) / dot(y, y),
                // The first step: a unit-length move along the gradient.
                None => 1.0 / dot(&grad, &grad).sqrt().max(f64::MIN_POSITIVE),
            };
            q.iter_mut().for_each(|v| *v *= scale);
            for ((s, y, rho), a) in pairs.iter().zip(coefficients.iter().rev()) {
                let b = rho * dot(y, &q);
                q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
            }
            let Some(next) = self.line_search(theta, loss, &grad, &q) else {
                return;
            };
            loss = self.evaluate(&next, &mut next_grad, None);
            let s: Vec<f64> = next.iter().zip(theta.iter()).map(|(a, b)| a - b).collect();
            let y: Vec<f64> = next_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
            let sy = dot(&s, &y);
            // Curvature condition: a pair with sᵀy ≤ 0 would break the positive-definiteness.
            if sy > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
                if pairs.len() == LBFGS_MEMORY {
                    pairs.pop_front();
                }
                pairs.push_back((s, y, 1.0 / sy));
            }
            *theta = next;
            std::mem::swap(&mut grad, &mut next_grad);
        }
    }
}

impl Logistic {
    /// Minimizes scikit-learn's objective (see [`Objective`]) from zero: by Newton's method on
    /// models of up to [`NEWTON_MAX_COEFFICIENTS`] coefficients (smartcore's L-BFGS took 3.5×
    /// scikit-learn's time on 10,000 × 20; Newton needs about ten passes over the rows), by
    /// L-BFGS above. `alpha` > 0 makes the objective strictly convex, so both reach the same
    /// minimum, bounded even on separable classes.
    pub(crate) fn fit(x: &Encoded, y: &[u32], alpha: f64) -> Result<Self, LearnError> {
        let (n, d) = (x.rows(), x.width());
        if n == 0 || y.len() != n {
            return Err(LearnError::Fit(
                "logistic_regression needs one class per row".into(),
            ));
        }
        let mut classes = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return Err(LearnError::Fit(
                "logistic_regression needs at least two classes".into(),
            ));
        }
        let implicit = classes.len() == 2;
        let objective = Objective {
            x,
            target: y
                .iter()
                .map(|c| classes.partition_point(|k| k < c))
                .collect(),
            rows: if implicit { 1 } else { classes.len() },
            implicit,
            alpha,
        };
        let mut theta = vec![0.0; objective.rows * (d + 1)];
        if theta.len() <= NEWTON_MAX_COEFFICIENTS {
            objective.newton(&mut theta);
        } else {
            objective.lbfgs(&mut theta);
        }
        if theta.iter().any(|w| !w.is_finite()) {
            return Err(LearnError::Fit("the logistic fit diverged".into()));
        }
        let mut weights = Vec::with_capacity(objective.rows * d);
        let mut intercepts = Vec::with_capacity(objective.rows);
        for block in theta.chunks_exact(d + 1) {
            weights.extend_from_slice(&block[..d]);
            intercepts.push(block[d]);
        }
        if !implicit {
            // A common shift of the multinomial intercepts changes no probability; the damped
            // Newton steps let them drift a little along it, so they are put back to sum to 0
            // (where scikit-learn's, also started from 0, stay).
            let mean = intercepts.iter().sum::<f64>() / intercepts.len() as f64;
            intercepts.iter_mut().for_each(|b| *b -= mean);
        }
        Ok(Logistic {
            classes,
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

    /// 60 rows of three features and two labellings: the sign of a noisy a − b, and the
    /// largest of (a, b, c/2 + noise).
    fn classes() -> (Encoded, Vec<u32>, Vec<u32>) {
        let (mut values, mut two, mut three) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..60 {
            let t = i as f64;
            let (a, b, c) = ((t * 0.37).sin(), (t * 0.91).cos(), (t * 0.13).sin() * 2.0);
            values.extend([a, b, c]);
            two.push(u32::from(a - b + 0.3 * (t * 7.1).sin() > 0.0));
            let third = 0.5 * c + 0.2 * (t * 3.3).sin();
            three.push(if a >= b && a >= third {
                0
            } else if b >= third {
                1
            } else {
                2
            });
        }
        (Encoded::new(60, 3, values), two, three)
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    /// The references are scikit-learn's `LogisticRegression(C=0.5, tol=1e-10)` on the same
    /// rows.
    #[test]
    fn logistic_matches_scikit_learn_binary_and_multinomial() {
        let (x, two, three) = classes();
        let binary = Logistic::fit(&x, &two, 2.0).unwrap();
        assert_eq!(binary.classes, [0, 1]);
        assert_close(&binary.weights, &[1.4265183011, -1.783786456, 0.3005982344]);
        assert_close(&binary.intercepts, &[-0.1205161299]);
        let multi = Logistic::fit(&x, &three, 2.0).unwrap();
        assert_close(
            &multi.weights,
            &[
                1.7352487796,
                -0.3670560812,
                -0.2007806656,
                -0.6713772817,
                1.2448484403,
                -0.7058277423,
                -1.0638714978,
                -0.8777923592,
                0.9066084079,
            ],
        );
        assert_close(
            &multi.intercepts,
            &[-4.3549940007e-02, -3.5243354007e-05, 4.3585183361e-02],
        );
    }

    #[test]
    fn newton_and_lbfgs_reach_the_same_minimum() {
        let (x, _, three) = classes();
        let objective = Objective {
            x: &x,
            target: three.iter().map(|&c| c as usize).collect(),
            rows: 3,
            implicit: false,
            alpha: 2.0,
        };
        let (mut newton, mut lbfgs) = (vec![0.0; 12], vec![0.0; 12]);
        objective.newton(&mut newton);
        objective.lbfgs(&mut lbfgs);
        for (a, b) in newton.iter().zip(&lbfgs) {
            assert!((a - b).abs() < 1e-5, "{newton:?} vs {lbfgs:?}");
        }
    }

    #[test]
    fn logistic_stays_finite_on_separable_classes_even_unpenalized() {
        let x = Encoded::new(4, 1, vec![-2.0, -1.0, 1.0, 2.0]);
        let y = [3, 3, 5, 5];
        for alpha in [1.0, 0.0] {
            let model = Logistic::fit(&x, &y, alpha).unwrap();
            assert_eq!(model.classes, [3, 5]);
            assert!(model.weights[0].is_finite() && model.weights[0] > 0.0);
            assert_eq!(model.predict(&x), y);
        }
        assert!(Logistic::fit(&x, &[1, 1, 1, 1], 1.0).is_err());
    }
}
