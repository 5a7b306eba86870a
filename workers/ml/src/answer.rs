//! A job's answer as the message the persister stores: the one way both stages publish, so
//! that an answer too large for a message is a failed job rather than a dead letter.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sluice_core::kafka::MESSAGE_MAX_BYTES;
use sluice_core::{ErrorClass, HandlerError, Job, Outcome, Output};
use sluice_messages::ml::Failed;
use sluice_messages::{JobResult, Topics};
use uuid::Uuid;

/// Who answers, and where the answers go.
#[derive(Debug, Clone)]
pub struct Answerer {
    pub topics: Topics,
    /// The worker instance, kept on every answer.
    pub instance: String,
    /// `ml.train` or `ml.predict`.
    pub kind: &'static str,
}

impl Answerer {
    /// The result message of job `id` (consumed as `job`) answered `answer`. An answer the
    /// broker could never take (thousands of long labels) becomes the job's failure, which says
    /// so: a dead letter would count towards the stage's dead-letter cap.
    pub fn publish(
        &self,
        job: &Job,
        id: Uuid,
        created_at: DateTime<Utc>,
        answer: Box<RawValue>,
    ) -> Outcome {
        let output = self.output(job, id, created_at, answer)?;
        if output.size() <= MESSAGE_MAX_BYTES {
            return Ok(vec![output]);
        }
        let reason = format!(
            "the answer is {} bytes, over the {MESSAGE_MAX_BYTES} a message may hold; send fewer rows",
            output.size()
        );
        let failed = serde_json::value::to_raw_value(&Failed::new(reason))
            .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))?;
        Ok(vec![self.output(job, id, created_at, failed)?])
    }

    fn output(
        &self,
        job: &Job,
        id: Uuid,
        created_at: DateTime<Utc>,
        answer: Box<RawValue>,
    ) -> Result<Output, HandlerError> {
        let result = JobResult {
            id,
            kind: self.kind.to_string(),
            result: answer,
            worker: self.instance.clone(),
            attempts: job.attempt,
            created_at,
            finished_at: Utc::now(),
        };
        Output::json(self.topics.results(), id.to_string(), &result)
    }
}
