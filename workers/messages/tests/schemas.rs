//! The JSON Schemas in `schemas/` (one per topic) checked against the Rust types, both ways:
//! - every message the types write (all optional fields set, and minimal ones) is valid;
//! - on hand-written documents, the schema's verdict is the one the topic's consumer reaches by
//!   decoding with the Rust type, checking the envelope kind, and calling `check()` where the
//!   type has one. The ML types have none: for them the consumer's rules are the ML worker's
//!   (`check_model_name`, a known task, a registry version from 1, and the data object's shape,
//!   its members and their JSON types, as the ML schemas describe it: see `data_shape`).
//!   Documents the schema cannot judge the same way are left out and the difference is said in
//!   the schema's description: byte lengths, a value's size or numbers beyond PostgreSQL's (or
//!   a 64-bit float's) range, relaxed date forms chrono also reads, whole numbers written `1.0`
//!   or `1e0` (JSON Schema integers, refused by serde), a struct written as a JSON array of its
//!   fields (which serde also reads), and the ML data's contents, which only the model judges.
//!
//! Every topic of [`Topics::all`] but the retry tiers must have a schema here.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Map, Number, Value};
use uuid::Uuid;

use sluice_messages::compute::{
    CalcOutput, CalcRequest, PartOutput, PartRequest, PartResult, KIND_JOB, KIND_PART,
};
use sluice_messages::heartbeat::{Heartbeat, WorkerState};
use sluice_messages::kv::{self, KvChange, KvCommand};
use sluice_messages::ml::{
    self, Failed, Metric, PredictOutput, PredictRequest, TrainOutput, TrainRequest,
};
use sluice_messages::qa::{self, Answer, QaOutcome, Question, Reply, ScoredReply, Verdict};
use sluice_messages::{header, Envelope, JobResult, Topics};

/// How a topic's consumer takes a message: `Ok` when it would use it.
type Decode = fn(&str) -> Result<(), String>;

/// Every schema, by topic suffix, with its consumer's decoding.
const TOPICS: &[(&str, Decode)] = &[
    ("compute.jobs", decode_compute_job),
    ("compute.parts", decode_compute_part),
    ("results", decode_result),
    ("dead-letters", decode_dead_letter),
    ("heartbeats", decode_heartbeat),
    ("kv.updates", decode_kv_update),
    ("kv.state", decode_kv_change),
    ("qa.questions", decode_question),
    ("qa.answers", decode_answer),
    ("ml.train", decode_training_job),
    ("ml.predict", decode_prediction_request),
];

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn file_name(suffix: &str) -> String {
    format!("{suffix}.schema.json")
}

fn schema(suffix: &str) -> Value {
    let path = schemas_dir().join(file_name(suffix));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn build(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema does not build: {e}"))
}

fn validator(suffix: &str) -> jsonschema::Validator {
    build(&schema(suffix))
}

/// The schema's complaints about `doc`, empty when it is valid.
fn complaints(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn de<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn kind_is(kind: &str, wanted: &str) -> Result<(), String> {
    if kind == wanted {
        Ok(())
    } else {
        Err(format!("kind is {kind:?}, not {wanted:?}"))
    }
}

// The consumers' decoding, as the compute worker, the persister, the KV applier, `sluice kv`,
// the LLM worker, the scoring stage and the ML worker do it.

fn decode_compute_job(text: &str) -> Result<(), String> {
    let envelope: Envelope = de(text)?;
    kind_is(&envelope.kind, KIND_JOB)?;
    de::<Envelope<CalcRequest>>(text).map(drop)
}

fn decode_compute_part(text: &str) -> Result<(), String> {
    let envelope: Envelope = de(text)?;
    kind_is(&envelope.kind, KIND_PART)?;
    de::<Envelope<PartRequest>>(text).map(drop)
}

fn decode_result(text: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Head {
        kind: String,
    }
    /// What the persister reads of every kind's answer.
    #[derive(Deserialize)]
    struct Common {
        ok: bool,
        #[serde(default)]
        #[allow(dead_code)]
        error: Option<String>,
    }
    if de::<Head>(text)?.kind == KIND_PART {
        return de::<PartResult>(text).map(drop);
    }
    let result: JobResult = de(text)?;
    let answer = result.result.get();
    if !answer.starts_with('{') {
        return Err("the answer must be a JSON object".into());
    }
    let common: Common = de(answer)?;
    match result.kind.as_str() {
        KIND_JOB => de::<CalcOutput>(answer).map(drop),
        qa::KIND => de::<QaOutcome>(answer)?.check(),
        // What `sluice ml train` and `sluice ml predict` read of a job's row: the error of a
        // failed job, else the answer.
        ml::KIND_TRAIN | ml::KIND_PREDICT if !common.ok => de::<Failed>(answer).map(drop),
        ml::KIND_TRAIN => check_trained(&de(answer)?),
        ml::KIND_PREDICT => check_predicted(&de(answer)?),
        _ => Ok(()),
    }
}

/// What the training stage writes and the registry holds, beyond the type (which takes any
/// string and any i32): `status` is always `trained`, and the model's name, version and task
/// are those of an `ml_models` row.
fn check_trained(output: &TrainOutput) -> Result<(), String> {
    if output.status != "trained" {
        return Err(format!("status {:?}, not \"trained\"", output.status));
    }
    ml::check_model_name(&output.model)?;
    check_version(output.version)?;
    check_task(Some(&output.task))
}

/// What the prediction stage writes: the name and version of a model in the registry.
fn check_predicted(output: &PredictOutput) -> Result<(), String> {
    ml::check_model_name(&output.model)?;
    check_version(output.version)
}

/// A dead letter is whatever failed: the persister stores every one.
fn decode_dead_letter(_: &str) -> Result<(), String> {
    Ok(())
}

fn decode_heartbeat(text: &str) -> Result<(), String> {
    de::<Heartbeat>(text).map(drop)
}

fn decode_kv_update(text: &str) -> Result<(), String> {
    let update: Envelope<KvCommand> = de(text)?;
    kind_is(&update.kind, kv::KIND)?;
    update.payload.check().map_err(|e| e.0)
}

fn decode_kv_change(text: &str) -> Result<(), String> {
    de::<KvChange>(text).map(drop)
}

fn decode_question(text: &str) -> Result<(), String> {
    let envelope: Envelope<Question> = de(text)?;
    kind_is(&envelope.kind, qa::KIND)?;
    envelope.payload.check()
}

fn decode_answer(text: &str) -> Result<(), String> {
    let envelope: Envelope<Answer> = de(text)?;
    kind_is(&envelope.kind, qa::KIND)?;
    envelope.payload.check()
}

// The ML worker takes any envelope of its kind; a payload that is not a request, or whose
// request it refuses, is answered as a failed job rather than dead-lettered. A document is
// valid here when the job gets trained (or predicted) as far as the message can tell.

fn decode_training_job(text: &str) -> Result<(), String> {
    let envelope: Envelope = de(text)?;
    kind_is(&envelope.kind, ml::KIND_TRAIN)?;
    let request: TrainRequest = de(envelope.payload.get())?;
    ml::check_model_name(request.model_name())?;
    check_task(request.task.as_deref())?;
    data_shape(request.data.get(), Use::Training)
}

fn decode_prediction_request(text: &str) -> Result<(), String> {
    let envelope: Envelope = de(text)?;
    kind_is(&envelope.kind, ml::KIND_PREDICT)?;
    let request: PredictRequest = de(envelope.payload.get())?;
    ml::check_model_name(&request.model)?;
    if let Some(version) = request.version {
        check_version(version)?;
    }
    data_shape(request.data.get(), Use::Prediction)
}

/// The fit's rule on a training job's task (none: inferred from the target).
fn check_task(task: Option<&str>) -> Result<(), String> {
    match task {
        None | Some("classification" | "regression") => Ok(()),
        Some(other) => Err(format!(
            "task {other:?} is neither classification nor regression"
        )),
    }
}

/// The registry numbers a name's versions from 1 (`ml_models` checks `version > 0`): a lower
/// one is no model's.
fn check_version(version: i32) -> Result<(), String> {
    if version >= 1 {
        Ok(())
    } else {
        Err(format!("model versions count from 1, not {version}"))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Use {
    Training,
    Prediction,
}

/// The data object's shape, as the ML schemas describe it: a matrix (`X`, rows of numbers, with
/// `y`, an array of targets, for training; `y` ignored, whatever it is, for a prediction) or
/// records (`records`, objects, with `target`, a string, for training; `target` ignored for a
/// prediction), and no other member. The model reads the same shapes, then judges the contents
/// (at least one row, rows all as wide, y as long as X, each record's target, the values):
/// documents that differ only there are left out. One difference is chosen: a member here is
/// written or left out, while the model's training reader also takes a null member as absent
/// (its prediction reader does not), and the schema refuses that as this does.
fn data_shape(text: &str, used: Use) -> Result<(), String> {
    let data: Map<String, Value> = de(text)?;
    if let Some(other) = data
        .keys()
        .find(|key| !["X", "y", "records", "target"].contains(&key.as_str()))
    {
        return Err(format!("unknown data member {other:?}"));
    }
    let has = |key: &str| data.contains_key(key);
    let rows = |key: &str, row: fn(&Value) -> bool| match data.get(key) {
        Some(Value::Array(rows)) if rows.iter().all(row) => Ok(()),
        _ => Err(format!("{key} is not an array of rows")),
    };
    let numbers: fn(&Value) -> bool = |row| {
        row.as_array()
            .is_some_and(|cells| cells.iter().all(Value::is_number))
    };
    let training = used == Use::Training;
    if has("X") && !has("records") && !has("target") {
        rows("X", numbers)?;
        match data.get("y") {
            Some(Value::Array(_)) => Ok(()),
            _ if !training => Ok(()),
            _ => Err("matrix data needs y, an array of targets".into()),
        }
    } else if has("records") && !has("X") && !has("y") {
        rows("records", Value::is_object)?;
        match data.get("target") {
            Some(Value::String(_)) => Ok(()),
            _ if !training => Ok(()),
            _ => Err("records need target, the name of a field".into()),
        }
    } else {
        Err("expected a matrix (X) or records, and not both".into())
    }
}

#[test]
fn every_topic_has_a_schema_and_every_schema_a_topic() {
    let topics = Topics::new("sluice", &[("5s".into(), Duration::from_secs(5))]);
    let tiers: Vec<&String> = topics.retry_tiers.iter().map(|(name, _)| name).collect();
    let expected: BTreeSet<String> = topics
        .all()
        .iter()
        .filter(|topic| !tiers.contains(topic))
        .map(|topic| {
            let suffix = topic.strip_prefix("sluice.").expect("under the prefix");
            file_name(suffix)
        })
        .collect();
    let found: BTreeSet<String> = std::fs::read_dir(schemas_dir())
        .expect("schemas/ is there")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".schema.json"))
        .collect();
    assert_eq!(
        found, expected,
        "schemas/ must hold one <topic suffix>.schema.json per topic of Topics::all() but the \
         retry tiers (retry and returns topics carry the original message: schemas/README.md)"
    );
    let tested: BTreeSet<String> = TOPICS.iter().map(|(suffix, _)| file_name(suffix)).collect();
    assert_eq!(
        tested, found,
        "every schema needs its consumer's decoding in TOPICS"
    );
}

#[test]
fn schemas_are_draft_2020_12_and_say_what_they_describe() {
    for (suffix, _) in TOPICS {
        let schema = schema(suffix);
        let name = file_name(suffix);
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name} is not a valid schema: {e}");
        }
        assert_eq!(schema["$schema"], DRAFT_2020_12, "{name}");
        let id = schema["$id"].as_str().unwrap_or_default();
        assert!(id.ends_with(&format!("/{name}")), "{name}: $id {id:?}");
        let title = schema["title"].as_str().unwrap_or_default();
        assert!(
            title.starts_with(&format!("<prefix>.{suffix}: ")),
            "{name}: {title:?}"
        );
        let description = schema["description"].as_str().unwrap_or_default();
        assert!(
            description.contains(&format!("`<prefix>.{suffix}`")),
            "{name}: the description names the topic"
        );
        build(&schema);
    }
}

