//! The prediction stage's handler. A batch's requests are grouped by model version; each
//! group's rows are encoded and predicted at once, on the prediction threads, then split back
//! into one answer per request. "Latest" is resolved once per batch, so a version stored
//! before a request was published serves it, with no restart and no cache to expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sluice_core::blocking::{BlockingPool, Panicked};
use sluice_core::{Cx, ErrorClass, Handler, HandlerError, Job, Outcome, Output};
use sluice_messages::ml::{self, Failed, PredictOutput, PredictRequest};
use sluice_messages::{Envelope, JobResult, Topics};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::{ModelCache, ModelKey};
use crate::config::MlConfig;
use crate::learn::{Encoded, Model};

pub struct PredictorHandler {
    topics: Topics,
    instance: String,
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
            topics,
            instance,
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

    /// Each requested version's model, or why it has none.
    async fn models(
        &self,
        wanted: impl Iterator<Item = ModelKey>,
    ) -> Result<HashMap<ModelKey, Result<Arc<Model>, String>>, sqlx::Error> {
        let mut models = HashMap::new();
        for key in wanted {
            if models.contains_key(&key) {
                continue;
            }
            let model = match self.cache.get(&key) {
                Some(model) => Ok(model),
                None => self.load(&key).await?,
            };
            models.insert(key, model);
        }
        Ok(models)
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

    fn publish(
        &self,
        job: &Job,
        request_id: Uuid,
        created_at: DateTime<Utc>,
        answer: Box<RawValue>,
    ) -> Outcome {
        let result = JobResult {
            id: request_id,
            kind: ml::KIND_PREDICT.to_string(),
            result: answer,
            worker: self.instance.clone(),
            attempts: job.attempt,
            created_at,
            finished_at: Utc::now(),
        };
        Ok(vec![Output::json(
            self.topics.results(),
            request_id.to_string(),
            &result,
        )?])
    }
}

fn failed(reason: String) -> Answered {
    serde_json::value::to_raw_value(&Failed::new(reason))
        .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))
}

/// Encodes every request of one model version, predicts all their rows at once, and splits the
/// predictions back: one answer per request, in the order given.
fn predict_group(
    key: &ModelKey,
    model: &Model,
    requests: &[(usize, Box<RawValue>)],
) -> Vec<(usize, Answered)> {
    let mut answers = Vec::with_capacity(requests.len());
    let mut encoded = Vec::with_capacity(requests.len());
    for (index, data) in requests {
        match model.encode(data.get()) {
            Ok(rows) => encoded.push((*index, rows)),
            Err(e) => answers.push((*index, failed(e.to_string()))),
        }
    }
    let answer = |predictions: Vec<serde_json::Value>| {
        serde_json::value::to_raw_value(&PredictOutput {
            ok: true,
            model: key.0.clone(),
            version: key.1,
            predictions,
        })
        .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))
    };
    let parts: Vec<Encoded> = encoded.iter().map(|(_, rows)| rows.clone()).collect();
    match model.predict(&Encoded::concat(&parts)) {
        Ok(predictions) => {
            let mut predictions = predictions.into_iter();
            for (index, rows) in &encoded {
                answers.push((
                    *index,
                    answer(predictions.by_ref().take(rows.rows()).collect()),
                ));
            }
        }
        // One request's rows spoiled the whole: each is predicted alone, so only it fails.
        Err(_) => {
            for (index, rows) in &encoded {
                let alone = model
                    .predict(rows)
                    .map_err(|e| e.to_string())
                    .map_or_else(failed, answer);
                answers.push((*index, alone));
            }
        }
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
                        Some(answer.and_then(|a| self.publish(job, id, created_at, a)));
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
                    outcomes[request.index] = Some(
                        answer.and_then(|a| self.publish(job, request.id, request.created_at, a)),
                    );
                }
            }
        }
        let models = match self.models(groups.keys().cloned()).await {
            Ok(models) => models,
            Err(e) => {
                let error = unavailable(&e);
                for (index, _) in groups.values().flatten() {
                    outcomes[*index] = Some(Err(error.clone()));
                }
                return finish(outcomes);
            }
        };
        let mut work = Vec::new();
        for (key, requests) in groups {
            match models
                .get(&key)
                .cloned()
                .expect("every group's model was looked up")
            {
                Ok(model) => work.push((key, model, requests)),
                Err(reason) => {
                    for (index, _) in requests {
                        let (id, created_at) = meta[&index];
                        outcomes[index] = Some(
                            failed(reason.clone())
                                .and_then(|a| self.publish(&jobs[index], id, created_at, a)),
                        );
                    }
                }
            }
        }
        let answered = self
            .threads
            .run(move || {
                work.iter()
                    .flat_map(|(key, model, requests)| predict_group(key, model, requests))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|Panicked(text)| std::panic::panic_any(text));
        for (index, answer) in answered {
            let (id, created_at) = meta[&index];
            outcomes[index] =
                Some(answer.and_then(|a| self.publish(&jobs[index], id, created_at, a)));
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
