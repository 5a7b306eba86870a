//! Whether a refusal that may mean a wrong key, URL or model (401, 403, 404, Gemini's invalid
//! key) is about every request or about one question. A proxy or filter in front of a working
//! provider refuses some prompts with these statuses too: taken as fatal, one such question
//! stopped every worker that took its partition, one after another.
//!
//! So such a refusal is checked with a probe, [`PROBE_QUESTION`], fixed and no user's:
//! - refused too (or any failure that stops the worker): the configuration is wrong for every
//!   request, and the worker stops with the probe's reason (fatal);
//! - accepted (answered, or refused for what it asked): only the question is refused, and it is
//!   dead-lettered with its status (permanent);
//! - failed otherwise (rate limited, down, out of time): nothing is known yet, and the question
//!   is retried (transient).
//!
//! Refusals that arrive together share a probe: any probe that started after a refusal arrived
//! speaks for it, so a worker with a revoked key and a thousand calls in flight sends one or two
//! probes, not a thousand.

use std::time::{Duration, Instant};

use sluice_core::{ErrorClass, HandlerError};
use tokio::sync::Mutex;

use super::{Provider, ProviderError};

/// What a probe asks: a few tokens, and nothing from any question.
pub const PROBE_QUESTION: &str = "Reply with one word: ok";

/// The probes of one worker: the latest, and whether the provider accepted it.
#[derive(Default)]
pub struct RefusalProbe {
    /// When the latest conclusive probe started, and what it said. Held while a probe runs, so
    /// that refusals arriving meanwhile wait for it rather than send their own.
    latest: Mutex<Option<(Instant, Verdict)>>,
}

/// What a conclusive probe said.
#[derive(Clone)]
enum Verdict {
    /// The provider took the probe: its key, URL and model work.
    Accepted,
    /// Refused as well: the fatal error that stops the worker.
    Refused(HandlerError),
}

impl RefusalProbe {
    /// What `error`, the provider's answer to a question, means for that question: a refusal
    /// that may be the configuration's is probed (within `timeout`), any other error means what
    /// it says.
    pub async fn meaning(
        &self,
        provider: &Provider,
        error: ProviderError,
        timeout: Option<Duration>,
    ) -> HandlerError {
        let Some(status) = error.configuration_status() else {
            return error.into();
        };
        let refused_at = Instant::now();
        let mut latest = self.latest.lock().await;
        let verdict = match &*latest {
            Some((started, verdict)) if *started >= refused_at => verdict.clone(),
            _ => {
                let started = Instant::now();
                let verdict = match probe(provider, timeout).await {
                    Ok(verdict) => verdict,
                    Err(open) => return retried(&error, open),
                };
                *latest = Some((started, verdict.clone()));
                verdict
            }
        };
        match verdict {
            Verdict::Accepted => HandlerError::permanent(
                ErrorClass::Refused,
                format!(
                    "the provider refused this question (HTTP {status}) but accepts a probe \
                     without it: a refusal of the question, not of the key, URL or model"
                ),
            ),
            Verdict::Refused(fatal) => fatal,
        }
    }
}

/// Asks the probe: its verdict, or the failure that leaves it open.
async fn probe(provider: &Provider, timeout: Option<Duration>) -> Result<Verdict, HandlerError> {
    let error = match provider.ask(PROBE_QUESTION, timeout).await {
        Ok(_) => return Ok(Verdict::Accepted),
        Err(error) => error,
    };
    match HandlerError::from(error) {
        HandlerError::Fatal { class, message } => Ok(Verdict::Refused(HandlerError::fatal(
            class,
            format!("{message} (a probe without any question's text was refused too)"),
        ))),
        // A malformed answer or another 4xx: the provider got past the key, URL and model.
        HandlerError::Permanent { .. } => Ok(Verdict::Accepted),
        open @ (HandlerError::Transient { .. } | HandlerError::Interrupted) => Err(open),
    }
}

