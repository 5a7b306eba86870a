//! The stub: no network, a fixed latency, deterministic answers. A question found in the
//! answers file (`LLM_STUB_ANSWERS`, JSONL of `{"question", "expected"}`, such as
//! `data/questions.jsonl`) is answered with its expected answer; any other gets
//! `Stub answer to: <question>`. The pipeline then runs end to end without a key.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::Asked;
use crate::config::LlmConfig;

pub struct Stub {
    model: String,
    latency: Duration,
    answers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Pair {
    question: String,
    expected: String,
}

impl Stub {
    pub fn from_config(config: &LlmConfig) -> anyhow::Result<Self> {
        let answers = match &config.stub_answers {
            None => HashMap::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("LLM_STUB_ANSWERS: cannot read {path}"))?;
                parse_answers(&text).with_context(|| format!("LLM_STUB_ANSWERS: {path}"))?
            }
        };
        Ok(Self {
            model: config.model.clone(),
            latency: config.stub_latency,
            answers,
        })
    }

    pub async fn ask(&self, question: &str) -> Asked {
        tokio::time::sleep(self.latency).await;
        let answer = self
            .answers
            .get(question.trim())
            .cloned()
            .unwrap_or_else(|| stub_answer(question));
        Asked {
            prompt_tokens: Some(words(question)),
            answer_tokens: Some(words(&answer)),
            answer,
            model: self.model.clone(),
        }
    }
}

/// The answer to a question the stub has no answer for (the Python example worker in
/// `examples/` gives the same).
pub fn stub_answer(question: &str) -> String {
    format!("Stub answer to: {}", question.trim())
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn parse_answers(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut answers = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair = serde_json::from_str(line).with_context(|| {
            format!(
                "line {}: expected {{\"question\", \"expected\"}}",
                number + 1
            )
        })?;
        answers.insert(pair.question.trim().to_string(), pair.expected);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_questions_get_their_answer_and_others_a_stub() {
        let stub = Stub {
            model: "stub-1".into(),
            latency: Duration::from_millis(20),
            answers: parse_answers(
                "{\"question\": \"Capital of Peru?\", \"expected\": \"Lima\"}\n\n",
            )
            .unwrap(),
        };
        let started = std::time::Instant::now();
        let known = stub.ask(" Capital of Peru? ").await;
        assert_eq!(known.answer, "Lima");
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(stub.ask("2+2?").await.answer, "Stub answer to: 2+2?");
        assert_eq!(stub.ask("2+2?").await, stub.ask("2+2?").await);
        assert!(parse_answers("{\"question\": 1}").is_err());
    }
}
