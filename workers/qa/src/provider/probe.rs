//! Whether a refusal (any 4xx but 429, Gemini's invalid key) is about every request or about
//! one question. A wrong key, URL, model or parameter, or an account out
//! of credit, meets every question with one; a proxy or filter in front of a working provider
//! refuses some prompts with the same statuses. Taken as fatal, one such question stopped every
//! worker that took its partition, one after another; taken as the question's, a wrong
//! configuration emptied the topic into the dead letters.
//!
//! So such a refusal is checked with a probe, [`PROBE_QUESTION`], fixed and no user's:
//! - refused too: the configuration is wrong for every request, and the worker stops with the
//!   probe's reason (fatal);
//! - answered (a malformed answer too: the provider took the request): only the question is
//!   refused, and it is dead-lettered with the refusal (permanent);
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

/// How long a probe the provider answered speaks for later refusals other than refused
/// credentials: a stream of questions refused for what they ask (a 400 for a prompt the
/// provider flags) costs one probe a minute, not one each. Refused credentials are probed again
/// every time: a key revoked since the last probe must stop the worker at once.
const ANSWERED_PROBE_HOLDS: Duration = Duration::from_secs(60);

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
        let Some(refusal) = error.refusal() else {
            return error.into();
        };
        let credentials = matches!(
            error,
            ProviderError::Unauthorized(_) | ProviderError::NotFound
        );
        let refused_at = Instant::now();
        let mut latest = self.latest.lock().await;
        let verdict = match &*latest {
            Some((started, verdict)) if *started >= refused_at => verdict.clone(),
            Some((started, Verdict::Accepted))
                if !credentials && started.elapsed() < ANSWERED_PROBE_HOLDS =>
            {
                Verdict::Accepted
            }
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
                    "the provider refused this question ({refusal}) but answers a probe \
                     without it: a refusal of the question, not of the configuration"
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
    if matches!(error, ProviderError::Malformed(_)) {
        // The provider took the request, whatever it made of it.
        return Ok(Verdict::Accepted);
    }
    match HandlerError::from(error) {
        HandlerError::Fatal { class, message } | HandlerError::Permanent { class, message } => {
            Ok(Verdict::Refused(HandlerError::fatal(
                class,
                format!("{message} (a probe without any question's text was refused too)"),
            )))
        }
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
    async fn any_refusal_the_probe_meets_too_stops_the_worker() {
        // An account out of credit: 402 for every request, the probe included.
        let (provider, probes) = provider_whose_probe_gets(402).await;
        let no_credit = ProviderError::Refused {
            status: 402,
            detail: "no credit".into(),
        };
        let meaning = RefusalProbe::default()
            .meaning(&provider, no_credit, TIMEOUT)
            .await;
        assert!(matches!(meaning, HandlerError::Fatal { .. }), "{meaning:?}");
        assert_eq!(probes.load(Ordering::SeqCst), 1);
        // A 422 for one question that the probe does not meet: that question's.
        let (provider, _) = provider_whose_probe_gets(200).await;
        let refused = ProviderError::Refused {
            status: 422,
            detail: "no".into(),
        };
        let meaning = RefusalProbe::default()
            .meaning(&provider, refused, TIMEOUT)
            .await;
        assert!(
            matches!(meaning, HandlerError::Permanent { .. }),
            "{meaning:?}"
        );
    }

    #[tokio::test]
    async fn an_answered_probe_speaks_for_a_minute_of_refused_questions_not_credentials() {
        let (provider, probes) = provider_whose_probe_gets(200).await;
        let refusals = RefusalProbe::default();
        let flagged = || ProviderError::Refused {
            status: 400,
            detail: "flagged".into(),
        };
        for _ in 0..3 {
            let meaning = refusals.meaning(&provider, flagged(), TIMEOUT).await;
            assert!(
                matches!(meaning, HandlerError::Permanent { .. }),
                "{meaning:?}"
            );
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1, "one probe for the three");
        refusals
            .meaning(&provider, ProviderError::Unauthorized(401), TIMEOUT)
            .await;
        assert_eq!(
            probes.load(Ordering::SeqCst),
            2,
            "refused credentials probe again"
        );
    }

    #[tokio::test]
    async fn other_failures_send_no_probe() {
        let (provider, probes) = provider_whose_probe_gets(200).await;
        let refusals = RefusalProbe::default();
        let meaning = refusals
            .meaning(&provider, ProviderError::Timeout, TIMEOUT)
            .await;
        assert!(meaning.is_retryable(), "{meaning:?}");
        let malformed = ProviderError::Malformed("no choices".into());
        let meaning = refusals.meaning(&provider, malformed, TIMEOUT).await;
        assert!(
            matches!(meaning, HandlerError::Permanent { .. }),
            "{meaning:?}"
        );
        assert_eq!(probes.load(Ordering::SeqCst), 0);
    }
}
