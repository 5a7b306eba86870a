//! The machine learning itself, with no Kafka and no database: training a model from a job's
//! data object, storing it as bytes, and predicting with it.
//!
//! ```text
//! train(spec) ──► Trained { model, report } ── model.to_bytes() ──► the registry
//! Model::from_bytes ──► model.encode(data) (per request) ──► Encoded::concat ──► model.predict
//! ```
//!
//! Data comes in two shapes ([`features`] says how each is encoded): a matrix,
//! `{"X": [[1.0, 2.0], ...], "y": [...]}`, or records, `{"records": [{"state": "SP", ...}],
//! "target": "sold"}`. The task is inferred from the target unless given ([`target`] has the
//! rule). Every error is a [`LearnError`], and every one is permanent.
//!
//! # Layout
//! - [`data`]: reading the data object; [`features`]: the preprocessing a model keeps;
//!   [`target`]: the task and the class labels; [`params`]: hyper-parameters.
//! - [`algorithms`]: each algorithm's parameters and fitted estimator; [`linear`], [`svm`],
//!   [`bayes`], [`mlp`], [`forest`]: the estimators kept in a form of their own.
//! - [`auto`]: cross-validation over the candidates; [`metrics`]: accuracy and R².

mod algorithms;
pub mod auto;
mod bayes;
mod data;
mod error;
pub mod features;
mod forest;
mod linear;
mod metrics;
mod mlp;
mod params;
mod svm;
pub mod target;

#[cfg(test)]
mod tests;

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smartcore::linalg::basic::matrix::DenseMatrix;

use algorithms::{Config, Estimator, Output};
use data::Training;
use features::Preprocessor;
use params::{number_value, Params};

pub use error::LearnError;

/// Classification or regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classification,
    Regression,
}

impl Task {
    pub fn as_str(&self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }
}

/// The algorithms, with their hyper-parameters and defaults. A parameter not listed for an
/// algorithm is an error; so is a value out of its range. Features are standardized before
/// any of them sees them (see [`features`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ordinary least squares, its own solver (see `linear.rs`); regression only.
    /// - `solver`: `"cholesky"` (default: the normal equations, falling back to QR when they
    ///   are singular) or `"qr"` (Householder with column pivoting). Dependent columns get
    ///   weight 0.
    LinearRegression,
    /// L2-penalized logistic regression, multinomial for more than two classes, its own solver
    /// (Newton's method, L-BFGS for wide models; see `linear.rs`); classification only.
    /// - `alpha`: the L2 penalty, default 1.0 (scikit-learn's C = 1 / alpha), ≥ 0.
    LogisticRegression,
    /// A support vector machine: C-SVC (one-vs-one for more than two classes) or ε-SVR, fitted
    /// by its own SMO solver (libsvm's algorithm; see `svm.rs` for why not smartcore's).
    /// - `kernel`: `"rbf"` (default) or `"linear"`; `gamma` (rbf): default 1 / features
    ///   (scikit-learn's `"scale"` on standardized features).
    /// - `c`: default 1.0; `tol`: the stopping tolerance on the optimality gap, default 0.001;
    ///   `cache_mb`: the kernel-row cache, default 256 (MiB); `shrinking`: default true.
    /// - `epsilon` (regression): default 0.1, in standard deviations of the target (the SVR
    ///   fits a standardized target).
    Svm,
    /// A CART decision tree (smartcore `DecisionTreeClassifier` / `DecisionTreeRegressor`).
    /// - `max_depth`: default none (grown until pure); `min_samples_leaf`: default 1;
    ///   `min_samples_split`: default 2; `criterion` (classification): `"gini"` (default),
    ///   `"entropy"` or `"classification_error"`; `seed`: default 0.
    DecisionTree,
    /// A random forest of bootstrapped trees (for classification its own, see `forest.rs`;
    /// for regression smartcore's `RandomForestRegressor`).
    /// - `n_trees`: default 100; `max_features` (features tried per split): default
    ///   ⌊√features⌋ for classification, features / 3 for regression (at least 1);
    ///   `max_depth`, `min_samples_leaf`, `min_samples_split`, `criterion`, `seed` as for
    ///   the decision tree.
    RandomForest,
    /// k nearest neighbours, Euclidean (smartcore `KNNClassifier` / `KNNRegressor`).
    /// - `k`: default 5 (capped at the training rows); `weights`: `"uniform"` (default) or
    ///   `"distance"`; `search`: `"cover_tree"` or `"linear"` (brute force), by default
    ///   linear above 15 features (as scikit-learn's `"auto"`), a cover tree otherwise.
    Knn,
    /// Gaussian naive Bayes (its own, see `bayes.rs` for why not smartcore's); classification
    /// only.
    /// - `var_smoothing`: default 1e-9, times the largest feature variance, added to every
    ///   variance.
    NaiveBayes,
    /// A multilayer perceptron of ReLU layers trained by Adam (its own: smartcore has none).
    /// - `hidden`: layer sizes, default `[64, 64]`; `learning_rate`: default 0.001; `alpha`
    ///   (L2): default 0.0001; `batch_size`: default 200; `epochs`: default 200, at most
    ///   (stops after `patience`, default 10, epochs without the training loss improving by
    ///   `tol`, default 0.0001); `min_steps`: default 3000 Adam steps at least, so that small
    ///   data is trained at all; `seed`: default 0.
    Mlp,
    /// Cross-validates every applicable algorithm and keeps the best (see [`auto`]).
    /// - `folds`: default 5; `seed`: default 0.
    Auto,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::LinearRegression,
        Algorithm::LogisticRegression,
        Algorithm::Svm,
        Algorithm::DecisionTree,
        Algorithm::RandomForest,
        Algorithm::Knn,
        Algorithm::NaiveBayes,
        Algorithm::Mlp,
        Algorithm::Auto,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::LinearRegression => "linear_regression",
            Algorithm::LogisticRegression => "logistic_regression",
            Algorithm::Svm => "svm",
            Algorithm::DecisionTree => "decision_tree",
            Algorithm::RandomForest => "random_forest",
            Algorithm::Knn => "knn",
            Algorithm::NaiveBayes => "naive_bayes",
            Algorithm::Mlp => "mlp",
            Algorithm::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What to train.
