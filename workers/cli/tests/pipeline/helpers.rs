//! The test pipeline: a fresh database and topic prefix per test, the real worker binaries as
//! child processes, and the real `sluice` program. Needs `KAFKA_BROKERS` and `DATABASE_URL`
//! (an admin URL of a throwaway cluster); `scripts/test` provides both.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use rdkafka::message::{Header, OwnedHeaders};
use sluice_core::config::{KafkaConfig, RetryConfig, WorkerConfig};
use sluice_core::{Execution, Handler, Output, PipelineError, Publisher, Stage, StageContext};
use sluice_messages::compute::{CalcRequest, KIND_JOB};
use sluice_messages::{Envelope, Topics};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PARTITIONS: i32 = 4;

/// Retry tiers short enough for tests; no jitter, so the policy's delays are exact.
pub fn test_retry_config(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        tiers: ["200ms", "500ms", "1s", "2s"]
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    sluice_core::config::parse_duration(t).unwrap(),
                )
            })
            .collect(),
        initial_delay: Duration::from_millis(200),
        multiplier: 2.0,
        max_delay: Duration::from_secs(2),
        jitter: 0.0,
        max_attempts,
    }
}

fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let cut = base[authority_end..]
        .find('/')
        .map_or(base.len(), |i| authority_end + i);
    format!("{}/{database}{query}", &base[..cut])
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_sluice"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

pub struct Options {
    pub compute_workers: usize,
    pub max_attempts: u32,
    /// Admin URL of the PostgreSQL cluster; `DATABASE_URL` when absent.
    pub admin_url: Option<String>,
    /// The broker; `KAFKA_BROKERS` when absent.
    pub brokers: Option<String>,
    /// More environment for every process started (overrides the defaults below).
    pub env: Vec<(String, String)>,
}

impl Options {
    /// A persister and a retry service only: the test brings its own stages or messages.
    pub fn no_workers() -> Self {
        Self {
            compute_workers: 0,
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            compute_workers: 1,
            max_attempts: 4,
            admin_url: None,
            brokers: None,
            env: Vec::new(),
        }
    }
}

pub struct TestPipeline {
    pub kafka: KafkaConfig,
    pub retry: RetryConfig,
    pub topics: Topics,
    pub pool: PgPool,
    pub publisher: Publisher,
    /// Cancels the stages this test runs in its own process.
    pub shutdown: CancellationToken,
    env: Vec<(String, String)>,
    children: Mutex<Vec<Child>>,
    log_dir: PathBuf,
}

impl TestPipeline {
    /// Starts a persister, a retry service and `compute_workers` compute workers, and waits
    /// until all of them are live.
    pub async fn spawn(options: Options) -> Self {
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let admin_url = options
            .admin_url
            .unwrap_or_else(|| required_env("DATABASE_URL"));
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .expect("admin connection to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {prefix}"))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let db_url = with_database(&admin_url, &prefix);

        let kafka = KafkaConfig {
            brokers: options
                .brokers
                .clone()
                .unwrap_or_else(|| required_env("KAFKA_BROKERS")),
            topic_prefix: prefix.clone(),
            partitions: PARTITIONS,
            replication_factor: 1,
            fetch_wait_max_ms: 500,
            slow_fetch_wait_max_ms: 500,
            session_timeout_ms: 6_000,
            max_poll_interval_ms: 300_000,
            client_overrides: BTreeMap::new(),
        };
        let retry = test_retry_config(options.max_attempts);
        let tiers: Vec<&str> = retry
            .tiers
            .iter()
            .map(|(label, _)| label.as_str())
            .collect();
        let env = vec![
            ("KAFKA_BROKERS", kafka.brokers.clone()),
            ("SLUICE_TOPIC_PREFIX", prefix.clone()),
            ("KAFKA_PARTITIONS", PARTITIONS.to_string()),
            (
                "KAFKA_SESSION_TIMEOUT_MS",
                kafka.session_timeout_ms.to_string(),
            ),
            ("DATABASE_URL", db_url.clone()),
            ("HEARTBEAT_INTERVAL", "500ms".into()),
            ("RETRY_TIERS", tiers.join(",")),
            ("RETRY_INITIAL_DELAY", "200ms".into()),
            ("RETRY_MULTIPLIER", "2".into()),
            ("RETRY_MAX_DELAY", "2s".into()),
            ("RETRY_JITTER", "0".into()),
            ("MAX_ATTEMPTS", options.max_attempts.to_string()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(options.env.iter().cloned())
        .collect();
        let log_dir = bin_dir().join("test-logs").join(&prefix);
        std::fs::create_dir_all(&log_dir).expect("log directory");

        let shutdown = CancellationToken::new();
        let pipeline = Self {
            topics: Topics::new(&kafka.topic_prefix, &retry.tiers),
            publisher: Publisher::new(&kafka).expect("producer"),
            pool: PgPoolOptions::new()
                .max_connections(4)
                .connect_lazy(&db_url)
                .expect("test pool"),
            kafka,
            retry,
            shutdown,
            env,
            children: Mutex::new(Vec::new()),
            log_dir,
        };
        pipeline.start("sluice-persister");
        pipeline.start("sluice-retry");
        for _ in 0..options.compute_workers {
            pipeline.start("sluice-compute");
        }
        pipeline.wait_live("persister", 1).await;
        pipeline.wait_live("retry", 1).await;
        pipeline.wait_live("compute", options.compute_workers).await;
        pipeline
    }

    /// Starts one more worker process, with instance id `<binary>-<index>`; returns the index
    /// for [`TestPipeline::kill`].
    pub fn start(&self, binary: &str) -> usize {
        self.start_with(binary, &[])
    }

    /// As [`TestPipeline::start`], with more environment for this process.
    pub fn start_with(&self, binary: &str, env: &[(&str, &str)]) -> usize {
        let mut children = self.children.lock().unwrap();
        let index = children.len();
        let log = std::fs::File::create(self.log_dir.join(format!("{index}-{binary}.log")))
            .expect("log file");
        let child = Command::new(bin_dir().join(binary))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("WORKER_INSTANCE_ID", format!("{binary}-{index}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (build the binaries first: cargo build --bins): {e}")
            });
        children.push(child);
        index
    }

