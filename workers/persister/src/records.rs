//! What the persister accepts: each consumed message decoded and validated into the row it
//! becomes, or refused with a permanent error (and so dead-lettered), never a crash.

use chrono::{DateTime, TimeZone, Utc};
use rdkafka::message::Headers;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_core::headers::{header_i64, header_str};
use sluice_core::retry::truncate_at_char;
use sluice_core::{ErrorClass, HandlerError, Job};
use sluice_db::dead_letters::ForeignHeaders;
use sluice_messages::compute::{PartResult, KIND_PART};
use sluice_messages::heartbeat::Heartbeat;
use sluice_messages::kv::{self, KvCommand, KvOp};
use sluice_messages::ml;
use sluice_messages::qa::{self, Answer, QaOutcome, Question};
use sluice_messages::{header, Envelope, JobResult, Topics};
use uuid::Uuid;

/// Longest job kind accepted.
const MAX_KIND_LEN: usize = 64;
/// Longest alarm text kept of a heartbeat (sluice's own are far shorter); the rest is cut.
const MAX_ALARM_LEN: usize = 1_000;

#[derive(Debug, Clone)]
pub struct ResultRow {
    pub job_id: Uuid,
    pub kind: String,
    /// The result as JSON text, numbers exactly as the worker wrote them.
    pub result: String,
    pub error: Option<String>,
    pub worker: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct PartRow {
    pub job_id: Uuid,
    /// The job's n: with `parts`, it names the split the range belongs to.
    pub n: i64,
    pub part: i32,
    pub parts: i32,
    pub a: i64,
    pub b: i64,
    /// A non-negative integer in decimal, for a `numeric` column.
    pub result: String,
    pub worker: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub job_id: Option<Uuid>,
    pub job_kind: Option<String>,
    pub job_created_at: Option<DateTime<Utc>>,
    /// What the job asked, as JSON, when it is a question: kept on its job row, so that a dead
    /// question still shows its text and run in `qa_results`.
    pub job_request: Option<String>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// With the offset, names the dead-letter message even across a log that started over.
    pub source_timestamp_ms: i64,
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub attempts: i32,
    pub error_class: String,
    pub reason: String,
    pub first_failure_at: Option<DateTime<Utc>>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Every header, as a JSON object of strings.
    pub headers: String,
    /// The message's own headers, exactly, for a replay to send ([`ForeignHeaders::to_json`]).
    pub foreign_headers: String,
}

#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub instance: String,
    pub role: String,
    pub host: String,
    pub state: String,
    pub in_flight: i64,
    pub processed: i64,
    pub dead_lettered: i64,
    pub alarm: Option<String>,
    pub version: String,
    pub last_seen: DateTime<Utc>,
}

/// An update of the key-value store, checked: applying it can only succeed or conflict.
#[derive(Debug, Clone)]
pub struct KvUpdateRow {
    pub key: String,
    /// The update's id, under which its outcome is recorded; none for a tombstone.
    pub id: Option<Uuid>,
    pub op: KvOp,
    /// A put's value, as JSON text.
    pub value: Option<Box<RawValue>>,
    pub if_version: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub enum Record {
    Result(ResultRow),
    Part(PartRow),
    DeadLetter(DeadLetterRow),
    Worker(WorkerRow),
    Kv(KvUpdateRow),
}

/// Rows of one transaction, grouped by table.
#[derive(Debug, Default)]
pub struct Batch {
    pub results: Vec<ResultRow>,
    pub parts: Vec<PartRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub workers: Vec<WorkerRow>,
    /// In consumption order: a key's updates apply in the order of its partition.
    pub kv: Vec<KvUpdateRow>,
}

impl<'a> FromIterator<&'a Record> for Batch {
    fn from_iter<I: IntoIterator<Item = &'a Record>>(records: I) -> Self {
        let mut batch = Batch::default();
        for record in records {
            match record.clone() {
                Record::Result(row) => batch.results.push(row),
                Record::Part(row) => batch.parts.push(row),
                Record::DeadLetter(row) => batch.dead_letters.push(row),
                Record::Worker(row) => batch.workers.push(row),
                Record::Kv(row) => batch.kv.push(row),
            }
        }
        batch
    }
}

fn invalid(what: &str, reason: impl std::fmt::Display) -> HandlerError {
    HandlerError::permanent(
        ErrorClass::InvalidResult,
        format!("invalid {what}: {reason}"),
    )
}

