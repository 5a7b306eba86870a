//! The broker restarting under the pipeline: nothing acknowledged may be lost or written twice.
//! Each test runs a Kafka broker of its own ([`KafkaCluster`] of one node).

use std::time::Duration;

use crate::broker::KafkaCluster;
use crate::helpers::{Options, TestPipeline};

const ALL_ADDS_RIGHT: &str =
    "SELECT count(*) FROM jobs WHERE status = 'done' AND (result->>'result')::float8 = (result->>'a')::float8 + 1";

/// As a user did who threw the broker's storage away between two runs (`data/kafka`, or a
/// broker that kept its topics in memory): calculations, Ctrl-C, the same again. The new
/// broker's logs start over at offset 0 while PostgreSQL keeps the persister's positions from
/// the old ones; before the fix the persister skipped the new results and the second run's
/// `calc`s timed out. A dead letter of each run lands at the same offset: both must be kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_started_again_with_empty_storage_loses_nothing() {
    let mut cluster = KafkaCluster::start(1).await;
    let p = TestPipeline::spawn(Options {
        brokers: Some(cluster.brokers()),
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
    let broker = &mut cluster.nodes[0];
    broker.kill();
    broker.wipe();
    broker.restart().await;
    // The first run's rows stay live for a few seconds: wait for the new processes' own.
    let persister = p.start("sluice-persister");
    let retry = p.start("sluice-retry");
    let compute = p.start("sluice-compute");
    for (index, binary, role) in [
        (persister, "sluice-persister", "persister"),
        (persister, "sluice-persister", "kv"),
        (retry, "sluice-retry", "retry"),
        (compute, "sluice-compute", "compute"),
    ] {
        p.wait_live_instance(&format!("{binary}-{index}"), role)
            .await;
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

/// The broker killed with SIGKILL in the middle of a run and started again on its storage:
/// every job is answered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_run_loses_and_duplicates_nothing() {
    let mut cluster = KafkaCluster::start(1).await;
    let p = TestPipeline::spawn(Options {
        brokers: Some(cluster.brokers()),
        ..Options::default()
    })
    .await;
    let publishing = p.publish_adds(3_000, Some(1_000.0));
    let broker = &mut cluster.nodes[0];
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
