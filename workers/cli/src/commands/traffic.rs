//! `sluice traffic`: publishes questions from a dataset at a mean rate, with Poisson, bursty or
//! uniform arrivals, for a duration or a count, tagged with a run id (seeds 001 and 004's load
//! clients). Shows progress on a terminal and ends with a summary line:
//! `sent=<N> skipped=<N> errors=<N> seconds=<S> rate=<per s> run_id=<R>`.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use sluice_core::limits::MIN_RATE_PER_SEC;
use sluice_core::Output;
use sluice_messages::qa::{self, Question};
use sluice_messages::Envelope;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use uuid::Uuid;

use crate::app::App;

/// Questions published and not yet acknowledged, at most.
const IN_FLIGHT: usize = 10_000;
/// Questions sent back to back in one burst of `--arrivals bursty`.
const BURST: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// Independent arrivals: exponential gaps with the mean rate.
    Poisson,
    /// Bursts of 10 questions at once, the bursts arriving as a Poisson process.
    Bursty,
    /// One question every 1/rate seconds.
    Uniform,
}

#[derive(Debug, clap::Args)]
pub struct TrafficArgs {
    /// JSONL of `{"question": …, "expected": …}`, or CSV with a `question` column and an
    /// optional `expected` one (by the `.csv` extension).
    #[arg(long)]
    pub file: PathBuf,
    /// Mean questions per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    pub arrivals: Arrivals,
    /// Stop after this long, e.g. 60s (the dataset is cycled).
    #[arg(long, value_parser = sluice_core::config::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many questions sent (the dataset is cycled). Without this or
    /// `--duration`: every question of the file once.
    #[arg(long)]
    pub count: Option<u64>,
    /// Tags every question; by default a new `run-<8 hex digits>`.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Leave out questions that already have a validated answer.
    #[arg(long)]
    pub skip_answered: bool,
    /// Seed of the arrival times, for a repeatable run.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// One line of the dataset.
#[derive(Debug, Clone, Deserialize)]
struct Pair {
    question: String,
    #[serde(default)]
    expected: Option<String>,
}

fn load(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut pairs: Vec<Pair> = Vec::new();
    if csv {
        for (row, record) in csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .enumerate()
        {
            pairs.push(record.with_context(|| format!("{}: row {}", path.display(), row + 1))?);
        }
    } else {
        for (number, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                pairs.push(
                    serde_json::from_str(line)
                        .with_context(|| format!("{}: line {}", path.display(), number + 1))?,
                );
            }
        }
    }
    for pair in &mut pairs {
        pair.expected = pair.expected.take().filter(|e| !e.trim().is_empty());
        Question::new(pair.question.clone(), pair.expected.clone())
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}: {:?}", path.display(), pair.question))?;
    }
    anyhow::ensure!(!pairs.is_empty(), "{} holds no questions", path.display());
    Ok(pairs)
}

/// The gap before each next arrival.
struct Schedule {
    arrivals: Arrivals,
    rate: f64,
    rng: SmallRng,
    /// Questions left in the current burst.
    burst_left: u32,
}

impl Schedule {
    fn exponential(&mut self, mean_secs: f64) -> Duration {
        // 1 - U is in (0, 1]: its logarithm is finite.
        let u: f64 = 1.0 - self.rng.random::<f64>();
        Duration::from_secs_f64(-u.ln() * mean_secs)
    }

