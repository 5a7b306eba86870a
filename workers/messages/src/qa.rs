//! Question answering (seeds 003 and 004): a question as published, the answer an LLM worker
//! gives, and the outcome the scoring stage persists.
//!
//! A question travels as an [`Envelope`](crate::Envelope) of kind [`KIND`] whose id names it
//! from first ask to stored row. The LLM worker answers it on the answers topic ([`Answer`]);
//! the scoring stage either publishes its [`QaOutcome`] as a job result for the persister or
//! publishes the question again, with `reasks` one higher and the best answer so far, for a new
//! answer.

use serde::{Deserialize, Serialize};

/// Envelope and result kind of a question.
pub const KIND: &str = "qa";
/// Role of the LLM workers: consumer group, heartbeats, `LLM_*` configuration.
pub const LLM_ROLE: &str = "llm";
/// Role of the scoring stage.
pub const SCORER_ROLE: &str = "scorer";
/// Longest question, expected answer or run id accepted, in bytes: a prompt is not a payload.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
/// Longest run id, in bytes.
pub const MAX_RUN_ID_BYTES: usize = 128;
/// Most re-asks a question may carry: far above any sane `MAX_SCORE_RETRIES`, and low enough
/// that counting one more can never overflow.
pub const MAX_REASKS: u32 = 1_000;

/// A question: `{"question": "¿Cuál es la capital de Perú?", "expected": "Lima"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub question: String,
    /// The answer to score against; without it an answer is validated unscored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// Tags the questions of one traffic run, for `sluice qa results --run-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// How many times the scoring stage asked again after a low score (0 on the first ask).
    #[serde(default)]
    pub reasks: u32,
    /// The best-scored answer of the earlier asks, kept so a rejection can report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<ScoredReply>,
}

impl Question {
    pub fn new(question: impl Into<String>, expected: Option<String>) -> Self {
        Self {
            question: question.into(),
            expected,
            run_id: None,
            reasks: 0,
            best: None,
        }
    }

    /// Why the question cannot be asked, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.question.trim().is_empty() {
            return Err("the question is empty".into());
        }
        if self.expected.as_ref().is_some_and(|e| e.trim().is_empty()) {
            // It could never be matched: leave it out to have the answer validated unscored.
            return Err("the expected answer is empty".into());
        }
        for (what, text) in [
            ("question", Some(&self.question)),
            ("expected answer", self.expected.as_ref()),
        ] {
            if text.is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
                return Err(format!("the {what} is over {MAX_TEXT_BYTES} bytes"));
            }
        }
        if self
            .run_id
            .as_ref()
            .is_some_and(|r| r.len() > MAX_RUN_ID_BYTES)
        {
            return Err(format!("the run id is over {MAX_RUN_ID_BYTES} bytes"));
        }
        if self.reasks > MAX_REASKS {
            return Err(format!("reasks is over {MAX_REASKS}"));
        }
        if let Some(best) = &self.best {
            best.check()?;
        }
        Ok(())
    }
}

/// What a provider said, and who asked it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub answer: String,
    /// `stub`, `openai` or `gemini`.
    pub provider: String,
    pub model: String,
    /// Time the provider took, from request sent to answer read.
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_tokens: Option<u64>,
    /// The LLM worker instance that asked.
    pub worker: String,
    /// Taken from an earlier validated answer to the same question instead of asking again.
    #[serde(default)]
    pub reused: bool,
}

impl Reply {
    /// Counts the `qa_results` view casts to `bigint` must fit one.
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            Some(self.latency_ms),
            self.prompt_tokens,
            self.answer_tokens,
        ];
        if counts
            .into_iter()
            .flatten()
            .any(|n| i64::try_from(n).is_err())
        {
            return Err("a latency or token count is out of range".into());
        }
        Ok(())
    }
}

/// A reply with its score against the expected answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoredReply {
    pub reply: Reply,
    pub score: f64,
}

impl ScoredReply {
    pub fn check(&self) -> Result<(), String> {
        check_score(self.score)?;
        self.reply.check()
    }
}

fn check_score(score: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&score) {
        Ok(())
    } else {
        Err(format!("score {score} is not in [0, 1]"))
    }
}

/// An LLM worker's answer, for the scoring stage: the question as it was asked, and the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub question: Question,
    pub reply: Reply,
    /// Deliveries this ask took (1 unless failures went through the retry tiers).
    pub attempts: u32,
}