// Rust → schema: what the types write is valid.

fn id() -> Uuid {
    Uuid::from_u128(0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8)
}

fn at() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_322_245, 678_901_234).unwrap()
}

fn envelope<P>(kind: &str, payload: P) -> Envelope<P> {
    Envelope {
        id: id(),
        kind: kind.to_string(),
        payload,
        created_at: at(),
    }
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string()).unwrap()
}

fn big(digits: &str) -> Number {
    Number::from_str(digits).unwrap()
}

fn full_reply() -> Reply {
    Reply {
        answer: "Lima".into(),
        provider: "openai".into(),
        model: "gpt-x".into(),
        latency_ms: i64::MAX as u64,
        prompt_tokens: Some(i64::MAX as u64),
        answer_tokens: Some(0),
        worker: "llm-1".into(),
        reused: true,
    }
}

fn minimal_reply() -> Reply {
    Reply {
        answer: String::new(),
        provider: "stub".into(),
        model: "stub-1".into(),
        latency_ms: 0,
        prompt_tokens: None,
        answer_tokens: None,
        worker: "llm-1".into(),
        reused: false,
    }
}

fn full_question() -> Question {
    Question {
        question: "¿Cuál es la capital de Perú?".into(),
        expected: Some("Lima".into()),
        run_id: Some("run-1".into()),
        reasks: qa::MAX_REASKS,
        best: Some(ScoredReply {
            reply: full_reply(),
            score: 1.0,
        }),
    }
}

fn job_result(kind: &str, result: &impl Serialize) -> JobResult {
    JobResult {
        id: id(),
        kind: kind.into(),
        result: to_raw_value(result).unwrap(),
        worker: "worker-1".into(),
        attempts: u32::MAX,
        created_at: at(),
        finished_at: Utc::now(),
    }
}

fn text(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap()
}

