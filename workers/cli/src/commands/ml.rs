//! `sluice ml train`, `sluice ml predict` and `sluice ml models`: train a model from a data
//! file and print it once it is stored, predict with a stored model, list the registry.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Map, Value};
use sluice_core::Output;
use sluice_db::queries::{self, JobRow};
use sluice_db::JobWaiter;
use sluice_messages::ml::{self, Metric, PredictRequest, TrainOutput, TrainRequest};
use sluice_messages::Envelope;

use crate::app::App;
use crate::render::to_line;

#[derive(Debug, clap::Subcommand)]
pub enum MlCommand {
    /// Train a model and print it once it is stored in the registry.
    Train {
        /// linear_regression, logistic_regression, svm, decision_tree, random_forest, knn,
        /// naive_bayes, mlp or auto.
        algorithm: String,
        /// CSV (a header row), JSON (seed 000's {"X": …, "y": …}, {"records": […], "target": …}
        /// or an array of records) or JSONL (a record per line).
        #[arg(long)]
        data: String,
        /// The column to predict, for records; by default a JSON file's own "target", or a CSV
        /// file's last column (JSON records have no column order: name it).
        #[arg(long)]
        target: Option<String>,
        /// The model's name; by default the algorithm's.
        #[arg(long)]
        name: Option<String>,
        /// classification or regression; inferred from the target by default.
        #[arg(long)]
        task: Option<String>,
        /// A hyper-parameter, NAME=VALUE (VALUE as JSON: 100, 0.5, "rbf", [64, 32]); repeatable.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// How long to wait for the model, e.g. 10m.
        #[arg(long, default_value = "1h", value_parser = sluice_core::config::parse_duration)]
        timeout: Duration,
    },
    /// Predict with a stored model and print {"predictions": […]}.
    Predict {
        model: String,
        /// CSV, JSON ({"X": …}, {"records": […]}, one record or an array of them) or JSONL.
        #[arg(long)]
        data: String,
        /// A pinned version; the latest by default.
        #[arg(long)]
        version: Option<i32>,
        #[arg(long, default_value = "60s", value_parser = sluice_core::config::parse_duration)]
        timeout: Duration,
    },
    /// List the models: name, version, algorithm, task, metric (the latest version of each).
    Models {
        /// Every version, not only the latest.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(app: &App, command: MlCommand) -> anyhow::Result<ExitCode> {
    match command {
        MlCommand::Train {
            algorithm,
            data,
            target,
            name,
            task,
            params,
            timeout,
        } => {
            let params = match parse_params(&params) {
                Ok(params) => params,
                Err(reason) => return Ok(fail_train(reason)),
            };
            let data = match training_data(Path::new(&data), target.as_deref()) {
                Ok(data) => data,
                Err(reason) => return Ok(fail_train(reason)),
            };
            let request = TrainRequest {
                algorithm,
                name,
                task,
                params,
                data: serde_json::value::to_raw_value(&data)?,
            };
            train(app, request, timeout).await
        }
        MlCommand::Predict {
            model,
            data,
            version,
            timeout,
        } => {
            let data = match prediction_data(Path::new(&data)) {
                Ok(data) => data,
                Err(reason) => return Ok(fail_predict(reason)),
            };
            let request = PredictRequest {
                model,
                version,
                data: serde_json::value::to_raw_value(&data)?,
            };
            predict(app, request, timeout).await
        }
        MlCommand::Models { all, json } => {
            let rows = sluice_db::ml::models(&app.pool, all).await?;
            for row in &rows {
                if json {
                    println!("{}", serde_json::to_string(row)?);
                } else {
                    let metric = serde_json::from_value::<Metric>(row.metric.clone())
                        .map(|m| format!("{} {:.4} ({})", m.name, m.value, m.on))
                        .unwrap_or_default();
                    println!(
                        "{:<24} v{:<4} {:<20} {:<14} {:<32} {} rows, {} ms",
                        row.name,
                        row.version,
                        row.algorithm,
                        row.task,
                        metric,
                        row.rows,
                        row.training_ms
                    );
                }
            }
            if !json {
                eprintln!("{} model(s)", rows.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fail_train(reason: impl Into<String>) -> ExitCode {
    println!(
        "{}",
        to_line(&json!({"status": "failed", "error": reason.into()}))
    );
    ExitCode::FAILURE
}

fn fail_predict(reason: impl Into<String>) -> ExitCode {
    println!("{}", to_line(&json!({"error": reason.into()})));
    ExitCode::FAILURE
}

/// `NAME=VALUE` pairs; a value that is not JSON is taken as a string (`kernel=rbf`).
fn parse_params(pairs: &[String]) -> Result<Map<String, Value>, String> {
    pairs
        .iter()
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("--param {pair:?} is not NAME=VALUE"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

/// Publishes a training job and waits for its answer; a progress line on a terminal.
async fn train(app: &App, request: TrainRequest, timeout: Duration) -> anyhow::Result<ExitCode> {
    if queries::live_workers(&app.pool, Some(ml::TRAINER_ROLE))
        .await?
        .is_empty()
    {
        eprintln!("no ML worker is live: the job waits until one starts");
    }
    let what = format!(
        "training {} as {:?}",
        request.algorithm,
        request.model_name()
    );
    let envelope = Envelope::new(ml::KIND_TRAIN, &request);
    let row = match publish_and_wait(app, app.topics.ml_train(), &envelope, timeout, &what).await {
        Ok(row) => row,
        Err(reason) => return Ok(fail_train(reason)),
    };
    match answer::<TrainOutput>(&row) {
        Ok(trained) => {
            println!("{}", to_line(&TrainedLine::from(trained)));
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => Ok(fail_train(reason)),
    }
}

async fn predict(
    app: &App,
    request: PredictRequest,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let envelope = Envelope::new(ml::KIND_PREDICT, &request);
    let what = format!("predicting with {:?}", request.model);
    let row = match publish_and_wait(app, app.topics.ml_predict(), &envelope, timeout, &what).await
    {
        Ok(row) => row,
        Err(reason) => return Ok(fail_predict(reason)),
    };
    match answer::<ml::PredictOutput>(&row) {
        Ok(predicted) => {
            println!(
                "{}",
                to_line(&json!({"predictions": predicted.predictions}))
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => Ok(fail_predict(reason)),
    }
}

/// What a training job prints: the seed's `{"status": "trained", "model": …}` first.
#[derive(Serialize)]
struct TrainedLine {
    status: String,
    model: String,
    version: i32,
    algorithm: String,
    task: String,
    metric: Metric,
    rows: u64,
    training_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    leaderboard: Option<Value>,
}

impl From<TrainOutput> for TrainedLine {
    fn from(t: TrainOutput) -> Self {
        Self {
            status: t.status,
            model: t.model,
            version: t.version,
            algorithm: t.algorithm,
            task: t.task,
            metric: t.metric,
            rows: t.rows,
            training_ms: t.training_ms,
            leaderboard: t.leaderboard,
        }
    }
}

/// Publishes `envelope` to `topic` and waits for its row; the error is what to print.
pub(crate) async fn publish_and_wait<P: Serialize>(
    app: &App,
    topic: String,
    envelope: &Envelope<P>,
    timeout: Duration,
    what: &str,
) -> Result<JobRow, String> {
    let id = envelope.id;
    let output =
        Output::json(topic, id.to_string(), envelope).map_err(|e| format!("{what}: {e}"))?;
    let publisher = app.publisher().map_err(|e| e.to_string())?;
    // Listening before the job can finish.
    let waiter = JobWaiter::start(&app.pool)
        .await
        .map_err(|e| e.to_string())?;
    publisher.try_publish(&output).await.map_err(|e| {
        if output.size() > sluice_core::kafka::MESSAGE_MAX_BYTES {
            format!(
                "the job is {} bytes, over the {} bytes a message may hold",
                output.size(),
                sluice_core::kafka::MESSAGE_MAX_BYTES
            )
        } else {
            format!("could not publish job {id}: {e}")
        }
    })?;
    let row = with_progress(what, waiter.wait(id, timeout))
        .await
        .map_err(|e| e.to_string())?;
    match row {
        Some(row) if row.status != "pending" => Ok(row),
        _ => Err(format!(
            "timed out after {timeout:?} waiting for job {id}; see `sluice job {id}`"
        )),
    }
}

/// Awaits `wait`, showing how long it has taken on a terminal (standard error), so a long fit
/// is visibly alive.
async fn with_progress<T>(what: &str, wait: impl std::future::Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return wait.await;
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tokio::pin!(wait);
    const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
    let mut turn = 0;
    loop {
        tokio::select! {
            done = &mut wait => {
                eprint!("\r\x1b[2K");
                return done;
            }
            _ = tick.tick() => {
                turn += 1;
                eprint!("\r{} {what}… {:.1} s", SPINNER[turn % 4], started.elapsed().as_secs_f64());
            }
        }
    }
}

/// The job's answer as `T`, or the reason it failed.
pub(crate) fn answer<T: serde::de::DeserializeOwned>(row: &JobRow) -> Result<T, String> {
    if row.status == "dead" {
        return Err(format!(
            "dead-lettered: {}",
            row.error.as_deref().unwrap_or("no reason recorded")
        ));
    }
    if let Some(error) = &row.error {
        return Err(error.clone());
    }
    let result = row.result.clone().ok_or("the job has no answer")?;
    serde_json::from_value(result).map_err(|e| format!("unexpected answer: {e}"))
}

/// A data file for training: seed 000's matrix, or records with a target column.
fn training_data(path: &Path, target: Option<&str>) -> Result<Value, String> {
    match read_data(path)? {
        DataFile::Object(object) if object.contains_key("X") => Ok(Value::Object(object)),
        DataFile::Object(mut object) if object.contains_key("records") => {
            if let Some(target) = target {
                object.insert("target".into(), target.into());
            }
            if !object.contains_key("target") {
                return Err(format!(
                    "{}: name the target column with --target",
                    path.display()
                ));
            }
            Ok(Value::Object(object))
        }
        DataFile::Object(_) => Err(format!(
            "{}: a JSON object needs \"X\" and \"y\", or \"records\"",
            path.display()
        )),
        DataFile::Records {
            records,
            columns,
            ordered,
        } => {
            let target = match (target, ordered) {
                (Some(target), _) => target.to_string(),
                (None, true) => {
                    let last = columns.last().cloned().ok_or_else(|| {
                        format!(
                            "{}: no columns; name the target with --target",
                            path.display()
                        )
                    })?;
                    eprintln!("target: {last} (the last column; --target names another)");
                    last
                }
                (None, false) => {
                    return Err(format!(
                        "{}: name the column to predict with --target",
                        path.display()
                    ))
                }
            };
            Ok(json!({"records": records, "target": target}))
        }
    }
}

/// A data file for prediction: `{"X": …}`, records, or one record (seed 001's payload).
fn prediction_data(path: &Path) -> Result<Value, String> {
    match read_data(path)? {
        DataFile::Object(object) if object.contains_key("X") || object.contains_key("records") => {
            // A training file predicts with its own rows: its answers are not inputs.
            let mut object = object;
            object.remove("y");
            object.remove("target");
            Ok(Value::Object(object))
        }
        DataFile::Object(record) => Ok(json!({"records": [record]})),
        DataFile::Records { records, .. } => Ok(json!({"records": records})),
    }
}

enum DataFile {
    /// A JSON object: `{"X": …}`, `{"records": …}` or one record.
    Object(Map<String, Value>),
    /// Rows of a CSV, a JSONL file or a JSON array, with their columns; `ordered` when the
    /// file gives the columns an order (a CSV's header; JSON objects have none).
    Records {
        records: Vec<Value>,
        columns: Vec<String>,
        ordered: bool,
    },
}

fn read_data(path: &Path) -> Result<DataFile, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => read_csv(&text).map_err(|e| format!("{shown}: {e}")),
        Some("jsonl") | Some("ndjson") => {
            let records = text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
                .map(|(n, line)| {
                    serde_json::from_str::<Value>(line)
                        .map_err(|e| format!("{shown} line {}: {e}", n + 1))
                })
                .collect::<Result<Vec<_>, _>>()?;
            records_of(records).map_err(|e| format!("{shown}: {e}"))
        }
        Some("json") => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => Ok(DataFile::Object(object)),
            Ok(Value::Array(records)) => records_of(records).map_err(|e| format!("{shown}: {e}")),
            Ok(_) => Err(format!("{shown}: expected a JSON object or array")),
            Err(e) => Err(format!("{shown}: {e}")),
        },
        _ => Err(format!(
            "{shown}: the file must end in .csv, .json or .jsonl"
        )),
    }
}

/// Records (JSON objects), with every column any of them has.
fn records_of(records: Vec<Value>) -> Result<DataFile, String> {
    let mut columns: Vec<String> = Vec::new();
    for (n, record) in records.iter().enumerate() {
        let Value::Object(fields) = record else {
            return Err(format!("record {n} is not a JSON object"));
        };
        for name in fields.keys() {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    Ok(DataFile::Records {
        records,
        columns,
        ordered: false,
    })
}

/// A CSV with a header row. Each cell becomes JSON: empty is null, `true`/`false` a boolean,
/// a finite number a number, anything else a string (so `NaN` stays text, which the model
/// refuses in a numeric column rather than read as a number).
fn read_csv(text: &str) -> Result<DataFile, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|name| name.trim().to_string())
        .collect();
    for (i, name) in columns.iter().enumerate() {
        if columns[..i].contains(name) {
            return Err(format!("the header names column {name:?} twice"));
        }
    }
    let mut records = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("row {}: {e}", n + 1))?;
        let record: Map<String, Value> = columns
            .iter()
            .zip(row.iter())
            .map(|(column, cell)| (column.clone(), cell_value(cell)))
            .collect();
        records.push(Value::Object(record));
    }
    Ok(DataFile::Records {
        records,
        columns,
        ordered: true,
    })
}

fn cell_value(cell: &str) -> Value {
    let cell = cell.trim();
    if cell.is_empty() {
        return Value::Null;
    }
    match cell.to_ascii_lowercase().as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    match cell.parse::<f64>() {
        Ok(number) if number.is_finite() && looks_numeric(cell) => json!(number),
        _ => Value::from(cell),
    }
}

/// Whether Rust's float parser read digits, not a word it also knows (`inf`, `nan`).
fn looks_numeric(cell: &str) -> bool {
    cell.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_become_json_of_their_kind() {
        assert_eq!(cell_value(""), Value::Null);
        assert_eq!(cell_value("TRUE"), Value::Bool(true));
        assert_eq!(cell_value("10"), json!(10.0));
        assert_eq!(cell_value("-2.5e1"), json!(-25.0));
        assert_eq!(cell_value("SP"), json!("SP"));
        assert_eq!(cell_value("NaN"), json!("NaN"));
        assert_eq!(cell_value("inf"), json!("inf"));
        assert_eq!(cell_value("1e999"), json!("1e999"));
    }

    #[test]
    fn params_are_json_or_text() {
        let params = parse_params(&["n_trees=50".into(), "kernel=rbf".into()]).unwrap();
        assert_eq!(params["n_trees"], json!(50));
        assert_eq!(params["kernel"], json!("rbf"));
        assert!(parse_params(&["oops".into()]).is_err());
    }

    #[test]
    fn records_without_a_column_order_need_a_target_and_csv_headers_are_trimmed() {
        let dir = std::env::temp_dir().join(format!("sluice-ml-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("houses.jsonl");
        std::fs::write(
            &jsonl,
            "{\"size\": 1, \"price\": 2}\n{\"size\": 2, \"price\": 4}\n",
        )
        .unwrap();
        assert!(training_data(&jsonl, None)
            .unwrap_err()
            .contains("--target"));
        assert_eq!(
            training_data(&jsonl, Some("price")).unwrap()["target"],
            "price"
        );
        let csv = dir.join("houses.csv");
        std::fs::write(&csv, "size, price\n1,2\n2,4\n").unwrap();
        let data = training_data(&csv, None).unwrap();
        assert_eq!(data["target"], "price", "the last column, its name trimmed");
        assert_eq!(data["records"][0]["price"], json!(2.0));
        std::fs::write(&csv, "a,a\n1,2\n").unwrap();
        assert!(training_data(&csv, None).unwrap_err().contains("twice"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
