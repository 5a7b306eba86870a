//! The LLM workers' and the scoring stage's settings, read once from the environment.

use std::time::Duration;

use sluice_core::config::{env_duration, env_f64, env_or, env_string, ConfigError};
use sluice_messages::qa::MAX_REASKS;

use crate::provider::ApiKey;

/// Which kind of LLM the workers ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Deterministic answers after a fixed latency, no network.
    Stub,
    /// Any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, Ollama, llama.cpp).
    OpenAi,
    /// Google's Generative Language REST API.
    Gemini,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stub => "stub",
            Self::OpenAi => "openai",
            Self::Gemini => "gemini",
        }
    }

    fn default_model(self) -> &'static str {
        match self {
            Self::Stub => "stub-1",
            Self::OpenAi => "gpt-4o-mini",
            Self::Gemini => "gemini-2.0-flash",
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Self::Stub => "",
            Self::OpenAi => "https://api.openai.com/v1",
            Self::Gemini => "https://generativelanguage.googleapis.com/v1beta",
        }
    }
}

/// What an LLM worker asks, and how.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub provider: ProviderKind,
    pub model: String,
    /// Where the provider's API is; the path of each call is appended to it.
    pub base_url: String,
    /// Only from the environment; never logged (its `Debug` hides it).
    pub api_key: Option<ApiKey>,
    /// How long the stub takes to answer.
    pub stub_latency: Duration,
    /// A JSONL file of `{"question", "expected"}` pairs the stub answers from; other
    /// questions get `Stub answer to: <question>`.
    pub stub_answers: Option<String>,
    /// Whether a question with a validated answer in the database gets that answer instead of
    /// a new call (seed 004 asked its storage first).
    pub reuse_validated: bool,
    /// Largest answer read from a provider, in bytes.
    pub max_response_bytes: usize,
}

impl LlmConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let raw = env_string("LLM_PROVIDER", "stub");
        let provider = match raw.trim().to_ascii_lowercase().as_str() {
            "stub" => ProviderKind::Stub,
            "openai" => ProviderKind::OpenAi,
            "gemini" => ProviderKind::Gemini,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "LLM_PROVIDER".into(),
                    value: raw,
                    reason: "must be stub, openai or gemini".into(),
                })
            }
        };
        let api_key = std::env::var("LLM_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|k| ApiKey::new(k.trim()));
        if provider == ProviderKind::Gemini && api_key.is_none() {
            return Err(ConfigError::Invalid {
                name: "LLM_API_KEY".into(),
                value: String::new(),
                reason: "the gemini provider needs an API key".into(),
            });
        }
        if let Some(key) = &api_key {
            if reqwest::header::HeaderValue::from_str(key.expose()).is_err() {
                // Not the value: it is a secret.
                return Err(invalid(
                    "LLM_API_KEY",
                    "(hidden)",
                    "holds characters no HTTP header may",
                ));
            }
        }
        let stub_answers = Some(env_string("LLM_STUB_ANSWERS", "")).filter(|p| !p.is_empty());
        let config = Self {
            provider,
            model: env_string("LLM_MODEL", provider.default_model()),
            base_url: env_string("LLM_BASE_URL", provider.default_base_url())
                .trim_end_matches('/')
                .to_string(),
            api_key,
            stub_latency: env_duration("LLM_STUB_LATENCY", "100ms")?,
            stub_answers,
            reuse_validated: env_or("LLM_REUSE_VALIDATED", true)?,
            max_response_bytes: env_or("LLM_MAX_RESPONSE_BYTES", 1 << 20)?,
        };
        if provider != ProviderKind::Stub {
            let scheme = reqwest::Url::parse(&config.base_url).map(|url| url.scheme().to_string());
            if !matches!(scheme.as_deref(), Ok("http" | "https")) {
                // Not the value: a URL may carry credentials.
                return Err(invalid(
                    "LLM_BASE_URL",
                    "(not shown)",
                    format!(
                        "must be an http:// or https:// URL, e.g. {}",
                        provider.default_base_url()
                    ),
                ));
            }
        }
        if config.max_response_bytes < 1_024 {
            return Err(invalid(
                "LLM_MAX_RESPONSE_BYTES",
                &config.max_response_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        Ok(config)
    }
}

fn invalid(name: &str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        name: name.into(),
        value: value.into(),
        reason: reason.to_string(),
    }
}

/// When the scoring stage accepts an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScorerConfig {
    /// Lowest similarity (see [`crate::similarity`]) that validates an answer.
    pub threshold: f64,
    /// Re-asks after a low score before the question is rejected with its best answer.
    pub max_retries: u32,
}

impl ScorerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let threshold = env_f64("SCORE_THRESHOLD", 0.6)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(ConfigError::Invalid {
                name: "SCORE_THRESHOLD".into(),
                value: threshold.to_string(),
                reason: "must be in [0, 1]".into(),
            });
        }
        let max_retries = env_or("MAX_SCORE_RETRIES", 2)?;
        if max_retries > MAX_REASKS {
            return Err(invalid(
                "MAX_SCORE_RETRIES",
                &max_retries.to_string(),
                format!("must be at most {MAX_REASKS}"),
            ));
        }
        Ok(Self {
            threshold,
            max_retries,
        })
    }
}
