//! Machine learning end to end: training jobs and prediction requests through the real ML
//! worker (`sluice-ml`), the registry and the persister; seed 000's five examples and seed
//! 001's payload through `sluice ml`; bad input as failed jobs; models shared across replicas
//! and new versions picked up; a long fit that crashes or runs out of time alone, and one
//! that runs out of memory alone.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_messages::ml::{KIND_PREDICT, KIND_TRAIN};
use sluice_messages::Envelope;
use uuid::Uuid;

use crate::helpers::{eventually, Options, TestPipeline};

fn repo_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    file.to_string_lossy().into_owned()
}

/// A pipeline with a persister, a retry service and one ML worker.
async fn ml_pipeline(env: &[(&str, &str)]) -> (TestPipeline, usize) {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let worker = p.start_with("sluice-ml", env);
    p.wait_live("trainer", 1).await;
    p.wait_live("predictor", 1).await;
    (p, worker)
}

/// `sluice ml …`: exit code and the one JSON line it printed.
async fn ml(p: &TestPipeline, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["ml"];
    all.extend_from_slice(args);
    let (code, out) = p.sluice(&all).await;
    let line = out.lines().last().unwrap_or_default();
    let value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?} printed {out:?}: {e}"));
    (code, value)
}

/// `sluice ml predict MODEL --data FILE` (a repository path, or an absolute one).
async fn predict(p: &TestPipeline, model: &str, file: &str) -> (i32, Value) {
    ml(p, &["predict", model, "--data", &repo_file(file)]).await
}

fn predictions(value: &Value) -> Vec<f64> {
    value["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions in {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap_or_else(|| panic!("{v} is not a number")))
        .collect()
}

#[tokio::test]
async fn seed_000_examples_train_and_predict_through_the_pipeline() {
    let (p, _) = ml_pipeline(&[]).await;
    let line = repo_file("examples/ml/line.json");
    let line_x = repo_file("examples/ml/line-predict.json");
    let classes = repo_file("examples/ml/two-classes.json");
    let classes_x = repo_file("examples/ml/two-classes-predict.json");

    let (code, trained) = ml(&p, &["train", "linear_regression", "--data", &line]).await;
    assert_eq!(code, 0, "{trained}");
    assert_eq!(trained["status"], "trained");
    assert_eq!(trained["model"], "linear_regression");
    assert_eq!(trained["version"], 1);
    assert_eq!(trained["task"], "regression");
    let (code, predicted) = predict(&p, "linear_regression", &line_x).await;
    assert_eq!(code, 0, "{predicted}");
    let got = predictions(&predicted);
    assert!(
        (got[0] - 10.0).abs() < 1e-6 && (got[1] - 12.0).abs() < 1e-6,
        "{got:?}"
    );

    let (code, trained) = ml(&p, &["train", "mlp", "--data", &line]).await;
    assert_eq!(
        (code, &trained["task"]),
        (0, &json!("regression")),
        "{trained}"
    );
    let (_, predicted) = predict(&p, "mlp", &line_x).await;
    let got = predictions(&predicted);
    for (got, want) in got.iter().zip([10.0, 12.0]) {
        assert!(
            (got - want).abs() <= 0.05 * want,
            "mlp predicted {got}, want {want} ± 5 %"
        );
    }

    for algorithm in ["svm", "decision_tree", "logistic_regression"] {
        let (code, trained) = ml(&p, &["train", algorithm, "--data", &classes]).await;
        assert_eq!(code, 0, "{algorithm}: {trained}");
        assert_eq!(trained["task"], "classification", "{algorithm}");
        let (code, predicted) = predict(&p, algorithm, &classes_x).await;
        assert_eq!(code, 0, "{algorithm}: {predicted}");
        // The classes come back as the target gave them: 0.0 and 1.0.
        assert_eq!(predicted, json!({"predictions": [0.0, 1.0]}), "{algorithm}");
    }

    // Every model is in the registry, every prediction persisted with its job id.
    let models = p.count("SELECT count(*) FROM ml_models").await;
    assert_eq!(models, 5);
    p.wait_count(
        "SELECT count(*) FROM ml_predictions WHERE status = 'done' AND error IS NULL",
        5,
        Duration::from_secs(10),
    )
    .await;
    let (code, out) = p.sluice(&["ml", "models"]).await;
    assert_eq!(code, 0);
    for name in [
        "linear_regression",
        "mlp",
        "svm",
        "decision_tree",
        "logistic_regression",
    ] {
        assert!(
            out.contains(name),
            "{name} missing from `sluice ml models`: {out}"
        );
    }
}

#[tokio::test]
async fn seed_001_payload_predicts_with_a_model_of_the_tabular_sample() {
    let (p, _) = ml_pipeline(&[]).await;
    let sample = repo_file("data/listings.csv");
    let (code, trained) = ml(
        &p,
        &[
            "train",
            "random_forest",
            "--data",
            &sample,
            "--target",
            "sold",
            "--name",
            "listings",
        ],
    )
    .await;
    assert_eq!(code, 0, "{trained}");
    assert_eq!(trained["task"], "classification");
    assert_eq!(trained["rows"], 2000);
    let accuracy = trained["metric"]["value"].as_f64().unwrap();
    assert!(accuracy > 0.6, "training accuracy {accuracy}");
    // The seed's /predict payload, as it is.
    let (code, predicted) = predict(&p, "listings", "data/listing.json").await;
    assert_eq!(code, 0, "{predicted}");
    let got = predicted["predictions"].as_array().unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].is_boolean(), "sold is a boolean: {predicted}");

    // auto on a part of the sample: a leaderboard of every classifier, the best kept.
    let part = p.log_dir_file("listings-part.csv");
    let text = std::fs::read_to_string(&sample).unwrap();
    std::fs::write(&part, text.lines().take(301).collect::<Vec<_>>().join("\n")).unwrap();
    let (code, trained) = ml(
        &p,
        &[
            "train",
            "auto",
            "--data",
            &part,
            "--target",
            "sold",
            "--name",
            "listings-auto",
        ],
    )
    .await;
    assert_eq!(code, 0, "{trained}");
    let board = trained["leaderboard"]
        .as_array()
        .expect("auto has a leaderboard");
    assert!(board.len() >= 6, "{trained}");
    let (code, predicted) = predict(&p, "listings-auto", "data/listing.json").await;
    assert_eq!(code, 0, "{predicted}");
    assert!(predicted["predictions"][0].is_boolean());
}

