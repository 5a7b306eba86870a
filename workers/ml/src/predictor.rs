//! The prediction stage's handler. A batch's requests are grouped by model version; each
//! group's rows are encoded and predicted at once, on the prediction threads, then split back
//! into one answer per request. "Latest" is resolved once per batch, so a version stored
//! before a request was published serves it, with no restart and no cache to expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_core::blocking::{BlockingPool, Panicked};
use sluice_core::{Cx, ErrorClass, Handler, HandlerError, Job, Outcome};
use sluice_messages::ml::{self, Failed, PredictOutput, PredictRequest};
use sluice_messages::{Envelope, Topics};
use sqlx::PgPool;
use uuid::Uuid;

use crate::answer::Answerer;
use crate::cache::{ModelCache, ModelKey};
use crate::config::MlConfig;
use crate::learn::{Encoded, Model};

pub struct PredictorHandler {
    answerer: Answerer,
    pool: PgPool,
    cache: Arc<ModelCache>,
    threads: BlockingPool,
    max_data_bytes: usize,
}

/// A request that decoded, waiting for its model.
struct Request {
    index: usize,
    id: Uuid,
    created_at: DateTime<Utc>,
    model: String,
    version: Option<i32>,
    data: Box<RawValue>,
}

/// A message of the batch, decoded.
enum Decoded {
    Request(Request),
    /// A request that cannot succeed whatever the registry holds: answered as failed.
    Refused {
        id: Uuid,
        created_at: DateTime<Utc>,
        answer: Answered,
    },
    /// Not a prediction request at all: a dead letter.
    Unreadable(HandlerError),
}

/// What a request comes to before it is published: its answer's JSON, or a failure of the
/// message itself.
type Answered = Result<Box<RawValue>, HandlerError>;

impl PredictorHandler {
    pub fn new(topics: Topics, instance: String, pool: PgPool, config: &MlConfig) -> Self {
        Self {
            answerer: Answerer {
                topics,
                instance,
                kind: ml::KIND_PREDICT,
            },
            pool,
            cache: Arc::new(ModelCache::new(config.model_cache_bytes)),
            threads: BlockingPool::new(config.predict_threads),
            max_data_bytes: config.max_data_bytes,
        }
    }

    /// The request in `job`, or what becomes of a message that is none.
    fn decode(&self, index: usize, job: &Job) -> Decoded {
        let envelope: Envelope = match job.envelope() {
            Ok(envelope) => envelope,
            Err(e) => return Decoded::Unreadable(e),
        };
        if envelope.kind != ml::KIND_PREDICT {
            let shown: String = envelope.kind.chars().take(40).collect();
            return Decoded::Unreadable(HandlerError::permanent(
                ErrorClass::Schema,
                format!("kind is {shown:?}, not {:?}", ml::KIND_PREDICT),
            ));
        }
        let refuse = |reason: String| Decoded::Refused {
            id: envelope.id,
            created_at: envelope.created_at,
            answer: failed(reason),
        };
        let request: PredictRequest = match serde_json::from_str(envelope.payload.get()) {
            Ok(request) => request,
            Err(e) => return refuse(format!("invalid prediction request: {e}")),
        };
        if let Err(reason) = ml::check_model_name(&request.model) {
            return refuse(reason);
        }
        let bytes = request.data.get().len();
        if bytes > self.max_data_bytes {
            return refuse(format!(
                "the data is {bytes} bytes, over ML_MAX_DATA_BYTES ({})",
                self.max_data_bytes
            ));
        }
        Decoded::Request(Request {
            index,
            id: envelope.id,
            created_at: envelope.created_at,
            model: request.model,
            version: request.version,
            data: request.data,
        })
    }

    async fn load(&self, key: &ModelKey) -> Result<Result<Arc<Model>, String>, sqlx::Error> {
        let Some(artifact) = sluice_db::ml::artifact(&self.pool, &key.0, key.1).await? else {
            return Ok(Err(format!("model {:?} has no version {}", key.0, key.1)));
        };
        let bytes = artifact.len();
        let model = self
            .threads
            .run(move || Model::from_bytes(&artifact))
            .await
            .unwrap_or_else(|Panicked(text)| std::panic::panic_any(text));
        Ok(match model {
            Ok(model) => {
                let model = Arc::new(model);
                self.cache.insert(key.clone(), model.clone(), bytes);
                tracing::info!(model = %key.0, version = key.1, bytes, "model loaded");
                Ok(model)
            }
            Err(e) => {
                // Stored by an incompatible build, or damaged: no request can use it.
                tracing::error!(model = %key.0, version = key.1, error = %e, "model unreadable");
                Err(format!(
                    "model {:?} version {} cannot be read: {e}",
                    key.0, key.1
                ))
            }
        })
    }
}

fn failed(reason: String) -> Answered {
    serde_json::value::to_raw_value(&Failed::new(reason))
        .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))
}