/// The question's `refusal`, to be retried: the probe that would judge it failed with `open`
/// (its class and `Retry-After` kept).
fn retried(refusal: &ProviderError, open: HandlerError) -> HandlerError {
    match open {
        HandlerError::Transient {
            class,
            message,
            retry_after,
        } => HandlerError::Transient {
            class,
            message: format!(
                "{refusal}; the probe that tells a refused question from refused credentials \
                 failed: {message}"
            ),
            retry_after,
        },
        // Shutdown came first: the question is delivered again after the restart.
        interrupted => interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LlmConfig, ProviderKind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const COMPLETION: &str = r#"{"choices": [{"message": {"content": "ok"}}]}"#;

    /// An OpenAI-compatible server that answers the probe with `probe_status` (a completion
    /// when 200) and counts the probes; a provider asking it.
    async fn provider_whose_probe_gets(probe_status: u16) -> (Provider, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = probes.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 64 * 1024];
                let read = socket.read(&mut request).await.unwrap();
                let request = String::from_utf8_lossy(&request[..read]);
                assert!(request.contains(PROBE_QUESTION), "only probes: {request}");
                counted.fetch_add(1, Ordering::SeqCst);
                let body = if probe_status == 200 {
                    COMPLETION
                } else {
                    "{}"
                };
                let response = format!(
                    "HTTP/1.1 {probe_status} X\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
        });
        let provider = Provider::from_config(&LlmConfig {
            provider: ProviderKind::OpenAi,
            model: "m".into(),
            base_url: url,
            api_key: None,
            stub_latency: Duration::ZERO,
            stub_answers: None,
            reuse_validated: false,
            max_response_bytes: 1 << 20,
        })
        .unwrap();
        (provider, probes)
    }

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));

    #[tokio::test]
    async fn a_refusal_the_probe_does_not_share_is_the_question_s() {
        let (provider, probes) = provider_whose_probe_gets(200).await;
        let refusals = RefusalProbe::default();
        let forbidden = ProviderError::Unauthorized(403);
        let meaning = refusals.meaning(&provider, forbidden, TIMEOUT).await;
        assert!(
            matches!(&meaning, HandlerError::Permanent { class: ErrorClass::Refused, message }
                if message.contains("HTTP 403")),
            "{meaning:?}"
        );
        let meaning = refusals
            .meaning(&provider, ProviderError::NotFound, TIMEOUT)
            .await;
        assert!(meaning.message().contains("HTTP 404"), "{meaning:?}");
        // The second refusal came after the first probe started: it was probed again.
        assert_eq!(probes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refusals_that_arrive_during_a_probe_share_the_next() {
        let (provider, probes) = provider_whose_probe_gets(200).await;
        let refusals = RefusalProbe::default();
        let refused = || refusals.meaning(&provider, ProviderError::NotFound, TIMEOUT);
        // The first probes; the second and third arrive while it runs, so its answer is older
        // than they are: the second probes again, and the third takes that probe's answer.
        let meanings = tokio::join!(refused(), refused(), refused());
        for meaning in [meanings.0, meanings.1, meanings.2] {
            assert!(matches!(meaning, HandlerError::Permanent { .. }));
        }
        // (One, should the clock give the first probe's start and the others' arrival the same
        // instant.)
        assert!((1..=2).contains(&probes.load(Ordering::SeqCst)));
    }

    #[tokio::test]
    async fn a_refusal_the_probe_shares_stops_the_worker() {
        let (provider, _) = provider_whose_probe_gets(401).await;
        let meaning = RefusalProbe::default()
            .meaning(&provider, ProviderError::Unauthorized(401), TIMEOUT)
            .await;
        assert!(
            matches!(&meaning, HandlerError::Fatal { class: ErrorClass::Unauthorized, message }
                if message.contains("credentials refused (HTTP 401)")),
            "{meaning:?}"
        );
    }

    #[tokio::test]
    async fn a_probe_that_fails_otherwise_leaves_the_question_to_retry() {
        let (provider, _) = provider_whose_probe_gets(503).await;
        let meaning = RefusalProbe::default()
            .meaning(&provider, ProviderError::Unauthorized(403), TIMEOUT)
            .await;
        assert!(meaning.is_retryable(), "{meaning:?}");
        assert!(meaning.message().contains("HTTP 403"), "{meaning:?}");
    }

    #[tokio::test]
    async fn other_failures_send_no_probe() {
        let (provider, probes) = provider_whose_probe_gets(200).await;
        let refused = ProviderError::Refused {
            status: 422,
            detail: "no".into(),
        };
        let meaning = RefusalProbe::default()
            .meaning(&provider, refused, TIMEOUT)
            .await;
        assert!(matches!(meaning, HandlerError::Permanent { .. }));
        assert_eq!(probes.load(Ordering::SeqCst), 0);
    }
}
