//! `sluice bench ml`: fit times per algorithm through the pipeline on a generated dataset,
//! beside scikit-learn's on the same data (`scripts/ml_reference.py`, given a Python that has
//! it), then prediction requests from published to their rows committed.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::value::RawValue;
use sluice_messages::ml::{self, PredictRequest, TrainOutput, TrainRequest};
use sluice_messages::Envelope;

use crate::app::App;
use crate::commands::bench::{measure, Load};
use crate::commands::ml::{answer, publish_and_wait};

#[derive(Debug, clap::Args)]
pub struct MlBench {
    /// Prediction requests to publish.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Rows each request carries.
    #[arg(long, default_value_t = 1)]
    rows_per_request: u64,
    /// Train every algorithm on a generated dataset first and report the fit times.
    #[arg(long)]
    train: bool,
    /// Rows of the generated training dataset.
    #[arg(long, default_value_t = 10_000)]
    train_rows: usize,
    /// A Python with scikit-learn: its fit times on the same data, by `--reference-script`.
    #[arg(long)]
    reference_python: Option<String>,
    #[arg(long, default_value = "scripts/ml_reference.py")]
    reference_script: String,
    #[command(flatten)]
    load: Load,
}

/// Features of every generated dataset.
const FEATURES: usize = 20;

/// The algorithms timed, each on the task its scikit-learn counterpart is timed on.
const TIMED: [(&str, Task); 9] = [
    ("linear_regression", Task::Regression),
    ("logistic_regression", Task::Classification),
    ("svm", Task::Classification),
    ("decision_tree", Task::Classification),
    ("random_forest", Task::Classification),
    ("knn", Task::Classification),
    ("naive_bayes", Task::Classification),
    ("mlp", Task::Classification),
    ("auto", Task::Classification),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Task {
    Classification,
    Regression,
}

impl Task {
    fn as_str(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Regression => "regression",
        }
    }
}

/// A generated dataset: standard normal features; the target a noisy linear function of them
/// (regression), or whether that function is positive (classification).
struct Dataset {
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
}

impl Dataset {
    fn generate(rows: usize, task: Task, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let weights: Vec<f64> = (0..FEATURES).map(|_| normal(&mut rng)).collect();
        // Four decimals: the JSON stays small and the CSV holds exactly the same numbers.
        let round = |v: f64| (v * 1e4).round() / 1e4;
        let mut x = Vec::with_capacity(rows);
        let mut y = Vec::with_capacity(rows);
        for _ in 0..rows {
            let row: Vec<f64> = (0..FEATURES).map(|_| round(normal(&mut rng))).collect();
            let signal: f64 = row.iter().zip(&weights).map(|(a, w)| a * w).sum();
            let noisy = signal + 0.5 * normal(&mut rng);
            y.push(match task {
                Task::Regression => round(noisy),
                Task::Classification => f64::from(u8::from(noisy > 0.0)),
            });
            x.push(row);
        }
        Self { x, y }
    }

    /// `{"X": […], "y": […]}`, or `{"X": […]}` without the target.
    fn json(&self, with_target: bool) -> Box<RawValue> {
        let mut text = String::from("{\"X\": [");
        for (i, row) in self.x.iter().enumerate() {
            text.push_str(if i == 0 { "[" } else { ", [" });
            for (j, v) in row.iter().enumerate() {
                let _ = write!(text, "{}{v}", if j == 0 { "" } else { ", " });
            }
            text.push(']');
        }
        text.push(']');
        if with_target {
            text.push_str(", \"y\": [");
            for (i, v) in self.y.iter().enumerate() {
                let _ = write!(text, "{}{v:?}", if i == 0 { "" } else { ", " });
            }
            text.push(']');
        }
        text.push('}');
        RawValue::from_string(text).expect("the dataset is valid JSON")
    }

    fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::new();
        let header: Vec<String> = (0..FEATURES).map(|j| format!("x{j}")).collect();
        let _ = writeln!(text, "{},y", header.join(","));
        for (row, y) in self.x.iter().zip(&self.y) {
            let cells: Vec<String> = row.iter().map(f64::to_string).collect();
            let _ = writeln!(text, "{},{y}", cells.join(","));
        }
        std::fs::write(path, text)
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

pub async fn run(app: &App, bench: MlBench) -> anyhow::Result<ExitCode> {
    if bench.train && !fit_times(app, &bench).await? {
        return Ok(ExitCode::FAILURE);
    }
    // The model the requests go to: a linear one, as the target names.
    let model = "bench-linear";
    let training = Dataset::generate(1_000, Task::Regression, 7);
    if let Err(reason) = train(app, "linear_regression", model, Task::Regression, &training).await {
        println!("cannot train {model}: {reason}");
        return Ok(ExitCode::FAILURE);
    }
    let rows = usize::try_from(bench.rows_per_request.max(1))?;
    let data = Dataset::generate(rows, Task::Regression, 8).json(false);
    let topic = app.topics.ml_predict();
    let request = |_: u64, id| {
        let envelope = Envelope::with_id(
            id,
            ml::KIND_PREDICT,
            PredictRequest {
                model: model.to_string(),
                version: None,
                data: data.clone(),
            },
        );
        (id.to_string().into_bytes(), envelope)
    };
    let load = Load {
        rows_per_message: (rows > 1).then_some(rows as u64),
        ..bench.load
    };
    measure(
        app,
        "predictions",
        bench.requests,
        &load,
        ml::PREDICTOR_ROLE,
        &topic,
        request,
    )
    .await
}

/// Trains `algorithm` as `name` through the pipeline; its answer, or why it failed.
async fn train(
    app: &App,
    algorithm: &str,
    name: &str,
    task: Task,
    data: &Dataset,
) -> Result<TrainOutput, String> {
    let request = TrainRequest {
        algorithm: algorithm.to_string(),
        name: Some(name.to_string()),
        task: Some(task.as_str().to_string()),
        params: serde_json::Map::new(),
        data: data.json(true),
    };
    let envelope = Envelope::new(ml::KIND_TRAIN, &request);
    let what = format!("training {algorithm}");
    let timeout = Duration::from_secs(3_600);
    let row = publish_and_wait(app, app.topics.ml_train(), &envelope, timeout, &what).await?;
    answer(&row)
}

/// Prints the fit time of every algorithm, with scikit-learn's beside it when it can be had;
/// false when a fit failed.
async fn fit_times(app: &App, bench: &MlBench) -> anyhow::Result<bool> {
    let datasets = [Task::Classification, Task::Regression]
        .map(|task| (task, Dataset::generate(bench.train_rows, task, 1)));
    let reference = match &bench.reference_python {
        Some(python) => reference_times(python, &bench.reference_script, &datasets)?,
        None => Vec::new(),
    };
    println!(
        "fit times on {} × {FEATURES} (sluice: through the pipeline, the fit's own time in its process)",
        bench.train_rows
    );
    println!(
        "{:<20} {:<15} {:>12} {:>14} {:>8}  metric",
        "algorithm", "task", "sluice ms", "sklearn ms", "ratio"
    );
    let mut all_trained = true;
    for (algorithm, task) in TIMED {
        let data = &datasets
            .iter()
            .find(|(t, _)| *t == task)
            .expect("both tasks")
            .1;
        let name = format!("bench-{algorithm}");
        match train(app, algorithm, &name, task, data).await {
            Ok(trained) => {
                let sklearn = reference
                    .iter()
                    .find(|(a, t, _)| a == algorithm && *t == task)
                    .map(|(_, _, ms)| *ms);
                let ratio = sklearn
                    .map(|ms| format!("{:.2}", trained.training_ms as f64 / ms.max(0.001)))
                    .unwrap_or_else(|| "-".into());
                let sklearn = sklearn.map_or("-".into(), |ms| format!("{ms:.1}"));
                println!(
                    "{algorithm:<20} {:<15} {:>12} {sklearn:>14} {ratio:>8}  {} {:.4} ({})",
                    task.as_str(),
                    trained.training_ms,
                    trained.metric.name,
                    trained.metric.value,
                    trained.algorithm
                );
            }
            Err(reason) => {
                all_trained = false;
                println!("{algorithm:<20} {:<15} failed: {reason}", task.as_str());
            }
        }
    }
    Ok(all_trained)
}

/// scikit-learn's fit times (ms) on the same datasets: (algorithm, task, ms).
fn reference_times(
    python: &str,
    script: &str,
    datasets: &[(Task, Dataset)],
) -> anyhow::Result<Vec<(String, Task, f64)>> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-ml-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut times = Vec::new();
    for (task, data) in datasets {
        let csv = dir.join(format!("{}.csv", task.as_str()));
        data.write_csv(&csv)?;
        let output = std::process::Command::new(python)
            .arg(script)
            .arg(&csv)
            .arg("y")
            .arg(task.as_str())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seconds: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&output.stdout)?;
        for (algorithm, value) in seconds {
            if let Some(s) = value.as_f64() {
                times.push((algorithm, *task, s * 1e3));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(times)
}
