//! Support vector machines with a solver of their own: libsvm's SMO (sequential minimal
//! optimization) on the dual problem, with second-order working-set selection (WSS2, Fan, Chen
//! and Lin 2005), an LRU cache of kernel rows bounded in bytes and optional shrinking. C-SVC
//! (one-vs-one over the class pairs for more than two classes) and ε-SVR (libsvm's formulation
//! with two variables per row) go through the same solver.
//!
//! smartcore's `SVC` (LASVM) and `SVR` are not used: on 10,000 rows × 20 features they took
//! 73× (classification) and 9× (regression) scikit-learn's time, as they cache no kernel rows
//! and select working pairs by first-order gaps only; their fitted forms also borrow their
//! parameters and lose the kernel when deserialized.
//!
//! A fitted machine is kept as its support vectors, their weights and a bias, and predicts
//! f(x) = b + Σ wᵢ K(svᵢ, x).

use serde::{Deserialize, Serialize};

use super::linear::dot;
use super::{Encoded, LearnError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Kernel {
    Linear,
    Rbf { gamma: f64 },
}

impl Kernel {
    #[inline]
    fn apply(self, a: &[f64], b: &[f64]) -> f64 {
        match self {
            Kernel::Linear => dot(a, b),
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
    pub(crate) epsilon: f64,
    /// The kernel cache's bound, in bytes (per machine: the pairs are fitted one at a time).
    pub(crate) cache_bytes: usize,
    pub(crate) shrinking: bool,
}

/// Kernel rows over the training rows, computed on demand and kept in an LRU cache. A row is
/// stored whole, as f32 (libsvm's choice: twice the rows in the same memory, and the solver
/// needs no more precision from them); shrinking saves selection work, not kernel work.
struct KernelRows<'a> {
    x: &'a [f64],
    width: usize,
    rows: usize,
    kernel: Kernel,
    /// Each row's squared norm: the rbf kernel is exp(−γ(‖a‖² + ‖b‖² − 2a·b)), a dot product.
    norms: Vec<f64>,
    slots: Vec<Vec<f32>>,
    /// The training row each slot holds.
    owner: Vec<usize>,
    /// The slot holding each training row, if any.
    slot_of: Vec<Option<usize>>,
    /// When each slot was last used.
    used: Vec<u64>,
    clock: u64,
    capacity: usize,
}

impl<'a> KernelRows<'a> {
    fn new(x: &'a Encoded, kernel: Kernel, cache_bytes: usize) -> Self {
        let (rows, width) = (x.rows(), x.width());
        let norms = (0..rows).map(|r| dot(x.row(r), x.row(r))).collect();
        let row_bytes = (rows * std::mem::size_of::<f32>()).max(1);
        // Two rows at least, however small the bound: an update needs both of its pair's rows.
        let capacity = (cache_bytes / row_bytes).clamp(2, rows.max(2));
        KernelRows {
            x: &x.values,
            width,
            rows,
            kernel,
            norms,
            slots: Vec::new(),
            owner: Vec::new(),
            slot_of: vec![None; rows],
            used: Vec::new(),
            clock: 0,
            capacity,
        }
    }

    /// K(i, i).
    fn diagonal(&self, i: usize) -> f64 {
        match self.kernel {
            Kernel::Linear => self.norms[i],
            Kernel::Rbf { .. } => 1.0,
        }
    }

    /// Caches row `i` (evicting the least recently used row if full) and returns its slot. The
    /// row loaded last is never the one evicted, so two consecutive loads are both in cache.
    fn load(&mut self, i: usize) -> usize {
        self.clock += 1;
        if let Some(s) = self.slot_of[i] {
            self.used[s] = self.clock;
            return s;
        }
        let s = if self.slots.len() < self.capacity {
            self.slots.push(vec![0.0; self.rows]);
            self.owner.push(i);
            self.used.push(self.clock);
            self.slots.len() - 1
        } else {
            let s = (0..self.used.len())
                .min_by_key(|&s| self.used[s])
                .unwrap_or(0);
            self.slot_of[self.owner[s]] = None;
            self.owner[s] = i;
            self.used[s] = self.clock;
            s
        };
        self.slot_of[i] = Some(s);
        let (x, w, norms) = (self.x, self.width, &self.norms);
        let xi = &x[i * w..(i + 1) * w];
        let out = &mut self.slots[s];
        for (k, value) in out.iter_mut().enumerate() {
            let d = dot(xi, &x[k * w..(k + 1) * w]);
            *value = match self.kernel {
                Kernel::Linear => d,
                Kernel::Rbf { gamma } => (-gamma * (norms[i] + norms[k] - 2.0 * d).max(0.0)).exp(),
            } as f32;
        }
        s
    }

    fn row(&self, slot: usize) -> &[f32] {
        &self.slots[slot]
    }
}

/// Where a variable stands against its box 0 ≤ α ≤ C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Lower,
    Upper,
    Free,
}

/// The dual problem, libsvm's form: minimize ½αᵀQα + pᵀα subject to yᵀα = 0 and 0 ≤ α ≤ C,
/// where Q_ij = y_i y_j K(row_i, row_j).
struct Dual {
    /// Each variable's training row (ε-SVR has two variables per row).
    row_of: Vec<usize>,
    /// Each variable's sign, ±1.
    y: Vec<f64>,
    p: Vec<f64>,
    c: f64,
}

/// The solver's result: the variables and the bias term ρ (f(x) = Σ α_i y_i K(x_i, x) − ρ).
struct Solution {
    alpha: Vec<f64>,
    rho: f64,
}

/// A small quadratic coefficient stands in for a non-positive one (identical rows), as in
/// libsvm, so that a step stays finite.
const TAU: f64 = 1e-12;

struct Solver<'a, 'k> {
    dual: &'a Dual,
    kernel: KernelRows<'k>,
    alpha: Vec<f64>,
    bound: Vec<Bound>,
    /// The gradient Qα + p (exact for the active variables).
    g: Vec<f64>,
    /// Σ over the variables at their upper bound of C·Q_·j: what the gradient of a shrunk
    /// variable is rebuilt from.
    g_bar: Vec<f64>,
    qd: Vec<f64>,
    active: Vec<usize>,
    tol: f64,
}

fn solve(
    dual: &Dual,
    kernel: KernelRows<'_>,
    tol: f64,
    shrinking: bool,
) -> Result<Solution, LearnError> {
    let n = dual.y.len();
    let qd = dual.row_of.iter().map(|&r| kernel.diagonal(r)).collect();
    let mut s = Solver {
        dual,
        kernel,
        alpha: vec![0.0; n],
        bound: vec![Bound::Lower; n],
        g: dual.p.clone(),
        g_bar: vec![0.0; n],
        qd,
        active: (0..n).collect(),
        tol,
    };
    // A bound on the work: libsvm's is max(10^7, 100 n), but a problem that needs a million
    // steps (a huge `c` on noise) is one to refuse in seconds, not to fit for minutes to an
    // unconverged model reported as a success.
    let max_iter = n.saturating_mul(100).max(1_000_000);
    let mut converged = false;
    let mut counter = n.min(1000) + 1;
    let mut unshrunk = false;
    for _ in 0..max_iter {
        counter -= 1;
        if counter == 0 {
            counter = n.min(1000);
            if shrinking {
                s.shrink(&mut unshrunk);
            }
        }
        let (i, j) = match s.select() {
            Some(pair) => pair,
            None if s.active.len() == n => {
                converged = true;
                break;
            }
            None => {
                // Optimal on the active set: check again on all variables.
                s.reconstruct();
                match s.select() {
                    Some(pair) => {
                        counter = 1;
                        pair
                    }
                    None => {
                        converged = true;
                        break;
                    }
                }
            }
        };
        s.step(i, j);
    }
    if !converged {
        return Err(LearnError::Fit(format!(
            "the SVM solver did not converge within {max_iter} steps: lower c or raise tol"
        )));
    }
    s.reconstruct();
    Ok(Solution {
        rho: s.rho(),
        alpha: s.alpha,
    })
}

impl Solver<'_, '_> {
    fn bound_of(&self, a: f64) -> Bound {
        if a >= self.dual.c {
            Bound::Upper
        } else if a <= 0.0 {
            Bound::Lower
        } else {
            Bound::Free
        }
    }

    /// WSS2: i maximizes the violation −y_i∇_i among the variables that can move up; j, among
    /// those that can move down, maximizes the decrease of the objective a step on (i, j)
    /// gives, by its second-order estimate. None when the maximal violation is within `tol`.
    fn select(&mut self) -> Option<(usize, usize)> {
        let (y, g, bound) = (&self.dual.y, &self.g, &self.bound);
        let mut gmax = f64::NEG_INFINITY;
        let mut best_i = None;
        for &t in &self.active {
            let v = -y[t] * g[t];
            let movable = if y[t] > 0.0 {
                bound[t] != Bound::Upper
            } else {
                bound[t] != Bound::Lower
            };
            if movable && v >= gmax {
                gmax = v;
                best_i = Some(t);
            }
        }
        let i = best_i?;
        let slot = self.kernel.load(self.dual.row_of[i]);
        let ki = self.kernel.row(slot);
        let row_of = &self.dual.row_of;
        let mut gmax2 = f64::NEG_INFINITY;
        let mut best_j = None;
        let mut best_decrease = f64::INFINITY;
        for &j in &self.active {
            let movable = if y[j] > 0.0 {
                bound[j] != Bound::Lower
            } else {
                bound[j] != Bound::Upper
            };
            if !movable {
                continue;
            }
            let v = y[j] * g[j];
            gmax2 = gmax2.max(v);
            let diff = gmax + v;
            if diff > 0.0 {
                let quad = self.qd[i] + self.qd[j] - 2.0 * f64::from(ki[row_of[j]]);
                let decrease = -diff * diff / if quad > 0.0 { quad } else { TAU };
                if decrease <= best_decrease {
                    best_decrease = decrease;
                    best_j = Some(j);
                }
            }
        }
        if gmax + gmax2 < self.tol {
            return None;
        }
        best_j.map(|j| (i, j))
    }

    /// Optimizes the pair (i, j) analytically within the box, then updates the gradient.
    fn step(&mut self, i: usize, j: usize) {
        let (y, c, row_of) = (&self.dual.y, self.dual.c, &self.dual.row_of);
        let si = self.kernel.load(row_of[i]);
        let sj = self.kernel.load(row_of[j]);
        let (ki, kj) = (self.kernel.row(si), self.kernel.row(sj));
        let kij = f64::from(ki[row_of[j]]);
        let (old_i, old_j) = (self.alpha[i], self.alpha[j]);
        let (mut ai, mut aj) = (old_i, old_j);
        let quad = self.qd[i] + self.qd[j] - 2.0 * kij;
        let quad = if quad > 0.0 { quad } else { TAU };
        if y[i] != y[j] {
            let delta = (-self.g[i] - self.g[j]) / quad;
            let diff = ai - aj;
            ai += delta;
            aj += delta;
            if diff > 0.0 {
                if aj < 0.0 {
                    aj = 0.0;
                    ai = diff;
                }
            } else if ai < 0.0 {
                ai = 0.0;
                aj = -diff;
            }
            if diff > 0.0 {
                if ai > c {
                    ai = c;
                    aj = c - diff;
                }
            } else if aj > c {
                aj = c;
                ai = c + diff;
            }
        } else {
            let delta = (self.g[i] - self.g[j]) / quad;
            let sum = ai + aj;
            ai -= delta;
            aj += delta;
            if sum > c {
                if ai > c {
                    ai = c;
                    aj = sum - c;
                }
            } else if aj < 0.0 {
                aj = 0.0;
                ai = sum;
            }
            if sum > c {
                if aj > c {
                    aj = c;
                    ai = sum - c;
                }
            } else if ai < 0.0 {
                ai = 0.0;
                aj = sum;
            }
        }
        self.alpha[i] = ai;
        self.alpha[j] = aj;
        // ∇ += Q_i Δα_i + Q_j Δα_j, with Q_ik = y_i y_k K_ik.
        let (di, dj) = (y[i] * (ai - old_i), y[j] * (aj - old_j));
        for &k in &self.active {
            let r = row_of[k];
            self.g[k] += y[k] * (f64::from(ki[r]) * di + f64::from(kj[r]) * dj);
        }
        for (t, kt) in [(i, ki), (j, kj)] {
            let was = self.bound[t];
            let now = self.bound_of(self.alpha[t]);
            self.bound[t] = now;
            if (was == Bound::Upper) != (now == Bound::Upper) {
                let sign = if now == Bound::Upper { c } else { -c } * y[t];
                for (k, gb) in self.g_bar.iter_mut().enumerate() {
                    *gb += sign * y[k] * f64::from(kt[row_of[k]]);
                }
            }
        }
    }

    /// Takes out of the active set the variables at a bound whose gradient says they will stay
    /// there. Once the violation is within 10·tol, the gradient is rebuilt and every variable
    /// reconsidered, once, as in libsvm.
    fn shrink(&mut self, unshrunk: &mut bool) {
        let y = &self.dual.y;
        let (mut gmax1, mut gmax2) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &t in &self.active {
            let (up, down) = if y[t] > 0.0 {
                (&mut gmax1, &mut gmax2)
            } else {
                (&mut gmax2, &mut gmax1)
            };
            if self.bound[t] != Bound::Upper {
                *up = up.max(-self.g[t]);
            }
            if self.bound[t] != Bound::Lower {
                *down = down.max(self.g[t]);
            }
        }
        if !*unshrunk && gmax1 + gmax2 <= self.tol * 10.0 {
            *unshrunk = true;
            self.reconstruct();
        }
        let (g, bound) = (&self.g, &self.bound);
        self.active.retain(|&t| {
            let (up, down) = if y[t] > 0.0 {
                (gmax1, gmax2)
            } else {
                (gmax2, gmax1)
            };
            match bound[t] {
                Bound::Upper => -g[t] <= up,
                Bound::Lower => g[t] <= down,
                Bound::Free => true,
            }
        });
    }

    /// Rebuilds the gradient of the shrunk variables and makes every variable active again.
    fn reconstruct(&mut self) {
        let n = self.alpha.len();
        if self.active.len() == n {
            return;
        }
        let mut is_active = vec![false; n];
        for &t in &self.active {
            is_active[t] = true;
        }
        let inactive: Vec<usize> = (0..n).filter(|&t| !is_active[t]).collect();
        let (y, row_of) = (&self.dual.y, &self.dual.row_of);
        for &k in &inactive {
            self.g[k] = self.g_bar[k] + self.dual.p[k];
        }
        for t in 0..n {
            if self.bound[t] != Bound::Free {
                continue;
            }
            let slot = self.kernel.load(row_of[t]);
            let kt = self.kernel.row(slot);
            let a = self.alpha[t] * y[t];
            for &k in &inactive {
                self.g[k] += a * y[k] * f64::from(kt[row_of[k]]);
            }
        }
        self.active = (0..n).collect();
    }

    /// ρ: the mean of y_i∇_i over the free variables, or the middle of its feasible interval
    /// when none is free.
    fn rho(&self) -> f64 {
        let y = &self.dual.y;
        let (mut upper, mut lower) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut free, mut sum) = (0usize, 0.0);
        for ((&yt, &gt), &bound) in y.iter().zip(&self.g).zip(&self.bound) {
            let yg = yt * gt;
            match (bound, yt > 0.0) {
                (Bound::Upper, false) | (Bound::Lower, true) => upper = upper.min(yg),
                (Bound::Upper, true) | (Bound::Lower, false) => lower = lower.max(yg),
                (Bound::Free, _) => {
                    free += 1;
                    sum += yg;
                }
            }
        }
        if free > 0 {
            sum / free as f64
        } else {
            match (upper.is_finite(), lower.is_finite()) {
                (true, true) => (upper + lower) / 2.0,
                (true, false) => upper,
                (false, true) => lower,
                (false, false) => 0.0,
            }
        }
    }
}

