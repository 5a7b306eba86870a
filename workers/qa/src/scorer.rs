//! The scoring stage (seed 004's Flink job): scores each answer against the question's
//! expected answer, then persists it (validated, or rejected with the best answer of every
//! ask) or asks again.

use chrono::Utc;
use sluice_core::{Cx, ErrorClass, Handler, HandlerError, Job, Outcome, Output};
use sluice_messages::qa::{self, Answer, QaOutcome, Question, Reply, ScoredReply, Verdict};
use sluice_messages::{Envelope, JobResult, Topics};

use crate::config::ScorerConfig;
use crate::similarity;

pub struct ScorerHandler {
    topics: Topics,
    config: ScorerConfig,
}

/// What becomes of one answer.
#[derive(Debug, PartialEq)]
enum Decision {
    Persist {
        status: Verdict,
        score: Option<f64>,
        reply: Reply,
    },
    AskAgain(Question),
}

impl ScorerHandler {
    pub fn new(topics: Topics, config: ScorerConfig) -> Self {
        Self { topics, config }
    }

    fn decide(&self, question: &Question, reply: Reply) -> Decision {
        let Some(expected) = &question.expected else {
            return Decision::Persist {
                status: Verdict::Validated,
                score: None,
                reply,
            };
        };
        let score = similarity::score(&reply.answer, expected);
        if score >= self.config.threshold {
            return Decision::Persist {
                status: Verdict::Validated,
                score: Some(score),
                reply,
            };
        }
        // The earlier best wins a tie: it was there first.
        let best = match &question.best {
            Some(best) if best.score >= score => best.clone(),
            _ => ScoredReply { reply, score },
        };
        if question.reasks < self.config.max_retries {
            return Decision::AskAgain(Question {
                reasks: question.reasks + 1,
                best: Some(best),
                ..question.clone()
            });
        }
        Decision::Persist {
            status: Verdict::Rejected,
            score: Some(best.score),
            reply: best.reply,
        }
    }
}

impl Handler for ScorerHandler {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        let envelope: Envelope<Answer> = crate::decode(job, "answer")?;
        envelope
            .payload
            .check()
            .map_err(|e| HandlerError::permanent(ErrorClass::Schema, e))?;
        let Answer {
            question,
            reply,
            attempts,
        } = envelope.payload;
        let id = envelope.id;
        match self.decide(&question, reply) {
            Decision::AskAgain(question) => {
                let again = Envelope {
                    id,
                    kind: qa::KIND.to_string(),
                    payload: question,
                    created_at: envelope.created_at,
                };
                Ok(vec![Output::json(
                    self.topics.qa_questions(),
                    id.to_string(),
                    &again,
                )?])
            }
            Decision::Persist {
                status,
                score,
                reply,
            } => {
                let outcome = QaOutcome {
                    ok: true,
                    status,
                    asks: question.reasks + 1,
                    question: question.question,
                    expected: question.expected,
                    score,
                    run_id: question.run_id,
                    reply,
                };
                let result = JobResult {
                    id,
                    kind: qa::KIND.to_string(),
                    result: serde_json::value::to_raw_value(&outcome)
                        .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))?,
                    worker: outcome.reply.worker.clone(),
                    attempts,
                    created_at: envelope.created_at,
                    finished_at: Utc::now(),
                };
                Ok(vec![Output::json(
                    self.topics.results(),
                    id.to_string(),
                    &result,
                )?])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scorer(max_retries: u32) -> ScorerHandler {
        ScorerHandler::new(
            Topics::new("t", &[]),
            ScorerConfig {
                threshold: 0.6,
                max_retries,
            },
        )
    }

    fn reply(answer: &str) -> Reply {
        Reply {
            answer: answer.into(),
            provider: "stub".into(),
            model: "stub-1".into(),
            latency_ms: 1,
            prompt_tokens: None,
            answer_tokens: None,
            worker: "w".into(),
            reused: false,
        }
    }

    #[test]
    fn unscored_questions_are_validated_and_good_answers_too() {
        let open = Question::new("Why?", None);
        assert!(matches!(
            scorer(2).decide(&open, reply("Because")),
            Decision::Persist {
                status: Verdict::Validated,
                score: None,
                ..
            }
        ));
        let asked = Question::new("Capital of Peru?", Some("Lima".into()));
        assert!(matches!(
            scorer(2).decide(&asked, reply("It is Lima")),
            Decision::Persist { status: Verdict::Validated, score: Some(s), .. } if s == 1.0
        ));
    }

    #[test]
    fn low_scores_ask_again_then_reject_with_the_best_answer() {
        let asked = Question::new("Capital of Peru, country?", Some("Lima Peru".into()));
        let Decision::AskAgain(again) = scorer(2).decide(&asked, reply("Peru")) else {
            panic!("a low score is asked again");
        };
        assert_eq!(again.reasks, 1);
        assert_eq!(again.best.as_ref().unwrap().score, 0.5);
        let Decision::AskAgain(last) = scorer(2).decide(&again, reply("no idea")) else {
            panic!("asked again while re-asks are left");
        };
        assert_eq!(last.reasks, 2);
        assert_eq!(last.best.as_ref().unwrap().reply.answer, "Peru");
        assert_eq!(
            scorer(2).decide(&last, reply("still no idea")),
            Decision::Persist {
                status: Verdict::Rejected,
                score: Some(0.5),
                reply: reply("Peru"),
            }
        );
        assert!(matches!(
            scorer(0).decide(&asked, reply("Peru")),
            Decision::Persist {
                status: Verdict::Rejected,
                ..
            }
        ));
    }
}
