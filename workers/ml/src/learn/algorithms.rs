//! Each algorithm's hyper-parameters (read, with their defaults, from the job's parameters) and
//! its fitted estimator. Trees, regression forests and nearest neighbours are smartcore's
//! estimators kept whole; the others keep their own compact state (see their modules).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smartcore::algorithm::neighbour::KNNAlgorithmName;
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::metrics::distance::euclidian::Euclidian;
use smartcore::neighbors::knn_classifier::{KNNClassifier, KNNClassifierParameters};
use smartcore::neighbors::knn_regressor::{KNNRegressor, KNNRegressorParameters};
use smartcore::neighbors::KNNWeightFunction;
use smartcore::tree::decision_tree_classifier::{
    DecisionTreeClassifier, DecisionTreeClassifierParameters, SplitCriterion,
};
use smartcore::tree::decision_tree_regressor::{
    DecisionTreeRegressor, DecisionTreeRegressorParameters,
};

use super::bayes::Bayes;
use super::error::guarded;
use super::forest::{Criterion, Forest, ForestSettings};
use super::linear::{Linear, Logistic};
use super::mlp::{Mlp, MlpConfig, Target};
use super::params::Params;
use super::svm::{Kernel, Svc, SvmConfig, Svr};
use super::target::Targets;
use super::{Algorithm, Encoded, LearnError, Task};

type Matrix = DenseMatrix<f64>;
type TreeC = DecisionTreeClassifier<f64, u32, Matrix, Vec<u32>>;
type TreeR = DecisionTreeRegressor<f64, f64, Matrix, Vec<f64>>;
type ForestR = RandomForestRegressor<f64, f64, Matrix, Vec<f64>>;
type KnnC = KNNClassifier<f64, u32, Matrix, Vec<u32>, Euclidian<f64>>;
type KnnR = KNNRegressor<f64, f64, Matrix, Vec<f64>, Euclidian<f64>>;