/// One decision function.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Machine {
    vectors: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

impl Machine {
    /// Keeps the rows of `x` whose weight is not zero.
    fn new(x: &Encoded, weights: &[f64], rho: f64) -> Result<Self, LearnError> {
        let mut vectors = Vec::new();
        let mut kept = Vec::new();
        for (r, &w) in weights.iter().enumerate() {
            if w != 0.0 {
                vectors.extend_from_slice(x.row(r));
                kept.push(w);
            }
        }
        if !rho.is_finite() || kept.iter().any(|w| !w.is_finite()) {
            return Err(LearnError::Fit("the SVM's solution is not finite".into()));
        }
        Ok(Machine {
            vectors,
            weights: kept,
            bias: -rho,
        })
    }

    #[inline]
    fn decide(&self, kernel: Kernel, row: &[f64]) -> f64 {
        let width = row.len();
        let mut f = self.bias;
        for (w, sv) in self
            .weights
            .iter()
            .zip(self.vectors.chunks_exact(width.max(1)))
        {
            f += w * kernel.apply(sv, row);
        }
        f
    }
}

/// Solves the C-SVC dual for labels ±1 (`positive[r]` is +1).
fn classify(x: &Encoded, positive: &[bool], config: &SvmConfig) -> Result<Solution, LearnError> {
    let dual = Dual {
        row_of: (0..positive.len()).collect(),
        y: positive
            .iter()
            .map(|&p| if p { 1.0 } else { -1.0 })
            .collect(),
        p: vec![-1.0; positive.len()],
        c: config.c,
    };
    let kernel = KernelRows::new(x, config.kernel, config.cache_bytes);
    solve(&dual, kernel, config.tol, config.shrinking)
}