    /// What worker `index` has logged so far.
    pub fn log(&self, index: usize) -> String {
        let pattern = format!("{index}-");
        let name = std::fs::read_dir(&self.log_dir)
            .expect("log directory")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(&pattern))
            .expect("a log file per started process");
        std::fs::read_to_string(self.log_dir.join(name)).unwrap_or_default()
    }

    /// The process id of worker `index`.
    pub fn pid(&self, index: usize) -> u32 {
        self.children.lock().unwrap()[index].id()
    }

    /// A path for a file of this test's own, beside its logs.
    pub fn log_dir_file(&self, name: &str) -> String {
        self.log_dir.join(name).to_string_lossy().into_owned()
    }

    pub fn kill(&self, index: usize) {
        let mut children = self.children.lock().unwrap();
        children[index].kill().expect("SIGKILL");
        children[index].wait().expect("reap");
    }

    /// Sends SIGTERM and waits for the exit; true when the process exited with status 0.
    pub async fn terminate(&self, index: usize, within: Duration) -> bool {
        let pid = self.children.lock().unwrap()[index].id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.children.lock().unwrap()[index]
                .try_wait()
                .expect("try_wait")
            {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "process ignored SIGTERM for {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether process `index` has exited with status 0 (false while it runs).
    pub fn exit_success(&self, index: usize) -> bool {
        self.children.lock().unwrap()[index]
            .try_wait()
            .expect("try_wait")
            .is_some_and(|status| status.success())
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.children.lock().unwrap()[index]
            .try_wait()
            .expect("try_wait")
            .is_none()
    }

    /// Runs the `sluice` program against this pipeline: exit code and standard output.
    pub async fn sluice(&self, args: &[&str]) -> (i32, String) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .await
            .expect("run sluice");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            eprintln!("sluice {args:?} stderr: {stderr}");
        }
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Starts the `sluice` program against this pipeline with its standard output piped; it
    /// is killed when dropped.
    pub fn sluice_child(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run sluice")
    }

    pub async fn wait_live(&self, role: &str, count: usize) {
        eventually(
            Duration::from_secs(60),
            &format!("{count} live {role} worker(s)"),
            || async {
                let live = sluice_db::queries::live_workers(&self.pool, Some(role))
                    .await
                    .ok()?;
                (live.len() >= count).then_some(())
            },
        )
        .await
    }

    /// Waits until the process with instance id `instance` is live in `role`.
    pub async fn wait_live_instance(&self, instance: &str, role: &str) {
        eventually(
            Duration::from_secs(60),
            &format!("{instance} live as {role}"),
            || async {
                let live = sluice_db::queries::live_workers(&self.pool, Some(role))
                    .await
                    .ok()?;
                live.iter()
                    .any(|worker| worker.instance_id == instance)
                    .then_some(())
            },
        )
        .await
    }

    pub async fn publish_raw(&self, topic: &str, key: &str, payload: Vec<u8>) {
        self.publish_with_headers(topic, key, payload, &[]).await;
    }

    pub async fn publish_with_headers(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        headers: &[(&str, &str)],
    ) {
        let headers = headers.iter().fold(OwnedHeaders::new(), |all, (k, v)| {
            all.insert(Header {
                key: k,
                value: Some(*v),
            })
        });
        let output = Output {
            topic: topic.to_string(),
            key: Some(key.as_bytes().to_vec()),
            payload,
            headers: Some(headers),
        };
        // As sluice's own producers do: a message that timed out in the client (a leader
        // that takes long to fail over) is sent again; a copy of a job is answered once.
        self.publisher
            .publish(&output, &self.shutdown)
            .await
            .expect("publish");
    }

    /// Publishes a message with one header whose name is `name`'s raw bytes, as a client in
    /// another language can send: through librdkafka's C API and a plain producer, since
    /// rdkafka's and sluice's header accessors expect UTF-8 names.
    pub async fn publish_with_raw_header_name(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        name: &[u8],
    ) {
        use rdkafka::bindings::{rd_kafka_header_add, rd_kafka_headers_t};
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let headers = OwnedHeaders::new();
        let native = headers.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rd_kafka_headers_t;
        let value = b"raw";
        // SAFETY: `native` is the live header list `headers` owns; the lengths are the slices'.
        unsafe {
            rd_kafka_header_add(
                native,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            );
        }
        let producer: FutureProducer = sluice_core::kafka::producer_config(&self.kafka)
            .create()
            .expect("plain producer");
        producer
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .expect("publish with a raw header name");
    }

    pub async fn publish_job<P: serde::Serialize>(&self, envelope: &Envelope<P>) {
        let payload = serde_json::to_vec(envelope).expect("serialize");
        self.publish_raw(
            &self.topics.compute_jobs(),
            &envelope.id.to_string(),
            payload,
        )
        .await;
    }

    /// The name of retry tier `index` (0: the shortest).
    pub fn retry_tiers_topic(&self, index: usize) -> String {
        self.topics.retry_tiers[index].0.clone()
    }

    /// Publishes `count` `add` jobs (a = i, b = 1), at most `rate` per second when given.
    pub async fn publish_adds(&self, count: u64, rate: Option<f64>) -> Vec<Uuid> {
        let started = Instant::now();
        let ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
        stream::iter(ids.iter().enumerate())
            .then(|(i, id)| async move {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(
                        (started + Duration::from_secs_f64(i as f64 / rate)).into(),
                    )
                    .await;
                }
                (i, id)
            })
            .map(|(i, id)| async move {
                let request = CalcRequest {
                    op: "add".into(),
                    a: Some(i as f64),
                    b: Some(1.0),
                    ..CalcRequest::default()
                };
                self.publish_job(&Envelope::with_id(*id, KIND_JOB, request))
                    .await
            })
            .buffer_unordered(2_000)
            .collect::<Vec<()>>()
            .await;
        ids
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// Waits until `sql` counts `expected` rows.
    pub async fn wait_count(&self, sql: &str, expected: i64, within: Duration) {
        eventually(within, &format!("{expected} rows for {sql}"), || async {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await.ok()?;
            (n >= expected).then_some(())
        })
        .await;
        assert_eq!(self.count(sql).await, expected, "{sql}");
    }

    /// Runs `handler` as a stage of this test's own process, consuming `inputs` in small
    /// batches.
    pub async fn run_stage_in_process<H: Handler>(
        &self,
        role: &str,
        inputs: Vec<String>,
        handler: H,
    ) -> JoinHandle<Result<(), PipelineError>> {
        let execution = Execution::Batches {
            max: 16,
            wait: Duration::ZERO,
            in_flight: 4,
        };
        self.run_in_process(
            Stage::new(role, inputs, execution),
            test_worker(role),
            handler,
        )
        .await
    }

    /// Runs `stage` in this test's own process as worker `worker`.
    pub async fn run_in_process<H: Handler>(
        &self,
        stage: Stage,
        worker: WorkerConfig,
        handler: H,
    ) -> JoinHandle<Result<(), PipelineError>> {
        self.run_in_process_on(self.kafka.clone(), stage, worker, handler)
            .await
    }

    /// As [`TestPipeline::run_in_process`], with consumer settings of its own.
    pub async fn run_in_process_on<H: Handler>(
        &self,
        kafka: KafkaConfig,
        stage: Stage,
        worker: WorkerConfig,
        handler: H,
    ) -> JoinHandle<Result<(), PipelineError>> {
        let ctx: Arc<StageContext> =
            StageContext::new(kafka, self.retry.clone(), worker, &self.shutdown)
                .await
                .expect("stage context");
        let shutdown = self.shutdown.clone();
        tokio::spawn(sluice_core::run_stage(ctx, stage, handler, shutdown))
    }
}

/// The configuration of a stage run in the test process.
pub fn test_worker(role: &str) -> WorkerConfig {
    WorkerConfig {
        instance_id: format!("{role}-{}", Uuid::new_v4().simple()),
        host: "test".into(),
        heartbeat_interval: Duration::from_millis(500),
        stall_after: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        dead_letter_max_share: 1.0,
        dead_letter_window: 100,
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for child in self.children.get_mut().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lets a test keep a handle on the handler it gives a stage.
pub struct SharedHandler<H>(pub Arc<H>);

impl<H: Handler> Handler for SharedHandler<H> {
    async fn handle(&self, job: &sluice_core::Job, cx: &sluice_core::Cx) -> sluice_core::Outcome {
        self.0.handle(job, cx).await
    }
}

/// Polls `check` until it gives a value; panics naming `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn database_urls_are_rewritten() {
    assert_eq!(
        with_database("postgres://u@h:1/postgres?sslmode=disable", "x"),
        "postgres://u@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
}