/// Most bytes one request's rows may take encoded (rows × features × 8): a records request
/// may leave every field out, so three bytes of input can be a whole row of the model's width.
const REQUEST_ENCODED_BYTES: usize = 64 * 1024 * 1024;

/// Encoded rows predicted at once, at most (one request's rows whatever their size): requests
/// for one model are predicted together in chunks of about this much, then split back.
const CHUNK_ENCODED_BYTES: usize = 16 * 1024 * 1024;

/// How many rows a request's data holds, read without building them; `None` when it is not
/// one of the shapes, or names one twice.
fn row_count(data: &str) -> Option<usize> {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "X", default)]
        x: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        records: Option<Vec<IgnoredAny>>,
    }
    let shape: Shape = serde_json::from_str(data).ok()?;
    Some(
        shape
            .x
            .map_or(0, |x| x.len())
            .max(shape.records.map_or(0, |r| r.len())),
    )
}

/// Encodes the requests of one model version and predicts their rows together, a chunk at a
/// time, then splits the predictions back: one answer per request.
fn predict_group(
    key: &ModelKey,
    model: &Model,
    requests: &[(usize, Box<RawValue>)],
) -> Vec<(usize, Answered)> {
    let answer = |predictions: Vec<serde_json::Value>| {
        serde_json::value::to_raw_value(&PredictOutput {
            ok: true,
            model: key.0.clone(),
            version: key.1,
            predictions,
        })
        .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))
    };
    let row_bytes = model.width().max(1) * std::mem::size_of::<f64>();
    let mut answers = Vec::with_capacity(requests.len());
    let mut chunk: Vec<(usize, Encoded)> = Vec::new();
    let mut chunk_bytes = 0;
    let predict_chunk = |chunk: &mut Vec<(usize, Encoded)>, answers: &mut Vec<_>| {
        let parts: Vec<Encoded> = chunk.iter().map(|(_, rows)| rows.clone()).collect();
        match model.predict(&Encoded::concat(&parts)) {
            Ok(predictions) => {
                let mut predictions = predictions.into_iter();
                for (index, rows) in chunk.iter() {
                    let mine = predictions.by_ref().take(rows.rows()).collect();
                    answers.push((*index, answer(mine)));
                }
            }
            // One request's rows spoiled the chunk: each is predicted alone, so only it fails.
            Err(_) => {
                for (index, rows) in chunk.iter() {
                    let alone = model
                        .predict(rows)
                        .map_err(|e| e.to_string())
                        .map_or_else(failed, answer);
                    answers.push((*index, alone));
                }
            }
        }
        chunk.clear();
    };
    for (index, data) in requests {
        // Counted before anything is built, and refused unless countable: a shape the count
        // cannot read (a key given twice, which the model's reader would append) could hold
        // any number of rows.
        let Some(rows) = row_count(data.get()) else {
            answers.push((
                *index,
                failed(
                    "invalid data: send {\"X\": [[...]]} or {\"records\": [{...}]}, each key once"
                        .into(),
                ),
            ));
            continue;
        };
        if rows.saturating_mul(row_bytes) > REQUEST_ENCODED_BYTES {
            answers.push((
                *index,
                failed(format!(
                    "the request has {rows} rows of {} features: over the {} MiB a request \
                     may take encoded; send fewer rows",
                    model.width(),
                    REQUEST_ENCODED_BYTES >> 20
                )),
            ));
            continue;
        }
        match model.encode(data.get()) {
            Ok(rows) => {
                chunk_bytes += rows.rows() * row_bytes;
                chunk.push((*index, rows));
                if chunk_bytes >= CHUNK_ENCODED_BYTES {
                    predict_chunk(&mut chunk, &mut answers);
                    chunk_bytes = 0;
                }
            }
            Err(e) => answers.push((*index, failed(e.to_string()))),
        }
    }
    if !chunk.is_empty() {
        predict_chunk(&mut chunk, &mut answers);
    }
    answers
}

impl Handler for PredictorHandler {
    async fn handle(&self, job: &Job, cx: &Cx) -> Outcome {
        self.handle_batch(std::slice::from_ref(job), cx)
            .await
            .pop()
            .expect("one outcome per job")
    }

