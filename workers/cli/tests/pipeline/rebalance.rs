//! Scaling a role up moves only the partitions that must move (cooperative-sticky, incremental
//! assign and revoke): work in flight on the partitions a member keeps goes on.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_core::kafka;
use sluice_messages::qa::{Question, KIND};
use sluice_messages::Envelope;
use uuid::Uuid;

use crate::helpers::{eventually, Options, TestPipeline, PARTITIONS};
use crate::qa::{dataset, llm_env, FakeLlm, KEY};

/// The partitions of `topic` that a worker's log says were revoked from it.
fn revoked_partitions(log: &str, topic: &str) -> BTreeSet<i32> {
    let needle = format!("topic: \"{topic}\", partition: ");
    log.lines()
        .filter(|line| line.contains("partitions revoked"))
        .flat_map(|line| {
            line.match_indices(&needle)
                .map(|(at, _)| &line[at + needle.len()..])
        })
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a partition number")
        })
        .collect()
}

/// Publishes `envelope` under its id to `partition` of `topic`, so that a test knows where
/// each message went.
async fn publish_to<P: serde::Serialize>(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    envelope: &Envelope<P>,
) {
    let payload = serde_json::to_vec(envelope).unwrap();
    let key = envelope.id.to_string();
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
}

/// 500 slow calls in flight on one LLM worker when a second joins: the calls on the partitions
/// the first keeps are not cancelled, so each of their questions is asked exactly once (the
/// eager protocol revoked every partition, and every call was made again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_worker_joining_cancels_no_call_on_a_partition_that_stays() {
    const QUESTIONS: usize = 500;
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let (answers, pairs) = dataset(&std::env::temp_dir(), QUESTIONS);
    let fake = FakeLlm::start(&[
        "--answers",
        answers.to_str().unwrap(),
        "--api-key",
        KEY,
        "--latency-ms",
        "15000",
    ]);
    let base_url = format!("{}/v1", fake.url);
    let mut env = llm_env(&base_url, KEY);
    env.extend([("LLM_IN_FLIGHT", "500"), ("LLM_TIMEOUT", "120s")]);
    let first = p.start_with("sluice-llm", &env);
    p.start("sluice-scorer");
    p.wait_live("llm", 1).await;
    p.wait_live("scorer", 1).await;

    // Each question on a partition of our choosing, so that its call can be told by partition.
    let producer: FutureProducer = kafka::client_config(&p.kafka).create().unwrap();
    let topic = p.topics.qa_questions();
    let mut partition_of = HashMap::new();
    for (i, (question, expected)) in pairs.iter().enumerate() {
        let partition = i as i32 % PARTITIONS;
        partition_of.insert(question.clone(), partition);
        let id = Uuid::new_v4();
        let envelope = Envelope::with_id(
            id,
            KIND,
            Question::new(question.clone(), Some(expected.clone())),
        );
        publish_to(&producer, &topic, partition, &envelope).await;
    }
    eventually(Duration::from_secs(60), "500 calls in flight", || async {
        (fake.calls().await.len() >= QUESTIONS).then_some(())
    })
    .await;

    let second = p.start_with("sluice-llm", &env);
    p.wait_count(
        "SELECT count(*) FROM jobs WHERE kind = 'qa' AND status = 'done'",
        QUESTIONS as i64,
        Duration::from_secs(180),
    )
    .await;
    let moved = revoked_partitions(&p.log(first), &topic);
    assert!(
        !moved.is_empty() && moved.len() < PARTITIONS as usize,
        "some partitions moved to the second worker and some stayed: {moved:?}\n{}",
        p.log(first)
    );
    let mut calls: HashMap<String, usize> = HashMap::new();
    for (question, _, _) in fake.calls().await {
        *calls.entry(question).or_default() += 1;
    }
    for (question, partition) in &partition_of {
        let asked = calls.get(question).copied().unwrap_or(0);
        if moved.contains(partition) {
            assert!((1..=2).contains(&asked), "{question}: {asked} calls");
        } else {
            assert_eq!(
                asked, 1,
                "{question} on partition {partition}, which stayed"
            );
        }
    }
    assert!(p.is_running(first) && p.is_running(second));
}