/// Solves the ε-SVR dual for targets `z`: variables α⁺ (sign +1) then α⁻ (sign −1), one each
/// per row; row r's weight is α⁺_r − α⁻_r.
fn regress(x: &Encoded, z: &[f64], config: &SvmConfig) -> Result<(Vec<f64>, Solution), LearnError> {
    let l = z.len();
    let dual = Dual {
        row_of: (0..l).chain(0..l).collect(),
        y: (0..2 * l).map(|k| if k < l { 1.0 } else { -1.0 }).collect(),
        p: z.iter()
            .map(|v| config.epsilon - v)
            .chain(z.iter().map(|v| config.epsilon + v))
            .collect(),
        c: config.c,
    };
    let kernel = KernelRows::new(x, config.kernel, config.cache_bytes);
    let solution = solve(&dual, kernel, config.tol, config.shrinking)?;
    let weights = (0..l)
        .map(|r| solution.alpha[r] - solution.alpha[r + l])
        .collect();
    Ok((weights, solution))
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
                let sub = x.select(&rows);
                let positive: Vec<bool> = rows.iter().map(|&r| y[r] == classes[j]).collect();
                let solution = classify(&sub, &positive, config)?;
                let weights: Vec<f64> = solution
                    .alpha
                    .iter()
                    .zip(&positive)
                    .map(|(&a, &p)| if p { a } else { -a })
                    .collect();
                pairs.push((i, j, Machine::new(&sub, &weights, solution.rho)?));
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
        if y.is_empty() {
            return Err(LearnError::data("svm needs at least one training row"));
        }
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n;
        let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let std = if std > 0.0 && std.is_finite() {
            std
        } else {
            1.0
        };
        let scaled: Vec<f64> = y.iter().map(|v| (v - mean) / std).collect();
        let (weights, solution) = regress(x, &scaled, config)?;
        Ok(Svr {
            kernel: config.kernel,
            machine: Machine::new(x, &weights, solution.rho)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kernel: Kernel, c: f64) -> SvmConfig {
        SvmConfig {
            kernel,
            c,
            tol: 1e-3,
            epsilon: 0.1,
            cache_bytes: 256 << 20,
            shrinking: true,
        }
    }

    /// The C-SVC dual objective ½αᵀQα − Σα, computed directly.
    fn objective(x: &Encoded, positive: &[bool], kernel: Kernel, alpha: &[f64]) -> f64 {
        let y = |r: usize| if positive[r] { 1.0 } else { -1.0 };
        let mut quadratic = 0.0;
        for i in 0..x.rows() {
            for j in 0..x.rows() {
                quadratic += alpha[i] * alpha[j] * y(i) * y(j) * kernel.apply(x.row(i), x.row(j));
            }
        }
        quadratic / 2.0 - alpha.iter().sum::<f64>()
    }

    fn encoded(rows: &[&[f64]]) -> Encoded {
        let width = rows[0].len();
        Encoded::new(rows.len(), width, rows.concat())
    }

    /// A deterministic uniform in [−1, 1).
    fn uniform(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    #[test]
    fn two_points_give_the_known_hard_margin_solution() {
        // x = −1 (class −1) and x = 1 (class +1), linear kernel: w = 1, b = 0, α = ½ each,
        // dual objective ½αᵀQα − Σα = −½.
        let x = encoded(&[&[-1.0], &[1.0]]);
        let solution = classify(&x, &[false, true], &config(Kernel::Linear, 10.0)).unwrap();
        assert!(
            (solution.alpha[0] - 0.5).abs() < 1e-9,
            "{:?}",
            solution.alpha
        );
        assert!((solution.alpha[1] - 0.5).abs() < 1e-9);
        assert!(solution.rho.abs() < 1e-9);
        let value = objective(&x, &[false, true], Kernel::Linear, &solution.alpha);
        assert!((value + 0.5).abs() < 1e-9);
        let svc = Svc::fit(&x, &[0, 1], &config(Kernel::Linear, 10.0)).unwrap();
        let machine = &svc.pairs[0].2;
        assert!((machine.decide(Kernel::Linear, &[0.5]) - 0.5).abs() < 1e-9);
        assert!((machine.decide(Kernel::Linear, &[-1.0]) + 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_separable_set_is_separated_with_its_margin() {
        let mut s = 7;
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for r in 0..200 {
            let class = r % 2;
            let shift = if class == 1 { 2.0 } else { -2.0 };
            rows.push(vec![shift + uniform(&mut s), shift + uniform(&mut s)]);
            y.push(class as u32);
        }
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let x = encoded(&refs);
        let svc = Svc::fit(&x, &y, &config(Kernel::Linear, 100.0)).unwrap();
        assert_eq!(svc.predict(&x), y);
        let machine = &svc.pairs[0].2;
        assert!(
            machine.weights.len() < 20,
            "{} vectors",
            machine.weights.len()
        );
        for (row, &class) in x.row_iter().zip(&y) {
            let signed = machine.decide(Kernel::Linear, row) * if class == 1 { 1.0 } else { -1.0 };
            assert!(signed > 1.0 - 1e-2, "{signed}");
        }
    }

    #[test]
    fn rbf_learns_xor() {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for (a, b) in [(1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)] {
            for (da, db) in [(0.0, 0.0), (0.1, -0.1), (-0.1, 0.1)] {
                rows.push(vec![a + da, b + db]);
                y.push(u32::from(a * b > 0.0));
            }
        }
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let x = encoded(&refs);
        let svc = Svc::fit(&x, &y, &config(Kernel::Rbf { gamma: 1.0 }, 10.0)).unwrap();
        assert_eq!(svc.predict(&x), y);
        let probe = encoded(&[&[1.2, 0.9], &[-0.9, -1.1], &[1.1, -0.8], &[-1.2, 0.9]]);
        assert_eq!(svc.predict(&probe), vec![1, 1, 0, 0]);
    }

    #[test]
    fn the_solution_meets_the_optimality_conditions() {
        let mut s = 99;
        let rows: Vec<Vec<f64>> = (0..150)
            .map(|_| (0..3).map(|_| uniform(&mut s)).collect())
            .collect();
        let positive: Vec<bool> = rows
            .iter()
            .map(|r| r[0] + 0.5 * r[1] * r[2] + 0.3 * uniform(&mut s) > 0.0)
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let x = encoded(&refs);
        let kernel = Kernel::Rbf { gamma: 0.5 };
        let c = 2.0;
        for shrinking in [true, false] {
            let cfg = SvmConfig {
                shrinking,
                tol: 1e-6,
                ..config(kernel, c)
            };
            let solution = classify(&x, &positive, &cfg).unwrap();
            let y: Vec<f64> = positive
                .iter()
                .map(|&p| if p { 1.0 } else { -1.0 })
                .collect();
            let balance: f64 = solution.alpha.iter().zip(&y).map(|(a, y)| a * y).sum();
            assert!(balance.abs() < 1e-9, "yᵀα = {balance}");
            // KKT: y_i f(x_i) ≥ 1 at α = 0, = 1 when free, ≤ 1 at α = C.
            for r in 0..rows.len() {
                let f: f64 = (0..rows.len())
                    .map(|k| solution.alpha[k] * y[k] * kernel.apply(&rows[k], &rows[r]))
                    .sum::<f64>()
                    - solution.rho;
                let margin = y[r] * f;
                let a = solution.alpha[r];
                assert!((0.0..=c).contains(&a));
                if a <= 0.0 {
                    assert!(margin > 1.0 - 1e-4, "row {r}: α 0, margin {margin}");
                } else if a >= c {
                    assert!(margin < 1.0 + 1e-4, "row {r}: α C, margin {margin}");
                } else {
                    assert!(
                        (margin - 1.0).abs() < 1e-4,
                        "row {r}: free, margin {margin}"
                    );
                }
            }
        }
    }

    #[test]
    fn svr_follows_a_noisy_line() {
        let mut s = 3;
        let rows: Vec<Vec<f64>> = (0..100).map(|i| vec![i as f64 / 50.0 - 1.0]).collect();
        let y: Vec<f64> = rows
            .iter()
            .map(|r| 3.0 * r[0] + 1.0 + 0.05 * uniform(&mut s))
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let x = encoded(&refs);
        let svr = Svr::fit(&x, &y, &config(Kernel::Linear, 10.0)).unwrap();
        let p = svr.predict(&encoded(&[&[0.0], &[0.5], &[2.0]]));
        // ε is 0.1 standard deviations of y (≈ 1.7): the fit is within about that.
        for (got, want) in p.iter().zip([1.0, 2.5, 7.0]) {
            assert!((got - want).abs() < 0.3, "{p:?}");
        }
        assert!(svr.machine.weights.len() < 100);
    }

    #[test]
    fn a_cache_smaller_than_one_row_gives_the_same_solution() {
        let mut s = 11;
        let rows: Vec<Vec<f64>> = (0..80)
            .map(|_| (0..2).map(|_| uniform(&mut s)).collect())
            .collect();
        let positive: Vec<bool> = rows.iter().map(|r| r[0] * r[1] > 0.0).collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let x = encoded(&refs);
        let cfg = config(Kernel::Rbf { gamma: 2.0 }, 5.0);
        let big = classify(&x, &positive, &cfg).unwrap();
        let small = classify(
            &x,
            &positive,
            &SvmConfig {
                cache_bytes: 1,
                ..cfg
            },
        )
        .unwrap();
        let kernel = cfg.kernel;
        let (a, b) = (
            objective(&x, &positive, kernel, &big.alpha),
            objective(&x, &positive, kernel, &small.alpha),
        );
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        assert!((big.rho - small.rho).abs() < 1e-9);
    }

    #[test]
    fn degenerate_data_does_not_break_the_solver() {
        let same = encoded(&[&[1.0, 2.0], &[1.0, 2.0], &[1.0, 2.0], &[1.0, 2.0]]);
        for kernel in [Kernel::Linear, Kernel::Rbf { gamma: 0.5 }] {
            let svc = Svc::fit(&same, &[0, 1, 0, 1], &config(kernel, 1.0)).unwrap();
            assert_eq!(svc.predict(&same).len(), 4);
            let svr = Svr::fit(&same, &[1.0, 2.0, 3.0, 4.0], &config(kernel, 1.0)).unwrap();
            assert!(svr.predict(&same).iter().all(|v| v.is_finite()));
        }
        let two = encoded(&[&[0.0], &[1.0]]);
        let tiny = Svc::fit(&two, &[0, 1], &config(Kernel::Linear, 1e-12)).unwrap();
        assert_eq!(tiny.predict(&two).len(), 2);
        let one = Svc::fit(&two, &[3, 5], &config(Kernel::Rbf { gamma: 1.0 }, 1.0)).unwrap();
        assert_eq!(one.predict(&two), vec![3, 5]);
        let constant = Svr::fit(&two, &[2.0, 2.0], &config(Kernel::Linear, 1.0)).unwrap();
        assert_eq!(constant.predict(&two), vec![2.0, 2.0]);
        let single = Svr::fit(&encoded(&[&[1.0]]), &[4.0], &config(Kernel::Linear, 1.0)).unwrap();
        assert_eq!(single.predict(&two), vec![4.0, 4.0]);
    }
}
