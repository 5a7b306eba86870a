//! The router, the state its handlers share, and what each request gets.
//!
//! A request's outcome is decided as soon as it arrives, in this order: a wrong or missing key
//! (401), a body of the wrong shape (400), a question `--refuse` names (its status), one draw
//! among the failure shares (429, 500, hang, malformed), one draw for a wrong answer, then the
//! latency sleep and the answer. It is logged in `GET /calls` with that outcome's status before
//! any sleep, so a test sees a hanging request at once. 4xx answers never sleep.
//!
//! The two locks (the random generator and the call log) are std mutexes held for a few
//! instructions and never across an `.await`, so thousands of sleeping requests cost nothing.

use crate::answers::Answers;
use crate::api::{self, Api, Prompt};
use crate::config::Config;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `GET /calls` keeps this many requests, dropping the oldest, so a long benchmark stays bounded.
pub const MAX_CALLS: usize = 1_000_000;

/// The answer given on the `--wrong-share` of requests.
pub const WRONG_ANSWER: &str = "I do not know.";

/// Checks `config`, loads its answers and builds the router.
pub fn router(config: Config) -> anyhow::Result<Router> {
    config.validate()?;
    let answers = match &config.answers {
        Some(path) => Answers::load(path)?,
        None => Answers::default(),
    };
    let app = App {
        rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
        config,
        answers,
        calls: Mutex::new(VecDeque::new()),
        next_id: AtomicU64::new(1),
    };
    Ok(Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1beta/models/{model_and_method}", post(gemini))
        .route("/calls", get(calls))
        .route("/health", get(|| async { "ok" }))
        .with_state(Arc::new(app)))
}

struct App {
    config: Config,
    answers: Answers,
    rng: Mutex<SmallRng>,
    calls: Mutex<VecDeque<Call>>,
    /// Numbers the chat completion ids.
    next_id: AtomicU64,
}

/// One entry of `GET /calls`.
#[derive(Serialize)]
struct Call {
    /// Null when the body could not be read.
    question: Option<String>,
    /// Unix milliseconds at arrival.
    at_ms: u64,
    /// The status the request got, or will get once its sleep is over.
    status: u16,
    api: Api,
}

/// What a well-formed, authorized request gets, drawn from the shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    RateLimited,
    ServerError,
    Hang,
    Malformed,
    Wrong,
    Right,
}

impl Outcome {
    fn status(self) -> StatusCode {
        match self {
            Outcome::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Outcome::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::Hang => StatusCode::GATEWAY_TIMEOUT,
            Outcome::Malformed | Outcome::Wrong | Outcome::Right => StatusCode::OK,
        }
    }
}

/// The outcome for two uniform draws in [0, 1): the failure shares split the first draw's range
/// one after the other, and the second decides between a wrong and a right answer.
fn pick(config: &Config, fail_draw: f64, wrong_draw: f64) -> Outcome {
    let failures = [
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::Hang,
        Outcome::Malformed,
    ];
    let mut edge = 0.0;
    for ((_, share), outcome) in config.failure_shares().into_iter().zip(failures) {
        edge += share;
        if fail_draw < edge {
            return outcome;
        }
    }
    if wrong_draw < config.wrong_share {
        Outcome::Wrong
    } else {
        Outcome::Right
    }
}

