//! One HTTP client per worker, shared by all its calls (connections are reused), and what an
//! HTTP exchange means: the status classes, `Retry-After`, a bounded body.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ApiKey, ProviderError};
use crate::config::{LlmConfig, ProviderKind};

/// Longest part of an error body kept in a dead letter's reason.
const DETAIL_CHARS: usize = 300;
/// The longest `Retry-After` taken as it is. (The wait itself is a retry tier: one longer than
/// the longest tier waits the longest tier.)
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

pub struct Http {
    provider: ProviderKind,
    client: reqwest::Client,
    base_url: String,
    pub model: String,
    api_key: Option<ApiKey>,
    max_response_bytes: usize,
}

impl Http {
    pub fn new(config: &LlmConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // A redirect could carry the key's header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            provider: config.provider,
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
        let (body, unread) = self.read_body(&mut response).await;
        if status.is_success() {
            if let Some(error) = unread {
                return Err(error);
            }
            return serde_json::from_slice(&body)
                .map_err(|e| ProviderError::Malformed(self.shown(&e.to_string())));
        }
        // A failure's body is only detail: cut off or too large, what was read of it changes
        // nothing the status says.
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited { retry_after },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                ProviderError::Unauthorized(status.as_u16())
            }
            // Gemini answers a key it does not know with 400 INVALID_ARGUMENT, reason
            // API_KEY_INVALID: refused credentials all the same.
            StatusCode::BAD_REQUEST
                if self.provider == ProviderKind::Gemini && gemini_key_invalid(&body) =>
            {
                ProviderError::Unauthorized(status.as_u16())
            }
            StatusCode::NOT_FOUND => ProviderError::NotFound,
            StatusCode::REQUEST_TIMEOUT => ProviderError::Timeout,
            s if s.is_server_error() => ProviderError::Unavailable {
                message: format!("HTTP {}", s.as_u16()),
                retry_after,
            },
            s if s.is_redirection() => ProviderError::Misconfigured(format!(
                "the provider redirects (HTTP {}); set LLM_BASE_URL to where it points",
                s.as_u16()
            )),
            s => ProviderError::Refused {
                status: s.as_u16(),
                detail: self.shown(&String::from_utf8_lossy(&body)),
            },
        })
    }

    /// The body up to the size limit, and why the rest was not read, if it was not. A
    /// connection that breaks mid-body is a transport failure like any other (reqwest calls
    /// it a decode error; it is not the provider's JSON).
    async fn read_body(
        &self,
        response: &mut reqwest::Response,
    ) -> (Vec<u8>, Option<ProviderError>) {
        let mut body = Vec::new();
        loop {
            let error = match response.chunk().await {
                Ok(None) => return (body, None),
                Ok(Some(chunk)) if body.len() + chunk.len() > self.max_response_bytes => {
                    let room = self.max_response_bytes - body.len();
                    body.extend_from_slice(&chunk[..room]);
                    ProviderError::Malformed(format!(
                        "response over {} bytes",
                        self.max_response_bytes
                    ))
                }
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    continue;
                }
                Err(e) if e.is_timeout() => ProviderError::Timeout,
                Err(e) => ProviderError::Unavailable {
                    message: format!(
                        "response cut off: {}",
                        self.shown(&source_chain(&e.without_url()))
                    ),
                    retry_after: None,
                },
            };
            return (body, Some(error));
        }
    }

    /// A transport failure: the URL is left out (it names the host, and some APIs put keys
    /// there), and so is the key wherever else it might appear.
    fn transport(&self, error: reqwest::Error) -> ProviderError {
        if error.is_timeout() {
            return ProviderError::Timeout;
        }
        let builder = error.is_builder();
        let message = self.shown(&source_chain(&error.without_url()));
        if builder {
            // A URL or header that cannot be sent is the configuration's fault, the same for
            // every question.
            ProviderError::Misconfigured(message)
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

/// Whether a Gemini error body gives the reason `API_KEY_INVALID` (its `error.details`), read
/// as JSON: a question quoted back in an error must not pass for refused credentials.
fn gemini_key_invalid(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Error,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        reason: Option<String>,
    }
    serde_json::from_slice::<Body>(body).is_ok_and(|b| {
        b.error
            .details
            .iter()
            .any(|d| d.reason.as_deref() == Some("API_KEY_INVALID"))
    })
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with `response`, raw, then closes; its URL.
    async fn answer_once(response: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(&response).await;
        });
        url
    }

    async fn call(
        response: &str,
        max_response_bytes: usize,
    ) -> Result<serde_json::Value, ProviderError> {
        call_as(ProviderKind::Gemini, response, max_response_bytes).await
    }

    async fn call_as(
        provider: ProviderKind,
        response: &str,
        max_response_bytes: usize,
    ) -> Result<serde_json::Value, ProviderError> {
        let url = answer_once(response.as_bytes().to_vec()).await;
        let http = Http::new(&LlmConfig {
            provider,
            model: "m".into(),
            base_url: url,
            api_key: Some(ApiKey::new("k")),
            stub_latency: Duration::ZERO,
            stub_answers: None,
            reuse_validated: false,
            max_response_bytes,
        })
        .unwrap();
        let request = http.post("/chat", &serde_json::json!({}));
        http.exchange(request, Some(Duration::from_secs(5))).await
    }

    #[tokio::test]
    async fn a_body_cut_off_is_transient_not_malformed() {
        let cut = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"choices\": [";
        assert!(matches!(
            call(cut, 1 << 20).await,
            Err(ProviderError::Unavailable { .. })
        ));
        let whole = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\": 1}";
        assert_eq!(call(whole, 1 << 20).await.unwrap()["a"], 1);
        let nonsense = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc";
        assert!(matches!(
            call(nonsense, 1 << 20).await,
            Err(ProviderError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn statuses_mean_what_they_say_whatever_the_body() {
        // Bodies over the limit (2,100 bytes below).
        let padding = " ".repeat(3_000);
        let gemini_bad_key = format!(
            "{{\"error\": {{\"code\": 400, \"status\": \"INVALID_ARGUMENT\", {padding} \
             \"details\": [{{\"reason\": \"API_KEY_INVALID\"}}]}}}}"
        );
        type Expected = fn(&ProviderError) -> bool;
        let cases: Vec<(String, Expected)> = vec![
            (
                format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{gemini_bad_key}",
                    gemini_bad_key.len()
                ),
                |e| matches!(e, ProviderError::Unauthorized(400)),
            ),
            (
                format!(
                    "HTTP/1.1 429 Too Many\r\nretry-after: 3\r\ncontent-length: {}\r\n\r\n{padding}",
                    padding.len()
                ),
                |e| {
                    matches!(e, ProviderError::RateLimited { retry_after }
                        if *retry_after == Some(Duration::from_secs(3)))
                },
            ),
            (
                "HTTP/1.1 302 Found\r\nlocation: http://elsewhere.invalid/\r\ncontent-length: 0\r\n\r\n"
                    .to_string(),
                |e| matches!(e, ProviderError::Misconfigured(_)),
            ),
            (
                "HTTP/1.1 422 Unprocessable\r\ncontent-length: 5\r\n\r\nnope!".to_string(),
                |e| matches!(e, ProviderError::Refused { status: 422, detail } if detail == "nope!"),
            ),
        ];
        for (response, expected) in cases {
            // A body over the limit must not turn a failure into a malformed answer.
            let error = call(&response, 4_000).await.unwrap_err();
            assert!(expected(&error), "{response:.60}: {error:?}");
        }
        // Over the limit, a failure keeps what its status says.
        let limited = format!(
            "HTTP/1.1 429 Too Many\r\ncontent-length: {}\r\n\r\n{padding}",
            padding.len()
        );
        assert!(matches!(
            call(&limited, 1_024).await,
            Err(ProviderError::RateLimited { .. })
        ));
        // Only Gemini's own error says a key is invalid, read as JSON: another server quoting
        // a question back is refusing the question.
        let quoted = "{\"error\": \"cannot answer: API_KEY_INVALID\"}";
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{quoted}",
            quoted.len()
        );
        assert!(matches!(
            call(&response, 4_000).await,
            Err(ProviderError::Refused { status: 400, .. })
        ));
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{gemini_bad_key}",
            gemini_bad_key.len()
        );
        assert!(matches!(
            call_as(ProviderKind::OpenAi, &response, 4_000).await,
            Err(ProviderError::Refused { status: 400, .. })
        ));
    }

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