pub struct TrainSpec<'a> {
    pub algorithm: Algorithm,
    /// The task, or none to infer it from the target.
    pub task: Option<Task>,
    /// Hyper-parameters (see [`Algorithm`]); may be empty.
    pub params: &'a Map<String, Value>,
    /// The JSON text of the data object, either shape.
    pub data: &'a str,
}

/// A trained model and its report.
pub struct Trained {
    pub model: Model,
    pub report: Report,
}

/// A metric's value and what it was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// `"accuracy"` or `"r2"`.
    pub name: &'static str,
    pub value: f64,
    /// `"training"` (the fitted rows themselves, at most [`TRAINING_METRIC_ROWS`] of them
    /// evenly spread) or `"cross_validation"` (auto).
    pub on: &'static str,
}

/// One candidate of `auto`.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderboardEntry {
    pub algorithm: String,
    /// The mean cross-validated metric, or null when the candidate failed.
    pub metric: Option<f64>,
    /// Wall time of all its cross-validation fits and predictions, in milliseconds.
    pub fit_ms: u64,
    /// The lighter setting it was scored with on large data, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lighter: Option<Value>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a training reports about its model.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The algorithm's name; for auto `"auto:<winner>"`, e.g. `"auto:random_forest"`.
    pub algorithm: String,
    pub task: Task,
    pub rows: usize,
    /// The feature schema: `{"features": n}` for a matrix, or one
    /// `{"name", "kind": "numeric"|"boolean"|"categorical", "categories"}` per column.
    pub features: Value,
    /// The effective hyper-parameters, defaults filled in. For auto: `folds`, `seed` and
    /// `winner`, the winner's parameters.
    pub params: Map<String, Value>,
    pub metric: Metric,
    /// Wall time of fitting, in milliseconds: the preprocessing's fit and transform plus the
    /// estimator's fit (for auto its whole cross-validation and the winner's refit). Reading
    /// the data object and measuring the training metric are not counted, so that it compares
    /// with scikit-learn's `StandardScaler().fit_transform` + `fit`.
    pub fit_ms: u64,
    /// Auto only: every candidate, in the order tried.
    pub leaderboard: Option<Vec<LeaderboardEntry>>,
}