/// Publishes a job of `kind` straight to `topic` and returns its id.
async fn publish(p: &TestPipeline, topic: &str, kind: &str, payload: Value) -> Uuid {
    let envelope = Envelope::new(kind, payload);
    let bytes = serde_json::to_vec(&envelope).unwrap();
    p.publish_raw(topic, &envelope.id.to_string(), bytes).await;
    envelope.id
}

/// Waits for job `id` and returns its error, asserting it failed on its first attempt.
async fn failure(p: &TestPipeline, id: Uuid) -> String {
    let row = eventually(Duration::from_secs(60), &format!("job {id}"), || async {
        sluice_db::queries::job(&p.pool, id).await.ok().flatten()
    })
    .await;
    assert_eq!(
        row.status, "done",
        "a failed job is answered, not dead-lettered: {row:?}"
    );
    assert_eq!(row.attempts, 1, "a failed job is not retried: {row:?}");
    row.error
        .unwrap_or_else(|| panic!("job {id} did not fail: {:?}", row.result))
}

#[tokio::test]
async fn bad_input_fails_its_job_and_the_worker_keeps_serving() {
    let (p, worker) = ml_pipeline(&[("ML_MAX_DATA_BYTES", "20000")]).await;
    let train = p.topics.ml_train();
    let predict_topic = p.topics.ml_predict();
    let (code, _) = ml(
        &p,
        &[
            "train",
            "svm",
            "--data",
            &repo_file("examples/ml/two-classes.json"),
        ],
    )
    .await;
    assert_eq!(code, 0);

    let big: Vec<Vec<f64>> = (0..2000).map(|i| vec![i as f64, 1.5]).collect();
    let trainings = [
        (
            json!({"algorithm": "svm", "data": {"X": [[1.0], [2.0]], "y": [0.0]}}),
            "2 rows but y has 1",
        ),
        (
            json!({"algorithm": "svm", "data": {"X": [[1.0], [2.0, 3.0]], "y": [0.0, 1.0]}}),
            "row",
        ),
        (
            json!({"algorithm": "svm", "data": {"X": [], "y": []}}),
            "no rows",
        ),
        (
            json!({"algorithm": "svm", "data": {"X": [[1.0], ["a"]], "y": [0.0, 1.0]}}),
            "number",
        ),
        (
            json!({"algorithm": "logistic_regression", "data": {"X": [[1.0], [2.0], [3.0]], "y": [1.0, 1.0, 1.0]}}),
            "class",
        ),
        (
            json!({"algorithm": "logistic_regression", "data": {"X": [[1.0], [2.0], [3.0]], "y": [0.5, 1.7, 2.9]}}),
            "continuous",
        ),
        (
            json!({"algorithm": "deep_learning", "data": {"X": [[1.0]], "y": [1.0]}}),
            "unknown algorithm",
        ),
        (
            json!({"algorithm": "svm", "data": {"X": big, "y": vec![0.0; 2000]}}),
            "ML_MAX_DATA_BYTES",
        ),
        (
            json!({"algorithm": "svm", "name": "no spaces allowed", "data": {"X": [[1.0]], "y": [1.0]}}),
            "model name",
        ),
        (
            json!({"algorithm": "linear_regression",
                   "data": {"records": [{"a\u{0}b": 1.0, "y": 2.0}], "target": "y"}}),
            "NUL",
        ),
    ];
    let mut ids = Vec::new();
    for (payload, _) in &trainings {
        ids.push(publish(&p, &train, KIND_TRAIN, payload.clone()).await);
    }
    // Infinity cannot be written as JSON; a number past f64's range is how it arrives.
    let overflow = br#"{"algorithm": "svm", "data": {"X": [[1.0], [1e999]], "y": [0.0, 1.0]}}"#;
    let envelope = format!(
        r#"{{"id": "{}", "kind": "ml.train", "payload": {}, "created_at": "2026-12-01T00:00:00Z"}}"#,
        Uuid::new_v4(),
        std::str::from_utf8(overflow).unwrap()
    );
    let overflow_id: Uuid = serde_json::from_str::<Value>(&envelope).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    p.publish_raw(&train, &overflow_id.to_string(), envelope.into_bytes())
        .await;

    let predictions = [
        (
            json!({"model": "svm", "data": {"X": [[1.0, 2.0, 3.0]]}}),
            "feature",
        ),
        (
            json!({"model": "svm", "data": {"X": [[{"a": 1}, 2.0]]}}),
            "X row 0, column 0",
        ),
        (
            json!({"model": "nobody", "data": {"X": [[1.0, 2.0]]}}),
            "unknown model",
        ),
        (
            json!({"model": "svm", "version": 7, "data": {"X": [[1.0, 2.0]]}}),
            "version 7",
        ),
        (
            json!({"model": "svm", "data": {"records": [{"a": 1}]}}),
            "trained on a matrix",
        ),
    ];
    let mut predict_ids = Vec::new();
    for (payload, _) in &predictions {
        predict_ids.push(publish(&p, &predict_topic, KIND_PREDICT, payload.clone()).await);
    }
    let mut errors = Vec::new();
    for id in &ids {
        errors.push(failure(&p, *id).await);
    }
    eprintln!("training errors: {errors:#?}");
    for ((_, expected), error) in trainings.iter().zip(&errors) {
        assert!(
            error.to_lowercase().contains(&expected.to_lowercase()),
            "{expected:?} not in {error:?}"
        );
    }
    let error = failure(&p, overflow_id).await;
    assert!(error.contains("out of range"), "{error}");
    let mut errors = Vec::new();
    for id in &predict_ids {
        errors.push(failure(&p, *id).await);
    }
    eprintln!("prediction errors: {errors:#?}");
    for ((_, expected), error) in predictions.iter().zip(&errors) {
        assert!(
            error.to_lowercase().contains(&expected.to_lowercase()),
            "{expected:?} not in {error:?}"
        );
    }
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
    // Still serving.
    assert!(p.is_running(worker));
    let (code, predicted) = predict(&p, "svm", "examples/ml/two-classes-predict.json").await;
    assert_eq!((code, predicted), (0, json!({"predictions": [0.0, 1.0]})));
}

