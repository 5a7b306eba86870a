//! A three-broker cluster, as users who outgrow one machine run it: every topic replicated
//! three times, `min.insync.replicas` 2, producers with `acks=all`. Losing the broker that
//! leads the job topic must lose and duplicate nothing.

use std::time::Duration;

use crate::broker::KafkaCluster;
use crate::helpers::{Options, TestPipeline};

const ALL_ADDS_RIGHT: &str =
    "SELECT count(*) FROM jobs WHERE status = 'done' AND (result->>'result')::float8 = (result->>'a')::float8 + 1";

/// 20,000 jobs while the leader of most of `compute.jobs`' partitions is killed (SIGKILL) and,
/// later, started again: its partitions move to the other two brokers, whose replicas hold
/// everything acknowledged, and back once it has caught up. Every job is done exactly once and
/// nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leader_killed_in_a_three_broker_cluster_loses_and_duplicates_nothing() {
    let mut cluster = KafkaCluster::start(3).await;
    let p = TestPipeline::spawn(Options {
        brokers: Some(cluster.brokers()),
        compute_workers: 2,
        env: vec![("KAFKA_REPLICATION_FACTOR".into(), "3".into())],
        ..Options::default()
    })
    .await;
    let leader = cluster.leader_of(&p.topics.compute_jobs());
    let publishing = p.publish_adds(20_000, Some(2_000.0));
    let failing_over = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.node(leader).kill();
        // Long enough for the controller to fence it and elect new leaders (the test's
        // broker.session.timeout.ms is 3 s), short enough that jobs still flow when it returns.
        tokio::time::sleep(Duration::from_secs(5)).await;
        cluster.node(leader).restart().await;
    };
    tokio::join!(publishing, failing_over);
    p.wait_count(ALL_ADDS_RIGHT, 20_000, Duration::from_secs(240))
        .await;
    assert_eq!(p.count("SELECT count(*) FROM jobs").await, 20_000);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
    for index in 0..4 {
        assert!(p.is_running(index), "service {index} survived the failover");
    }
    // The restarted broker is back in the cluster, so the test really ran on three.
    cluster.wait_brokers(3).await;
}