    fn next_gap(&mut self) -> Duration {
        match self.arrivals {
            Arrivals::Uniform => Duration::from_secs_f64(1.0 / self.rate),
            Arrivals::Poisson => self.exponential(1.0 / self.rate),
            Arrivals::Bursty => {
                if self.burst_left > 0 {
                    self.burst_left -= 1;
                    Duration::ZERO
                } else {
                    self.burst_left = BURST - 1;
                    self.exponential(f64::from(BURST) / self.rate)
                }
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    errors: AtomicU64,
    /// What the first failed publish said, for the summary.
    first_error: std::sync::Mutex<Option<String>>,
}

pub async fn run(app: &App, args: TrafficArgs) -> anyhow::Result<std::process::ExitCode> {
    // Bounded below so that no gap overflows a `Duration` or an `Instant`.
    anyhow::ensure!(
        args.rate.is_finite() && (MIN_RATE_PER_SEC..=1e6).contains(&args.rate),
        "--rate must be from 1/3600 (one an hour) to 1,000,000"
    );
    let pairs = load(&args.file)?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("run-{}", &Uuid::new_v4().simple().to_string()[..8]));
    anyhow::ensure!(
        run_id.len() <= qa::MAX_RUN_ID_BYTES,
        "--run-id is over {} bytes",
        qa::MAX_RUN_ID_BYTES
    );
    let answered: HashSet<String> = if args.skip_answered {
        let questions: Vec<String> = pairs.iter().map(|p| p.question.clone()).collect();
        sluice_db::qa::answered_among(&app.pool, &questions)
            .await?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    let sendable: Vec<&Pair> = pairs
        .iter()
        .filter(|p| !answered.contains(&p.question))
        .collect();
    let skipped = (pairs.len() - sendable.len()) as u64;
    let total = match (args.count, args.duration) {
        _ if sendable.is_empty() => Some(0),
        (Some(count), _) => Some(count),
        (None, Some(_)) => None,
        (None, None) => Some(sendable.len() as u64),
    };
    let publisher = app.publisher()?.clone();
    let topic = app.topics.qa_questions();
    let mut schedule = Schedule {
        arrivals: args.arrivals,
        rate: args.rate,
        rng: args
            .seed
            .map_or_else(SmallRng::from_os_rng, SmallRng::seed_from_u64),
        burst_left: 0,
    };
    eprintln!(
        "traffic: {} question(s) from {} ({skipped} answered already, skipped), {:.1}/s {:?}, \
         run id {run_id}",
        pairs.len(),
        args.file.display(),
        args.rate,
        args.arrivals
    );
    let counts = Arc::new(Counts::default());
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut progress = Progress::new(total, args.duration);
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut due = started;
    let mut queued = 0u64;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    for pair in sendable.iter().cycle() {
        if total.is_some_and(|t| queued >= t) {
            break;
        }
        due += schedule.next_gap();
        if deadline.is_some_and(|d| due > d) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = &mut ctrl_c => { interrupted = true; break; }
        }
        let question = Question {
            run_id: Some(run_id.clone()),
            ..Question::new(pair.question.clone(), pair.expected.clone())
        };
        let envelope = Envelope::new(qa::KIND, question);
        let output = Output::json(topic.clone(), envelope.id.to_string(), &envelope)?;
        let slot = slots.clone().acquire_owned().await?;
        let (publisher, counts) = (publisher.clone(), counts.clone());
        tokio::spawn(async move {
            match publisher.try_publish(&output).await {
                Ok(_) => {
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = counts.first_error.lock().expect("not poisoned");
                    first.get_or_insert_with(|| e.to_string());
                }
            };
            drop(slot);
        });
        queued += 1;
        progress.show(queued, skipped, started.elapsed());
    }
    // Every publish acknowledged or failed.
    let _all = slots.acquire_many(IN_FLIGHT as u32).await?;
    progress.finish(queued, skipped, started.elapsed());
    let seconds = started.elapsed().as_secs_f64();
    let sent = counts.sent.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    if interrupted {
        eprintln!("interrupted");
    }
    if let Some(error) = counts.first_error.lock().expect("not poisoned").as_ref() {
        eprintln!("{errors} publish(es) failed; the first: {error} (is the pipeline running?)");
    }
    println!(
        "sent={sent} skipped={skipped} errors={errors} seconds={seconds:.2} rate={:.1} run_id={run_id}",
        sent as f64 / seconds.max(1e-9)
    );
    Ok(if errors == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// A progress bar on stderr, when it is a terminal, redrawn at most five times a second.
struct Progress {
    enabled: bool,
    total: Option<u64>,
    duration: Option<Duration>,
    drawn: Option<std::time::Instant>,
}

impl Progress {
    fn new(total: Option<u64>, duration: Option<Duration>) -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            total,
            duration,
            drawn: None,
        }
    }

    fn show(&mut self, queued: u64, skipped: u64, elapsed: Duration) {
        if !self.enabled
            || self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.drawn = Some(std::time::Instant::now());
        let done = match (self.total, self.duration) {
            (Some(total), _) => queued as f64 / total.max(1) as f64,
            (None, Some(d)) => elapsed.as_secs_f64() / d.as_secs_f64().max(1e-9),
            (None, None) => 0.0,
        }
        .clamp(0.0, 1.0);
        let filled = (done * 30.0) as usize;
        eprint!(
            "\r[{}{}] {:>3.0}% sent {queued} skipped {skipped} {:.1}/s ",
            "=".repeat(filled),
            " ".repeat(30 - filled),
            done * 100.0,
            queued as f64 / elapsed.as_secs_f64().max(1e-9)
        );
        let _ = std::io::stderr().flush();
    }

    /// Draws the final state, then ends the line.
    fn finish(&mut self, queued: u64, skipped: u64, elapsed: Duration) {
        if self.enabled && self.drawn.take().is_some() {
            self.show(queued, skipped, elapsed);
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_gap(arrivals: Arrivals) -> f64 {
        let mut schedule = Schedule {
            arrivals,
            rate: 100.0,
            rng: SmallRng::seed_from_u64(7),
            burst_left: 0,
        };
        let n = 20_000;
        (0..n)
            .map(|_| schedule.next_gap().as_secs_f64())
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn every_arrival_process_keeps_the_mean_rate() {
        for arrivals in [Arrivals::Uniform, Arrivals::Poisson, Arrivals::Bursty] {
            let mean = mean_gap(arrivals);
            assert!((mean - 0.01).abs() < 0.001, "{arrivals:?}: mean gap {mean}");
        }
    }

    #[test]
    fn datasets_load_from_jsonl_and_csv() {
        let dir = std::env::temp_dir().join(format!("sluice-traffic-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("q.jsonl");
        std::fs::write(
            &jsonl,
            "{\"question\": \"a?\", \"expected\": \"b\"}\n\n{\"question\": \"c?\"}\n",
        )
        .unwrap();
        let csv = dir.join("q.csv");
        std::fs::write(&csv, "question,expected\n\"x, y?\",\"z \"\"q\"\"\"\nw?,\n").unwrap();
        let from_jsonl = load(&jsonl).unwrap();
        assert_eq!(from_jsonl.len(), 2);
        assert_eq!(from_jsonl[1].expected, None);
        let from_csv = load(&csv).unwrap();
        assert_eq!(from_csv[0].question, "x, y?");
        assert_eq!(from_csv[0].expected.as_deref(), Some("z \"q\""));
        assert_eq!(from_csv[1].expected, None);
        std::fs::write(&jsonl, "{\"question\": \"\"}\n").unwrap();
        assert!(load(&jsonl).is_err());
        std::fs::write(&jsonl, "not json\n").unwrap();
        assert!(load(&jsonl).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