fn to_i32(value: u32, what: &str) -> Result<i32, HandlerError> {
    i32::try_from(value).map_err(|_| invalid(what, format!("{value} is out of range")))
}

/// Decodes and validates one message according to the topic it came from.
pub fn parse(topics: &Topics, job: &Job) -> Result<Record, HandlerError> {
    let topic = job.topic.as_str();
    if topic == topics.results() {
        parse_answer(job)
    } else if topic == topics.dead_letters() {
        Ok(Record::DeadLetter(parse_dead_letter(job)))
    } else if topic == topics.heartbeats() {
        parse_heartbeat(job).map(Record::Worker)
    } else if topic == topics.kv_updates() {
        parse_kv_update(job).map(Record::Kv)
    } else {
        Err(HandlerError::permanent(
            ErrorClass::Schema,
            format!("no table for topic {topic}"),
        ))
    }
}

/// A job's result, or a split job's range, by the `kind` both carry.
fn parse_answer(job: &Job) -> Result<Record, HandlerError> {
    #[derive(Deserialize)]
    struct Head {
        kind: String,
    }
    let head: Head = serde_json::from_slice(&job.payload).map_err(|e| invalid("result", e))?;
    if head.kind == KIND_PART {
        parse_part(job).map(Record::Part)
    } else {
        parse_result(job).map(Record::Result)
    }
}

fn parse_result(job: &Job) -> Result<ResultRow, HandlerError> {
    let result: JobResult =
        serde_json::from_slice(&job.payload).map_err(|e| invalid("result", e))?;
    if result.kind.is_empty() || result.kind.len() > MAX_KIND_LEN {
        return Err(invalid("result", "kind must be 1 to 64 characters"));
    }
    // Only what the table needs is read; the rest of the answer is stored as written.
    #[derive(Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
    }
    let text = result.result.get();
    if !text.starts_with('{') {
        return Err(invalid("result", "the answer must be a JSON object"));
    }
    let answer: Answer = serde_json::from_str(text)
        .map_err(|e| invalid("result", format!("the answer needs a boolean \"ok\": {e}")))?;
    let stored = if result.kind == qa::KIND {
        // The qa_results view reads these fields: only a whole, consistent outcome is stored,
        // and as serde writes it, numbers included (a score written `1e-400` reads as 0, but
        // stored as written it would make the view's cast to double precision fail for every
        // query that reads the row).
        let outcome = serde_json::from_str::<QaOutcome>(text)
            .map_err(|e| e.to_string())
            .and_then(|outcome| outcome.check().map(|()| outcome))
            .map_err(|e| invalid("question outcome", e))?;
        serde_json::to_string(&outcome).map_err(|e| invalid("question outcome", e))?
    } else {
        if result.kind == ml::KIND_PREDICT || result.kind == ml::KIND_TRAIN {
            check_ml_answer(text, answer.ok)
                .map_err(|e| invalid(&format!("{} answer", result.kind), e))?;
        }
        text.to_string()
    };
    let error = match (answer.ok, answer.error) {
        (true, _) => None,
        (false, Some(error)) => Some(error),
        (false, None) => return Err(invalid("result", "a failed answer needs an error message")),
    };
    Ok(ResultRow {
        job_id: result.id,
        kind: result.kind,
        result: stored,
        error,
        worker: result.worker,
        attempts: to_i32(result.attempts, "result")?,
        created_at: result.created_at,
        finished_at: result.finished_at,
    })
}

/// A model's answer names the version that gave it (a failed one may), and the
/// `ml_predictions` view casts it: only a version an `integer` holds is stored (the rest of the
/// answer is stored as written).
fn check_ml_answer(text: &str, ok: bool) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Versioned {
        model: Option<String>,
        version: Option<i32>,
    }
    let answer: Versioned = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if ok && (answer.model.is_none() || answer.version.is_none()) {
        return Err("an answer names its model and version".into());
    }
    if let Some(model) = &answer.model {
        ml::check_model_name(model)?;
    }
    match answer.version {
        Some(version) if version < 1 => Err(format!("version {version} is below 1")),
        _ => Ok(()),
    }
}

