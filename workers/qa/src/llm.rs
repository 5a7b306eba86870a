//! The LLM worker's handler: a question in, an answer out (to the scoring stage), or the
//! failure the provider's response means.

use std::time::{Duration, Instant};

use sluice_core::{Cx, ErrorClass, Handler, HandlerError, Job, Outcome, Output};
use sluice_messages::qa::{self, Answer, Question, Reply};
use sluice_messages::{Envelope, Topics};
use sqlx::PgPool;

use crate::provider::probe::RefusalProbe;
use crate::provider::Provider;

/// The longest a question waits for the validated-answer look-up before it is asked anyway.
const LOOKUP_BUDGET: Duration = Duration::from_millis(500);

pub struct LlmHandler {
    topics: Topics,
    instance: String,
    provider: Provider,
    /// Tells a question the provider refuses from a key, URL or model it refuses.
    refusals: RefusalProbe,
    /// Where validated answers are looked up before asking; none when reuse is off.
    answers: Option<PgPool>,
}

impl LlmHandler {
    pub fn new(
        topics: Topics,
        instance: String,
        provider: Provider,
        answers: Option<PgPool>,
    ) -> Self {
        Self {
            topics,
            instance,
            provider,
            refusals: RefusalProbe::default(),
            answers,
        }
    }

    /// A validated answer stored for the same question, when reuse is on. Only first asks:
    /// a re-ask comes from a low score, so there was none. A database that cannot say within
    /// [`LOOKUP_BUDGET`] is no reason to hold the question: it is asked instead. (Without the
    /// bound, a burst of questions queued on the pool's few connections spent the calls'
    /// whole timeout before any call started.)
    async fn stored_reply(&self, question: &Question) -> Option<Reply> {
        let pool = self.answers.as_ref().filter(|_| question.reasks == 0)?;
        let lookup = sluice_db::qa::validated_reply(pool, &question.question);
        match tokio::time::timeout(LOOKUP_BUDGET, lookup).await {
            Ok(Ok(found)) => found.map(|reply| Reply {
                reused: true,
                ..reply
            }),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot look up validated answers; asking the LLM");
                None
            }
            Err(_) => None,
        }
    }

    async fn ask(&self, question: &Question, cx: &Cx) -> Result<Reply, HandlerError> {
        let started = Instant::now();
        let asked = match self.provider.ask(&question.question, cx.remaining()).await {
            Ok(asked) => asked,
            Err(error) => {
                let meaning = self.refusals.meaning(&self.provider, error, cx.remaining());
                return Err(meaning.await);
            }
        };
        Ok(Reply {
            answer: asked.answer,
            provider: self.provider.kind().as_str().to_string(),
            model: asked.model,
            latency_ms: started.elapsed().as_millis() as u64,
            prompt_tokens: asked.prompt_tokens,
            answer_tokens: asked.answer_tokens,
            worker: self.instance.clone(),
            reused: false,
        })
    }
}

impl Handler for LlmHandler {
    async fn handle(&self, job: &Job, cx: &Cx) -> Outcome {
        let envelope: Envelope<Question> = crate::decode(job, "question")?;
        let question = envelope.payload;
        question
            .check()
            .map_err(|e| HandlerError::permanent(ErrorClass::Schema, e))?;
        let reply = match self.stored_reply(&question).await {
            Some(reply) => reply,
            None => self.ask(&question, cx).await?,
        };
        let answer = Envelope {
            id: envelope.id,
            kind: qa::KIND.to_string(),
            payload: Answer {
                question,
                reply,
                attempts: job.attempt,
            },
            created_at: envelope.created_at,
        };
        Ok(vec![Output::json(
            self.topics.qa_answers(),
            envelope.id.to_string(),
            &answer,
        )?])
    }
}
