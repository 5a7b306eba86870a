//! Any OpenAI-compatible `POST /chat/completions` (OpenAI, vLLM, Ollama, llama.cpp's server):
//! the key, if any, as a bearer token.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::http::Http;
use super::{Asked, ProviderError};

pub struct OpenAi {
    http: Http,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl OpenAi {
    pub fn new(http: Http) -> Self {
        Self { http }
    }

    pub async fn ask(
        &self,
        question: &str,
        timeout: Option<Duration>,
    ) -> Result<Asked, ProviderError> {
        let body = json!({
            "model": self.http.model,
            "messages": [{"role": "user", "content": question}],
        });
        let mut request = self.http.post("/chat/completions", &body);
        if let Some(key) = self.http.api_key() {
            request = request.bearer_auth(key.expose());
        }
        let completion: Completion = self.http.exchange(request, timeout).await?;
        let answer = completion
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .filter(|answer| !answer.trim().is_empty())
            .ok_or_else(|| ProviderError::Malformed("the completion has no answer".into()))?;
        Ok(Asked {
            answer,
            model: completion.model.unwrap_or_else(|| self.http.model.clone()),
            prompt_tokens: completion.usage.as_ref().and_then(|u| u.prompt_tokens),
            answer_tokens: completion.usage.as_ref().and_then(|u| u.completion_tokens),
        })
    }
}
