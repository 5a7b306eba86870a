//! Google's Generative Language REST API, `POST /models/<model>:generateContent`, the key in
//! the `x-goog-api-key` header (never in the URL, which errors and proxies print).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::http::Http;
use super::{Asked, ProviderError};

pub struct Gemini {
    http: Http,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Generated {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
}

impl Gemini {
    pub fn new(http: Http) -> Self {
        Self { http }
    }

    pub async fn ask(
        &self,
        question: &str,
        timeout: Option<Duration>,
    ) -> Result<Asked, ProviderError> {
        let body = json!({"contents": [{"role": "user", "parts": [{"text": question}]}]});
        let path = format!("/models/{}:generateContent", self.http.model);
        let mut request = self.http.post(&path, &body);
        if let Some(key) = self.http.api_key() {
            request = request.header("x-goog-api-key", key.expose());
        }
        let generated: Generated = self.http.exchange(request, timeout).await?;
        let Some(candidate) = generated.candidates.into_iter().next() else {
            return Err(ProviderError::Malformed("no candidate answer".into()));
        };
        let answer: String = candidate
            .content
            .map(|c| c.parts.into_iter().filter_map(|p| p.text).collect())
            .unwrap_or_default();
        if answer.trim().is_empty() {
            // A blocked answer (SAFETY, RECITATION) comes back empty: asking again gives the
            // same, so it is no transient failure.
            let reason = candidate.finish_reason.unwrap_or_else(|| "none".into());
            return Err(ProviderError::Malformed(format!(
                "no answer text (finish reason {})",
                reason.chars().take(40).collect::<String>()
            )));
        }
        let usage = generated.usage_metadata;
        Ok(Asked {
            answer,
            model: generated
                .model_version
                .unwrap_or_else(|| self.http.model.clone()),
            prompt_tokens: usage.as_ref().and_then(|u| u.prompt_token_count),
            answer_tokens: usage.as_ref().and_then(|u| u.candidates_token_count),
        })
    }
}