/// Messages as the Rust types write them, by topic suffix.
fn written() -> Vec<(&'static str, &'static str, String)> {
    let calc = |request: CalcRequest| text(&envelope(KIND_JOB, request));
    let outcome = QaOutcome {
        ok: true,
        status: Verdict::Validated,
        question: "¿Cuál es la capital de Perú?".into(),
        expected: Some("Lima".into()),
        score: Some(0.93),
        asks: i32::MAX as u32,
        reply: full_reply(),
        run_id: Some("run-1".into()),
    };
    let change = KvChange {
        version: u64::MAX,
        value: Some(raw(
            r#"{"a": [1, 2.5, "x", null, true], "b": {"c": "\\u0000"}}"#,
        )),
        deleted: false,
        source_partition: i32::MAX,
        source_offset: i64::MAX,
    };
    let heartbeat = |state| Heartbeat {
        role: "compute".into(),
        instance: "compute-1".into(),
        host: "host-1".into(),
        state,
        in_flight: u64::MAX,
        processed: 0,
        dead_lettered: u64::MAX,
        alarm: Some("101 of the last 200 messages were dead-lettered".into()),
        version: "0.1.0".into(),
        at: Utc::now(),
    };
    let mut messages = vec![
        (
            "compute.jobs",
            "add",
            calc(CalcRequest {
                op: "add".into(),
                a: Some(10.0),
                b: Some(-5.5),
                ..CalcRequest::default()
            }),
        ),
        (
            "compute.jobs",
            "every field",
            calc(CalcRequest {
                op: "sum_squares".into(),
                a: Some(1e300),
                b: Some(-0.0),
                n: Some(big("123456789012345678901234567890")),
                parts: Some(u32::MAX),
            }),
        ),
        (
            "compute.jobs",
            "minimal",
            calc(CalcRequest {
                op: "div".into(),
                ..CalcRequest::default()
            }),
        ),
        (
            "compute.parts",
            "part",
            text(&envelope(
                KIND_PART,
                PartRequest {
                    n: u64::MAX,
                    part: 0,
                    parts: u32::MAX,
                    a: 1,
                    b: u64::MAX,
                },
            )),
        ),
        (
            "compute.jobs",
            "new envelope",
            text(&Envelope::new(KIND_JOB, CalcRequest::default())),
        ),
        (
            "results",
            "compute answer",
            text(&job_result(
                KIND_JOB,
                &CalcOutput {
                    ok: true,
                    error: None,
                    result: Some(Number::from_f64(4.5).unwrap()),
                    a: Some(9.0),
                    b: Some(2.0),
                    op: Some("div".into()),
                    parts: None,
                },
            )),
        ),
        (
            "results",
            "compute, every field",
            text(&job_result(
                KIND_JOB,
                &CalcOutput {
                    ok: true,
                    error: Some("none".into()),
                    result: Some(big("285000000000000000000000000000000000000500")),
                    a: Some(1.0),
                    b: Some(2.0),
                    op: Some("sum_squares".into()),
                    parts: Some(vec![PartOutput {
                        a: 1,
                        b: u64::MAX,
                        result: big("123456789012345678901234567890123456789012345678901234"),
                    }]),
                },
            )),
        ),
        (
            "results",
            "compute error",
            text(&job_result(
                KIND_JOB,
                &CalcOutput::error("division by zero"),
            )),
        ),
        (
            "results",
            "qa, every field",
            text(&job_result(qa::KIND, &outcome)),
        ),
        (
            "results",
            "qa rejected",
            text(&job_result(
                qa::KIND,
                &QaOutcome {
                    status: Verdict::Rejected,
                    score: Some(0.0),
                    ..outcome.clone()
                },
            )),
        ),
        (
            "results",
            "qa unscored",
            text(&job_result(
                qa::KIND,
                &QaOutcome {
                    ok: true,
                    status: Verdict::Validated,
                    question: "2+2?".into(),
                    expected: None,
                    score: None,
                    asks: 1,
                    reply: minimal_reply(),
                    run_id: None,
                },
            )),
        ),
        (
            "results",
            "another kind",
            text(&job_result("kv", &json!({"ok": false, "error": "no"}))),
        ),
        (
            "results",
            "part",
            text(&PartResult {
                kind: KIND_PART.into(),
                job_id: id(),
                n: u64::MAX,
                part: u32::MAX,
                parts: u32::MAX,
                a: 1,
                b: u64::MAX,
                result: big("340282366920938463426481119284349108225"),
                worker: "compute-2".into(),
                attempts: 1,
                created_at: at(),
                finished_at: Utc::now(),
            }),
        ),
        ("heartbeats", "idle", text(&heartbeat(WorkerState::Idle))),
        ("heartbeats", "busy", text(&heartbeat(WorkerState::Busy))),
        (
            "heartbeats",
            "stalled",
            text(&heartbeat(WorkerState::Stalled)),
        ),
        (
            "heartbeats",
            "stopped",
            text(&heartbeat(WorkerState::Stopped)),
        ),
        (
            "kv.updates",
            "conditional put",
            text(&envelope(
                kv::KIND,
                KvCommand::put(
                    raw(r#"{"a": [1, 2], "\\u0000": "\\u0000"}"#),
                    Some(u64::MAX),
                ),
            )),
        ),
        (
            "kv.updates",
            "put of null",
            text(&envelope(kv::KIND, KvCommand::put(raw("null"), None))),
        ),
        (
            "kv.updates",
            "delete",
            text(&envelope(kv::KIND, KvCommand::delete(None))),
        ),
        (
            "kv.updates",
            "conditional delete",
            text(&envelope(kv::KIND, KvCommand::delete(Some(0)))),
        ),
        ("kv.state", "put", text(&change)),
        (
            "kv.state",
            "delete",
            text(&KvChange {
                version: 4,
                value: None,
                deleted: true,
                source_partition: 0,
                source_offset: 0,
            }),
        ),
        (
            "kv.state",
            "null value, lowest numbers",
            text(&KvChange {
                version: 0,
                value: Some(raw("null")),
                deleted: false,
                source_partition: i32::MIN,
                source_offset: i64::MIN,
            }),
        ),
        (
            "qa.questions",
            "every field",
            text(&envelope(qa::KIND, full_question())),
        ),
        (
            "qa.questions",
            "minimal",
            text(&envelope(qa::KIND, Question::new("2+2?", None))),
        ),
        (
            "qa.answers",
            "every field",
            text(&envelope(
                qa::KIND,
                Answer {
                    question: full_question(),
                    reply: Reply {
                        answer_tokens: Some(i64::MAX as u64),
                        ..full_reply()
                    },
                    attempts: u32::MAX,
                },
            )),
        ),
        (
            "qa.answers",
            "minimal",
            text(&envelope(
                qa::KIND,
                Answer {
                    question: Question::new("2+2?", None),
                    reply: minimal_reply(),
                    attempts: 1,
                },
            )),
        ),
    ];
    messages.extend(ml_written());
    messages
}

/// The ML workers' messages as the Rust types write them.
fn ml_written() -> Vec<(&'static str, &'static str, String)> {
    let records = r#"{"records": [{"rooms": 3, "city": "Lima", "garden": null, "sold": true},
        {"rooms": 1.5, "city": "Cusco", "garden": false, "sold": false}], "target": "sold"}"#;
    let matrix = r#"{"X": [[1.0, 1.0], [9, -9.5e3]], "y": [0.0, 1]}"#;
    let params = json!({"C": 1.5, "kernel": "rbf", "seed": null});
    let trained = TrainOutput {
        ok: true,
        status: "trained".into(),
        model: "a".repeat(ml::MAX_NAME_BYTES),
        version: i32::MAX,
        algorithm: "auto".into(),
        task: "classification".into(),
        rows: u64::MAX,
        training_ms: u64::MAX,
        metric: Metric {
            name: "accuracy".into(),
            value: 0.97,
            on: "cross-validation".into(),
        },
        leaderboard: Some(json!([{"algorithm": "svm", "value": 0.97}, {"algorithm": "knn"}])),
    };
    vec![
        (
            "ml.train",
            "every field",
            text(&envelope(
                ml::KIND_TRAIN,
                TrainRequest {
                    algorithm: "svm".into(),
                    name: Some("listings-v2.1_A".into()),
                    task: Some("classification".into()),
                    params: params.as_object().unwrap().clone(),
                    data: raw(records),
                },
            )),
        ),
        (
            "ml.train",
            "minimal",
            text(&envelope(
                ml::KIND_TRAIN,
                TrainRequest {
                    algorithm: "svm".into(),
                    name: None,
                    task: None,
                    params: Map::new(),
                    data: raw(matrix),
                },
            )),
        ),
        (
            "ml.train",
            "longest name, a regression",
            text(&envelope(
                ml::KIND_TRAIN,
                TrainRequest {
                    algorithm: "linear_regression".into(),
                    name: Some("a".repeat(ml::MAX_NAME_BYTES)),
                    task: Some("regression".into()),
                    params: Map::new(),
                    data: raw(r#"{"X": [[1.0], [2.0]], "y": [2.0, 4.0]}"#),
                },
            )),
        ),
        (
            "ml.predict",
            "every field",
            text(&envelope(
                ml::KIND_PREDICT,
                PredictRequest {
                    model: "listings-v2.1_A".into(),
                    version: Some(i32::MAX),
                    data: raw(records),
                },
            )),
        ),
        (
            "ml.predict",
            "minimal",
            text(&envelope(
                ml::KIND_PREDICT,
                PredictRequest {
                    model: "svm".into(),
                    version: None,
                    data: raw(r#"{"X": [[4.0, 4.0], [10, 1e-3]]}"#),
                },
            )),
        ),
        (
            "ml.predict",
            "first version, records",
            text(&envelope(
                ml::KIND_PREDICT,
                PredictRequest {
                    model: "a".repeat(ml::MAX_NAME_BYTES),
                    version: Some(1),
                    data: raw(r#"{"records": [{"rooms": 3, "city": "Lima"}]}"#),
                },
            )),
        ),
        (
            "results",
            "trained, every field",
            text(&job_result(ml::KIND_TRAIN, &trained)),
        ),
        (
            "results",
            "trained, minimal",
            text(&job_result(
                ml::KIND_TRAIN,
                &TrainOutput {
                    model: "svm".into(),
                    version: 1,
                    algorithm: "svm".into(),
                    task: "regression".into(),
                    rows: 0,
                    training_ms: 0,
                    metric: Metric {
                        name: "r2".into(),
                        value: -1e300,
                        on: "training".into(),
                    },
                    leaderboard: None,
                    ..trained.clone()
                },
            )),
        ),
        (
            "results",
            "training failed",
            text(&job_result(
                ml::KIND_TRAIN,
                &Failed::new("unknown algorithm \"x\"; one of svm, auto"),
            )),
        ),
        (
            "results",
            "predicted, every field",
            text(&job_result(
                ml::KIND_PREDICT,
                &PredictOutput {
                    ok: true,
                    model: "a".repeat(ml::MAX_NAME_BYTES),
                    version: i32::MAX,
                    predictions: vec![json!(0.0), json!(true), json!("sold"), json!(-1.5e300)],
                },
            )),
        ),
        (
            "results",
            "predicted, minimal",
            text(&job_result(
                ml::KIND_PREDICT,
                &PredictOutput {
                    ok: true,
                    model: "svm".into(),
                    version: 1,
                    predictions: Vec::new(),
                },
            )),
        ),
        (
            "results",
            "prediction failed",
            text(&job_result(
                ml::KIND_PREDICT,
                &Failed::new("unknown model \"svm\""),
            )),
        ),
    ]
}

#[test]
fn what_the_types_write_is_valid() {
    let dead_letters = validator("dead-letters");
    let mut wrong = Vec::new();
    let mut covered = BTreeSet::new();
    for (suffix, name, text) in written() {
        covered.insert(suffix);
        let decode = TOPICS.iter().find(|(s, _)| *s == suffix).unwrap().1;
        let doc: Value = serde_json::from_str(&text).unwrap();
        let errors = complaints(&validator(suffix), &doc);
        if !errors.is_empty() {
            wrong.push(format!("{suffix} / {name}: {errors:?}\n  {text}"));
        }
        if let Err(e) = decode(&text) {
            wrong.push(format!("{suffix} / {name}: not read back: {e}\n  {text}"));
        }
        // Any of them may die and become a dead letter.
        if !dead_letters.is_valid(&doc) {
            wrong.push(format!("dead-letters / {suffix} / {name}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let all: BTreeSet<&str> = TOPICS.iter().map(|(suffix, _)| *suffix).collect();
    let not_written: Vec<_> = all.difference(&covered).collect();
    // Dead letters are the other topics' messages, written above.
    assert_eq!(not_written, [&"dead-letters"], "every type is written");
}

// Schema → Rust: on hand-written documents, the schema and the consumer agree.

struct Doc {
    name: &'static str,
    valid: bool,
    text: String,
}

fn valid(name: &'static str, text: impl Into<String>) -> Doc {
    Doc {
        name,
        valid: true,
        text: text.into(),
    }
}

fn invalid(name: &'static str, text: impl Into<String>) -> Doc {
    Doc {
        name,
        valid: false,
        text: text.into(),
    }
}

/// `base` with the member at each JSON pointer set to a value, given as JSON text (so that
/// numbers beyond 64 bits can be written).
fn set(base: &str, edits: &[(&str, &str)]) -> String {
    let mut doc: Value = serde_json::from_str(base).unwrap();
    for (pointer, value) in edits {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let value = serde_json::from_str(value).unwrap_or_else(|e| panic!("{value}: {e}"));
        doc.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no object at {parent:?}"))
            .insert(key.to_string(), value);
    }
    doc.to_string()
}

/// `base` without the members at `pointers`.
fn remove(base: &str, pointers: &[&str]) -> String {
    let mut doc: Value = serde_json::from_str(base).unwrap();
    for pointer in pointers {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let removed = doc
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .and_then(|object| object.remove(key));
        assert!(removed.is_some(), "nothing at {pointer:?}");
    }
    doc.to_string()
}

/// Envelope documents: wrong ids, times and missing fields, on any envelope topic.
fn envelope_docs(base: &str) -> Vec<Doc> {
    vec![
        valid("unknown envelope field", set(base, &[("/extra", "1")])),
        valid(
            "upper-case uuid",
            set(
                base,
                &[("/id", r#""67E55044-10B1-426F-9247-BB680E5FE0C8""#)],
            ),
        ),
        valid(
            "uuid without hyphens",
            set(base, &[("/id", r#""67e5504410b1426f9247bb680e5fe0c8""#)]),
        ),
        valid(
            "braced uuid",
            set(
                base,
                &[("/id", r#""{67e55044-10b1-426f-9247-bb680e5fe0c8}""#)],
            ),
        ),
        valid(
            "urn uuid",
            set(
                base,
                &[("/id", r#""URN:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8""#)],
            ),
        ),
        valid(
            "time with an offset",
            set(base, &[("/created_at", r#""2026-01-02T05:04:05+02:00""#)]),
        ),
        valid(
            "time in lower case",
            set(base, &[("/created_at", r#""2026-01-02t03:04:05z""#)]),
        ),
        invalid("missing id", remove(base, &["/id"])),
        invalid("missing kind", remove(base, &["/kind"])),
        invalid("missing payload", remove(base, &["/payload"])),
        invalid("missing created_at", remove(base, &["/created_at"])),
        invalid("id not a uuid", set(base, &[("/id", r#""job-1""#)])),
        invalid(
            "uuid one digit short",
            set(base, &[("/id", r#""67e55044-10b1-426f-9247-bb680e5fe0c""#)]),
        ),
        invalid(
            "uuid with a non-hex digit",
            set(
                base,
                &[("/id", r#""67e55044-10b1-426f-9247-bb680e5fe0cg""#)],
            ),
        ),
        invalid(
            "uuid hyphens misplaced",
            set(
                base,
                &[("/id", r#""67e5504-410b1-426f-9247-bb680e5fe0c8""#)],
            ),
        ),
        invalid(
            "uuid with another prefix",
            set(
                base,
                &[("/id", r#""uri:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8""#)],
            ),
        ),
        invalid(
            "uuid with a newline",
            set(
                base,
                &[("/id", r#""67e55044-10b1-426f-9247-bb680e5fe0c8\n""#)],
            ),
        ),
        invalid("id a number", set(base, &[("/id", "5")])),
        invalid("kind a number", set(base, &[("/kind", "5")])),
        invalid("payload null", set(base, &[("/payload", "null")])),
        invalid(
            "time in words",
            set(base, &[("/created_at", r#""yesterday""#)]),
        ),
        invalid(
            "time on a day that is not",
            set(base, &[("/created_at", r#""2026-02-30T03:04:05Z""#)]),
        ),
        invalid(
            "time without an offset",
            set(base, &[("/created_at", r#""2026-01-02T03:04:05""#)]),
        ),
        invalid(
            "time as a number",
            set(base, &[("/created_at", "1767322245")]),
        ),
        invalid("a string", r#""compute""#),
        invalid("an empty array", "[]"),
        invalid("null", "null"),
    ]
}

const ENVELOPE: &str = r#"{"id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "kind": "KIND",
    "payload": {}, "created_at": "2026-01-02T03:04:05.678901Z"}"#;

fn an_envelope(kind: &str, payload: &str) -> String {
    set(
        ENVELOPE,
        &[("/kind", &format!("{kind:?}")), ("/payload", payload)],
    )
}

fn compute_job_docs() -> Vec<Doc> {
    let job = &an_envelope("compute", r#"{"op": "add", "a": 10, "b": 5}"#);
    let mut docs = envelope_docs(job);
    docs.extend([
        valid("a job", job.clone()),
        valid(
            "sum_squares",
            set(
                job,
                &[("/payload", r#"{"op": "sum_squares", "n": 9, "parts": 3}"#)],
            ),
        ),
        valid("only op", set(job, &[("/payload", r#"{"op": "mul"}"#)])),
        valid(
            "nulls",
            set(
                job,
                &[(
                    "/payload",
                    r#"{"op": "sub", "a": null, "b": null, "n": null, "parts": null}"#,
                )],
            ),
        ),
        valid(
            "float operands",
            set(job, &[("/payload/a", "-1.5e10"), ("/payload/b", "0.25")]),
        ),
        valid(
            "n beyond 64 bits",
            set(job, &[("/payload/n", "123456789012345678901234567890")]),
        ),
        valid("n a fraction", set(job, &[("/payload/n", "9.5")])),
        valid("most parts", set(job, &[("/payload/parts", "4294967295")])),
        invalid("another kind", set(job, &[("/kind", r#""qa""#)])),
        invalid("a part", an_envelope("compute.part", RANGE)),
        invalid("a part's payload as a job", an_envelope("compute", RANGE)),
        invalid("unknown payload field", set(job, &[("/payload/c", "1")])),
        invalid("missing op", remove(job, &["/payload/op"])),
        invalid("op a number", set(job, &[("/payload/op", "5")])),
        invalid("operand a string", set(job, &[("/payload/a", r#""10""#)])),
        invalid("n a string", set(job, &[("/payload/n", r#""9""#)])),
        invalid("parts below 0", set(job, &[("/payload/parts", "-1")])),
        invalid(
            "parts beyond 32 bits",
            set(job, &[("/payload/parts", "4294967296")]),
        ),
        invalid("parts a fraction", set(job, &[("/payload/parts", "1.5")])),
        invalid("payload an array", set(job, &[("/payload", "[]")])),
    ]);
    docs
}

/// The payload of a range of a split job.
const RANGE: &str = r#"{"n": 9, "part": 0, "parts": 3, "a": 1, "b": 3}"#;

fn compute_part_docs() -> Vec<Doc> {
    let part = &an_envelope("compute.part", RANGE);
    let mut docs = envelope_docs(part);
    docs.extend([
        valid("a part", part.clone()),
        valid(
            "a part at the limits",
            set(
                part,
                &[
                    ("/payload/n", "18446744073709551615"),
                    ("/payload/b", "18446744073709551615"),
                    ("/payload/parts", "4294967295"),
                ],
            ),
        ),
        invalid("a job", an_envelope("compute", r#"{"op": "add"}"#)),
        invalid(
            "a job's payload as a part",
            an_envelope("compute.part", r#"{"op": "add", "a": 10, "b": 5}"#),
        ),
        invalid("part missing b", remove(part, &["/payload/b"])),
        invalid(
            "unknown part field",
            set(part, &[("/payload/op", r#""add""#)]),
        ),
        invalid("part below 0", set(part, &[("/payload/part", "-1")])),
        invalid(
            "part n beyond 64 bits",
            set(part, &[("/payload/n", "18446744073709551616")]),
        ),
        invalid(
            "part index beyond 32 bits",
            set(part, &[("/payload/part", "4294967296")]),
        ),
        invalid("part a null", set(part, &[("/payload/a", "null")])),
    ]);
    docs
}

const REPLY: &str = r#"{"answer": "Lima", "provider": "stub", "model": "stub-1",
    "latency_ms": 3, "prompt_tokens": 6, "answer_tokens": 1, "worker": "llm-1", "reused": false}"#;

fn result_docs() -> Vec<Doc> {
    let base = r#"{"id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "kind": "compute",
        "result": {"ok": true, "result": 15, "a": 10, "b": 5, "op": "add"},
        "worker": "compute-1", "attempts": 1,
        "created_at": "2026-01-02T03:04:05.678901Z", "finished_at": "2026-01-02T03:04:06Z"}"#;
    let compute = base;
    let outcome = set(
        r#"{"ok": true, "status": "validated", "question": "capital of Peru?",
            "expected": "Lima", "score": 1.0, "asks": 1, "run_id": "run-1"}"#,
        &[("/reply", REPLY)],
    );
    let qa = &set(base, &[("/kind", r#""qa""#), ("/result", &outcome)]);
    let other = &set(
        base,
        &[("/kind", r#""kv""#), ("/result", r#"{"ok": true}"#)],
    );
    let part = r#"{"kind": "compute.part", "job_id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
        "n": 9, "part": 0, "parts": 3, "a": 1, "b": 3, "result": 14, "worker": "compute-2",
        "attempts": 1, "created_at": "2026-01-02T03:04:05Z", "finished_at": "2026-01-02T03:04:06Z"}"#;
    vec![
        valid("a compute answer", compute),
        valid(
            "a compute error",
            set(
                compute,
                &[("/result", r#"{"ok": false, "error": "division by zero"}"#)],
            ),
        ),
        valid(
            "a sum_squares answer",
            set(
                compute,
                &[(
                    "/result",
                    r#"{"ok": true, "result": 285000000000000000000000000000000000000500,
                        "parts": [{"a": 1, "b": 18446744073709551615, "result": 14}]}"#,
                )],
            ),
        ),
        valid(
            "a compute answer with nulls",
            set(
                compute,
                &[(
                    "/result",
                    r#"{"ok": true, "error": null, "result": null, "a": null, "b": null,
                        "op": null, "parts": null}"#,
                )],
            ),
        ),
        valid(
            "unknown answer field",
            set(compute, &[("/result/extra", "1")]),
        ),
        valid("unknown result field", set(compute, &[("/extra", "1")])),
        valid(
            "most attempts",
            set(compute, &[("/attempts", "4294967295")]),
        ),
        valid(
            "upper-case uuid",
            set(
                compute,
                &[("/id", r#""67E55044-10B1-426F-9247-BB680E5FE0C8""#)],
            ),
        ),
        invalid("missing kind", remove(compute, &["/kind"])),
        invalid("kind a number", set(compute, &[("/kind", "5")])),
        invalid("missing id", remove(compute, &["/id"])),
        invalid("missing result", remove(compute, &["/result"])),
        invalid("missing worker", remove(compute, &["/worker"])),
        invalid("missing finished_at", remove(compute, &["/finished_at"])),
        invalid(
            "bad finished_at",
            set(compute, &[("/finished_at", r#""soon""#)]),
        ),
        invalid("id not a uuid", set(compute, &[("/id", r#""job-1""#)])),
        invalid("attempts below 0", set(compute, &[("/attempts", "-1")])),
        invalid(
            "attempts beyond 32 bits",
            set(compute, &[("/attempts", "4294967296")]),
        ),
        invalid("answer without ok", remove(compute, &["/result/ok"])),
        invalid("ok a string", set(compute, &[("/result/ok", r#""yes""#)])),
        invalid("answer an array", set(compute, &[("/result", "[true]")])),
        invalid("answer a number", set(compute, &[("/result", "15")])),
        invalid("error a number", set(compute, &[("/result/error", "5")])),
        invalid(
            "operand a string",
            set(compute, &[("/result/a", r#""10""#)]),
        ),
        invalid(
            "result a string",
            set(compute, &[("/result/result", r#""15""#)]),
        ),
        invalid(
            "part output missing b",
            set(compute, &[("/result/parts", r#"[{"a": 1, "result": 1}]"#)]),
        ),
        invalid(
            "part output below 0",
            set(
                compute,
                &[("/result/parts", r#"[{"a": -1, "b": 1, "result": 1}]"#)],
            ),
        ),
        valid("a question's outcome", qa.clone()),
        valid(
            "a rejected question",
            set(
                qa,
                &[("/result/status", r#""rejected""#), ("/result/score", "0")],
            ),
        ),
        valid(
            "an unscored question",
            remove(qa, &["/result/expected", "/result/score"]),
        ),
        valid(
            "an unscored question with nulls",
            set(
                qa,
                &[
                    ("/result/expected", "null"),
                    ("/result/score", "null"),
                    ("/result/run_id", "null"),
                ],
            ),
        ),
        valid(
            "an outcome at the limits",
            set(
                qa,
                &[
                    ("/result/asks", "2147483647"),
                    ("/result/reply/latency_ms", "9223372036854775807"),
                    ("/result/reply/prompt_tokens", "null"),
                ],
            ),
        ),
        valid(
            "a minimal reply",
            remove(
                qa,
                &[
                    "/result/reply/prompt_tokens",
                    "/result/reply/answer_tokens",
                    "/result/reply/reused",
                    "/result/run_id",
                ],
            ),
        ),
        invalid("an outcome not ok", set(qa, &[("/result/ok", "false")])),
        invalid("unknown outcome field", set(qa, &[("/result/extra", "1")])),
        invalid(
            "an outcome with an error",
            set(qa, &[("/result/error", r#""no""#)]),
        ),
        invalid(
            "unknown status",
            set(qa, &[("/result/status", r#""maybe""#)]),
        ),
        invalid("score above 1", set(qa, &[("/result/score", "1.5")])),
        invalid("score below 0", set(qa, &[("/result/score", "-0.5")])),
        invalid("scored without a score", remove(qa, &["/result/score"])),
        invalid(
            "scored with a null score",
            set(qa, &[("/result/score", "null")]),
        ),
        invalid(
            "rejected without an expected answer",
            set(
                &remove(qa, &["/result/expected", "/result/score"]),
                &[("/result/status", r#""rejected""#)],
            ),
        ),
        invalid(
            "a score without an expected answer",
            remove(qa, &["/result/expected"]),
        ),
        invalid("no asks", set(qa, &[("/result/asks", "0")])),
        invalid(
            "asks beyond 31 bits",
            set(qa, &[("/result/asks", "2147483648")]),
        ),
        invalid("missing asks", remove(qa, &["/result/asks"])),
        invalid("missing reply", remove(qa, &["/result/reply"])),
        invalid("missing question", remove(qa, &["/result/question"])),
        invalid(
            "latency beyond 63 bits",
            set(qa, &[("/result/reply/latency_ms", "9223372036854775808")]),
        ),
        invalid(
            "tokens beyond 63 bits",
            set(
                qa,
                &[("/result/reply/answer_tokens", "9223372036854775808")],
            ),
        ),
        invalid(
            "tokens below 0",
            set(qa, &[("/result/reply/prompt_tokens", "-1")]),
        ),
        invalid("reply missing model", remove(qa, &["/result/reply/model"])),
        invalid(
            "unknown reply field",
            set(qa, &[("/result/reply/extra", "1")]),
        ),
        invalid("reused null", set(qa, &[("/result/reply/reused", "null")])),
        valid("another kind's answer", other.clone()),
        valid(
            "another kind's failure",
            set(
                other,
                &[("/result", r#"{"ok": false, "error": "no", "more": [1]}"#)],
            ),
        ),
        invalid("another kind without ok", set(other, &[("/result", "{}")])),
        invalid(
            "another kind's ok a string",
            set(other, &[("/result/ok", r#""true""#)]),
        ),
        invalid(
            "another kind's error a number",
            set(other, &[("/result/error", "5")]),
        ),
        invalid(
            "another kind's answer an array",
            set(other, &[("/result", "[]")]),
        ),
        valid("a part", part),
        valid(
            "a part at the limits",
            set(
                part,
                &[
                    ("/n", "18446744073709551615"),
                    ("/part", "4294967295"),
                    ("/result", "340282366920938463426481119284349108225"),
                ],
            ),
        ),
        valid("unknown part field", set(part, &[("/extra", "1")])),
        invalid("part missing job_id", remove(part, &["/job_id"])),
        invalid("part missing result", remove(part, &["/result"])),
        invalid(
            "part job_id not a uuid",
            set(part, &[("/job_id", r#""x""#)]),
        ),
        invalid(
            "part n beyond 64 bits",
            set(part, &[("/n", "18446744073709551616")]),
        ),
        invalid("part a below 0", set(part, &[("/a", "-1")])),
        invalid("part result a string", set(part, &[("/result", r#""14""#)])),
        invalid(
            "a job result of kind compute.part",
            set(compute, &[("/kind", r#""compute.part""#)]),
        ),
        invalid("null", "null"),
    ]
    .into_iter()
    .chain(ml_result_docs(base))
    .collect()
}

fn ml_result_docs(base: &str) -> Vec<Doc> {
    let output = r#"{"ok": true, "status": "trained", "model": "svm", "version": 1,
        "algorithm": "svm", "task": "classification", "rows": 6, "training_ms": 3,
        "metric": {"name": "accuracy", "value": 1.0, "on": "training"}}"#;
    let trained = &set(base, &[("/kind", r#""ml.train""#), ("/result", output)]);
    let prediction = r#"{"ok": true, "model": "svm", "version": 1, "predictions": [0.0, 1.0]}"#;
    let predicted = &set(
        base,
        &[("/kind", r#""ml.predict""#), ("/result", prediction)],
    );
    let failed = r#"{"ok": false, "error": "X has 2 rows but y has 3 values"}"#;
    let mut docs = vec![
        valid("a trained model", trained.clone()),
        valid(
            "a trained model with a leaderboard",
            set(
                trained,
                &[
                    ("/result/algorithm", r#""auto""#),
                    (
                        "/result/leaderboard",
                        r#"[{"algorithm": "svm", "value": 1}]"#,
                    ),
                ],
            ),
        ),
        valid(
            "a null leaderboard",
            set(trained, &[("/result/leaderboard", "null")]),
        ),
        valid(
            "a trained model at the limits",
            set(
                trained,
                &[
                    ("/result/model", &format!("{:?}", "a".repeat(128))),
                    ("/result/version", "2147483647"),
                    ("/result/task", r#""regression""#),
                    ("/result/rows", "18446744073709551615"),
                    ("/result/training_ms", "0"),
                    ("/result/metric/value", "-1e300"),
                ],
            ),
        ),
        valid(
            "unknown trained fields",
            set(
                trained,
                &[("/result/extra", "1"), ("/result/metric/extra", "1")],
            ),
        ),
        invalid(
            "trained with another status",
            set(trained, &[("/result/status", r#""fitted""#)]),
        ),
        invalid(
            "trained version 0",
            set(trained, &[("/result/version", "0")]),
        ),
        invalid(
            "trained version beyond 31 bits",
            set(trained, &[("/result/version", "2147483648")]),
        ),
        invalid(
            "trained an unknown task",
            set(trained, &[("/result/task", r#""clustering""#)]),
        ),
        invalid(
            "trained a model name with a space",
            set(trained, &[("/result/model", r#""my model""#)]),
        ),
        invalid(
            "trained without a metric",
            remove(trained, &["/result/metric"]),
        ),
        invalid(
            "a metric without a value",
            remove(trained, &["/result/metric/value"]),
        ),
        invalid(
            "a metric value a string",
            set(trained, &[("/result/metric/value", r#""1.0""#)]),
        ),
        invalid("rows below 0", set(trained, &[("/result/rows", "-1")])),
        invalid(
            "rows beyond 64 bits",
            set(trained, &[("/result/rows", "18446744073709551616")]),
        ),
        invalid(
            "trained without training_ms",
            remove(trained, &["/result/training_ms"]),
        ),
        invalid(
            "a prediction's answer to a training job",
            set(trained, &[("/result", prediction)]),
        ),
        valid("a prediction", predicted.clone()),
        valid(
            "predictions of every kind",
            set(
                predicted,
                &[
                    (
                        "/result/predictions",
                        r#"[true, "sold", 3, null, -1.5e300]"#,
                    ),
                    ("/result/version", "2147483647"),
                ],
            ),
        ),
        valid(
            "no predictions",
            set(predicted, &[("/result/predictions", "[]")]),
        ),
        valid(
            "unknown prediction field",
            set(predicted, &[("/result/extra", "1")]),
        ),
        invalid(
            "predicted without predictions",
            remove(predicted, &["/result/predictions"]),
        ),
        invalid(
            "predictions an object",
            set(predicted, &[("/result/predictions", "{}")]),
        ),
        invalid(
            "predicted version 0",
            set(predicted, &[("/result/version", "0")]),
        ),
        invalid(
            "predicted version null",
            set(predicted, &[("/result/version", "null")]),
        ),
        invalid(
            "predicted without a version",
            remove(predicted, &["/result/version"]),
        ),
        invalid(
            "predicted a model name with a slash",
            set(predicted, &[("/result/model", r#""../svm""#)]),
        ),
        invalid(
            "a training job's answer to a prediction request",
            set(predicted, &[("/result", output)]),
        ),
    ];
    for answered in [trained, predicted] {
        let failure = &set(answered, &[("/result", failed)]);
        docs.extend([
            valid("a failed ML job", failure.clone()),
            valid(
                "a failed ML job with more",
                set(failure, &[("/result/status", r#""trained""#)]),
            ),
            invalid(
                "a failed ML job without an error",
                remove(failure, &["/result/error"]),
            ),
            invalid(
                "a failed ML job with a null error",
                set(failure, &[("/result/error", "null")]),
            ),
            invalid(
                "a failed ML job's error a number",
                set(failure, &[("/result/error", "5")]),
            ),
            invalid(
                "an ML answer with only ok and an error",
                set(failure, &[("/result/ok", "true")]),
            ),
            invalid("an ML answer without ok", remove(failure, &["/result/ok"])),
        ]);
    }
    docs
}

fn heartbeat_docs() -> Vec<Doc> {
    let beat = r#"{"role": "compute", "instance": "compute-1", "host": "host-1",
        "state": "busy", "in_flight": 2, "processed": 10, "version": "0.1.0",
        "at": "2026-01-02T03:04:05.678901Z"}"#;
    let mut docs = vec![
        valid("a heartbeat", beat),
        valid("unknown field", set(beat, &[("/extra", "1")])),
        valid(
            "counts at the limit",
            set(
                beat,
                &[("/in_flight", "18446744073709551615"), ("/processed", "0")],
            ),
        ),
        invalid("unknown state", set(beat, &[("/state", r#""sleeping""#)])),
        invalid("state in capitals", set(beat, &[("/state", r#""Idle""#)])),
        invalid("in_flight below 0", set(beat, &[("/in_flight", "-1")])),
        invalid(
            "processed beyond 64 bits",
            set(beat, &[("/processed", "18446744073709551616")]),
        ),
        invalid("processed a fraction", set(beat, &[("/processed", "1.5")])),
        invalid("at in words", set(beat, &[("/at", r#""now""#)])),
        invalid("host null", set(beat, &[("/host", "null")])),
        invalid("an array", "[]"),
    ];
    for state in ["idle", "busy", "stalled", "stopped"] {
        docs.push(valid(
            "every state",
            set(beat, &[("/state", &format!("{state:?}"))]),
        ));
    }
    for field in [
        "role",
        "instance",
        "host",
        "state",
        "in_flight",
        "processed",
        "version",
        "at",
    ] {
        docs.push(invalid(
            "a field missing",
            remove(beat, &[&format!("/{field}")]),
        ));
    }
    docs
}

fn kv_update_docs() -> Vec<Doc> {
    let put = &an_envelope(
        "kv",
        r#"{"op": "put", "value": {"a": [1, 2]}, "if_version": 3}"#,
    );
    let delete = &an_envelope("kv", r#"{"op": "delete"}"#);
    let mut docs = envelope_docs(put);
    docs.extend([
        valid("a put", put.clone()),
        valid("a put of null", set(put, &[("/payload/value", "null")])),
        valid(
            "a put of a number",
            set(put, &[("/payload/value", "-1.5e300")]),
        ),
        valid(
            "an escaped backslash-u",
            set(put, &[("/payload/value", r#"["\\u0000", {"\\u0000": 1}]"#)]),
        ),
        valid(
            "an unconditional put",
            remove(put, &["/payload/if_version"]),
        ),
        valid(
            "if_version null",
            set(put, &[("/payload/if_version", "null")]),
        ),
        valid(
            "if_version at the limit",
            set(put, &[("/payload/if_version", "18446744073709551615")]),
        ),
        valid("a delete", delete.clone()),
        valid(
            "a conditional delete",
            set(delete, &[("/payload/if_version", "0")]),
        ),
        invalid("another kind", set(put, &[("/kind", r#""compute""#)])),
        invalid("unknown op", set(put, &[("/payload/op", r#""increment""#)])),
        invalid("op in capitals", set(put, &[("/payload/op", r#""Put""#)])),
        invalid("missing op", remove(put, &["/payload/op"])),
        invalid("a put without a value", remove(put, &["/payload/value"])),
        invalid(
            "a delete with a value",
            set(delete, &[("/payload/value", "1")]),
        ),
        invalid(
            "a delete with a null value",
            set(delete, &[("/payload/value", "null")]),
        ),
        invalid(
            "unknown payload field",
            set(delete, &[("/payload/extra", "1")]),
        ),
        invalid(
            "if_version below 0",
            set(put, &[("/payload/if_version", "-1")]),
        ),
        invalid(
            "if_version beyond 64 bits",
            set(put, &[("/payload/if_version", "18446744073709551616")]),
        ),
        invalid(
            "if_version a string",
            set(put, &[("/payload/if_version", r#""3""#)]),
        ),
        invalid("a NUL", set(put, &[("/payload/value", r#""a\u0000b""#)])),
        invalid(
            "a NUL deep in an array",
            set(put, &[("/payload/value", r#"[1, [{"a": ["\u0000"]}]]"#)]),
        ),
        invalid(
            "a NUL in a key",
            set(put, &[("/payload/value", r#"{"a": {"b\u0000": 1}}"#)]),
        ),
    ]);
    docs
}

fn kv_change_docs() -> Vec<Doc> {
    let change = r#"{"version": 3, "value": {"a": 1}, "source_partition": 0, "source_offset": 42}"#;
    vec![
        valid("a change", change),
        valid(
            "a delete",
            set(&remove(change, &["/value"]), &[("/deleted", "true")]),
        ),
        valid("a null value", set(change, &[("/value", "null")])),
        valid("deleted false", set(change, &[("/deleted", "false")])),
        valid("a value and deleted", set(change, &[("/deleted", "true")])),
        valid("unknown field", set(change, &[("/extra", "1")])),
        valid(
            "numbers at the limits",
            set(
                change,
                &[
                    ("/version", "18446744073709551615"),
                    ("/source_partition", "-2147483648"),
                    ("/source_offset", "-9223372036854775808"),
                ],
            ),
        ),
        valid(
            "numbers at the other limits",
            set(
                change,
                &[
                    ("/source_partition", "2147483647"),
                    ("/source_offset", "9223372036854775807"),
                ],
            ),
        ),
        invalid("missing version", remove(change, &["/version"])),
        invalid(
            "missing source_partition",
            remove(change, &["/source_partition"]),
        ),
        invalid("missing source_offset", remove(change, &["/source_offset"])),
        invalid("version below 0", set(change, &[("/version", "-1")])),
        invalid(
            "version beyond 64 bits",
            set(change, &[("/version", "18446744073709551616")]),
        ),
        invalid("deleted null", set(change, &[("/deleted", "null")])),
        invalid(
            "deleted a string",
            set(change, &[("/deleted", r#""true""#)]),
        ),
        invalid(
            "partition beyond 31 bits",
            set(change, &[("/source_partition", "2147483648")]),
        ),
        invalid(
            "partition below i32",
            set(change, &[("/source_partition", "-2147483649")]),
        ),
        invalid(
            "offset beyond 63 bits",
            set(change, &[("/source_offset", "9223372036854775808")]),
        ),
        // Not "offset below i64" (-2^63-1): the schema refuses it, as Python's jsonschema says,
        // but the jsonschema crate compares a negative number beyond i64 as a float and lets it
        // through.
        invalid("a string", r#""x""#),
    ]
}

/// Documents of a question, at `at` in `base` (the payload, or an answer's question).
fn question_docs(base: &str, at: &str) -> Vec<Doc> {
    let p = |field: &str| format!("{at}/{field}");
    let best = set(r#"{"score": 0.5}"#, &[("/reply", REPLY)]);
    vec![
        valid("a question", base),
        valid(
            "a question with everything",
            set(
                base,
                &[
                    (&p("run_id"), r#""run-1""#),
                    (&p("reasks"), "1000"),
                    (&p("best"), &best),
                ],
            ),
        ),
        valid(
            "a minimal question",
            set(base, &[(at, r#"{"question": "2+2?"}"#)]),
        ),
        valid(
            "nulls",
            set(
                base,
                &[
                    (&p("expected"), "null"),
                    (&p("run_id"), "null"),
                    (&p("best"), "null"),
                ],
            ),
        ),
        valid("spaces around", set(base, &[(&p("question"), r#"" x ""#)])),
        valid(
            "a byte-order mark is no white space",
            set(base, &[(&p("question"), r#""\ufeff""#)]),
        ),
        valid(
            "a best reply at the limits",
            set(
                base,
                &[(
                    &p("best"),
                    &set(
                        &best,
                        &[
                            ("/score", "1"),
                            ("/reply/latency_ms", "9223372036854775807"),
                            ("/reply/answer_tokens", "null"),
                        ],
                    ),
                )],
            ),
        ),
        invalid("missing question", remove(base, &[&p("question")])),
        invalid("an empty question", set(base, &[(&p("question"), r#""""#)])),
        invalid(
            "a blank question",
            set(base, &[(&p("question"), r#"" \t\n\r\u000b\u000c ""#)]),
        ),
        invalid(
            "a question of Unicode white space",
            set(
                base,
                &[(&p("question"), r#""\u0085\u00a0\u2000\u200a\u2028\u3000""#)],
            ),
        ),
        invalid("unknown question field", set(base, &[(&p("extra"), "1")])),
        invalid("question a number", set(base, &[(&p("question"), "5")])),
        invalid("expected a number", set(base, &[(&p("expected"), "5")])),
        invalid("run_id a number", set(base, &[(&p("run_id"), "5")])),
        valid("most reasks", set(base, &[(&p("reasks"), "1000")])),
        invalid("reasks below 0", set(base, &[(&p("reasks"), "-1")])),
        invalid(
            "reasks above MAX_REASKS",
            set(base, &[(&p("reasks"), "1001")]),
        ),
        invalid(
            "reasks at 32 bits",
            set(base, &[(&p("reasks"), "4294967295")]),
        ),
        invalid("reasks null", set(base, &[(&p("reasks"), "null")])),
        invalid(
            "reasks beyond 32 bits",
            set(base, &[(&p("reasks"), "4294967296")]),
        ),
        invalid(
            "best score above 1",
            set(base, &[(&p("best"), &set(&best, &[("/score", "1.5")]))]),
        ),
        invalid(
            "best score below 0",
            set(base, &[(&p("best"), &set(&best, &[("/score", "-1")]))]),
        ),
        invalid(
            "best without a score",
            set(base, &[(&p("best"), &remove(&best, &["/score"]))]),
        ),
        invalid(
            "best with an unknown field",
            set(base, &[(&p("best"), &set(&best, &[("/extra", "1")]))]),
        ),
        invalid(
            "best reply latency beyond 63 bits",
            set(
                base,
                &[(
                    &p("best"),
                    &set(&best, &[("/reply/latency_ms", "9223372036854775808")]),
                )],
            ),
        ),
        invalid(
            "best reply with an unknown field",
            set(base, &[(&p("best"), &set(&best, &[("/reply/extra", "1")]))]),
        ),
    ]
}

fn question_topic_docs() -> Vec<Doc> {
    let question = &an_envelope(
        "qa",
        r#"{"question": "¿Cuál es la capital de Perú?", "expected": "Lima"}"#,
    );
    let mut docs = envelope_docs(question);
    docs.extend(question_docs(question, "/payload"));
    docs.extend([
        invalid("another kind", set(question, &[("/kind", r#""compute""#)])),
        invalid(
            "an answer",
            set(question, &[("/payload", r#"{"answer": "Lima"}"#)]),
        ),
    ]);
    docs
}

fn answer_docs() -> Vec<Doc> {
    let payload = set(
        r#"{"question": {"question": "capital of Peru?", "expected": "Lima"}, "attempts": 1}"#,
        &[("/reply", REPLY)],
    );
    let answer = &an_envelope("qa", &payload);
    let mut docs = envelope_docs(answer);
    docs.extend(question_docs(answer, "/payload/question"));
    docs.extend([
        valid(
            "a reply at the limits",
            set(
                answer,
                &[
                    ("/payload/reply/latency_ms", "9223372036854775807"),
                    ("/payload/reply/prompt_tokens", "9223372036854775807"),
                    ("/payload/reply/answer_tokens", "9223372036854775807"),
                ],
            ),
        ),
        valid(
            "a minimal reply",
            remove(
                answer,
                &[
                    "/payload/reply/prompt_tokens",
                    "/payload/reply/answer_tokens",
                    "/payload/reply/reused",
                ],
            ),
        ),
        valid(
            "most attempts",
            set(answer, &[("/payload/attempts", "4294967295")]),
        ),
        invalid("another kind", set(answer, &[("/kind", r#""kv""#)])),
        invalid("missing attempts", remove(answer, &["/payload/attempts"])),
        invalid("missing reply", remove(answer, &["/payload/reply"])),
        invalid(
            "attempts below 0",
            set(answer, &[("/payload/attempts", "-1")]),
        ),
        invalid(
            "attempts beyond 32 bits",
            set(answer, &[("/payload/attempts", "4294967296")]),
        ),
        invalid(
            "unknown answer field",
            set(answer, &[("/payload/extra", "1")]),
        ),
        invalid(
            "unknown reply field",
            set(answer, &[("/payload/reply/extra", "1")]),
        ),
        invalid(
            "reply latency beyond 63 bits",
            set(
                answer,
                &[("/payload/reply/latency_ms", "9223372036854775808")],
            ),
        ),
        invalid(
            "reply prompt tokens beyond 63 bits",
            set(
                answer,
                &[("/payload/reply/prompt_tokens", "9223372036854775808")],
            ),
        ),
        invalid(
            "reply answer tokens beyond 63 bits",
            set(
                answer,
                &[("/payload/reply/answer_tokens", "9223372036854775808")],
            ),
        ),
        invalid(
            "reply latency at 64 bits",
            set(
                answer,
                &[("/payload/reply/latency_ms", "18446744073709551615")],
            ),
        ),
        invalid(
            "reply latency beyond 64 bits",
            set(
                answer,
                &[("/payload/reply/latency_ms", "18446744073709551616")],
            ),
        ),
        invalid(
            "reply missing worker",
            remove(answer, &["/payload/reply/worker"]),
        ),
        invalid(
            "reply answer a number",
            set(answer, &[("/payload/reply/answer", "5")]),
        ),
        invalid(
            "reused a string",
            set(answer, &[("/payload/reply/reused", r#""no""#)]),
        ),
    ]);
    docs
}

/// Documents of a model name at `pointer` in `base`, as `check_model_name` takes it.
fn model_name_docs(base: &str, pointer: &str) -> Vec<Doc> {
    let name = |text: &str| set(base, &[(pointer, &format!("{text:?}"))]);
    vec![
        valid("every kind of character", name("listings-v2.1_A")),
        valid("a name of 128 characters", name(&"a".repeat(128))),
        invalid("a name of dots", name("..")),
        invalid("a name starting with a dash", name("-rf")),
        invalid("a name starting with a dot", name(".hidden")),
        invalid("an empty name", name("")),
        invalid("a name of 129 characters", name(&"a".repeat(129))),
        invalid("a name with a space", name("my model")),
        invalid("a name with a slash", name("../x")),
        invalid("a name with a trailing newline", name("svm\n")),
        invalid("a name with a letter beyond ASCII", name("modèle")),
        invalid("a name a number", set(base, &[(pointer, "5")])),
    ]
}

/// Data documents shared by training jobs and prediction requests, at `/payload/data` in
/// `base` (whose data is a matrix).
fn data_docs(base: &str) -> Vec<Doc> {
    let data = |text: &str| set(base, &[("/payload/data", text)]);
    vec![
        valid(
            "numbers of every form",
            set(base, &[("/payload/data/X", "[[1, -2.5e3], [0.125, 1E2]]")]),
        ),
        invalid("data null", data("null")),
        invalid("data an array", data("[[1.0]]")),
        invalid("data a string", data(r#""X""#)),
        invalid("data empty", data("{}")),
        invalid(
            "a matrix and records",
            set(base, &[("/payload/data/records", r#"[{"a": 1}]"#)]),
        ),
        invalid(
            "unknown data member",
            set(base, &[("/payload/data/weights", "[1]")]),
        ),
        invalid(
            "X not rows",
            set(base, &[("/payload/data/X", "[1.0, 2.0]")]),
        ),
        invalid(
            "X with a string",
            set(base, &[("/payload/data/X", r#"[[1.0, "2"]]"#)]),
        ),
        invalid(
            "X with a null",
            set(base, &[("/payload/data/X", "[[1.0, null]]")]),
        ),
        invalid("X an object", set(base, &[("/payload/data/X", "{}")])),
        invalid("X null", set(base, &[("/payload/data/X", "null")])),
        // The model's training reader takes a null member as absent; the schemas do not.
        invalid(
            "a null records beside X",
            set(base, &[("/payload/data/records", "null")]),
        ),
        invalid(
            "records of arrays",
            data(r#"{"records": [[1, 2]], "target": "a"}"#),
        ),
        invalid(
            "records an object",
            data(r#"{"records": {"a": 1}, "target": "a"}"#),
        ),
    ]
}

fn training_job_docs() -> Vec<Doc> {
    let job = &an_envelope(
        "ml.train",
        r#"{"algorithm": "svm", "data": {"X": [[1.0, 1.0], [9.0, 9.0]], "y": [0, 1]}}"#,
    );
    let records = r#"{"records": [{"rooms": 3, "city": "Lima", "garden": null, "sold": true},
        {"rooms": 1, "city": "Cusco", "garden": true, "sold": false}], "target": "sold"}"#;
    let mut docs = envelope_docs(job);
    docs.extend(data_docs(job));
    // A model's name is `name`, or else the algorithm's.
    docs.extend(model_name_docs(job, "/payload/name"));
    docs.extend(model_name_docs(job, "/payload/algorithm"));
    docs.extend(model_name_docs(
        &set(job, &[("/payload/name", "null")]),
        "/payload/algorithm",
    ));
    docs.extend([
        valid("a training job", job.clone()),
        valid("records", set(job, &[("/payload/data", records)])),
        valid(
            "every field",
            set(
                job,
                &[
                    ("/payload/name", r#""listings""#),
                    ("/payload/task", r#""classification""#),
                    ("/payload/params", r#"{"C": 1.5, "kernel": "rbf"}"#),
                    ("/payload/data", records),
                ],
            ),
        ),
        valid(
            "nulls",
            set(job, &[("/payload/name", "null"), ("/payload/task", "null")]),
        ),
        valid(
            "a regression",
            set(job, &[("/payload/task", r#""regression""#)]),
        ),
        valid("no params", set(job, &[("/payload/params", "{}")])),
        // The algorithm is the worker's to know; with a name, it need not be one.
        valid(
            "a named model of an algorithm that is no name",
            set(
                job,
                &[
                    ("/payload/name", r#""x""#),
                    ("/payload/algorithm", r#""my svm""#),
                ],
            ),
        ),
        valid(
            "targets of strings",
            set(job, &[("/payload/data/y", r#"["cheap", "dear"]"#)]),
        ),
        valid(
            "targets of booleans",
            set(job, &[("/payload/data/y", "[false, true]")]),
        ),
        valid(
            "a target field of any name",
            set(
                job,
                &[(
                    "/payload/data",
                    r#"{"records": [{"": 1, "x": 2}, {"": 0, "x": 3}], "target": ""}"#,
                )],
            ),
        ),
        invalid("another kind", set(job, &[("/kind", r#""ml.predict""#)])),
        invalid("kind compute", set(job, &[("/kind", r#""compute""#)])),
        invalid("missing algorithm", remove(job, &["/payload/algorithm"])),
        invalid("missing data", remove(job, &["/payload/data"])),
        invalid(
            "algorithm null",
            set(job, &[("/payload/algorithm", "null")]),
        ),
        invalid(
            "unknown payload field",
            set(job, &[("/payload/extra", "1")]),
        ),
        invalid(
            "a prediction request",
            set(
                job,
                &[(
                    "/payload",
                    r#"{"model": "svm", "data": {"X": [[4.0, 4.0]]}}"#,
                )],
            ),
        ),
        invalid("payload an array", set(job, &[("/payload", "[]")])),
        invalid(
            "unknown task",
            set(job, &[("/payload/task", r#""clustering""#)]),
        ),
        invalid(
            "task in capitals",
            set(job, &[("/payload/task", r#""Regression""#)]),
        ),
        invalid("task a number", set(job, &[("/payload/task", "1")])),
        invalid("params null", set(job, &[("/payload/params", "null")])),
        invalid("params an array", set(job, &[("/payload/params", "[1]")])),
        invalid("X without y", remove(job, &["/payload/data/y"])),
        invalid("y without X", remove(job, &["/payload/data/X"])),
        invalid(
            "y an object",
            set(job, &[("/payload/data/y", r#"{"a": 0}"#)]),
        ),
        invalid("y null", set(job, &[("/payload/data/y", "null")])),
        invalid(
            "a matrix with a target",
            set(job, &[("/payload/data/target", r#""y""#)]),
        ),
        invalid(
            "records without a target",
            set(
                job,
                &[("/payload/data", r#"{"records": [{"a": 1, "b": 2}]}"#)],
            ),
        ),
        invalid(
            "records with y",
            set(
                &set(job, &[("/payload/data", records)]),
                &[("/payload/data/y", "[true]")],
            ),
        ),
        invalid(
            "a target a number",
            set(
                &set(job, &[("/payload/data", records)]),
                &[("/payload/data/target", "1")],
            ),
        ),
        invalid(
            "a null target",
            set(
                &set(job, &[("/payload/data", records)]),
                &[("/payload/data/target", "null")],
            ),
        ),
    ]);
    docs
}

fn prediction_request_docs() -> Vec<Doc> {
    let request = &an_envelope(
        "ml.predict",
        r#"{"model": "svm", "data": {"X": [[4.0, 4.0], [10.0, 10.0]]}}"#,
    );
    let records = r#"{"records": [{"rooms": 3, "city": "Lima", "garden": null}]}"#;
    let mut docs = envelope_docs(request);
    docs.extend(data_docs(request));
    docs.extend(model_name_docs(request, "/payload/model"));
    docs.extend([
        valid("a prediction request", request.clone()),
        valid("records", set(request, &[("/payload/data", records)])),
        valid(
            "a pinned version",
            set(request, &[("/payload/version", "3")]),
        ),
        valid(
            "the first version",
            set(request, &[("/payload/version", "1")]),
        ),
        valid(
            "the last version",
            set(request, &[("/payload/version", "2147483647")]),
        ),
        valid(
            "version null",
            set(request, &[("/payload/version", "null")]),
        ),
        // A training data object may be sent as it is: y and target are ignored.
        valid(
            "a matrix with its targets",
            set(request, &[("/payload/data/y", r#"[0, "a"]"#)]),
        ),
        valid(
            "a matrix with anything for y",
            set(request, &[("/payload/data/y", "null")]),
        ),
        valid(
            "records with their target",
            set(
                &set(request, &[("/payload/data", records)]),
                &[("/payload/data/target", r#""sold""#)],
            ),
        ),
        valid(
            "records with anything for a target",
            set(
                &set(request, &[("/payload/data", records)]),
                &[("/payload/data/target", "5")],
            ),
        ),
        invalid("another kind", set(request, &[("/kind", r#""ml.train""#)])),
        invalid("kind qa", set(request, &[("/kind", r#""qa""#)])),
        invalid("missing model", remove(request, &["/payload/model"])),
        invalid("missing data", remove(request, &["/payload/data"])),
        invalid("model null", set(request, &[("/payload/model", "null")])),
        invalid(
            "unknown payload field",
            set(request, &[("/payload/extra", "1")]),
        ),
        invalid(
            "a training job",
            set(
                request,
                &[(
                    "/payload",
                    r#"{"algorithm": "svm", "data": {"X": [[1.0]], "y": [0]}}"#,
                )],
            ),
        ),
        invalid(
            "payload a string",
            set(request, &[("/payload", r#""svm""#)]),
        ),
        invalid("version 0", set(request, &[("/payload/version", "0")])),
        invalid(
            "version below 0",
            set(request, &[("/payload/version", "-1")]),
        ),
        invalid(
            "version beyond 31 bits",
            set(request, &[("/payload/version", "2147483648")]),
        ),
        invalid(
            "version a fraction",
            set(request, &[("/payload/version", "1.5")]),
        ),
        invalid(
            "version a string",
            set(request, &[("/payload/version", r#""3""#)]),
        ),
        invalid(
            "a matrix with a target",
            set(request, &[("/payload/data/target", r#""sold""#)]),
        ),
        invalid(
            "records with y",
            set(
                &set(request, &[("/payload/data", records)]),
                &[("/payload/data/y", "[0]")],
            ),
        ),
        invalid(
            "a null X beside records",
            set(
                &set(request, &[("/payload/data", records)]),
                &[("/payload/data/X", "null")],
            ),
        ),
        invalid(
            "only a target",
            set(request, &[("/payload/data", r#"{"target": "sold"}"#)]),
        ),
    ]);
    docs
}

/// Every hand-written document, by topic suffix. A dead letter is any of them, and more.
fn documents(suffix: &str) -> Vec<Doc> {
    match suffix {
        "compute.jobs" => compute_job_docs(),
        "compute.parts" => compute_part_docs(),
        "results" => result_docs(),
        "heartbeats" => heartbeat_docs(),
        "kv.updates" => kv_update_docs(),
        "kv.state" => kv_change_docs(),
        "qa.questions" => question_topic_docs(),
        "qa.answers" => answer_docs(),
        "ml.train" => training_job_docs(),
        "ml.predict" => prediction_request_docs(),
        "dead-letters" => {
            let mut docs: Vec<Doc> = TOPICS
                .iter()
                .filter(|(other, _)| *other != "dead-letters")
                .flat_map(|(other, _)| documents(other))
                .map(|doc| valid(doc.name, doc.text))
                .collect();
            docs.extend([
                valid("a string", r#""not a message""#),
                valid("a number", "1e400"),
                valid("null", "null"),
                valid("a NUL", r#"{"\u0000": "\u0000"}"#),
            ]);
            docs
        }
        other => panic!("no documents for {other}"),
    }
}

#[test]
fn schemas_and_consumers_agree() {
    let mut wrong = Vec::new();
    for (suffix, decode) in TOPICS {
        let validator = validator(suffix);
        let docs = documents(suffix);
        assert!(docs.iter().any(|d| d.valid), "{suffix}: no valid document");
        if *suffix != "dead-letters" {
            assert!(
                docs.iter().any(|d| !d.valid),
                "{suffix}: no invalid document"
            );
        }
        for doc in docs {
            let value: Value = serde_json::from_str(&doc.text)
                .unwrap_or_else(|e| panic!("{suffix} / {}: not JSON: {e}", doc.name));
            let errors = complaints(&validator, &value);
            let decoded = decode(&doc.text);
            if errors.is_empty() != doc.valid || decoded.is_ok() != doc.valid {
                wrong.push(format!(
                    "{suffix} / {} (meant {}): schema {:?}, Rust {:?}\n  {}",
                    doc.name,
                    if doc.valid { "valid" } else { "invalid" },
                    errors,
                    decoded,
                    doc.text,
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// Headers: documented in the dead-letters schema and in schemas/README.md.

/// Every header name of `sluice_messages::header`.
const HEADERS: [&str; 12] = [
    header::FAILURES,
    header::ORIGINAL_TOPIC,
    header::ORIGINAL_PARTITION,
    header::ORIGINAL_OFFSET,
    header::RETURN_TOPIC,
    header::FIRST_FAILURE_MS,
    header::ERROR_CLASS,
    header::ERROR,
    header::DUE_MS,
    header::JOB_ID,
    header::TRUNCATED_FROM,
    header::HEADERS_DROPPED,
];

#[test]
fn headers_are_documented() {
    let schema = schema("dead-letters");
    let documented = schema["$defs"]["headers"]["properties"]
        .as_object()
        .expect("dead-letters.schema.json has $defs/headers");
    let readme = std::fs::read_to_string(schemas_dir().join("README.md")).unwrap();
    for name in HEADERS {
        assert!(name.starts_with(header::PREFIX));
        assert!(documented.contains_key(name), "{name} in $defs/headers");
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} in schemas/README.md"
        );
    }
    assert_eq!(documented.len(), HEADERS.len(), "only header.rs's headers");

    let headers = build(&json!({
        "$schema": DRAFT_2020_12,
        "$defs": schema["$defs"],
        "$ref": "#/$defs/headers",
    }));
    let letter = json!({
        header::FAILURES: "3",
        header::ERROR_CLASS: "schema",
        header::ERROR: "invalid compute job: missing field `op`",
        header::ORIGINAL_TOPIC: "sluice.compute.jobs",
        header::ORIGINAL_PARTITION: "0",
        header::ORIGINAL_OFFSET: "42",
        header::FIRST_FAILURE_MS: "1767322245678",
        header::JOB_ID: id().to_string(),
        header::TRUNCATED_FROM: "2000000",
        header::HEADERS_DROPPED: "2",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    });
    assert_eq!(complaints(&headers, &letter), Vec::<String>::new());
    let mut retried = letter.clone();
    retried[header::DUE_MS] = json!("1767322250678");
    assert!(!headers.is_valid(&retried), "no due time on a dead letter");
    let mut bare = letter.clone();
    bare.as_object_mut().unwrap().remove(header::FAILURES);
    assert!(
        !headers.is_valid(&bare),
        "the failure count is always there"
    );
}
