//! `sluice bench compute`, `sluice bench kv` and `sluice bench llm`: publish N `add` jobs (or N
//! KV puts, or N questions) to the running pipeline and measure it from the first publish to
//! the last row committed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sluice_core::kafka;
use sluice_db::queries;
use sluice_messages::compute::{self, CalcRequest, KIND_JOB};
use sluice_messages::kv::{self, KvCommand};
use sluice_messages::qa::{self, Question};
use sluice_messages::Envelope;
use uuid::Uuid;

use crate::app::App;
use crate::commands::ml_bench::{self, MlBench};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Throughput and latency of compute jobs, end to end.
    Compute {
        #[arg(long, default_value_t = 200_000)]
        jobs: u64,
        #[command(flatten)]
        load: Load,
    },
    /// Throughput and latency of KV updates, published to applied (outcome row committed).
    Kv {
        #[arg(long, default_value_t = 200_000)]
        updates: u64,
        /// Distinct keys the puts are spread over, round robin.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        #[command(flatten)]
        load: Load,
    },
    /// Throughput and latency of questions without an expected answer, published to answered
    /// (outcome row committed). `scripts/bench llm` starts one LLM worker for it, stub or HTTP.
    Llm {
        #[arg(long, default_value_t = 20_000)]
        questions: u64,
        #[command(flatten)]
        load: Load,
    },
    /// Fit times per algorithm on a generated dataset (beside scikit-learn's, given a Python
    /// that has it), then prediction requests published to prediction rows committed.
    Ml(MlBench),
}

#[derive(Debug, clap::Args)]
pub struct Load {
    /// Rows each message carries, when it carries several: a line of rows per second too.
    #[arg(skip)]
    pub rows_per_message: Option<u64>,
    /// Offered load in messages per second; as fast as possible when absent.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Give up when no row has arrived for this long.
    #[arg(long, default_value = "60s", value_parser = sluice_core::config::parse_duration)]
    pub stall: Duration,
}

/// Sends in flight at once while publishing.
const PUBLISH_WINDOW: usize = 20_000;

pub async fn run(app: &App, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Compute { jobs, load } => {
            let topic = app.topics.compute_jobs();
            let job = |i: u64, id: Uuid| {
                let envelope = Envelope::with_id(
                    id,
                    KIND_JOB,
                    CalcRequest {
                        op: "add".into(),
                        a: Some(i as f64),
                        b: Some(1.0),
                        ..CalcRequest::default()
                    },
                );
                (id.to_string().into_bytes(), envelope)
            };
            measure(app, "jobs", jobs, &load, compute::ROLE, &topic, job).await
        }
        BenchCommand::Kv {
            updates,
            keys,
            load,
        } => {
            anyhow::ensure!(keys > 0, "--keys must be at least 1");
            let topic = app.topics.kv_updates();
            let update = |i: u64, id: Uuid| {
                let value = serde_json::value::to_raw_value(&i).expect("a number serializes");
                let envelope = Envelope::with_id(id, kv::KIND, KvCommand::put(value, None));
                (format!("bench-{}", i % keys).into_bytes(), envelope)
            };
            measure(
                app,
                "updates",
                updates,
                &load,
                kv::APPLIER_ROLE,
                &topic,
                update,
            )
            .await
        }
        BenchCommand::Llm { questions, load } => {
            let topic = app.topics.qa_questions();
            // Distinct questions: none has a validated answer to reuse.
            let question = |i: u64, id: Uuid| {
                let text = format!("Benchmark question {id}, number {i}: what is {i} + 1?");
                let envelope = Envelope::with_id(id, qa::KIND, Question::new(text, None));
                (id.to_string().into_bytes(), envelope)
            };
            measure(
                app,
                "answers",
                questions,
                &load,
                qa::LLM_ROLE,
                &topic,
                question,
            )
            .await
        }
        BenchCommand::Ml(bench) => ml_bench::run(app, bench).await,
    }
}

