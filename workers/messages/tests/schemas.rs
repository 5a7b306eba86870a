//! The JSON Schemas in `schemas/` (one per topic) checked against the Rust types, both ways:
//! - every message the types write (all optional fields set, and minimal ones) is valid;
//! - on hand-written documents, the schema's verdict is the one the topic's consumer reaches by
//!   decoding with the Rust type, checking the envelope kind, and calling `check()` where the
//!   type has one. Documents the schema cannot judge the same way are left out and the
//!   difference is said in the schema's description: byte lengths, a value's size or numbers
//!   beyond PostgreSQL's range, relaxed date forms chrono also reads, whole numbers written
//!   `1.0` or `1e0` (JSON Schema integers, refused by serde), and a struct written as a JSON
//!   array of its fields (which serde also reads).
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
use serde_json::{json, Number, Value};
use uuid::Uuid;

use sluice_messages::compute::{
    CalcOutput, CalcRequest, PartOutput, PartRequest, PartResult, KIND_JOB, KIND_PART,
};
use sluice_messages::heartbeat::{Heartbeat, WorkerState};
use sluice_messages::kv::{self, KvChange, KvCommand};
use sluice_messages::qa::{self, Answer, QaOutcome, Question, Reply, ScoredReply, Verdict};
use sluice_messages::{header, Envelope, JobResult, Topics};

/// How a topic's consumer takes a message: `Ok` when it would use it.
type Decode = fn(&str) -> Result<(), String>;

/// Every schema, by topic suffix, with its consumer's decoding.
const TOPICS: &[(&str, Decode)] = &[
    ("compute.jobs", decode_compute_job),
    ("results", decode_result),
    ("dead-letters", decode_dead_letter),
    ("heartbeats", decode_heartbeat),
    ("kv.updates", decode_kv_update),
    ("kv.state", decode_kv_change),
    ("qa.questions", decode_question),
    ("qa.answers", decode_answer),
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
// the LLM worker and the scoring stage do it.

fn decode_compute_job(text: &str) -> Result<(), String> {
    let envelope: Envelope = de(text)?;
    match envelope.kind.as_str() {
        KIND_JOB => de::<Envelope<CalcRequest>>(text).map(drop),
        KIND_PART => de::<Envelope<PartRequest>>(text).map(drop),
        other => Err(format!("unknown job kind {other:?}")),
    }
}

fn decode_result(text: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Head {
        kind: String,
    }
    /// What the persister reads of every kind's answer.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Common {
        ok: bool,
        #[serde(default)]
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
    de::<Common>(answer)?;
    match result.kind.as_str() {
        KIND_JOB => de::<CalcOutput>(answer).map(drop),
        qa::KIND => de::<QaOutcome>(answer)?.check(),
        _ => Ok(()),
    }
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
        version: "0.1.0".into(),
        at: Utc::now(),
    };
    vec![
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
            "compute.jobs",
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
    let part = &an_envelope(
        "compute.part",
        r#"{"n": 9, "part": 0, "parts": 3, "a": 1, "b": 3}"#,
    );
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
        invalid("another kind", set(job, &[("/kind", r#""qa""#)])),
        invalid(
            "a part's payload as a job",
            set(part, &[("/kind", r#""compute""#)]),
        ),
        invalid(
            "a job's payload as a part",
            set(job, &[("/kind", r#""compute.part""#)]),
        ),
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

/// Every hand-written document, by topic suffix. A dead letter is any of them, and more.
fn documents(suffix: &str) -> Vec<Doc> {
    match suffix {
        "compute.jobs" => compute_job_docs(),
        "results" => result_docs(),
        "heartbeats" => heartbeat_docs(),
        "kv.updates" => kv_update_docs(),
        "kv.state" => kv_change_docs(),
        "qa.questions" => question_topic_docs(),
        "qa.answers" => answer_docs(),
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
const HEADERS: [&str; 11] = [
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