/// One fit that would run far longer than the test on each partition of `ml.train`, all
/// running on one ML worker when a second joins: the fits of the partitions the first keeps go
/// on in the same processes (the eager protocol revoked every partition, and each fit was
/// killed and started over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ml_worker_joining_restarts_no_fit_on_a_partition_that_stays() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let env = [("TRAINER_IN_FLIGHT", "4")];
    let first = p.start_with("sluice-ml", &env);
    p.wait_live("trainer", 1).await;
    let x: Vec<Vec<f64>> = (0..50).map(|i| vec![(i % 7) as f64]).collect();
    let y: Vec<f64> = (0..50).map(|i| (i % 7) as f64 * 2.0).collect();
    let endless = serde_json::json!({"algorithm": "mlp", "params": {"epochs": 100_000,
        "patience": 100_000, "min_steps": 10_000_000, "hidden": [4]},
        "data": {"X": x, "y": y}});
    let producer: FutureProducer = kafka::client_config(&p.kafka).create().unwrap();
    let topic = p.topics.ml_train();
    for partition in 0..PARTITIONS {
        let envelope = Envelope::new(sluice_messages::ml::KIND_TRAIN, endless.clone());
        publish_to(&producer, &topic, partition, &envelope).await;
    }
    let pid = p.pid(first);
    let fits: BTreeSet<u32> = eventually(Duration::from_secs(60), "four fits", || async {
        let fits = crate::ml::fit_children(pid);
        (fits.len() == PARTITIONS as usize).then(|| fits.into_iter().collect())
    })
    .await;

    let second = p.start_with("sluice-ml", &env);
    // Settled: the second worker runs the fits of the partitions it took, one each.
    let moved = eventually(Duration::from_secs(60), "the partitions moved", || async {
        let taken = crate::ml::fit_children(p.pid(second)).len();
        let all = taken + crate::ml::fit_children(pid).len();
        (taken > 0 && all == PARTITIONS as usize).then(|| revoked_partitions(&p.log(first), &topic))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still: BTreeSet<u32> = crate::ml::fit_children(pid).into_iter().collect();
    let kept = PARTITIONS as usize - revoked_partitions(&p.log(first), &topic).len();
    assert!(
        kept > 0,
        "some partitions stay with the first worker: {moved:?}"
    );
    assert_eq!(
        still.intersection(&fits).count(),
        kept,
        "the fits of the {kept} partitions that stayed run on in their processes \
         (before {fits:?}, now {still:?})"
    );
    assert_eq!(still.len(), kept, "and no fit started over there");
}

/// The end of each partition of `topic`: the sum of their high watermarks.
fn log_end(p: &TestPipeline, topic: &str) -> i64 {
    let consumer: BaseConsumer = kafka::client_config(&p.kafka).create().unwrap();
    (0..PARTITIONS)
        .map(|partition| {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum()
}

/// A second persister joins while results stream in and the first then leaves: partitions
/// move one way and back incrementally, and every result is written once, with the stored
/// positions ending exactly at the end of the results topic's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_persisters_positions_stay_exact_through_incremental_moves() {
    const JOBS: u64 = 20_000;
    let p = TestPipeline::spawn(Options::default()).await;
    let publishing = p.publish_adds(JOBS, Some(2_500.0));
    let moving = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let second = p.start("sluice-persister");
        p.wait_live("persister", 2).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            p.terminate(0, Duration::from_secs(20)).await,
            "the first leaves"
        );
        second
    };
    let (_, second) = tokio::join!(publishing, moving);
    p.wait_count(
        "SELECT count(*) FROM jobs WHERE status = 'done'",
        JOBS as i64,
        Duration::from_secs(120),
    )
    .await;
    let results = p.topics.results();
    let end = log_end(&p, &results);
    eventually(
        Duration::from_secs(30),
        "positions at the log's end",
        || async {
            let stored = p
                .count(&format!(
                    "SELECT coalesce(sum(next_offset), 0)::int8 FROM consumer_offsets
                 WHERE topic = '{results}'"
                ))
                .await;
            assert!(stored <= end, "stored {stored} past the log's end {end}");
            (stored == end).then_some(())
        },
    )
    .await;
    assert_eq!(p.count("SELECT count(*) FROM jobs").await, JOBS as i64);
    let moved = revoked_partitions(&p.log(0), &results);
    assert!(!moved.is_empty(), "partitions moved");
    assert!(p.is_running(second));
}
