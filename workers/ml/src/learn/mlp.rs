//! A small multilayer perceptron (smartcore has none): dense layers with ReLU, a linear output
//! for regression or a softmax for classification, trained by mini-batch Adam on the mean
//! squared error or the cross-entropy, with an L2 penalty. Inputs are standardized, and so is
//! a regression's target, by the network itself. Everything random (initial weights, batch
//! order) comes from one seed, so a fit is reproducible.
//!
//! Built to extrapolate a trend: ReLU, not tanh (a ReLU network is piecewise linear, so beyond
//! the training range it goes on linearly instead of flattening out), and a linear skip
//! connection from the standardized inputs to the outputs, not penalized by `alpha`. For a
//! regression the skip starts at the least-squares line and the last layer at zero, so the
//! layers only learn what is not linear: the slope beyond the data is the data's, not that of
//! whichever ReLU unit happens to switch last.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::linear::solve_spd;
use super::{Encoded, LearnError};

/// The settings of one fit (see [`super::Algorithm::Mlp`] for the defaults).
#[derive(Debug, Clone)]
pub(crate) struct MlpConfig {
    pub(crate) hidden: Vec<usize>,
    pub(crate) learning_rate: f64,
    pub(crate) alpha: f64,
    pub(crate) batch_size: usize,
    pub(crate) epochs: usize,
    pub(crate) min_steps: usize,
    pub(crate) tol: f64,
    pub(crate) patience: usize,
    pub(crate) seed: u64,
}

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target<'a> {
    Values(&'a [f64]),
    Classes(&'a [u32], usize),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dense {
    inputs: usize,
    outputs: usize,
    /// inputs × outputs, row-major: row i holds input i's weights to every output.
    w: Vec<f64>,
    b: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Head {
    Regression { mean: f64, std: f64 },
    Classification,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Mlp {
    means: Vec<f64>,
    stds: Vec<f64>,
    layers: Vec<Dense>,
    /// inputs × outputs: the linear skip connection's weights.
    skip: Vec<f64>,
    head: Head,
}

/// Adam's moments for one parameter vector.
struct Moments {
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Moments {
    fn new(n: usize) -> Self {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    #[inline]
    fn step(&mut self, params: &mut [f64], grad: &[f64], lr_t: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *p -= lr_t * *m / (v.sqrt() + EPS);
        }
    }
}

/// out[b] = bias + a[b] · W, for every row b of the batch.
fn forward(layer: &Dense, a: &[f64], out: &mut [f64], rows: usize) {
    let (ni, no) = (layer.inputs, layer.outputs);
    for b in 0..rows {
        let o = &mut out[b * no..(b + 1) * no];
        o.copy_from_slice(&layer.b);
        for (i, &x) in a[b * ni..(b + 1) * ni].iter().enumerate() {
            if x != 0.0 {
                for (o, w) in o.iter_mut().zip(&layer.w[i * no..(i + 1) * no]) {
                    *o += x * w;
                }
            }
        }
    }
}

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The ridge-regularized least-squares weights of centred targets on standardized inputs
/// (no intercept: both are centred), by Cholesky on the normal equations; zeros if they are
/// singular even so.
fn least_squares(x: &[f64], y: &[f64], n: usize, d: usize) -> Vec<f64> {
    // XᵀX's upper triangle, as the solver reads it.
    let mut a = vec![0.0; d * d];
    let mut rhs = vec![0.0; d];
    for (row, t) in x.chunks_exact(d).zip(y) {
        for i in 0..d {
            rhs[i] += row[i] * t;
            for j in 0..=i {
                a[j * d + i] += row[i] * row[j];
            }
        }
    }
    // A small ridge keeps one-hot and constant columns from making the system singular.
    let ridge = 1e-6 * n as f64;
    for i in 0..d {
        a[i * d + i] += ridge;
    }
    if solve_spd(&mut a, &mut rhs, d) {
        rhs
    } else {
        vec![0.0; d]
    }
}

/// out[b] += x[b] · skip, the linear part of every output.
fn add_skip(skip: &[f64], x: &[f64], out: &mut [f64], rows: usize, d: usize, outputs: usize) {
    for b in 0..rows {
        let o = &mut out[b * outputs..(b + 1) * outputs];
        for (i, &v) in x[b * d..(b + 1) * d].iter().enumerate() {
            for (o, w) in o.iter_mut().zip(&skip[i * outputs..(i + 1) * outputs]) {
                *o += v * w;
            }
        }
    }
}

fn softmax(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for z in row.iter_mut() {
        *z = (*z - max).exp();
        sum += *z;
    }
    for z in row.iter_mut() {
        *z /= sum;
    }
}

impl Mlp {
    pub(crate) fn fit(x: &Encoded, target: Target, config: &MlpConfig) -> Result<Self, LearnError> {
        let (n, d) = (x.rows(), x.width());
        if n == 0 {
            return Err(LearnError::data("there are no rows"));
        }
        let mut means = vec![0.0; d];
        let mut stds = vec![0.0; d];
        for row in x.row_iter() {
            for (m, v) in means.iter_mut().zip(row) {
                *m += v / n as f64;
            }
        }
        for row in x.row_iter() {
            for ((s, m), v) in stds.iter_mut().zip(&means).zip(row) {
                *s += (v - m) * (v - m) / n as f64;
            }
        }
        for s in &mut stds {
            *s = if *s > 0.0 { s.sqrt() } else { 1.0 };
        }
        let inputs: Vec<f64> = x
            .row_iter()
            .flat_map(|row| {
                row.iter()
                    .zip(&means)
                    .zip(&stds)
                    .map(|((v, m), s)| (v - m) / s)
            })
            .collect();
        let (head, outputs, goal): (Head, usize, Vec<f64>) = match target {
            Target::Values(y) => {
                let mean = y.iter().sum::<f64>() / n as f64;
                let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
                let std = if std > 0.0 && std.is_finite() {
                    std
                } else {
                    1.0
                };
                let goal = y.iter().map(|v| (v - mean) / std).collect();
                (Head::Regression { mean, std }, 1, goal)
            }
            Target::Classes(y, k) => {
                let mut goal = vec![0.0; n * k];
                for (r, &c) in y.iter().enumerate() {
                    goal[r * k + c as usize] = 1.0;
                }
                (Head::Classification, k, goal)
            }
        };
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut sizes = vec![d];
        sizes.extend(&config.hidden);
        sizes.push(outputs);
        // Glorot-uniform initial weights and biases, as scikit-learn draws them.
        let mut layers: Vec<Dense> = sizes
            .windows(2)
            .map(|io| {
                let bound = (6.0 / (io[0] + io[1]) as f64).sqrt();
                let mut draw = |len: usize| -> Vec<f64> {
                    (0..len).map(|_| rng.random_range(-bound..bound)).collect()
                };
                Dense {
                    inputs: io[0],
                    outputs: io[1],
                    w: draw(io[0] * io[1]),
                    b: draw(io[1]),
                }
            })
            .collect();

        let mut skip = vec![0.0; d * outputs];
        if let Head::Regression { .. } = head {
            skip = least_squares(&inputs, &goal, n, d);
            if let Some(out) = layers.last_mut() {
                out.w.fill(0.0);
                out.b.fill(0.0);
            }
        }
        let mut skip_moments = Moments::new(skip.len());
        let mut skip_grad = vec![0.0; skip.len()];
        let batch = config.batch_size.min(n).max(1);
        let batches_per_epoch = n.div_ceil(batch);
        let epochs = config
            .epochs
            .max(config.min_steps.div_ceil(batches_per_epoch));
        let mut w_moments: Vec<Moments> = layers.iter().map(|l| Moments::new(l.w.len())).collect();
        let mut b_moments: Vec<Moments> = layers.iter().map(|l| Moments::new(l.b.len())).collect();
        let mut w_grads: Vec<Vec<f64>> = layers.iter().map(|l| vec![0.0; l.w.len()]).collect();
        let mut b_grads: Vec<Vec<f64>> = layers.iter().map(|l| vec![0.0; l.b.len()]).collect();
        // acts[0] is the batch's inputs; acts[l + 1] layer l's outputs (after ReLU if hidden).
        let mut acts: Vec<Vec<f64>> = sizes.iter().map(|s| vec![0.0; s * batch]).collect();
        let mut deltas: Vec<Vec<f64>> = sizes.iter().map(|s| vec![0.0; s * batch]).collect();
        let mut order: Vec<usize> = (0..n).collect();
        let mut step = 0usize;
        let (mut best, mut stale) = (f64::INFINITY, 0usize);
        let last = layers.len() - 1;
        for _epoch in 0..epochs {
            order.shuffle(&mut rng);
            let mut epoch_loss = 0.0;
            for chunk in order.chunks(batch) {
                let rows = chunk.len();
                for (b, &r) in chunk.iter().enumerate() {
                    acts[0][b * d..(b + 1) * d].copy_from_slice(&inputs[r * d..(r + 1) * d]);
                }
                for (l, layer) in layers.iter().enumerate() {
                    let (before, after) = acts.split_at_mut(l + 1);
                    let out = &mut after[0][..rows * layer.outputs];
                    forward(layer, &before[l], out, rows);
                    if l < last {
                        for z in out.iter_mut() {
                            *z = z.max(0.0);
                        }
                    }
                }
                let (first, rest) = acts.split_at_mut(1);
                add_skip(&skip, &first[0], &mut rest[last], rows, d, outputs);
                // The output error, already divided by the batch size: the gradient of the mean
                // loss (½·squared error, or cross-entropy after the softmax).
                let out = &mut acts[last + 1];
                let delta = &mut deltas[last + 1];
                for b in 0..rows {
                    let o = &mut out[b * outputs..(b + 1) * outputs];
                    let g = &goal[chunk[b] * outputs..(chunk[b] + 1) * outputs];
                    match head {
                        Head::Regression { .. } => {
                            epoch_loss += 0.5 * (o[0] - g[0]).powi(2);
                        }
                        Head::Classification => {
                            softmax(o);
                            epoch_loss -= o
                                .iter()
                                .zip(g)
                                .filter(|(_, g)| **g > 0.0)
                                .map(|(p, _)| p.max(1e-300).ln())
                                .sum::<f64>();
                        }
                    }
                    for ((dl, o), g) in delta[b * outputs..(b + 1) * outputs]
                        .iter_mut()
                        .zip(o.iter())
                        .zip(g)
                    {
                        *dl = (o - g) / rows as f64;
                    }
                }
                skip_grad.fill(0.0);
                for b in 0..rows {
                    let dzb = &deltas[last + 1][b * outputs..(b + 1) * outputs];
                    for (i, &x) in acts[0][b * d..(b + 1) * d].iter().enumerate() {
                        for (g, v) in skip_grad[i * outputs..(i + 1) * outputs]
                            .iter_mut()
                            .zip(dzb)
                        {
                            *g += x * v;
                        }
                    }
                }
                for l in (0..layers.len()).rev() {
                    let layer = &layers[l];
                    let (ni, no) = (layer.inputs, layer.outputs);
                    let gw = &mut w_grads[l];
                    let gb = &mut b_grads[l];
                    for (g, w) in gw.iter_mut().zip(&layer.w) {
                        *g = config.alpha * w / rows as f64;
                    }
                    gb.fill(0.0);
                    let a = &acts[l];
                    let (lower, upper) = deltas.split_at_mut(l + 1);
                    let dz = &upper[0];
                    for b in 0..rows {
                        let dzb = &dz[b * no..(b + 1) * no];
                        for (g, v) in gb.iter_mut().zip(dzb) {
                            *g += v;
                        }
                        for (i, &x) in a[b * ni..(b + 1) * ni].iter().enumerate() {
                            if x != 0.0 {
                                for (g, v) in gw[i * no..(i + 1) * no].iter_mut().zip(dzb) {
                                    *g += x * v;
                                }
                            }
                        }
                    }
                    if l > 0 {
                        let da = &mut lower[l];
                        for b in 0..rows {
                            let dzb = &dz[b * no..(b + 1) * no];
                            for i in 0..ni {
                                // ReLU passes the error only where the unit was active.
                                da[b * ni + i] = if a[b * ni + i] > 0.0 {
                                    dot(dzb, &layer.w[i * no..(i + 1) * no])
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
                step += 1;
                let t = step as i32;
                let lr_t =
                    config.learning_rate * (1.0 - 0.999f64.powi(t)).sqrt() / (1.0 - 0.9f64.powi(t));
                for (l, layer) in layers.iter_mut().enumerate() {
                    w_moments[l].step(&mut layer.w, &w_grads[l], lr_t);
                    b_moments[l].step(&mut layer.b, &b_grads[l], lr_t);
                }
                skip_moments.step(&mut skip, &skip_grad, lr_t);
            }
            let loss = epoch_loss / n as f64;
            if !loss.is_finite() {
                return Err(LearnError::Fit(
                    "the network diverged (lower the learning_rate)".into(),
                ));
            }
            // scikit-learn's rule: stop after `patience` epochs without improving by `tol`; here
            // only once `min_steps` are done, so that tiny data gets trained at all.
            if loss > best - config.tol {
                stale += 1;
            } else {
                stale = 0;
            }
            best = best.min(loss);
            if stale > config.patience && step >= config.min_steps {
                break;
            }
        }
        Ok(Mlp {
            means,
            stds,
            layers,
            skip,
            head,
        })
    }

    /// The raw outputs (standardized value, or class probabilities) of every row.
    fn outputs(&self, x: &Encoded) -> (Vec<f64>, usize) {
        const CHUNK: usize = 256;
        let outputs = self.layers.last().map_or(0, |l| l.outputs);
        let widest = self
            .layers
            .iter()
            .map(|l| l.outputs.max(l.inputs))
            .max()
            .unwrap_or(0);
        let d = x.width();
        let mut input = vec![0.0; d * CHUNK];
        let mut a = vec![0.0; widest * CHUNK];
        let mut z = vec![0.0; widest * CHUNK];
        let mut all = Vec::with_capacity(x.rows() * outputs);
        let last = self.layers.len() - 1;
        for start in (0..x.rows()).step_by(CHUNK) {
            let rows = CHUNK.min(x.rows() - start);
            for b in 0..rows {
                let row = x.row(start + b);
                for (i, v) in row.iter().enumerate() {
                    input[b * d + i] = (v - self.means[i]) / self.stds[i];
                }
            }
            for (l, layer) in self.layers.iter().enumerate() {
                let from = if l == 0 { &input } else { &a };
                forward(layer, from, &mut z, rows);
                if l < last {
                    for v in &mut z[..rows * layer.outputs] {
                        *v = v.max(0.0);
                    }
                }
                std::mem::swap(&mut a, &mut z);
            }
            add_skip(&self.skip, &input, &mut a, rows, d, outputs);
            if let Head::Classification = self.head {
                for row in a[..rows * outputs].chunks_exact_mut(outputs) {
                    softmax(row);
                }
            }
            all.extend_from_slice(&a[..rows * outputs]);
        }
        (all, outputs)
    }

    pub(crate) fn predict_values(&self, x: &Encoded) -> Vec<f64> {
        let (out, _) = self.outputs(x);
        match self.head {
            Head::Regression { mean, std } => out.iter().map(|v| mean + std * v).collect(),
            Head::Classification => out,
        }
    }

    pub(crate) fn predict_classes(&self, x: &Encoded) -> Vec<u32> {
        let (out, k) = self.outputs(x);
        out.chunks_exact(k.max(1))
            .map(|row| {
                let mut best = 0;
                for (c, p) in row.iter().enumerate() {
                    if *p > row[best] {
                        best = c;
                    }
                }
                best as u32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MlpConfig {
        MlpConfig {
            hidden: vec![64, 64],
            learning_rate: 1e-3,
            alpha: 1e-4,
            batch_size: 200,
            epochs: 200,
            min_steps: 3000,
            tol: 1e-4,
            patience: 10,
            seed: 0,
        }
    }

    #[test]
    fn learns_a_parabola() {
        let xs: Vec<f64> = (0..81).map(|i| -2.0 + i as f64 * 0.05).collect();
        let ys: Vec<f64> = xs.iter().map(|x| x * x).collect();
        let x = Encoded::new(xs.len(), 1, xs.clone());
        let mlp = Mlp::fit(&x, Target::Values(&ys), &config()).unwrap();
        let probe = Encoded::new(3, 1, vec![-1.5, 0.0, 1.25]);
        let p = mlp.predict_values(&probe);
        for (got, want) in p.iter().zip([2.25, 0.0, 1.5625]) {
            assert!((got - want).abs() < 0.15, "{p:?}");
        }
    }

    #[test]
    fn learns_xor_deterministically() {
        let x = Encoded::new(4, 2, vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        let y = [0u32, 1, 1, 0];
        let a = Mlp::fit(&x, Target::Classes(&y, 2), &config()).unwrap();
        assert_eq!(a.predict_classes(&x), y);
        let b = Mlp::fit(&x, Target::Classes(&y, 2), &config()).unwrap();
        assert_eq!(
            a.predict_values(&x),
            b.predict_values(&x),
            "same seed, same network"
        );
    }
}
