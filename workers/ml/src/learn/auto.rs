//! `auto`: every algorithm that applies to the task, scored by k-fold cross-validation, the
//! best refitted on all the data.
//!
//! - Candidates: classification — logistic_regression, svm, decision_tree, random_forest, knn,
//!   naive_bayes, mlp; regression — linear_regression, svm, decision_tree, random_forest, knn,
//!   mlp; each with its default parameters.
//! - Folds: `folds` (default 5, 2 to 20); rows shuffled with `seed` (default 0). For
//!   classification the folds are stratified (each class dealt round-robin over them), and
//!   there are never more folds than rows of the rarest class; for regression never more than
//!   rows. Fewer than 2 rows (of the rarest class) is an error.
//! - Metric: mean accuracy over the folds for classification, mean R² for regression; the
//!   highest wins, ties going to the earlier candidate. A candidate that fails on a fold (too
//!   few rows for its features, say) is listed with its error and cannot win; if all fail, the
//!   job fails.
//! - Above [`LIGHT_ABOVE`] rows, the expensive candidates are scored with a lighter setting
//!   (random_forest 30 trees; mlp at most 50 epochs with patience 5) and the winner is
//!   refitted on all rows with its full defaults. The svm needs none: its SMO solver fits
//!   10,000 rows in well under a second.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{Map, Value};

use super::algorithms::{Config, Estimator};
use super::metrics::score;
use super::params::Params;
use super::target::Targets;
use super::{Algorithm, Encoded, LeaderboardEntry, LearnError, Task};

/// Rows above which `auto` scores the expensive candidates with a lighter setting.
pub const LIGHT_ABOVE: usize = 2_000;

/// The candidates for a task, in the order ties are broken.
pub(crate) fn candidates(task: Task) -> Vec<Algorithm> {
    Algorithm::ALL
        .into_iter()
        .filter(|a| match a {
            Algorithm::Auto => false,
            Algorithm::LinearRegression => task == Task::Regression,
            Algorithm::LogisticRegression | Algorithm::NaiveBayes => task == Task::Classification,
            _ => true,
        })
        .collect()
}

/// What `auto` found: the winner refitted, its CV metric and the leaderboard.
pub(crate) struct Outcome {
    pub(crate) winner: Algorithm,
    pub(crate) estimator: Estimator,
    pub(crate) metric: f64,
    pub(crate) leaderboard: Vec<LeaderboardEntry>,
}

/// Assigns every row to a fold.
fn folds(y: &Targets, wanted: usize, seed: u64) -> Result<(usize, Vec<usize>), LearnError> {
    let n = y.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut fold_of = vec![0; n];
    let k = match y {
        Targets::Classes { index, labels } => {
            let mut counts = vec![0usize; labels.len()];
            for &c in index {
                counts[c as usize] += 1;
            }
            let rarest = counts.iter().copied().filter(|&c| c > 0).min().unwrap_or(0);
            if rarest < 2 {
                return Err(LearnError::data(
                    "auto needs at least 2 rows of every class to cross-validate",
                ));
            }
            let k = wanted.min(rarest);
            // Deal each class's rows round-robin, continuing where the last class stopped.
            let mut next = 0;
            for class in 0..labels.len() as u32 {
                for &r in order.iter().filter(|&&r| index[r] == class) {
                    fold_of[r] = next % k;
                    next += 1;
                }
            }
            k
        }
        Targets::Values(_) => {
            if n < 2 {
                return Err(LearnError::data(
                    "auto needs at least 2 rows to cross-validate",
                ));
            }
            let k = wanted.min(n);
            for (i, &r) in order.iter().enumerate() {
                fold_of[r] = i % k;
            }
            k
        }
    };
    Ok((k, fold_of))
}

pub(crate) fn run(
    task: Task,
    given: &Map<String, Value>,
    x: &Encoded,
    y: &Targets,
) -> Result<(Outcome, Map<String, Value>), LearnError> {
    let mut params = Params::new(given);
    let wanted = params.int("folds", 5, 2, 20)?;
    let seed = params.int("seed", 0, 0, u32::MAX as usize)? as u64;
    let mut effective = params.finish("auto")?;
    let (k, fold_of) = folds(y, wanted, seed)?;
    effective.insert("folds".into(), Value::from(k));
    let light = x.rows() > LIGHT_ABOVE;

    let splits: Vec<(Vec<usize>, Vec<usize>)> = (0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) =
                (0..x.rows()).partition(|&r| fold_of[r] == f);
            (train, test)
        })
        .collect();

    let empty = Map::new();
    let mut leaderboard = Vec::new();
    // The best so far: its metric, algorithm, full configuration and parameters.
    type Best = (f64, Algorithm, Config, Map<String, Value>);
    let mut best: Option<Best> = None;
    for algorithm in candidates(task) {
        let mut p = Params::new(&empty);
        let config = Config::parse(algorithm, task, &mut p, x.width())?;
        let full_params = p.finish(algorithm.as_str())?;
        let mut scored = config.clone();
        let lighter = if light { scored.lighten() } else { None };
        let started = Instant::now();
        let mut total = 0.0;
        let mut error = None;
        for (train, test) in &splits {
            let fitted = scored.fit(&x.select(train), &y.select(train));
            match fitted.and_then(|e| e.predict(&x.select(test))) {
                Ok(out) => total += score(&y.select(test), &out),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let fit_ms = started.elapsed().as_millis() as u64;
        // A score that is not a number (an overflow) ranks nowhere: the candidate counts as
        // failed, so it can never be kept merely for being first.
        let (metric, error) = match error {
            None if (total / k as f64).is_finite() => (Some(total / k as f64), None),
            None => (
                None,
                Some("its cross-validated metric is not a number".to_string()),
            ),
            Some(e) => (None, Some(e)),
        };
        leaderboard.push(LeaderboardEntry {
            algorithm: algorithm.as_str().to_string(),
            metric,
            fit_ms,
            lighter,
            error,
        });
        if let Some(m) = metric {
            if best.as_ref().is_none_or(|b| m > b.0) {
                best = Some((m, algorithm, config, full_params));
            }
        }
    }
    let Some((metric, winner, config, winner_params)) = best else {
        let why = leaderboard
            .iter()
            .filter_map(|e| {
                e.error
                    .as_ref()
                    .map(|err| format!("{}: {err}", e.algorithm))
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(LearnError::Fit(format!(
            "no candidate could be cross-validated ({why})"
        )));
    };
    let estimator = config.fit(x, y)?;
    effective.insert("winner".into(), Value::Object(winner_params));
    Ok((
        Outcome {
            winner,
            estimator,
            metric,
            leaderboard,
        },
        effective,
    ))
}
