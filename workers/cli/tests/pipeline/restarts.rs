//! The broker restarting under the pipeline: nothing acknowledged may be lost or written twice.
//! Each test runs a broker of its own (`SLUICE_NISSHI_BIN`, set by scripts/test).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{eventually, Options, TestPipeline};

const ALL_ADDS_RIGHT: &str =
    "SELECT count(*) FROM jobs WHERE status = 'done' AND (result->>'result')::float8 = (result->>'a')::float8 + 1";

/// A Nisshi broker of one test, on a port of its own, restartable on the same port and storage.
struct Broker {
    port: u16,
    storage: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    async fn start(storage: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("sluice-broker-{port}"));
        std::fs::create_dir_all(&dir).expect("broker directory");
        let mut broker = Self {
            port,
            storage: storage.to_string(),
            dir,
            child: None,
        };
        broker.restart().await;
        broker
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) and waits until it listens.
    async fn restart(&mut self) {
        let bin = std::env::var("SLUICE_NISSHI_BIN")
            .expect("SLUICE_NISSHI_BIN is not set: run the tests with scripts/test");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nisshi.log"))
            .expect("broker log");
        let listener = format!("tcp://{}", self.address());
        self.child = Some(
            Command::new(bin)
                .current_dir(&self.dir)
                .args(["broker", "--kafka-listener-url", &listener])
                .args(["--kafka-advertised-listener-url", &listener])
                .args(["--storage-engine", &self.storage])
                .args(["--group-initial-rebalance-delay", "300ms"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("broker log"))
                .stderr(log)
                .spawn()
                .expect("start Nisshi"),
        );
        let address = self.address();
        eventually(Duration::from_secs(60), "the broker to listen", || async {
            std::net::TcpStream::connect(&address).ok().map(|_| ())
        })
        .await;
    }

    /// SIGKILL: whatever the broker acknowledged must survive on a durable engine.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            child.wait().expect("reap the broker");
        }
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// As a user did with `SLUICE_BROKER_STORAGE=memory scripts/run`: calculations, Ctrl-C, the
/// same again. The restarted broker's logs start over at offset 0 while PostgreSQL keeps the
/// persister's positions from the old ones; before the fix the persister skipped the new
/// results and the second run's `calc`s timed out. A dead letter of each run lands at the same
/// offset: both must be kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_broker_restarted_with_the_pipeline_loses_nothing() {
    let mut broker = Broker::start("memory://sluice-restart/").await;
    let p = TestPipeline::spawn(Options {
        brokers: Some(broker.address()),
        ..Options::default()
    })
    .await;
    for i in 0..5 {
        let (code, out) = p
            .sluice(&["calc", "--op", "add", "--a", &i.to_string(), "--b", "1"])
            .await;
        assert_eq!(code, 0, "first run, calc {i}: {out}");
    }
    // A dead letter in each run, at the same offset of the dead-letter topic: before the fix
    // the second was taken for a redelivery of the first and dropped.
    let jobs = p.topics.compute_jobs();
    p.publish_raw(&jobs, "bad", b"not a job".to_vec()).await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters",
        1,
        Duration::from_secs(30),
    )
    .await;
    for index in 0..3 {
        assert!(p.terminate(index, Duration::from_secs(20)).await);
    }
    broker.kill();
    broker.restart().await;
    p.start("sluice-persister");
    p.start("sluice-retry");
    p.start("sluice-compute");
    for role in ["persister", "kv", "retry", "compute"] {
        p.wait_live(role, 1).await;
    }
    for i in 5..10 {
        let (code, out) = p
            .sluice(&[
                "calc",
                "--op",
                "add",
                "--a",
                &i.to_string(),
                "--b",
                "1",
                "--timeout",
                "20s",
            ])
            .await;
        assert_eq!(code, 0, "second run, calc {i}: {out}");
    }
    assert_eq!(p.count(ALL_ADDS_RIGHT).await, 10);
    p.publish_raw(&jobs, "bad", b"not a job".to_vec()).await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE source_offset = 0",
        2,
        Duration::from_secs(30),
    )
    .await;
}

/// The default engine (SQLite) killed with SIGKILL in the middle of a run and started again:
/// every job is answered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_broker_killed_mid_run_loses_and_duplicates_nothing() {
    let mut broker = Broker::start("sqlite://sluice.db").await;
    let p = TestPipeline::spawn(Options {
        brokers: Some(broker.address()),
        ..Options::default()
    })
    .await;
    let publishing = p.publish_adds(3_000, Some(1_000.0));
    let restarting = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        broker.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.restart().await;
    };
    tokio::join!(publishing, restarting);
    p.wait_count(ALL_ADDS_RIGHT, 3_000, Duration::from_secs(180))
        .await;
    assert_eq!(p.count("SELECT count(*) FROM jobs").await, 3_000);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
    for index in 0..3 {
        assert!(p.is_running(index), "service {index} survived the restart");
    }
}
