//! Failures of the parts around the workers: a worker killed, a worker told to stop, the
//! database gone for a while. Nothing may be lost or written twice.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::helpers::{Options, TestPipeline};

const ALL_ADDS_RIGHT: &str =
    "SELECT count(*) FROM jobs WHERE status = 'done' AND (result->>'result')::float8 = (result->>'a')::float8 + 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_survive_a_worker_killed_mid_run() {
    let p = TestPipeline::spawn(Options {
        compute_workers: 2,
        ..Options::default()
    })
    .await;
    // Jobs keep coming for about four seconds; one worker dies two seconds in.
    let publishing = p.publish_adds(10_000, Some(2_500.0));
    let killing = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.kill(2);
    };
    tokio::join!(publishing, killing);
    p.wait_count(ALL_ADDS_RIGHT, 10_000, Duration::from_secs(180))
        .await;
    assert_eq!(
        p.count("SELECT count(*) FROM jobs").await,
        10_000,
        "exactly 10,000 rows"
    );
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
    let by_killed = p
        .count("SELECT count(*) FROM jobs WHERE worker = 'sluice-compute-2'")
        .await;
    let by_survivor = p
        .count("SELECT count(*) FROM jobs WHERE worker = 'sluice-compute-3'")
        .await;
    assert!(
        by_killed > 0 && by_survivor > by_killed,
        "killed {by_killed}, survivor {by_survivor}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let p = TestPipeline::spawn(Options::default()).await;
    p.publish_adds(300, None).await;
    assert!(
        p.terminate(2, Duration::from_secs(20)).await,
        "exit status 0 after SIGTERM"
    );
    // It said it stopped: no longer live.
    crate::helpers::eventually(
        Duration::from_secs(10),
        "the worker to leave the live list",
        || async {
            let live = sluice_db::queries::live_workers(&p.pool, Some("compute"))
                .await
                .ok()?;
            live.is_empty().then_some(())
        },
    )
    .await;
    // What it did not finish, the next worker does.
    p.start("sluice-compute");
    p.wait_count(ALL_ADDS_RIGHT, 300, Duration::from_secs(60))
        .await;
}

/// A PostgreSQL cluster of this test's own, so that stopping it disturbs no other test.
struct OwnCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn as_postgres(program: &std::path::Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl OwnCluster {
    fn create() -> Self {
        let bin = std::env::var("SLUICE_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .expect("PostgreSQL installed")
                    .flatten()
                    .map(|e| e.path().join("bin"))
                    .collect();
                found.sort();
                found.pop().expect("a PostgreSQL version")
            });
        let dir =
            std::env::temp_dir().join(format!("sluice-own-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown").arg("postgres").arg(&dir).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let status = as_postgres(&bin.join("initdb"))
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-D"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb");
        let cluster = Self { bin, dir, port };
        cluster.pg_ctl("start");
        cluster
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!("-p {} -k /tmp -c listen_addresses=127.0.0.1", self.port);
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-w", "-m", "fast", "-o", &options, "-l"])
            .arg(self.dir.join("server.log"))
            .arg(action)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "stop"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_ten_seconds_loses_and_duplicates_nothing() {
    let cluster = OwnCluster::create();
    let p = TestPipeline::spawn(Options {
        admin_url: Some(cluster.url()),
        ..Options::default()
    })
    .await;
    // A steady stream across the outage: 3,000 jobs over about 20 s.
    let publishing = async {
        p.publish_adds(3_000, Some(150.0)).await;
    };
    let outage = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster.pg_ctl("stop");
        tokio::time::sleep(Duration::from_secs(10)).await;
        cluster.pg_ctl("start");
    };
    tokio::join!(publishing, outage);
    p.wait_count(ALL_ADDS_RIGHT, 3_000, Duration::from_secs(120))
        .await;
    assert_eq!(p.count("SELECT count(*) FROM jobs").await, 3_000);
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters").await,
        0,
        "nothing dead-lettered by the outage"
    );
    assert!(p.is_running(0), "the persister waited the outage out");
}
