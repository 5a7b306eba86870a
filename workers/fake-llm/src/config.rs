//! The command line. Every flag can also come from the environment as `FAKE_LLM_<NAME>`
//! (`--fail-429` is `FAKE_LLM_FAIL_429`), which is handier in compose files and test scripts.

use anyhow::bail;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Floating-point slack for the sum of the failure shares: 0.1 + 0.2 + 0.7 is a little over 1.
const SHARE_SUM_SLACK: f64 = 1e-9;

/// A fake LLM provider (OpenAI-compatible and Gemini REST) for tests and benchmarks.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice-fake-llm", version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port, printed on stdout.
    #[arg(long, env = "FAKE_LLM_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Milliseconds each answer waits before it is sent.
    #[arg(long, env = "FAKE_LLM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// When set, requests must carry this key (else 401).
    #[arg(long, env = "FAKE_LLM_API_KEY")]
    pub api_key: Option<String>,

    /// Share of requests answered 429 with a Retry-After header.
    #[arg(long = "fail-429", env = "FAKE_LLM_FAIL_429", default_value_t = 0.0)]
    pub fail_429: f64,

    /// The Retry-After of those 429 answers, in seconds.
    #[arg(long, env = "FAKE_LLM_RETRY_AFTER_SECS", default_value_t = 1)]
    pub retry_after_secs: u64,

    /// Share of requests answered 500.
    #[arg(long = "fail-500", env = "FAKE_LLM_FAIL_500", default_value_t = 0.0)]
    pub fail_500: f64,

    /// Share of requests that hang for --hang-secs, then get 504.
    #[arg(long, env = "FAKE_LLM_FAIL_HANG", default_value_t = 0.0)]
    pub fail_hang: f64,

    /// How long a hanging request hangs, in seconds (past any sane client timeout).
    #[arg(long, env = "FAKE_LLM_HANG_SECS", default_value_t = 3600)]
    pub hang_secs: u64,

    /// Share of requests answered 200 with a body that is not the API's shape.
    #[arg(long, env = "FAKE_LLM_FAIL_MALFORMED", default_value_t = 0.0)]
    pub fail_malformed: f64,

    /// Share of the remaining requests answered "I do not know.".
    #[arg(long, env = "FAKE_LLM_WRONG_SHARE", default_value_t = 0.0)]
    pub wrong_share: f64,

    /// JSONL file of {"question": ..., "expected": ...} lines ("answer" may stand for "expected").
    #[arg(long, env = "FAKE_LLM_ANSWERS")]
    pub answers: Option<PathBuf>,

    /// Seed of the draws that pick failures and wrong answers.
    #[arg(long, env = "FAKE_LLM_SEED", default_value_t = 1)]
    pub seed: u64,

    /// A question always answered with a 4xx status instead, as `STATUS:QUESTION`
    /// (`403:What is 2+2?`), as a proxy that refuses one prompt would. Repeatable; one a line
    /// in the environment.
    #[arg(
        long = "refuse",
        env = "FAKE_LLM_REFUSE",
        value_name = "STATUS:QUESTION",
        value_parser = parse_refusal,
        value_delimiter = '\n'
    )]
    pub refusals: Vec<Refusal>,
}

/// A question the fake refuses, and with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Compared trimmed, as the answers are.
    pub question: String,
}

/// `STATUS:QUESTION`, the status a 4xx (a 5xx is `--fail-500`'s: a failure worth retrying).
fn parse_refusal(text: &str) -> Result<Refusal, String> {
    let (status, question) = text
        .split_once(':')
        .ok_or("expected STATUS:QUESTION, e.g. 403:What is 2+2?")?;
    let status: u16 = status
        .trim()
        .parse()
        .map_err(|_| format!("{status:?} is not an HTTP status"))?;
    if !(400..500).contains(&status) {
        return Err(format!("{status} is no 4xx status"));
    }
    Ok(Refusal {
        status,
        question: question.trim().to_owned(),
    })
}

