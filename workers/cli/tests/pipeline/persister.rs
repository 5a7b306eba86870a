//! The persister on its own: what it refuses, and what it must not count twice.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sluice_compute::PartResult;
use uuid::Uuid;

use crate::helpers::{eventually, Options, TestPipeline, PARTITIONS};

fn no_workers() -> Options {
    Options {
        compute_workers: 0,
        ..Options::default()
    }
}

/// A worker's result message for job `id`, as published to the results topic.
fn result_message(id: Uuid, answer: serde_json::Value) -> Vec<u8> {
    json!({"id": id, "kind": "compute", "result": answer, "worker": "w", "attempts": 1,
           "created_at": Utc::now(), "finished_at": Utc::now()})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_results_become_dead_letters_and_the_persister_keeps_running() {
    let p = TestPipeline::spawn(no_workers()).await;
    let results = p.topics.results();
    let invalid = [
        b"not a result".to_vec(),
        result_message(Uuid::new_v4(), json!([1, 2])),
        result_message(Uuid::new_v4(), json!({"result": 3})),
        result_message(Uuid::new_v4(), json!({"ok": false})),
        result_message(
            Uuid::new_v4(),
            json!({"ok": true, "text": "nul \u{0} inside"}),
        ),
    ];
    for message in invalid {
        p.publish_raw(&results, "bad", message).await;
    }
    let good = Uuid::new_v4();
    p.publish_raw(
        &results,
        "good",
        result_message(good, json!({"ok": true, "result": 7.0})),
    )
    .await;

    p.wait_count(
        &format!("SELECT count(*) FROM jobs WHERE job_id = '{good}' AND status = 'done'"),
        1,
        Duration::from_secs(30),
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class IN ('invalid_result', 'database_refused')",
        5,
        Duration::from_secs(30),
    )
    .await;
    // The four that carried a job id are marked dead, with the reason.
    assert_eq!(
        p.count("SELECT count(*) FROM jobs WHERE status = 'dead' AND error IS NOT NULL")
            .await,
        4
    );
    assert!(p.is_running(0), "the persister survived all of it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_part_is_counted_once() {
    let p = TestPipeline::spawn(no_workers()).await;
    let job = Uuid::new_v4();
    let part = |index: u32, a: u64, b: u64, sum: u64| PartResult {
        job_id: job,
        part: index,
        parts: 3,
        a,
        b,
        result: sum.into(),
        worker: "w".into(),
        attempts: 1,
        created_at: Utc::now(),
        finished_at: Utc::now(),
    };
    // Part 1 arrives twice, as after a worker crash between publishing and committing.
    for done in [
        part(0, 1, 3, 14),
        part(1, 4, 6, 77),
        part(1, 4, 6, 77),
        part(2, 7, 9, 194),
    ] {
        let payload = serde_json::to_vec(&done).unwrap();
        p.publish_raw(
            &p.topics.part_results(),
            &format!("{job}:{}", done.part),
            payload,
        )
        .await;
    }
    let sql = format!("SELECT count(*) FROM jobs WHERE job_id = '{job}' AND status = 'done'");
    p.wait_count(&sql, 1, Duration::from_secs(30)).await;
    let result: serde_json::Value =
        sqlx::query_scalar(&format!("SELECT result FROM jobs WHERE job_id = '{job}'"))
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!(result["result"], json!(285));
    assert_eq!(result["parts"].as_array().unwrap().len(), 3);
    assert_eq!(p.count("SELECT count(*) FROM compute_parts").await, 3);
}

/// Kafka's committed offsets only say where to resume; what has been applied is the position
/// stored with the rows. Rewound to the start, a new persister re-reads everything and writes
/// none of it again: rows an operator deleted since stay deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_stored_with_the_rows_decides_what_is_applied() {
    let p = TestPipeline::spawn(no_workers()).await;
    let results = p.topics.results();
    let result = |id: Uuid| result_message(id, json!({"ok": true, "result": 1.0}));
    let first: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for id in &first {
        p.publish_raw(&results, &id.to_string(), result(*id)).await;
    }
    p.publish_raw(&results, "bad", b"not a result".to_vec())
        .await;
    p.wait_count(
        "SELECT count(*) FROM jobs WHERE status = 'done'",
        20,
        Duration::from_secs(30),
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        p.count(&format!(
            "SELECT coalesce(sum(next_offset), 0)::int8 FROM consumer_offsets WHERE topic = '{results}'"
        ))
        .await,
        21,
        "the stored position covers every message of the results topic"
    );

    assert!(
        p.terminate(0, Duration::from_secs(20)).await,
        "persister exits 0"
    );
    sqlx::query("DELETE FROM jobs")
        .execute(&p.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM dead_letters")
        .execute(&p.pool)
        .await
        .unwrap();
    rewind_group(&p, &results).await;

    let persister = p.start("sluice-persister");
    let marker = Uuid::new_v4();
    p.publish_raw(&results, "marker", result(marker)).await;
    p.wait_count(
        &format!("SELECT count(*) FROM jobs WHERE job_id = '{marker}'"),
        1,
        Duration::from_secs(30),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the persister re-read the old messages",
        || async {
            p.log(persister)
                .contains("skipped redelivered messages already applied")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM jobs").await,
        1,
        "only the new result"
    );
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}

/// Commits offset 0 for every partition of `topic` in the persister's group, as if Kafka had
/// lost the group's offsets. The group must have no member.
async fn rewind_group(p: &TestPipeline, topic: &str) {
    let consumer: BaseConsumer =
        sluice_core::kafka::consumer_config(&p.kafka, &p.topics.group("persister"))
            .create()
            .expect("consumer");
    let mut rewind = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        rewind
            .add_partition_offset(topic, partition, Offset::Offset(0))
            .unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "the group's offsets rewound",
        || async { consumer.commit(&rewind, CommitMode::Sync).ok() },
    )
    .await;
}