fn parse_part(job: &Job) -> Result<PartRow, HandlerError> {
    let part: PartResult = serde_json::from_slice(&job.payload).map_err(|e| invalid("part", e))?;
    let digits = part.result.to_string();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "part",
            format!("result {digits} is not a whole number"),
        ));
    }
    if part.parts == 0
        || part.part >= part.parts
        || part.a == 0
        || part.a > part.b
        || part.b > part.n
    {
        return Err(invalid("part", "inconsistent range"));
    }
    let bound = |v: u64| i64::try_from(v).map_err(|_| invalid("part", "range out of bounds"));
    Ok(PartRow {
        job_id: part.job_id,
        n: bound(part.n)?,
        part: to_i32(part.part, "part")?,
        parts: to_i32(part.parts, "part")?,
        a: bound(part.a)?,
        b: bound(part.b)?,
        result: digits,
        worker: part.worker,
        attempts: to_i32(part.attempts, "part")?,
        created_at: part.created_at,
        finished_at: part.finished_at,
    })
}

/// A KV update: the Kafka key is the KV key; the payload an envelope of a [`KvCommand`], or
/// nothing (a tombstone: delete, unconditionally).
fn parse_kv_update(job: &Job) -> Result<KvUpdateRow, HandlerError> {
    let key = kv::validate_key(job.key.as_deref().unwrap_or_default())
        .map_err(|e| invalid("KV update", e))?
        .to_string();
    let mut row = KvUpdateRow {
        key,
        id: None,
        op: KvOp::Delete,
        value: None,
        if_version: None,
        created_at: job
            .timestamp_ms
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or_else(Utc::now),
        partition: job.partition,
        offset: job.offset,
    };
    if job.payload.is_empty() {
        return Ok(row);
    }
    let update: Envelope<KvCommand> =
        serde_json::from_slice(&job.payload).map_err(|e| invalid("KV update", e))?;
    if update.kind != kv::KIND {
        return Err(invalid(
            "KV update",
            format!("kind is {:?}, not {:?}", update.kind, kv::KIND),
        ));
    }
    update
        .payload
        .check()
        .map_err(|e| invalid("KV update", e))?;
    row.if_version = update
        .payload
        .if_version
        .map(|v| i64::try_from(v).map_err(|_| invalid("KV update", "if_version is out of range")))
        .transpose()?;
    row.id = Some(update.id);
    row.op = update.payload.op;
    row.value = update.payload.value;
    row.created_at = storable_time(update.created_at).map_err(|e| invalid("KV update", e))?;
    Ok(row)
}