#[tokio::test]
async fn any_replica_serves_any_model_and_new_versions_need_no_restart() {
    let (p, first) = ml_pipeline(&[]).await;
    let line = repo_file("examples/ml/line.json");
    let line_x = repo_file("examples/ml/line-predict.json");
    let (code, trained) = ml(
        &p,
        &[
            "train",
            "linear_regression",
            "--data",
            &line,
            "--name",
            "doubler",
        ],
    )
    .await;
    assert_eq!((code, &trained["version"]), (0, &json!(1)), "{trained}");
    // The replica that trained it goes; another, which never saw it, serves it.
    p.kill(first);
    let second = p.start("sluice-ml");
    let (code, predicted) = predict(&p, "doubler", &line_x).await;
    assert_eq!(code, 0, "{predicted}");
    assert!((predictions(&predicted)[0] - 10.0).abs() < 1e-6);
    let served_by: String = sqlx::query_scalar(
        "SELECT worker FROM jobs WHERE kind = 'ml.predict' ORDER BY persisted_at DESC LIMIT 1",
    )
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert_eq!(served_by, format!("sluice-ml-{second}"));

    // Version 2 learns y = 3x; the same worker, with version 1 cached, serves it next.
    let tripler = p.log_dir_file("tripler.json");
    std::fs::write(
        &tripler,
        r#"{"X": [[1.0], [2.0], [3.0]], "y": [3.0, 6.0, 9.0]}"#,
    )
    .unwrap();
    let (code, trained) = ml(
        &p,
        &[
            "train",
            "linear_regression",
            "--data",
            &tripler,
            "--name",
            "doubler",
        ],
    )
    .await;
    assert_eq!((code, &trained["version"]), (0, &json!(2)), "{trained}");
    let (_, predicted) = predict(&p, "doubler", &line_x).await;
    assert!(
        (predictions(&predicted)[0] - 15.0).abs() < 1e-6,
        "{predicted}"
    );
    let (_, pinned) = ml(
        &p,
        &["predict", "doubler", "--version", "1", "--data", &line_x],
    )
    .await;
    assert!((predictions(&pinned)[0] - 10.0).abs() < 1e-6, "{pinned}");
    // A training job delivered twice stores one version, and answers it both times: a job
    // published after them on the same partition is answered after both.
    let train = p.topics.ml_train();
    let twice = Envelope::new(
        KIND_TRAIN,
        json!({"algorithm": "linear_regression", "name": "once",
               "data": {"X": [[1.0], [2.0], [3.0]], "y": [1.0, 2.0, 3.0]}}),
    );
    let after = Envelope::new(
        KIND_TRAIN,
        json!({"algorithm": "linear_regression", "name": "after",
               "data": {"X": [[1.0], [2.0], [3.0]], "y": [1.0, 2.0, 3.0]}}),
    );
    for envelope in [&twice, &twice, &after] {
        p.publish_raw(
            &train,
            "same-partition",
            serde_json::to_vec(envelope).unwrap(),
        )
        .await;
    }
    eventually(
        Duration::from_secs(60),
        "the job after the twice-sent one",
        || async {
            let row = sluice_db::queries::job(&p.pool, after.id)
                .await
                .ok()
                .flatten()?;
            (row.status == "done").then_some(())
        },
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM ml_models WHERE name = 'once'")
            .await,
        1
    );
    let (code, out) = p.sluice(&["ml", "models", "--all"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("doubler")).count(),
        2,
        "{out}"
    );
}