/// Rows encoded for a model: row-major f64s of the model's input width.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    rows: usize,
    width: usize,
    values: Vec<f64>,
}

impl Encoded {
    pub(crate) fn new(rows: usize, width: usize, values: Vec<f64>) -> Self {
        Encoded {
            rows,
            width,
            values,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The rows of every part, in order. Parts of different widths (from different models)
    /// make an `Encoded` that [`Model::predict`] refuses.
    pub fn concat(parts: &[Encoded]) -> Encoded {
        let width = parts.first().map_or(0, |p| p.width);
        let rows = parts.iter().map(|p| p.rows).sum();
        if parts.iter().any(|p| p.width != width) {
            return Encoded {
                rows,
                width: 0,
                values: Vec::new(),
            };
        }
        let mut values = Vec::with_capacity(rows * width);
        for p in parts {
            values.extend_from_slice(&p.values);
        }
        Encoded {
            rows,
            width,
            values,
        }
    }

    pub(crate) fn row(&self, r: usize) -> &[f64] {
        &self.values[r * self.width..(r + 1) * self.width]
    }

    pub(crate) fn row_iter(&self) -> std::slice::ChunksExact<'_, f64> {
        self.values.chunks_exact(self.width.max(1))
    }

    /// The rows `rows`, in that order.
    pub(crate) fn select(&self, rows: &[usize]) -> Encoded {
        let mut values = Vec::with_capacity(rows.len() * self.width);
        for &r in rows {
            values.extend_from_slice(self.row(r));
        }
        Encoded::new(rows.len(), self.width, values)
    }

    /// A copy as the row-major matrix smartcore takes.
    pub(crate) fn to_dense(&self) -> Result<DenseMatrix<f64>, LearnError> {
        DenseMatrix::new(self.rows, self.width, self.values.clone(), false)
            .map_err(|e| LearnError::Fit(e.to_string()))
    }
}

/// Most training rows the training metric is measured on.
pub const TRAINING_METRIC_ROWS: usize = 2_000;

/// Bumped when the artifact's layout changes; an artifact of another version is refused.
const ARTIFACT_VERSION: u32 = 2;

/// A trained model: its preprocessing, class labels and fitted estimator.
#[derive(Debug, Serialize, Deserialize)]
pub struct Model {
    version: u32,
    algorithm: String,
    task: Task,
    preprocessor: Preprocessor,
    /// A classifier's labels in their original JSON form, by class index.
    labels: Option<Vec<Value>>,
    estimator: Estimator,
}

impl Model {
    /// The artifact stored in the registry: compact JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>, LearnError> {
        serde_json::to_vec(self).map_err(|e| LearnError::Artifact(e.to_string()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, LearnError> {
        let model: Model =
            serde_json::from_slice(bytes).map_err(|e| LearnError::Artifact(e.to_string()))?;
        if model.version != ARTIFACT_VERSION {
            return Err(LearnError::Artifact(format!(
                "artifact version {} is not {ARTIFACT_VERSION}: retrain the model",
                model.version
            )));
        }
        Ok(model)
    }

    /// As in the report: `"knn"`, or `"auto:knn"`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    pub fn task(&self) -> Task {
        self.task
    }

    /// The number of encoded features a row has.
    pub fn width(&self) -> usize {
        self.preprocessor.width()
    }

    /// Parses and encodes one request's data (`{"X": ...}` or `{"records": [...]}`, whichever
    /// shape the model was trained on; the other shape is an error) into rows of the model's
    /// input width. Cheap, so a worker can encode many requests and predict them at once.
    pub fn encode(&self, data: &str) -> Result<Encoded, LearnError> {
        self.preprocessor.encode(data)
    }

    /// Predicts every row of the encoded requests at once; one value per row, in order:
    /// a class in its original JSON form, or a number.
    pub fn predict(&self, rows: &Encoded) -> Result<Vec<Value>, LearnError> {
        if rows.rows == 0 {
            return Ok(Vec::new());
        }
        if rows.width != self.width() || rows.values.len() != rows.rows * rows.width {
            return Err(LearnError::Predict(format!(
                "the rows are {} features wide, the model takes {}",
                rows.width,
                self.width()
            )));
        }
        match self.estimator.predict(rows)? {
            Output::Classes(classes) => {
                let labels = self.labels.as_deref().unwrap_or_default();
                classes
                    .iter()
                    .map(|&c| {
                        labels
                            .get(c as usize)
                            .cloned()
                            .ok_or_else(|| LearnError::Predict(format!("class {c} has no label")))
                    })
                    .collect()
            }
            Output::Values(values) => values
                .iter()
                .enumerate()
                .map(|(r, &v)| {
                    if v.is_finite() {
                        Ok(number_value(v))
                    } else {
                        Err(LearnError::Predict(format!(
                            "row {r}'s prediction is not finite"
                        )))
                    }
                })
                .collect(),
        }
    }
}

/// Trains a model as `spec` says.
pub fn train(spec: &TrainSpec) -> Result<Trained, LearnError> {
    let data = data::training(spec.data)?;
    let (y_raw, name): (
        &[&serde_json::value::RawValue],
        Box<dyn Fn(usize) -> String>,
    ) = match &data {
        Training::Matrix { y, .. } => (y, Box::new(|r| format!("y[{r}]"))),
        Training::Records { y, target, .. } => {
            let target = target.clone();
            (y, Box::new(move |r| format!("record {r}'s {target:?}")))
        }
    };
    let (task, targets) = target::read(y_raw, spec.algorithm, spec.task, &name)?;
    let started = Instant::now();
    let (preprocessor, x) = Preprocessor::fit(&data)?;
    let rows = data.rows();
    let labels = match &targets {
        target::Targets::Classes { labels, .. } => Some(labels.clone()),
        target::Targets::Values(_) => None,
    };
    let (algorithm, estimator, params, metric, leaderboard, fit_ms) =
        if spec.algorithm == Algorithm::Auto {
            let (outcome, effective) = auto::run(task, spec.params, &x, &targets)?;
            let fit_ms = elapsed_ms(started);
            let metric = Metric {
                name: metrics::name(task),
                value: outcome.metric,
                on: "cross_validation",
            };
            (
                format!("auto:{}", outcome.winner.as_str()),
                outcome.estimator,
                effective,
                metric,
                Some(outcome.leaderboard),
                fit_ms,
            )
        } else {
            let mut params = Params::new(spec.params);
            let config = Config::parse(spec.algorithm, task, &mut params, x.width())?;
            let effective = params.finish(spec.algorithm.as_str())?;
            let estimator = config.fit(&x, &targets)?;
            let fit_ms = elapsed_ms(started);
            // At most TRAINING_METRIC_ROWS rows, evenly spread: predicting every training row
            // would cost a nearest-neighbour or kernel model more than its fit.
            let step = x.rows().div_ceil(TRAINING_METRIC_ROWS).max(1);
            let sample: Vec<usize> = (0..x.rows()).step_by(step).collect();
            let value = metrics::score(
                &targets.select(&sample),
                &estimator.predict(&x.select(&sample))?,
            );
            let metric = Metric {
                name: metrics::name(task),
                value,
                on: "training",
            };
            (
                spec.algorithm.as_str().to_string(),
                estimator,
                effective,
                metric,
                None,
                fit_ms,
            )
        };
    let features = preprocessor.schema();
    let model = Model {
        version: ARTIFACT_VERSION,
        algorithm: algorithm.clone(),
        task,
        preprocessor,
        labels,
        estimator,
    };
    Ok(Trained {
        model,
        report: Report {
            algorithm,
            task,
            rows,
            features,
            params,
            metric,
            fit_ms,
            leaderboard,
        },
    })
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
