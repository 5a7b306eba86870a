//! The compute worker (seed 002 on Kafka): basic arithmetic answered at once, and sum_squares
//! split into ranges, on an internal topic, that any compute worker may take. The persister
//! assembles the parts.

pub mod calc;
pub mod live_workers;
pub mod sum_squares;

use chrono::Utc;
use serde_json::value::RawValue;
use sluice_core::config::WorkerConfig;
use sluice_core::{
    Cx, ErrorClass, Execution, Handler, HandlerError, Job, Outcome, Output, Stage, StageContext,
};
use sluice_messages::compute::{
    CalcOutput, CalcRequest, PartRequest, PartResult, KIND_JOB, KIND_PART, ROLE,
};
use sluice_messages::{Envelope, JobResult, Topics};
use tokio_util::sync::CancellationToken;

use calc::Op;
use live_workers::LiveWorkers;

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
                .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))?,
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
        let request: CalcRequest = serde_json::from_str(envelope.payload.get()).map_err(|e| {
            HandlerError::permanent(ErrorClass::Schema, format!("invalid compute job: {e}"))
        })?;
        let op = Op::parse(&request.op).ok_or_else(|| {
            let shown: String = request.op.chars().take(40).collect();
            HandlerError::permanent(ErrorClass::Schema, format!("unknown op {shown:?}"))
        })?;
        if op != Op::SumSquares {
            let (Some(a), Some(b)) = (request.a, request.b) else {
                return Err(HandlerError::permanent(
                    ErrorClass::Schema,
                    format!("{} needs a and b", op.name()),
                ));
            };
            return self.answer(job, envelope, calc::apply(op, a, b));
        }
        let Some(n) = &request.n else {
            return Err(HandlerError::permanent(
                ErrorClass::Schema,
                "sum_squares needs n",
            ));
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
        let range: PartRequest = serde_json::from_str(envelope.payload.get()).map_err(|e| {
            HandlerError::permanent(ErrorClass::Schema, format!("invalid part: {e}"))
        })?;
        let result = sum_squares::sum_of_squares(range.a, range.b)
            .map_err(|reason| HandlerError::permanent(ErrorClass::Schema, reason))?;
        let done = PartResult {
            kind: KIND_PART.to_string(),
            job_id: envelope.id,
            n: range.n,
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
            self.topics.results(),
            format!("{}:{}", envelope.id, range.part),
            &done,
        )?])
    }
}

impl Handler for ComputeHandler {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        let envelope: Envelope<Box<RawValue>> = job.envelope()?;
        let from_parts = job.entered_on() == self.topics.compute_parts();
        match envelope.kind.as_str() {
            KIND_JOB if !from_parts => self.calc(job, &envelope).await,
            KIND_PART if from_parts => self.part(job, &envelope),
            KIND_JOB | KIND_PART => Err(HandlerError::permanent(
                ErrorClass::Schema,
                format!(
                    "a {} message does not belong on {}: jobs go to {}, and only compute \
                     workers write the ranges of split jobs, to {}",
                    envelope.kind,
                    job.entered_on(),
                    self.topics.compute_jobs(),
                    self.topics.compute_parts()
                ),
            )),
            other => {
                let shown: String = other.chars().take(40).collect();
                Err(HandlerError::permanent(
                    ErrorClass::Schema,
                    format!("unknown job kind {shown:?}"),
                ))
            }
        }
    }
}

/// Runs a compute worker until `shutdown` fires.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(ROLE)?;
    let execution = Execution::batches_from_env(ROLE, 256, "0ms", 8)?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let live_workers = LiveWorkers::new(&ctx.kafka, ctx.topics.group(ROLE))?;
    let handler = ComputeHandler::new(
        ctx.topics.clone(),
        ctx.worker.instance_id.clone(),
        live_workers,
    );
    let inputs = vec![ctx.topics.compute_jobs(), ctx.topics.compute_parts()];
    sluice_core::run_stage(ctx, Stage::new(ROLE, inputs, execution), handler, shutdown).await?;
    Ok(())
}