async fn openai(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = header(&headers, AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "));
    app.respond(Api::OpenAi, key, api::parse_openai(&body))
        .await
}

async fn gemini(
    State(app): State<Arc<App>>,
    Path(model_and_method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query_key = query.as_deref().and_then(key_in_query);
    let key = header(&headers, "x-goog-api-key").or(query_key.as_deref());
    let prompt = api::parse_gemini(&model_and_method, &body);
    app.respond(Api::Gemini, key, prompt).await
}

async fn calls(State(app): State<Arc<App>>) -> Response {
    // Serialized under the lock, without an await: cheaper than copying up to MAX_CALLS entries.
    Json(&*lock(&app.calls)).into_response()
}

impl App {
    async fn respond(
        &self,
        api: Api,
        key: Option<&str>,
        prompt: Result<Prompt, String>,
    ) -> Response {
        let authorized = self
            .config
            .api_key
            .as_deref()
            .is_none_or(|want| key == Some(want));
        let prompt = match (authorized, prompt) {
            (false, prompt) => {
                let status = StatusCode::UNAUTHORIZED;
                self.record(api, prompt.ok().map(|prompt| prompt.question), status);
                return error(status, "UNAUTHENTICATED", "missing or wrong API key");
            }
            (true, Err(message)) => {
                self.record(api, None, StatusCode::BAD_REQUEST);
                return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message);
            }
            (true, Ok(prompt)) => prompt,
        };
        if let Some(status) = self.refusal(&prompt.question) {
            self.record(api, Some(prompt.question), status);
            return error(status, reason_of(status), "fake refusal of this question");
        }

        let outcome = {
            let mut rng = lock(&self.rng);
            let (fail_draw, wrong_draw) = (rng.random(), rng.random());
            pick(&self.config, fail_draw, wrong_draw)
        };
        self.record(api, Some(prompt.question.clone()), outcome.status());

        let answer = match outcome {
            Outcome::RateLimited => {
                let mut response = error(outcome.status(), "RESOURCE_EXHAUSTED", "fake rate limit");
                let retry_after = HeaderValue::from(self.config.retry_after_secs);
                response.headers_mut().insert(RETRY_AFTER, retry_after);
                return response;
            }
            Outcome::Hang => {
                tokio::time::sleep(Duration::from_secs(self.config.hang_secs)).await;
                return error(outcome.status(), "DEADLINE_EXCEEDED", "fake hang");
            }
            Outcome::ServerError => {
                self.latency().await;
                return error(outcome.status(), "INTERNAL", "fake server error");
            }
            Outcome::Malformed => {
                self.latency().await;
                return Json(serde_json::json!({"malformed": true})).into_response();
            }
            Outcome::Wrong => {
                self.latency().await;
                WRONG_ANSWER.to_owned()
            }
            Outcome::Right => {
                self.latency().await;
                self.answers.answer(&prompt.question)
            }
        };
        let body = match api {
            Api::OpenAi => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                api::openai_answer(id, unix_ms() / 1000, &prompt, &answer)
            }
            Api::Gemini => api::gemini_answer(&prompt, &answer),
        };
        Json(body).into_response()
    }

    /// The status `--refuse` gives `question`, if it names it.
    fn refusal(&self, question: &str) -> Option<StatusCode> {
        let refusal = self
            .config
            .refusals
            .iter()
            .find(|refusal| refusal.question == question.trim())?;
        // Checked a 4xx when parsed.
        StatusCode::from_u16(refusal.status).ok()
    }

    async fn latency(&self) {
        // A zero sleep would still wait for the timer's next millisecond tick.
        if self.config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.latency_ms)).await;
        }
    }

    fn record(&self, api: Api, question: Option<String>, status: StatusCode) {
        let call = Call {
            question,
            at_ms: unix_ms(),
            status: status.as_u16(),
            api,
        };
        let mut calls = lock(&self.calls);
        if calls.len() >= MAX_CALLS {
            calls.pop_front();
        }
        calls.push_back(call);
    }
}

fn error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        Json(api::error_body(status.as_u16(), reason, message)),
    )
        .into_response()
}

/// The `error.status` Gemini sends with a 4xx `status`.
fn reason_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        _ => "INVALID_ARGUMENT",
    }
}

/// A header's value, when it is present and printable.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The `key` parameter of a query string, percent-decoded (axum's `Query` needs a feature the
/// workspace leaves off, for one parameter).
fn key_in_query(query: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))?;
    percent_decode(value)
}

/// `None` on a malformed escape or a result that is not UTF-8: such a key matches nothing.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let hex = rest
                    .get(..2)
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
                rest = &rest[2..];
                u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?
            }
            byte => byte,
        });
    }
    String::from_utf8(bytes).ok()
}

/// Locks, going on after a panic elsewhere: the generator and the log stay usable either way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    // A clock before 1970 is not worth failing a request over.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parsed as config;

    #[test]
    fn failure_shares_split_one_draw_in_order() {
        let config = config(&["--fail-429=0.1", "--fail-500=0.2", "--fail-hang=0.3"]);
        let outcomes =
            [0.0, 0.09, 0.11, 0.29, 0.31, 0.59, 0.61, 0.99].map(|d| pick(&config, d, 0.5));
        use Outcome::*;
        let expected = [
            RateLimited,
            RateLimited,
            ServerError,
            ServerError,
            Hang,
            Hang,
            Right,
            Right,
        ];
        assert_eq!(outcomes, expected);
    }

    #[test]
    fn whole_shares_always_apply_and_zero_never() {
        let all_malformed = config(&["--fail-malformed=1", "--wrong-share=1"]);
        assert_eq!(pick(&all_malformed, 0.999_999, 0.0), Outcome::Malformed);
        let all_wrong = config(&["--wrong-share=1"]);
        assert_eq!(pick(&all_wrong, 0.0, 0.999_999), Outcome::Wrong);
        assert_eq!(pick(&config(&[]), 0.0, 0.0), Outcome::Right);
    }

    #[test]
    fn query_keys_are_percent_decoded() {
        assert_eq!(
            key_in_query("alt=json&key=a%2Bb+c").as_deref(),
            Some("a+b c")
        );
        assert_eq!(key_in_query("alt=json"), None);
        assert_eq!(key_in_query("key=bad%2"), None);
        assert_eq!(key_in_query("key=bad%+1"), None);
    }
}