/// The pids of the fit processes `sluice-ml` worker `pid` runs now.
pub fn fit_children(pid: u32) -> Vec<u32> {
    let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return Vec::new();
    };
    // Tasks other than the main thread may be the parent too.
    let mut all: Vec<u32> = children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("children");
            if let Ok(text) = std::fs::read_to_string(path) {
                all.extend(
                    text.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    all.sort();
    all.dedup();
    all
}

#[tokio::test]
async fn a_long_fit_that_crashes_or_runs_out_of_time_fails_alone() {
    // The memory limit far above what these fits take: only a kill or the time limit can stop
    // them.
    let (p, worker) = ml_pipeline(&[
        ("ML_TRAIN_MEMORY_MB", "2048"),
        ("TRAINER_IN_FLIGHT", "1"),
        ("ML_TRAIN_TIME_LIMIT", "20s"),
    ])
    .await;
    let train = p.topics.ml_train();
    let (code, _) = ml(
        &p,
        &[
            "train",
            "linear_regression",
            "--data",
            &repo_file("examples/ml/line.json"),
        ],
    )
    .await;
    assert_eq!(code, 0);
    let pid = p.pid(worker);

    // A fit far longer than the test, and one queued behind it (one fit at a time; one key, so
    // one partition: they start in this order).
    let x: Vec<Vec<f64>> = (0..400)
        .map(|i| vec![(i % 17) as f64, (i % 5) as f64])
        .collect();
    let y: Vec<f64> = (0..400).map(|i| ((i % 17) * (i % 5)) as f64).collect();
    let long = json!({"algorithm": "mlp", "params": {"epochs": 100_000, "patience": 100_000,
                      "min_steps": 10_000_000, "hidden": [64, 64]},
                      "data": {"X": x, "y": y}});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let envelope = Envelope::new(KIND_TRAIN, long.clone());
        p.publish_raw(&train, "long", serde_json::to_vec(&envelope).unwrap())
            .await;
        ids.push(envelope.id);
    }
    let (long_id, queued_id) = (ids[0], ids[1]);
    let child = eventually(Duration::from_secs(30), "a fit process", || async {
        fit_children(pid).first().copied()
    })
    .await;

    // Meanwhile predictions are answered, each quickly, and heartbeats keep coming.
    let last_seen = || async {
        let seen: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT last_seen FROM workers WHERE role IN ('trainer', 'predictor') ORDER BY role",
        )
        .fetch_all(&p.pool)
        .await
        .unwrap();
        seen
    };
    let seen_before = last_seen().await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (code, predicted) =
            predict(&p, "linear_regression", "examples/ml/line-predict.json").await;
        assert_eq!(code, 0, "{predicted}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a prediction took {:?}",
            started.elapsed()
        );
        assert!(
            fit_children(pid).len() <= 1,
            "TRAINER_IN_FLIGHT=1 runs one fit at a time"
        );
    }
    // Both stages' heartbeats land again while the fit still runs (every 500 ms here).
    eventually(
        Duration::from_secs(10),
        "heartbeats of both stages during the fit",
        || async {
            let seen_after = last_seen().await;
            (seen_after.len() == 2
                && seen_after
                    .iter()
                    .zip(&seen_before)
                    .all(|(after, before)| after > before))
            .then_some(())
        },
    )
    .await;
    assert!(
        fit_children(pid).contains(&child),
        "the fit was still running while heartbeats landed"
    );

    // The fit's process crashes: its job fails, nothing else does.
    std::process::Command::new("kill")
        .args(["-KILL", &child.to_string()])
        .status()
        .unwrap();
    let error = failure(&p, long_id).await;
    assert!(error.contains("killed"), "{error}");
    // The queued one starts next, and is stopped at ML_TRAIN_TIME_LIMIT.
    let error = failure(&p, queued_id).await;
    assert!(error.contains("ML_TRAIN_TIME_LIMIT"), "{error}");

    assert!(p.is_running(worker));
    let (code, predicted) = predict(&p, "linear_regression", "examples/ml/line-predict.json").await;
    assert_eq!(code, 0, "{predicted}");
}