/// Publishes `count` messages made by `message` (its key and envelope, from its index and id)
/// to `topic`, and measures from the first publish to the last outcome row committed. The
/// ids share a random 64-bit prefix and count up from zero, so the run's rows are one
/// primary-key range: progress and latency are read from Postgres without a marker column.
pub(crate) async fn measure<P: serde::Serialize>(
    app: &App,
    what: &str,
    count: u64,
    load: &Load,
    role: &str,
    topic: &str,
    message: impl Fn(u64, Uuid) -> (Vec<u8>, Envelope<P>),
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        count > 0,
        "nothing to measure: the count must be at least 1"
    );
    let workers = queries::live_workers(&app.pool, Some(role)).await?;
    if workers.is_empty() {
        println!("no {role} is live: start the pipeline first (scripts/run)");
        return Ok(ExitCode::FAILURE);
    }
    let run_id: u64 = rand_u64();
    let first = Uuid::from_u64_pair(run_id, 0);
    let last = Uuid::from_u64_pair(run_id, count - 1);
    println!(
        "bench: {count} {what} to {topic}, {} {role}(s) live, rate {}",
        workers.len(),
        load.rate
            .map_or("unlimited".to_string(), |r| format!("{r}/s"))
    );

    let mut config = kafka::producer_config(&app.kafka);
    config
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000");
    let producer: FutureProducer = config.create()?;

    let started_wall = Utc::now();
    let started = Instant::now();
    let published = stream::iter(0..count)
        .then(|i| pace(started, i, load.rate))
        .map(|i| {
            let (key, envelope) = message(i, Uuid::from_u64_pair(run_id, i));
            let payload = serde_json::to_vec(&envelope).expect("envelope serializes");
            let producer = &producer;
            async move {
                let sent = Instant::now();
                producer
                    .send(
                        FutureRecord::to(topic).key(&key).payload(&payload),
                        Timeout::Never,
                    )
                    .await
                    .map(|_| sent.elapsed())
                    .map_err(|(e, _)| e)
            }
        })
        .buffer_unordered(PUBLISH_WINDOW)
        .collect::<Vec<_>>()
        .await;
    let publish_secs = started.elapsed().as_secs_f64();
    let mut acks: Vec<Duration> = published
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    if let Some(Err(first)) = published.iter().find(|r| r.is_err()) {
        println!(
            "{} publishes failed; the first: {first}",
            published.len() - acks.len()
        );
    }
    anyhow::ensure!(
        acks.len() as u64 == count,
        "not every message was acknowledged by the broker"
    );
    acks.sort();
    let percentile = |q: f64| acks[((acks.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "published {count} in {publish_secs:.2}s: {:.0} {what}/s; broker ack p50 {:.1} ms, p99 {:.1} ms",
        count as f64 / publish_secs,
        percentile(0.5),
        percentile(0.99)
    );

    let (rows, last_commit) = wait_for_rows(app, first, last, count, load.stall).await?;
    let seconds = last_commit
        .map(|t| (t - started_wall).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .unwrap_or(f64::NAN);
    let (p50, p99) = latencies(app, first, last).await?;
    // Dead-lettered, or answered with an error (a failed prediction is an answer too).
    let (dead, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'dead'),
                count(*) FILTER (WHERE status = 'done' AND error IS NOT NULL)
         FROM jobs WHERE job_id BETWEEN $1 AND $2",
    )
    .bind(first)
    .bind(last)
    .fetch_one(&app.pool)
    .await?;
    println!("rows committed: {rows}/{count}, of which dead-lettered: {dead}, failed: {failed}");
    println!("end to end (first publish to last row committed): {seconds:.2}s");
    println!("latency, created to row committed: p50 {p50:.1} ms, p99 {p99:.1} ms");
    print_timeline(app, first, last, started_wall, seconds).await?;
    if let Some(per_message) = load.rows_per_message {
        println!(
            "rows predicted: {} ({per_message} a request): {:.0} rows/s",
            rows * per_message,
            (rows * per_message) as f64 / seconds
        );
    }
    print_processes();
    println!(
        "{what}={rows} seconds={seconds:.2} rate={:.0} p50_ms={p50:.1} p99_ms={p99:.1}",
        rows as f64 / seconds
    );
    Ok(if rows == count && dead == 0 && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn rand_u64() -> u64 {
    let (high, low) = Uuid::new_v4().as_u64_pair();
    high ^ low
}

/// Holds job `i` back until its time at the offered rate.
async fn pace(started: Instant, i: u64, rate: Option<u64>) -> u64 {
    if let Some(rate) = rate.filter(|r| *r > 0) {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
    i
}

/// Polls until every row is there, or none arrived for `stall`.
async fn wait_for_rows(
    app: &App,
    first: Uuid,
    last: Uuid,
    jobs: u64,
    stall: Duration,
) -> anyhow::Result<(u64, Option<DateTime<Utc>>)> {
    let mut seen = 0;
    let mut progress_at = Instant::now();
    loop {
        let (count, newest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), max(persisted_at) FROM jobs
             WHERE job_id BETWEEN $1 AND $2 AND status <> 'pending'",
        )
        .bind(first)
        .bind(last)
        .fetch_one(&app.pool)
        .await?;
        let count = count as u64;
        if count >= jobs || progress_at.elapsed() > stall {
            return Ok((count, newest));
        }
        if count > seen {
            seen = count;
            progress_at = Instant::now();
        }
        // Each poll counts the run's rows; the end time comes from the rows themselves, so
        // polling rarely costs no precision, and polling often cost PostgreSQL a quarter of
        // its CPU in the benchmark.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn latencies(app: &App, first: Uuid, last: Uuid) -> anyhow::Result<(f64, f64)> {
    let (p50, p99): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM persisted_at - created_at)::float8 * 1000 AS ms
               FROM jobs WHERE job_id BETWEEN $1 AND $2 AND status <> 'pending') AS l",
    )
    .bind(first)
    .bind(last)
    .fetch_one(&app.pool)
    .await?;
    Ok((p50.unwrap_or(f64::NAN), p99.unwrap_or(f64::NAN)))
}

/// Rows committed per interval since the first publish, in at most 60 intervals of a multiple
/// of 0.25 s: a stall anywhere in the pipeline shows up as a gap (this is how a 1 s fetch
/// back-off in the consumers was found).
async fn print_timeline(
    app: &App,
    first: Uuid,
    last: Uuid,
    started: DateTime<Utc>,
    seconds: f64,
) -> anyhow::Result<()> {
    const MAX_INTERVALS: f64 = 60.0;
    if !seconds.is_finite() {
        return Ok(());
    }
    let interval = (seconds / MAX_INTERVALS / 0.25).ceil().max(1.0) * 0.25;
    let buckets: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT floor(extract(epoch FROM persisted_at - $3::timestamptz) / $4)::int8, count(*)
         FROM jobs WHERE job_id BETWEEN $1 AND $2 AND status <> 'pending'
         GROUP BY 1 ORDER BY 1",
    )
    .bind(first)
    .bind(last)
    .bind(started)
    .bind(interval)
    .fetch_all(&app.pool)
    .await?;
    let mut counts = vec![0; MAX_INTERVALS as usize + 1];
    for (index, rows) in buckets {
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| counts.get_mut(i)) {
            *slot = rows;
        }
    }
    let used = (seconds / interval).floor() as usize + 1;
    let line: Vec<String> = counts.iter().take(used).map(i64::to_string).collect();
    println!("rows committed per {interval:.2} s: {}", line.join(" "));
    Ok(())
}