impl Answer {
    /// Why the scoring stage cannot judge this answer, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        self.question.check()?;
        self.reply.check()
    }
}

/// How a question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Scored at or above the threshold, or had no expected answer to score against.
    Validated,
    /// Every ask scored below the threshold; the best answer is kept.
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validated => "validated",
            Self::Rejected => "rejected",
        }
    }
}

/// The stored result of a question (the `result` of its job row, read by the `qa_results`
/// view). `ok` is true for both verdicts: a rejection is an answer, not a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaOutcome {
    pub ok: bool,
    pub status: Verdict,
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// None when there was nothing to score against.
    pub score: Option<f64>,
    /// Times the question was put to an LLM (1 + re-asks).
    pub asks: u32,
    /// The answer kept: the validated one, or the best-scored one when rejected.
    pub reply: Reply,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl QaOutcome {
    pub fn check(&self) -> Result<(), String> {
        if !self.ok {
            return Err("a question's outcome is always ok (rejections included)".into());
        }
        match (self.status, self.score, &self.expected) {
            (_, Some(score), Some(_)) => check_score(score),
            (Verdict::Validated, None, None) => Ok(()),
            (_, None, Some(_)) => Err("a scored question needs its score".into()),
            (Verdict::Rejected, _, None) => {
                Err("a question without an expected answer cannot be rejected".into())
            }
            (Verdict::Validated, Some(_), None) => Err("a score needs an expected answer".into()),
        }
        .and_then(|()| {
            // The question's own bounds, which also keep the run id small enough to index.
            Question {
                run_id: self.run_id.clone(),
                ..Question::new(self.question.clone(), self.expected.clone())
            }
            .check()
        })
        .and_then(|()| {
            // The view casts asks to `integer`.
            if self.asks == 0 || i32::try_from(self.asks).is_err() {
                Err(format!("asks must be from 1 to {}", i32::MAX))
            } else {
                self.reply.check()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Reply {
        Reply {
            answer: "Lima".into(),
            provider: "stub".into(),
            model: "stub-1".into(),
            latency_ms: 3,
            prompt_tokens: Some(6),
            answer_tokens: None,
            worker: "llm-1".into(),
            reused: false,
        }
    }

    #[test]
    fn a_minimal_question_decodes_with_defaults() {
        let q: Question = serde_json::from_str(r#"{"question": "2+2?"}"#).unwrap();
        assert_eq!(q, Question::new("2+2?", None));
        assert!(q.check().is_ok());
        assert!(serde_json::from_str::<Question>(r#"{"question": "x", "extra": 1}"#).is_err());
        assert!(Question::new("  ", None).check().is_err());
        assert!(Question::new("x".repeat(MAX_TEXT_BYTES + 1), None)
            .check()
            .is_err());
        let endless = Question {
            reasks: u32::MAX,
            ..Question::new("x", None)
        };
        assert!(endless.check().is_err());
    }

    #[test]
    fn outcomes_are_consistent_or_refused() {
        let outcome = QaOutcome {
            ok: true,
            status: Verdict::Validated,
            question: "capital of Peru?".into(),
            expected: Some("Lima".into()),
            score: Some(1.0),
            asks: 1,
            reply: reply(),
            run_id: None,
        };
        assert!(outcome.check().is_ok());
        let text = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<QaOutcome>(&text).unwrap(), outcome);
        for broken in [
            QaOutcome {
                score: Some(1.5),
                ..outcome.clone()
            },
            QaOutcome {
                score: None,
                ..outcome.clone()
            },
            QaOutcome {
                expected: None,
                status: Verdict::Rejected,
                score: None,
                ..outcome.clone()
            },
            QaOutcome {
                asks: 0,
                ..outcome.clone()
            },
            QaOutcome {
                ok: false,
                ..outcome.clone()
            },
            QaOutcome {
                asks: u32::MAX,
                ..outcome.clone()
            },
            QaOutcome {
                run_id: Some("r".repeat(MAX_RUN_ID_BYTES + 1)),
                ..outcome.clone()
            },
            QaOutcome {
                reply: Reply {
                    latency_ms: u64::MAX,
                    ..reply()
                },
                ..outcome.clone()
            },
        ] {
            assert!(broken.check().is_err(), "{broken:?}");
        }
    }
}