fn parse_heartbeat(job: &Job) -> Result<WorkerRow, HandlerError> {
    let beat: Heartbeat =
        serde_json::from_slice(&job.payload).map_err(|e| invalid("heartbeat", e))?;
    let state = serde_json::to_value(beat.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Ok(WorkerRow {
        instance: beat.instance,
        role: beat.role,
        host: beat.host,
        state,
        in_flight: count(beat.in_flight),
        processed: count(beat.processed),
        dead_lettered: count(beat.dead_lettered),
        alarm: beat.alarm.map(|reason| {
            let mut reason = storable(&reason);
            truncate_at_char(&mut reason, MAX_ALARM_LEN);
            reason
        }),
        version: beat.version,
        // The broker's clock (the topic's timestamps are its append times), not the sender's.
        last_seen: job
            .timestamp_ms
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(beat.at),
    })
}

/// `at` if PostgreSQL's `timestamptz` holds it (years 4713 BC to 294276 AD; checked with
/// room to spare): a time it refused would fail the batch after its KV changes were applied.
fn storable_time(at: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    use chrono::Datelike;
    if (1..=9999).contains(&at.year()) {
        Ok(at)
    } else {
        Err(format!("created_at {at} is out of range (years 1 to 9999)"))
    }
}

/// `text` if it can be a Kafka topic's name (at most 249 of `[A-Za-z0-9._-]`), else nothing: a
/// forged header of kilobytes would not fit the index on `original_topic` (SQLSTATE 54000),
/// and a dead letter the database refuses stops the persister.
fn topic_name(text: &str) -> Option<String> {
    let valid = (1..=249).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid.then(|| text.to_string())
}

/// PostgreSQL text cannot hold NUL; a dead letter must be storable whatever it carries.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// The question a dead letter of kind `qa` carries, as a question or inside an answer, when it
/// is one the LLM workers accept: only then is it bounded enough to index (a run id of
/// kilobytes would exceed an index row and stall the persister).
fn dead_question(payload: &str) -> Option<Question> {
    serde_json::from_str::<Question>(payload)
        .or_else(|_| serde_json::from_str::<Answer>(payload).map(|a| a.question))
        .ok()
        .filter(|question| question.check().is_ok())
}

/// A dead letter is always stored: whatever its payload, the headers say why it died.
pub fn parse_dead_letter(job: &Job) -> DeadLetterRow {
    #[derive(Deserialize)]
    struct EnvelopeHead {
        id: Uuid,
        kind: String,
        created_at: DateTime<Utc>,
        #[serde(default)]
        payload: Option<Box<RawValue>>,
    }
    let headers = job.headers.as_ref();
    let head: Option<EnvelopeHead> = serde_json::from_slice(&job.payload).ok();
    let job_id = header_str(headers, header::JOB_ID)
        .and_then(|id| id.parse().ok())
        .or(head.as_ref().map(|h| h.id));
    let mut all = Map::new();
    if let Some(headers) = headers {
        for h in headers.iter() {
            let value = h.value.map(|v| storable(&String::from_utf8_lossy(v)));
            all.insert(storable(h.key), value.map_or(Value::Null, Value::String));
        }
    }
    let job_request = head
        .as_ref()
        .filter(|h| h.kind == qa::KIND)
        .and_then(|h| h.payload.as_ref())
        .and_then(|p| dead_question(p.get()))
        .and_then(|question| serde_json::to_string(&question).ok())
        // Written back from its type, the question is JSON PostgreSQL stores, but for NUL.
        .filter(|json| !json.contains("\\u0000"));
    DeadLetterRow {
        job_id,
        job_request,
        job_kind: head.as_ref().map(|h| storable(&h.kind)),
        // A dead letter is kept even when the time its producer gave cannot be stored.
        job_created_at: head.and_then(|h| storable_time(h.created_at).ok()),
        source_topic: job.topic.clone(),
        source_partition: job.partition,
        source_offset: job.offset,
        source_timestamp_ms: job.timestamp_ms.unwrap_or(-1),
        original_topic: header_str(headers, header::ORIGINAL_TOPIC).and_then(topic_name),
        original_partition: header_i64(headers, header::ORIGINAL_PARTITION)
            .and_then(|p| i32::try_from(p).ok()),
        original_offset: header_i64(headers, header::ORIGINAL_OFFSET),
        attempts: header_i64(headers, header::FAILURES)
            .and_then(|a| i32::try_from(a).ok())
            .unwrap_or(0),
        error_class: storable(header_str(headers, header::ERROR_CLASS).unwrap_or("unknown")),
        reason: storable(header_str(headers, header::ERROR).unwrap_or("no reason given")),
        first_failure_at: header_i64(headers, header::FIRST_FAILURE_MS)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        key: job.key.clone(),
        payload: job.payload.clone(),
        headers: Value::Object(all).to_string(),
        foreign_headers: ForeignHeaders::of(
            headers
                .iter()
                .flat_map(|all| all.iter())
                .map(|h| (h.key, h.value)),
        )
        .to_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_original_topic_that_cannot_be_a_topic_is_not_stored() {
        use rdkafka::message::{Header, OwnedHeaders};
        let letter = |original: &str| {
            let headers = OwnedHeaders::new().insert(Header {
                key: header::ORIGINAL_TOPIC,
                value: Some(original),
            });
            parse_dead_letter(&Job {
                topic: "t.dead-letters".into(),
                partition: 0,
                offset: 0,
                key: None,
                payload: b"x".to_vec(),
                headers: Some(headers),
                timestamp_ms: None,
                attempt: 1,
                unreadable_headers: None,
            })
            .original_topic
        };
        assert_eq!(
            letter("sluice.compute.jobs").as_deref(),
            Some("sluice.compute.jobs")
        );
        assert_eq!(letter(&"x".repeat(5_000)), None, "too long for the index");
        assert_eq!(letter("no spaces"), None);
    }

    #[test]
    fn a_models_answer_must_name_a_version_the_view_can_cast() {
        let check = |text: &str| check_ml_answer(text, true);
        assert!(check(r#"{"ok": true, "model": "svm", "version": 3, "predictions": []}"#).is_ok());
        assert!(check(r#"{"ok": true, "model": "svm", "version": 3e10}"#).is_err());
        assert!(check(r#"{"ok": true, "model": "svm", "version": 0}"#).is_err());
        assert!(check(r#"{"ok": true, "model": "no spaces", "version": 1}"#).is_err());
        assert!(check(r#"{"ok": true, "predictions": [1.0]}"#).is_err());
        let failed = |text: &str| check_ml_answer(text, false);
        assert!(failed(r#"{"ok": false, "error": "unknown model"}"#).is_ok());
        assert!(failed(r#"{"ok": false, "error": "x", "version": "abc"}"#).is_err());
    }
}
