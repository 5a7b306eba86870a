//! One HTTP client per worker, shared by all its calls (connections are reused), and what an
//! HTTP exchange means: the status classes, `Retry-After`, a bounded body.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ApiKey, ProviderError};
use crate::config::LlmConfig;

/// Longest part of an error body kept in a dead letter's reason.
const DETAIL_CHARS: usize = 300;
/// The longest `Retry-After` honoured; beyond it the retry policy's own delays apply.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

pub struct Http {
    client: reqwest::Client,
    base_url: String,
    pub model: String,
    api_key: Option<ApiKey>,
    max_response_bytes: usize,
}

impl Http {
    pub fn new(config: &LlmConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            base_url: config.base_url.clone(),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
            max_response_bytes: config.max_response_bytes,
        })
    }

    pub fn api_key(&self) -> Option<&ApiKey> {
        self.api_key.as_ref()
    }

    /// A POST of `body` as JSON to the base URL followed by `path`.
    pub fn post<B: Serialize>(&self, path: &str, body: &B) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base_url))
            .json(body)
    }

    /// Sends `request` and decodes a successful answer as `T`; every other outcome becomes the
    /// [`ProviderError`] it means.
    pub async fn exchange<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<T, ProviderError> {
        let request = match timeout {
            Some(timeout) => request.timeout(timeout),
            None => request,
        };
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(ProviderError::Malformed(format!(
                    "response over {} bytes",
                    self.max_response_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ProviderError::Malformed(self.shown(&e.to_string())));
        }
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited { retry_after },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                ProviderError::Unauthorized(status.as_u16())
            }
            StatusCode::NOT_FOUND => ProviderError::NotFound,
            StatusCode::REQUEST_TIMEOUT => ProviderError::Timeout,
            s if s.is_server_error() => ProviderError::Unavailable {
                message: format!("HTTP {}", s.as_u16()),
                retry_after,
            },
            s => ProviderError::Refused {
                status: s.as_u16(),
                detail: self.shown(&String::from_utf8_lossy(&body)),
            },
        })
    }

    /// A transport failure: the URL is left out (it names the host, and some APIs put keys
    /// there), and so is the key wherever else it might appear.
    fn transport(&self, error: reqwest::Error) -> ProviderError {
        if error.is_timeout() {
            return ProviderError::Timeout;
        }
        let decode = error.is_decode();
        let message = self.shown(&source_chain(&error.without_url()));
        if decode {
            ProviderError::Malformed(message)
        } else {
            ProviderError::Unavailable {
                message,
                retry_after: None,
            }
        }
    }

    /// `text` fit to show: the key cut out, at most [`DETAIL_CHARS`] characters.
    fn shown(&self, text: &str) -> String {
        let text = match &self.api_key {
            Some(key) => key.redact(text),
            None => text.to_string(),
        };
        text.chars().take(DETAIL_CHARS).collect()
    }
}

/// An error with its causes, which say what actually failed (refused, reset, DNS).
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A `Retry-After` in seconds. (The HTTP-date form is left to the retry policy's delays: LLM
/// APIs send seconds.)
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Bounded before the conversion, which panics on a value no `Duration` holds ("1e300").
    (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_is_read_in_seconds_and_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("inf"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("NaN"));
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&headers), None);
    }
}