#[tokio::test]
async fn a_fit_that_exhausts_its_memory_fails_alone() {
    // The time limit far above anything the test waits for: however busy the machine, only
    // the memory limit can stop the greedy fit.
    let (p, worker) =
        ml_pipeline(&[("ML_TRAIN_MEMORY_MB", "300"), ("ML_TRAIN_TIME_LIMIT", "1h")]).await;
    let line = repo_file("examples/ml/line.json");
    let (code, _) = ml(&p, &["train", "linear_regression", "--data", &line]).await;
    assert_eq!(code, 0);

    // Eight layers of 4,096 need far more than the limit for their weights alone: the fit
    // runs out of memory while it allocates them.
    let greedy = json!({"algorithm": "mlp", "params": {"hidden": vec![4096; 8]},
                        "data": {"X": [[1.0], [2.0], [3.0]], "y": [1.0, 2.0, 3.0]}});
    let greedy_id = publish(&p, &p.topics.ml_train(), KIND_TRAIN, greedy).await;
    let error = failure(&p, greedy_id).await;
    assert!(error.contains("out of memory"), "{error}");

    // Nothing else failed: predictions are answered, and a fit within the limit succeeds.
    assert!(p.is_running(worker));
    let (code, predicted) = predict(&p, "linear_regression", "examples/ml/line-predict.json").await;
    assert_eq!(code, 0, "{predicted}");
    let (code, trained) = ml(&p, &["train", "mlp", "--data", &line]).await;
    assert_eq!(
        (code, &trained["status"]),
        (0, &json!("trained")),
        "{trained}"
    );
}