impl Config {
    /// The failure shares in the order the per-request draw tries them.
    pub fn failure_shares(&self) -> [(&'static str, f64); 4] {
        [
            ("--fail-429", self.fail_429),
            ("--fail-500", self.fail_500),
            ("--fail-hang", self.fail_hang),
            ("--fail-malformed", self.fail_malformed),
        ]
    }

    /// Refuses shares that are not numbers in [0, 1], and failure shares that add up to more
    /// than 1: the four failures split one draw per request, so they cannot overlap.
    pub fn validate(&self) -> anyhow::Result<()> {
        let failures = self.failure_shares();
        let wrong = ("--wrong-share", self.wrong_share);
        for (flag, share) in failures.iter().chain([&wrong]) {
            // NaN and the infinities fall outside the range too.
            if !(0.0..=1.0).contains(share) {
                bail!("{flag} is a share of requests and must be between 0 and 1, got {share}");
            }
        }
        let sum: f64 = failures.iter().map(|(_, share)| share).sum();
        if sum > 1.0 + SHARE_SUM_SLACK {
            bail!(
                "--fail-429, --fail-500, --fail-hang and --fail-malformed add up to {sum}, \
                 more than 1: each request draws at most one of them"
            );
        }
        Ok(())
    }
}

/// The configuration `args` give, for tests.
#[cfg(test)]
pub(crate) fn parsed(args: &[&str]) -> Config {
    Config::try_parse_from(std::iter::once("sluice-fake-llm").chain(args.iter().copied()))
        .expect("the arguments parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        parsed(args)
    }

    #[test]
    fn defaults_are_valid() {
        let config = config(&[]);
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
        assert_eq!(
            (config.retry_after_secs, config.hang_secs, config.seed),
            (1, 3600, 1)
        );
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn shares_that_fill_the_draw_exactly_are_valid() {
        let config = config(&[
            "--fail-429=0.1",
            "--fail-500=0.2",
            "--fail-hang=0.3",
            "--fail-malformed=0.4",
            "--wrong-share=1",
        ]);
        config.validate().expect("a sum of 1 is valid");
    }

    #[test]
    fn shares_out_of_range_are_refused() {
        for arg in [
            "--fail-429=1.5",
            "--fail-500=-0.1",
            "--fail-hang=NaN",
            "--fail-malformed=inf",
            "--wrong-share=2",
        ] {
            let error = config(&[arg]).validate().expect_err("out of range");
            let flag = arg.split('=').next().unwrap_or(arg);
            assert!(error.to_string().starts_with(flag), "{error}");
        }
    }

    #[test]
    fn failure_shares_above_one_in_sum_are_refused() {
        let error = config(&["--fail-429=0.6", "--fail-500=0.5"])
            .validate()
            .expect_err("sum");
        assert!(error.to_string().contains("add up to 1.1"), "{error}");
    }

    #[test]
    fn refusals_name_a_4xx_status_and_a_question() {
        let config = config(&["--refuse", "403: What is 2+2? ", "--refuse=404:a:b"]);
        let refusal = |status, question: &str| Refusal {
            status,
            question: question.to_owned(),
        };
        assert_eq!(
            config.refusals,
            [refusal(403, "What is 2+2?"), refusal(404, "a:b")]
        );
        for bad in ["no status", "500:q", "4O3:q"] {
            let parsed = Config::try_parse_from(["sluice-fake-llm", "--refuse", bad]);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn every_flag_has_its_environment_name() {
        let command = <Config as clap::CommandFactory>::command();
        let flags = command
            .get_arguments()
            .filter(|arg| !["help", "version"].contains(&arg.get_id().as_str()));
        for arg in flags {
            let long = arg.get_long().expect("every flag is long");
            let expected = format!("FAKE_LLM_{}", long.to_uppercase().replace('-', "_"));
            let env = arg.get_env().and_then(|env| env.to_str());
            assert_eq!(env, Some(expected.as_str()), "--{long}");
        }
    }
}