/// Peak resident memory (VmHWM) and CPU time used so far by the pipeline's processes on this
/// machine. The CPU seconds are the figure to compare between builds: on a shared 2-core VM the
/// wall-clock rate varies from run to run far more than the work done.
fn print_processes() {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut rows = Vec::new();
    let mut postgres_cpu = 0.0;
    for entry in entries.flatten() {
        let process = entry.path();
        let Ok(comm) = std::fs::read_to_string(process.join("comm")) else {
            continue;
        };
        let name = comm.trim();
        let name = if name == "java" && is_kafka(&process) {
            "kafka"
        } else {
            name
        };
        if name == "postgres" {
            postgres_cpu += cpu_seconds(&process).unwrap_or(0.0);
        } else if name.starts_with("sluice-") || name == "kafka" {
            rows.push(format!(
                "  {name} (pid {}): peak RSS {}, CPU {:.2} s",
                entry.file_name().to_string_lossy(),
                peak_rss(&process).unwrap_or_default(),
                cpu_seconds(&process).unwrap_or(0.0)
            ));
        }
    }
    rows.sort();
    println!("peak RSS and CPU time per process:");
    for row in rows {
        println!("{row}");
    }
    println!("  postgres (all its processes): CPU {postgres_cpu:.2} s");
}

/// Whether the JVM at `/proc/<pid>` runs the Kafka broker (`kafka.Kafka`, scripts/kafka-node).
fn is_kafka(process: &std::path::Path) -> bool {
    std::fs::read(process.join("cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"kafka.Kafka"))
}

/// User plus system time of the process at `/proc/<pid>`.
fn cpu_seconds(process: &std::path::Path) -> Option<f64> {
    const TICKS_PER_SECOND: f64 = 100.0; // USER_HZ, 100 on every Linux sluice runs on
    let stat = std::fs::read_to_string(process.join("stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / TICKS_PER_SECOND)
}

/// VmHWM of the process at `/proc/<pid>`, as the kernel writes it ("51234 kB").
fn peak_rss(process: &std::path::Path) -> Option<String> {
    let status = std::fs::read_to_string(process.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_string())
}