#[derive(Debug, Clone)]
pub(crate) struct TreeConfig {
    criterion: &'static str,
    max_depth: Option<usize>,
    min_samples_leaf: usize,
    min_samples_split: usize,
    seed: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ForestConfig {
    tree: TreeConfig,
    n_trees: usize,
    max_features: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct KnnConfig {
    k: usize,
    weights: &'static str,
    search: &'static str,
}

/// One algorithm's settings for one task.
#[derive(Debug, Clone)]
pub(crate) enum Config {
    Linear { solver: &'static str },
    Logistic { alpha: f64 },
    Svm(SvmConfig),
    Tree(TreeConfig),
    Forest(ForestConfig),
    Knn(KnnConfig),
    Bayes { var_smoothing: f64 },
    Mlp(MlpConfig),
}

fn seed(params: &mut Params) -> Result<u64, LearnError> {
    Ok(params.int("seed", 0, 0, u32::MAX as usize)? as u64)
}

fn tree(params: &mut Params, task: Task) -> Result<TreeConfig, LearnError> {
    let criterion = match task {
        Task::Classification => params.choice(
            "criterion",
            "gini",
            &["gini", "entropy", "classification_error"],
        )?,
        Task::Regression => "squared_error",
    };
    Ok(TreeConfig {
        criterion,
        max_depth: params.optional_int("max_depth", None, 1, u16::MAX as usize)?,
        min_samples_leaf: params.int("min_samples_leaf", 1, 1, 1_000_000)?,
        min_samples_split: params.int("min_samples_split", 2, 2, 1_000_000)?,
        seed: seed(params)?,
    })
}

impl Config {
    /// Reads `algorithm`'s parameters for `task` on data `width` features wide.
    pub(crate) fn parse(
        algorithm: Algorithm,
        task: Task,
        params: &mut Params,
        width: usize,
    ) -> Result<Config, LearnError> {
        Ok(match algorithm {
            Algorithm::LinearRegression => Config::Linear {
                solver: params.choice("solver", "cholesky", &["cholesky", "qr"])?,
            },
            Algorithm::LogisticRegression => Config::Logistic {
                alpha: params.number("alpha", 1.0, -f64::MIN_POSITIVE, 1e12)?,
            },
            Algorithm::Svm => {
                let kernel = match params.choice("kernel", "rbf", &["rbf", "linear"])? {
                    "linear" => Kernel::Linear,
                    _ => Kernel::Rbf {
                        gamma: params.number("gamma", 1.0 / width as f64, 0.0, 1e6)?,
                    },
                };
                let epsilon = match task {
                    Task::Regression => params.number("epsilon", 0.1, -f64::MIN_POSITIVE, 1e6)?,
                    Task::Classification => 0.0,
                };
                Config::Svm(SvmConfig {
                    kernel,
                    c: params.number("c", 1.0, 0.0, 1e9)?,
                    tol: params.number("tol", 1e-3, 0.0, 1.0)?,
                    epsilon,
                    cache_bytes: params
                        .int("cache_mb", 256, 1, 1 << 20)?
                        .saturating_mul(1 << 20),
                    shrinking: params.boolean("shrinking", true)?,
                })
            }
            Algorithm::DecisionTree => Config::Tree(tree(params, task)?),
            Algorithm::RandomForest => {
                let n_trees = params.int("n_trees", 100, 1, u16::MAX as usize)?;
                let default_m = match task {
                    Task::Classification => (width as f64).sqrt().floor() as usize,
                    Task::Regression => width / 3,
                }
                .clamp(1, width.max(1));
                let max_features = params.int("max_features", default_m, 1, width.max(1))?;
                Config::Forest(ForestConfig {
                    tree: tree(params, task)?,
                    n_trees,
                    max_features,
                })
            }
            Algorithm::Knn => {
                // As scikit-learn's "auto": above 15 features a tree prunes too little to pay
                // for its construction, and brute force has nothing to build.
                let search = if width > 15 { "linear" } else { "cover_tree" };
                Config::Knn(KnnConfig {
                    k: params.int("k", 5, 1, 10_000)?,
                    weights: params.choice("weights", "uniform", &["uniform", "distance"])?,
                    search: params.choice("search", search, &["cover_tree", "linear"])?,
                })
            }
            Algorithm::NaiveBayes => Config::Bayes {
                var_smoothing: params.number("var_smoothing", 1e-9, -f64::MIN_POSITIVE, 1.0)?,
            },
            Algorithm::Mlp => Config::Mlp(MlpConfig {
                hidden: params.int_list("hidden", &[64, 64], (1, 4096), 8)?,
                learning_rate: params.number("learning_rate", 1e-3, 0.0, 10.0)?,
                alpha: params.number("alpha", 1e-4, -f64::MIN_POSITIVE, 1e6)?,
                batch_size: params.int("batch_size", 200, 1, 1_000_000)?,
                epochs: params.int("epochs", 200, 1, 100_000)?,
                min_steps: params.int("min_steps", 3000, 0, 10_000_000)?,
                tol: params.number("tol", 1e-4, -f64::MIN_POSITIVE, 1e6)?,
                patience: params.int("patience", 10, 1, 100_000)?,
                seed: seed(params)?,
            }),
            Algorithm::Auto => {
                return Err(LearnError::param("auto is not a single algorithm"));
            }
        })
    }

    /// The lighter setting `auto` uses on more than [`super::auto::LIGHT_ABOVE`] rows, and its
    /// description for the leaderboard.
    pub(crate) fn lighten(&mut self) -> Option<Value> {
        match self {
            Config::Forest(f) => {
                f.n_trees = f.n_trees.min(30);
                Some(serde_json::json!({"n_trees": f.n_trees}))
            }
            Config::Mlp(m) => {
                m.epochs = m.epochs.min(50);
                m.patience = m.patience.min(5);
                Some(serde_json::json!({"epochs": m.epochs, "patience": m.patience}))
            }
            _ => None,
        }
    }

    pub(crate) fn fit(&self, x: &Encoded, y: &Targets) -> Result<Estimator, LearnError> {
        match (self, y) {
            (Config::Linear { solver }, Targets::Values(v)) => {
                Ok(Estimator::Linear(Linear::fit(x, v, solver)?))
            }
            (Config::Logistic { alpha }, Targets::Classes { index, .. }) => {
                Ok(Estimator::Logistic(Logistic::fit(x, index, *alpha)?))
            }
            (Config::Svm(c), Targets::Classes { index, .. }) => {
                Ok(Estimator::Svc(Svc::fit(x, index, c)?))
            }
            (Config::Svm(c), Targets::Values(v)) => Ok(Estimator::Svr(Svr::fit(x, v, c)?)),
            (Config::Tree(t), Targets::Classes { index, .. }) => {
                let params = tree_c(t);
                let m = x.to_dense()?;
                let model = guarded(LearnError::Fit, || TreeC::fit(&m, index, params))?;
                Ok(Estimator::TreeC(Box::new(model)))
            }
            (Config::Tree(t), Targets::Values(v)) => {
                let mut params = DecisionTreeRegressorParameters::default()
                    .with_min_samples_leaf(t.min_samples_leaf)
                    .with_min_samples_split(t.min_samples_split);
                params.max_depth = t.max_depth.map(|d| d as u16);
                params.seed = Some(t.seed);
                let m = x.to_dense()?;
                let model = guarded(LearnError::Fit, || TreeR::fit(&m, v, params))?;
                Ok(Estimator::TreeR(Box::new(model)))
            }
            (Config::Forest(f), Targets::Classes { index, labels }) => {
                let t = &f.tree;
                let settings = ForestSettings {
                    n_trees: f.n_trees,
                    max_features: f.max_features,
                    criterion: Criterion::parse(t.criterion),
                    max_depth: t.max_depth,
                    min_samples_leaf: t.min_samples_leaf,
                    min_samples_split: t.min_samples_split,
                    seed: t.seed,
                };
                Ok(Estimator::ForestC(Forest::fit(
                    x,
                    index,
                    labels.len(),
                    &settings,
                )?))
            }
            (Config::Forest(f), Targets::Values(v)) => {
                let t = &f.tree;
                let mut params = RandomForestRegressorParameters::default()
                    .with_min_samples_leaf(t.min_samples_leaf)
                    .with_min_samples_split(t.min_samples_split)
                    .with_n_trees(f.n_trees)
                    .with_m(f.max_features)
                    .with_keep_samples(false)
                    .with_seed(t.seed);
                params.max_depth = t.max_depth.map(|d| d as u16);
                let m = x.to_dense()?;
                let model = guarded(LearnError::Fit, || ForestR::fit(&m, v, params))?;
                Ok(Estimator::ForestR(Box::new(model)))
            }
            (Config::Knn(k), Targets::Classes { index, .. }) => {
                // k is capped at the training rows: a fold of a small set may have fewer.
                let params = KNNClassifierParameters::default()
                    .with_k(k.k.min(x.rows()))
                    .with_weight(weight(k.weights))
                    .with_algorithm(search(k.search_for(x.rows())));
                let m = x.to_dense()?;
                let model = guarded(LearnError::Fit, || KnnC::fit(&m, index, params))?;
                Ok(Estimator::KnnC(Box::new(model)))
            }
            (Config::Knn(k), Targets::Values(v)) => {
                let params = KNNRegressorParameters::default()
                    .with_k(k.k.min(x.rows()))
                    .with_weight(weight(k.weights))
                    .with_algorithm(search(k.search_for(x.rows())));
                let m = x.to_dense()?;
                let model = guarded(LearnError::Fit, || KnnR::fit(&m, v, params))?;
                Ok(Estimator::KnnR(Box::new(model)))
            }
            (Config::Bayes { var_smoothing }, Targets::Classes { index, .. }) => {
                Ok(Estimator::Bayes(Bayes::fit(x, index, *var_smoothing)?))
            }
            (Config::Mlp(c), Targets::Classes { index, labels }) => Ok(Estimator::MlpC(Mlp::fit(
                x,
                Target::Classes(index, labels.len()),
                c,
            )?)),
            (Config::Mlp(c), Targets::Values(v)) => {
                Ok(Estimator::MlpR(Mlp::fit(x, Target::Values(v), c)?))
            }
            _ => Err(LearnError::task(
                "this algorithm does not fit this kind of target",
            )),
        }
    }
}

fn criterion(name: &str) -> SplitCriterion {
    match name {
        "entropy" => SplitCriterion::Entropy,
        "classification_error" => SplitCriterion::ClassificationError,
        _ => SplitCriterion::Gini,
    }
}

fn tree_c(t: &TreeConfig) -> DecisionTreeClassifierParameters {
    let mut params = DecisionTreeClassifierParameters::default()
        .with_criterion(criterion(t.criterion))
        .with_min_samples_leaf(t.min_samples_leaf)
        .with_min_samples_split(t.min_samples_split);
    params.max_depth = t.max_depth.map(|d| d as u16);
    params.seed = Some(t.seed);
    params
}

fn weight(name: &str) -> KNNWeightFunction {
    if name == "distance" {
        KNNWeightFunction::Distance
    } else {
        KNNWeightFunction::Uniform
    }
}

impl KnnConfig {
    /// The search for `rows` training rows: smartcore's cover tree answers 0 for every query
    /// when it holds a single point (and gains nothing on a handful), so those search linearly.
    fn search_for(&self, rows: usize) -> &'static str {
        if rows <= self.k {
            "linear"
        } else {
            self.search
        }
    }
}

fn search(name: &str) -> KNNAlgorithmName {
    if name == "linear" {
        KNNAlgorithmName::LinearSearch
    } else {
        KNNAlgorithmName::CoverTree
    }
}

/// A fitted estimator, as stored in a model's artifact.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Estimator {
    Linear(Linear),
    Logistic(Logistic),
    Svc(Svc),
    Svr(Svr),
    TreeC(Box<TreeC>),
    TreeR(Box<TreeR>),
    ForestC(Forest),
    ForestR(Box<ForestR>),
    KnnC(Box<KnnC>),
    KnnR(Box<KnnR>),
    Bayes(Bayes),
    MlpC(Mlp),
    MlpR(Mlp),
}

/// Predictions: class indices or values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    Classes(Vec<u32>),
    Values(Vec<f64>),
}

