//! The compute worker (seed 002 on Kafka): basic arithmetic answered at once, and sum_squares
//! split into ranges that any compute worker may take. The persister assembles the parts.

pub mod calc;
pub mod live_workers;
pub mod sum_squares;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Number;
use sluice_core::config::WorkerConfig;
use sluice_core::topics::Topics;
use sluice_core::{Envelope, Handler, HandlerError, Job, JobResult, Outcome, Output, StageContext};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use calc::{CalcOutput, CalcRequest, Op};
use live_workers::LiveWorkers;
use sum_squares::PartRequest;

/// Envelope kind of a compute job.
pub const KIND_JOB: &str = "compute";
/// Envelope kind of one range of a split sum_squares job; its id is the job's.
pub const KIND_PART: &str = "compute.part";
/// Role name: consumer group, heartbeats, configuration prefix.
pub const ROLE: &str = "compute";

/// A computed range, published for the persister.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartResult {
    pub job_id: Uuid,
    pub part: u32,
    pub parts: u32,
    pub a: u64,
    pub b: u64,
    pub result: Number,
    pub worker: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

pub struct ComputeHandler {
    topics: Topics,
    instance: String,
    live_workers: LiveWorkers,
}

impl ComputeHandler {
    pub fn new(topics: Topics, instance: String, live_workers: LiveWorkers) -> Self {
        Self {
            topics,
            instance,
            live_workers,
        }
    }

    fn answer(&self, job: &Job, envelope: &Envelope, output: CalcOutput) -> Outcome {
        let result = JobResult {
            id: envelope.id,
            kind: envelope.kind.clone(),
            result: serde_json::value::to_raw_value(&output)
                .map_err(|e| HandlerError::permanent("serialize", e))?,
            worker: self.instance.clone(),
            attempts: job.attempt,
            created_at: envelope.created_at,
            finished_at: Utc::now(),
        };
        Ok(vec![Output::json(
            self.topics.results(),
            envelope.id.to_string(),
            &result,
        )?])
    }

    async fn calc(&self, job: &Job, envelope: &Envelope) -> Outcome {
        let request: CalcRequest = serde_json::from_str(envelope.payload.get())
            .map_err(|e| HandlerError::permanent("schema", format!("invalid compute job: {e}")))?;
        let op = Op::parse(&request.op).ok_or_else(|| {
            let shown: String = request.op.chars().take(40).collect();
            HandlerError::permanent("schema", format!("unknown op {shown:?}"))
        })?;
        if op != Op::SumSquares {
            let (Some(a), Some(b)) = (request.a, request.b) else {
                return Err(HandlerError::permanent(
                    "schema",
                    format!("{} needs a and b", op.name()),
                ));
            };
            return self.answer(job, envelope, calc::apply(op, a, b));
        }
        let Some(n) = &request.n else {
            return Err(HandlerError::permanent("schema", "sum_squares needs n"));
        };
        let parts = match request.parts {
            Some(parts) => parts,
            None => self.live_workers.count().await,
        };
        let ranges = sum_squares::parse_n(n).and_then(|n| sum_squares::split(n, parts));
        match ranges {
            Err(reason) => self.answer(job, envelope, CalcOutput::error(reason)),
            Ok(ranges) => ranges
                .into_iter()
                .map(|range| {
                    let part = Envelope {
                        id: envelope.id,
                        kind: KIND_PART.to_string(),
                        payload: range,
                        created_at: envelope.created_at,
                    };
                    Output::json(
                        self.topics.compute_parts(),
                        format!("{}:{}", envelope.id, range.part),
                        &part,
                    )
                })
                .collect(),
        }
    }

    fn part(&self, job: &Job, envelope: &Envelope) -> Outcome {
        let range: PartRequest = serde_json::from_str(envelope.payload.get())
            .map_err(|e| HandlerError::permanent("schema", format!("invalid part: {e}")))?;
        let result = sum_squares::sum_of_squares(range.a, range.b)
            .map_err(|reason| HandlerError::permanent("schema", reason))?;
        let done = PartResult {
            job_id: envelope.id,
            part: range.part,
            parts: range.parts,
            a: range.a,
            b: range.b,
            result,
            worker: self.instance.clone(),
            attempts: job.attempt,
            created_at: envelope.created_at,
            finished_at: Utc::now(),
        };
        Ok(vec![Output::json(
            self.topics.part_results(),
            format!("{}:{}", envelope.id, range.part),
            &done,
        )?])
    }
}

impl Handler for ComputeHandler {
    async fn handle(&self, job: &Job) -> Outcome {
        let envelope: Envelope<Box<RawValue>> = job.envelope()?;
        match envelope.kind.as_str() {
            KIND_JOB => self.calc(job, &envelope).await,
            KIND_PART => self.part(job, &envelope),
            other => {
                let shown: String = other.chars().take(40).collect();
                Err(HandlerError::permanent(
                    "schema",
                    format!("unknown job kind {shown:?}"),
                ))
            }
        }
    }
}

/// Runs a compute worker until `shutdown` fires.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(ROLE, 256, "0ms", 8)?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let live_workers = LiveWorkers::new(&ctx.kafka, ctx.topics.group(ROLE))?;
    let handler = ComputeHandler::new(
        ctx.topics.clone(),
        ctx.worker.instance_id.clone(),
        live_workers,
    );
    let inputs = [ctx.topics.compute_jobs(), ctx.topics.compute_parts()];
    sluice_core::run_stage(ctx, ROLE, &inputs, handler, shutdown).await?;
    Ok(())
}