    async fn handle_batch(&self, jobs: &[Job], _cx: &Cx) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
        let mut requests = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            match self.decode(index, job) {
                Decoded::Request(request) => requests.push(request),
                Decoded::Refused {
                    id,
                    created_at,
                    answer,
                } => {
                    outcomes[index] =
                        Some(answer.and_then(|a| self.answerer.publish(job, id, created_at, a)));
                }
                Decoded::Unreadable(e) => outcomes[index] = Some(Err(e)),
            }
        }
        let unavailable = |e: &sqlx::Error| {
            HandlerError::transient(ErrorClass::Unavailable, format!("model registry: {e}"))
        };
        let mut unpinned: Vec<String> = requests
            .iter()
            .filter(|r| r.version.is_none())
            .map(|r| r.model.clone())
            .collect();
        unpinned.sort();
        unpinned.dedup();
        let latest = if unpinned.is_empty() {
            Ok(HashMap::new())
        } else {
            sluice_db::ml::latest_versions(&self.pool, &unpinned).await
        };
        let latest = match latest {
            Ok(latest) => latest,
            Err(e) => {
                let error = unavailable(&e);
                for request in &requests {
                    outcomes[request.index] = Some(Err(error.clone()));
                }
                return finish(outcomes);
            }
        };
        // Each request's model version, or the reason it has none.
        let mut groups: BTreeMap<ModelKey, Vec<(usize, Box<RawValue>)>> = BTreeMap::new();
        let mut meta: HashMap<usize, (Uuid, DateTime<Utc>)> = HashMap::new();
        for request in requests {
            meta.insert(request.index, (request.id, request.created_at));
            let version = request
                .version
                .or_else(|| latest.get(&request.model).copied());
            match version {
                Some(version) => groups
                    .entry((request.model, version))
                    .or_default()
                    .push((request.index, request.data)),
                None => {
                    let answer = failed(format!("unknown model {:?}", request.model));
                    let job = &jobs[request.index];
                    outcomes[request.index] = Some(answer.and_then(|a| {
                        self.answerer
                            .publish(job, request.id, request.created_at, a)
                    }));
                }
            }
        }
        // One model version at a time: only it (and the cache) is held deserialized.
        for (key, requests) in groups {
            let model = match self.cache.get(&key) {
                Some(model) => Ok(model),
                None => match self.load(&key).await {
                    Ok(model) => model,
                    Err(e) => {
                        let error = unavailable(&e);
                        for (index, _) in requests {
                            outcomes[index] = Some(Err(error.clone()));
                        }
                        continue;
                    }
                },
            };
            let answered = match model {
                Ok(model) => self
                    .threads
                    .run(move || predict_group(&key, &model, &requests))
                    .await
                    .unwrap_or_else(|Panicked(text)| std::panic::panic_any(text)),
                Err(reason) => requests
                    .into_iter()
                    .map(|(index, _)| (index, failed(reason.clone())))
                    .collect(),
            };
            for (index, answer) in answered {
                let (id, created_at) = meta[&index];
                outcomes[index] = Some(
                    answer.and_then(|a| self.answerer.publish(&jobs[index], id, created_at, a)),
                );
            }
        }
        finish(outcomes)
    }
}

fn finish(outcomes: Vec<Option<Outcome>>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every job of the batch is answered"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::{train, Algorithm, TrainSpec};

    #[test]
    fn a_request_of_empty_records_cannot_take_the_memory_its_width_would() {
        // 150 categories: a width past 100, so each empty record (3 bytes of JSON) would
        // encode to over 800 bytes.
        let records: Vec<serde_json::Value> = (0..300)
            .map(|i| serde_json::json!({"c": format!("cat{}", i % 150), "y": i as f64}))
            .collect();
        let data = serde_json::json!({"records": records, "target": "y"}).to_string();
        let model = train(&TrainSpec {
            algorithm: Algorithm::DecisionTree,
            task: None,
            params: &serde_json::Map::new(),
            data: &data,
        })
        .unwrap()
        .model;
        assert!(model.width() > 100, "width {}", model.width());
        let rows = REQUEST_ENCODED_BYTES / (model.width() * 8) + 1;
        let huge = format!("{{\"records\": [{}{{}}]}}", "{}, ".repeat(rows - 1));
        let small = r#"{"records": [{"c": "cat3"}, {}]}"#;
        let requests = vec![
            (0, RawValue::from_string(huge).unwrap()),
            (1, RawValue::from_string(small.to_string()).unwrap()),
        ];
        let key = ("wide".to_string(), 1);
        let mut answers = predict_group(&key, &model, &requests);
        answers.sort_by_key(|(index, _)| *index);
        let text = |answer: &Answered| answer.as_ref().unwrap().get().to_string();
        assert!(
            text(&answers[0].1).contains("send fewer rows"),
            "{}",
            text(&answers[0].1)
        );
        let small: PredictOutput = serde_json::from_str(&text(&answers[1].1)).unwrap();
        assert_eq!(small.predictions.len(), 2);
    }

    #[test]
    fn rows_are_counted_without_being_built() {
        assert_eq!(row_count(r#"{"X": [[1.0], [2.0]]}"#), Some(2));
        assert_eq!(row_count(r#"{"records": [{}, {}, {}]}"#), Some(3));
        assert_eq!(row_count(r#"{"X": 5}"#), None);
        assert_eq!(row_count(r#"{"records": [], "records": [{}, {}]}"#), None);
    }
}