impl Estimator {
    pub(crate) fn predict(&self, x: &Encoded) -> Result<Output, LearnError> {
        if x.rows() == 0 {
            return Ok(match self {
                Estimator::Linear(_)
                | Estimator::Svr(_)
                | Estimator::TreeR(_)
                | Estimator::ForestR(_)
                | Estimator::KnnR(_)
                | Estimator::MlpR(_) => Output::Values(Vec::new()),
                _ => Output::Classes(Vec::new()),
            });
        }
        Ok(match self {
            Estimator::Linear(m) => Output::Values(m.predict(x)),
            Estimator::Logistic(m) => Output::Classes(m.predict(x)),
            Estimator::Svc(m) => Output::Classes(m.predict(x)),
            Estimator::Svr(m) => Output::Values(m.predict(x)),
            Estimator::Bayes(m) => Output::Classes(m.predict(x)),
            Estimator::MlpC(m) => Output::Classes(m.predict_classes(x)),
            Estimator::MlpR(m) => Output::Values(m.predict_values(x)),
            Estimator::TreeC(m) => {
                let d = x.to_dense()?;
                Output::Classes(guarded(LearnError::Predict, || m.predict(&d))?)
            }
            Estimator::TreeR(m) => {
                let d = x.to_dense()?;
                Output::Values(guarded(LearnError::Predict, || m.predict(&d))?)
            }
            Estimator::ForestC(m) => Output::Classes(m.predict(x)?),
            Estimator::ForestR(m) => {
                let d = x.to_dense()?;
                Output::Values(guarded(LearnError::Predict, || m.predict(&d))?)
            }
            Estimator::KnnC(m) => {
                let d = x.to_dense()?;
                Output::Classes(guarded(LearnError::Predict, || m.predict(&d))?)
            }
            Estimator::KnnR(m) => {
                let d = x.to_dense()?;
                Output::Values(guarded(LearnError::Predict, || m.predict(&d))?)
            }
        })
    }
}
