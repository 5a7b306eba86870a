//! The persister on its own: what it refuses, what it must not count twice, what it must not
//! skip.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sluice_messages::compute::{PartResult, KIND_PART};
use uuid::Uuid;

use crate::helpers::{eventually, Options, TestPipeline, PARTITIONS};

/// A worker's result message for job `id`, as published to the results topic.
fn result_message(id: Uuid, answer: serde_json::Value) -> Vec<u8> {
    json!({"id": id, "kind": "compute", "result": answer, "worker": "w", "attempts": 1,
           "created_at": Utc::now(), "finished_at": Utc::now()})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_results_become_dead_letters_and_the_persister_keeps_running() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
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
    // Counted as dead-lettered in its heartbeats, as a stage counts those it publishes.
    p.wait_count(
        "SELECT count(*) FROM workers WHERE role = 'persister' AND dead_lettered = 5",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(p.is_running(0), "the persister survived all of it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_part_is_counted_once() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let job = Uuid::new_v4();
    let part = |index: u32, a: u64, b: u64, sum: u64| PartResult {
        kind: KIND_PART.into(),
        job_id: job,
        n: 9,
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
            &p.topics.results(),
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

/// What has been applied is the position stored with the rows, not Kafka's committed offsets.
/// With the group rewound to the start, a new persister reads on from its stored positions and
/// writes none of the old messages again: rows an operator deleted since stay deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_stored_with_the_rows_decides_what_is_applied() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
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
        stored_positions(&p, &results).await,
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

    p.start("sluice-persister");
    let marker = Uuid::new_v4();
    p.publish_raw(&results, "marker", result(marker)).await;
    p.wait_count(
        &format!("SELECT count(*) FROM jobs WHERE job_id = '{marker}'"),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM jobs").await,
        1,
        "only the new result"
    );
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}

/// The sum of the persister's stored positions in `topic`: how many of its messages (from
/// offset 0 of every partition) were applied.
async fn stored_positions(p: &TestPipeline, topic: &str) -> i64 {
    p.count(&format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM consumer_offsets WHERE topic = '{topic}'"
    ))
    .await
}

/// Commits offset 0 for every partition of `topic` in the persister's group, as if Kafka had
/// lost the group's offsets. The group must have no member.
async fn rewind_group(p: &TestPipeline, topic: &str) {
    commit_group_offsets(p, topic, 0).await;
}

/// Commits `offset` for every partition of `topic` in the persister's group. The group must
/// have no member.
async fn commit_group_offsets(p: &TestPipeline, topic: &str, offset: i64) {
    let consumer: BaseConsumer =
        sluice_core::kafka::consumer_config(&p.kafka, &p.topics.group("persister"), 10)
            .create()
            .expect("consumer");
    let mut rewind = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        rewind
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "the group's offsets rewound",
        || async { consumer.commit(&rewind, CommitMode::Sync).ok() },
    )
    .await;
}

/// A range of sum_squares job `job` (1² + … + n²) as split into `parts`.
fn part_message(job: Uuid, n: u64, parts: u32, part: u32, a: u64, b: u64) -> Vec<u8> {
    let sum: u64 = (a..=b).map(|i| i * i).sum();
    serde_json::to_vec(&PartResult {
        kind: KIND_PART.into(),
        job_id: job,
        n,
        part,
        parts,
        a,
        b,
        result: sum.into(),
        worker: "w".into(),
        attempts: 1,
        created_at: Utc::now(),
        finished_at: Utc::now(),
    })
    .unwrap()
}

/// Publishes ranges `(parts, part, a, b)` of job `job` (n = 9) under the job's key, then a
/// one-range job under the same key, and waits until that one is done: the persister has then
/// handled the ranges before it (one key, one partition).
async fn publish_ranges(p: &TestPipeline, job: Uuid, ranges: &[(u32, u32, u64, u64)]) {
    let topic = p.topics.results();
    let key = job.to_string();
    for &(parts, part, a, b) in ranges {
        p.publish_raw(&topic, &key, part_message(job, 9, parts, part, a, b))
            .await;
    }
    let marker = Uuid::new_v4();
    p.publish_raw(&topic, &key, part_message(marker, 1, 1, 0, 1, 1))
        .await;
    p.wait_count(
        &format!("SELECT count(*) FROM jobs WHERE job_id = '{marker}' AND status = 'done'"),
        1,
        Duration::from_secs(30),
    )
    .await;
}

/// A job redelivered and split across a different number of workers: the parts of the two
/// splits must never be combined. Before the fix, part 0 of a 2-way split with parts 1 and 2 of
/// a 3-way split made three rows for "3 parts" and a wrong answer was stored as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_of_two_splits_of_a_job_never_mix() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let job = Uuid::new_v4();
    publish_ranges(&p, job, &[(2, 0, 1, 5), (3, 1, 4, 6), (3, 2, 7, 9)]).await;
    assert_eq!(
        p.count(&format!("SELECT count(*) FROM jobs WHERE job_id = '{job}'"))
            .await,
        0,
        "no split is complete: no answer"
    );

    // The 3-way split completes: its answer, from its own parts only.
    publish_ranges(&p, job, &[(3, 0, 1, 3)]).await;
    let answer = format!(
        "SELECT count(*) FROM jobs WHERE job_id = '{job}' AND status = 'done'
           AND result->>'result' = '285' AND jsonb_array_length(result->'parts') = 3"
    );
    assert_eq!(p.count(&answer).await, 1);
    // The 2-way split completing later changes nothing.
    publish_ranges(&p, job, &[(2, 1, 6, 9)]).await;
    assert_eq!(p.count(&answer).await, 1);
}

/// Parts that do not cover 1..n exactly once (a gap and an overlap, as a forged or buggy
/// producer could send) never make an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_that_do_not_cover_the_range_exactly_once_make_no_answer() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let job = Uuid::new_v4();
    publish_ranges(&p, job, &[(3, 0, 1, 4), (3, 1, 4, 6), (3, 2, 8, 9)]).await;
    assert_eq!(
        p.count(&format!("SELECT count(*) FROM jobs WHERE job_id = '{job}'"))
            .await,
        0
    );
}

/// A job whose request `sluice calc` recorded is answered only by a split of that request:
/// the ranges of another request published under its id (n = 1 where it asked n = 9) are kept
/// but answer nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_job_is_answered_only_by_its_own_request_and_kind() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let job = recorded(&p, json!({"op": "sum_squares", "n": 9})).await;
    let topic = p.topics.results();
    p.publish_raw(&topic, &job.to_string(), part_message(job, 1, 1, 0, 1, 1))
        .await;
    publish_ranges(&p, job, &[(2, 0, 1, 5)]).await;
    let status = format!("SELECT count(*) FROM jobs WHERE job_id = '{job}' AND status = 'pending'");
    assert_eq!(p.count(&status).await, 1, "n = 1 is not the request");
    publish_ranges(&p, job, &[(2, 1, 6, 9)]).await;
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{job}' AND status = 'done'
               AND result->>'result' = '285'"
        ))
        .await,
        1
    );

    // More parts asked for than n: the worker splits into n ranges, and they answer.
    let few = recorded(&p, json!({"op": "sum_squares", "n": 2, "parts": 5})).await;
    p.publish_raw(&topic, &few.to_string(), part_message(few, 2, 2, 0, 1, 1))
        .await;
    p.publish_raw(&topic, &few.to_string(), part_message(few, 2, 2, 1, 2, 2))
        .await;
    p.wait_count(
        &format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{few}' AND status = 'done'
               AND result->>'result' = '5'"
        ),
        1,
        Duration::from_secs(30),
    )
    .await;

    // A result of another kind under a recorded job's id answers nothing; its own kind does.
    let mut other = serde_json::from_slice::<serde_json::Value>(&result_message(
        recorded(&p, json!({"op": "add", "a": 1, "b": 2})).await,
        json!({"ok": true}),
    ))
    .unwrap();
    other["kind"] = json!("other");
    let recorded = other["id"].as_str().unwrap().to_string();
    p.publish_raw(&topic, &recorded, other.to_string().into_bytes())
        .await;
    let own = result_message(recorded.parse().unwrap(), json!({"ok": true, "result": 3}));
    p.publish_raw(&topic, &recorded, own).await;
    p.wait_count(
        &format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{recorded}' AND status = 'done'
               AND kind = 'compute' AND result->>'result' = '3'"
        ),
        1,
        Duration::from_secs(30),
    )
    .await;
}

/// Records a pending compute job of `request`, as `sluice calc` does, and returns its id.
async fn recorded(p: &TestPipeline, request: serde_json::Value) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, request, created_at)
         VALUES ($1, 'compute', 'pending', $2, now())",
    )
    .bind(id)
    .bind(request)
    .execute(&p.pool)
    .await
    .unwrap();
    id
}

/// Sets the persister's stored position in every partition of `topic`.
async fn store_position(p: &TestPipeline, topic: &str, next_offset: i64, timestamp: Option<i64>) {
    for partition in 0..PARTITIONS {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset,
                                           last_timestamp_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (consumer_group, topic, partition)
             DO UPDATE SET next_offset = EXCLUDED.next_offset,
                           last_timestamp_ms = EXCLUDED.last_timestamp_ms",
        )
        .bind(p.topics.group("persister"))
        .bind(topic)
        .bind(partition)
        .bind(next_offset)
        .bind(timestamp)
        .execute(&p.pool)
        .await
        .unwrap();
    }
}

/// With the persister stopped, stores `next_offset` (and the timestamp of the message below
/// it) as its position in every partition of the results topic, as a log that is gone left
/// it; publishes 20 results and starts the persister again. Every result must be stored: before
/// the fix the persister skipped the new log's messages up to the old position, and their jobs
/// never finished. Returns the new persister's log.
async fn results_after_a_stale_position(next_offset: i64, timestamp: Option<i64>) -> String {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    assert!(p.terminate(0, Duration::from_secs(20)).await);
    let results = p.topics.results();
    store_position(&p, &results, next_offset, timestamp).await;
    publish_results(&p, &results, 20).await;
    let persister = p.start("sluice-persister");
    p.wait_count(
        "SELECT count(*) FROM jobs WHERE status = 'done'",
        20,
        Duration::from_secs(30),
    )
    .await;
    p.log(persister)
}

/// A memory broker restarted: its logs start over at 0, far below the old positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_beyond_the_end_of_the_log_are_set_back_and_nothing_is_skipped() {
    let log = results_after_a_stale_position(1_000, None).await;
    assert!(
        log.contains("belongs to a log that is gone")
            && log.contains("stored_position=1000")
            && log.contains("beyond the log's end"),
        "the persister names the stale position: {log}"
    );
}

/// A topic created again and written to past the old position: the position lies inside the
/// new log, but the message below it is not the one applied (another timestamp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_inside_a_replaced_log_is_set_back_and_nothing_is_skipped() {
    let log = results_after_a_stale_position(1, Some(12_345)).await;
    assert!(
        log.contains("belongs to a log that is gone") && log.contains("not 12345 as applied"),
        "the persister says the log was replaced: {log}"
    );
}

/// A position set back by one replica whose rewind did not happen (a rebalance took the
/// partition, or the seek came too early) must still be rewound by the next owner: the group's
/// committed offset is as stale as the position was. Before the fix a stored 0 looked fresh,
/// and the messages below the committed offset were never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_set_back_is_read_from_the_start_of_the_log() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    assert!(p.terminate(0, Duration::from_secs(20)).await);
    let results = p.topics.results();
    store_position(&p, &results, 0, None).await;
    publish_results(&p, &results, 20).await;
    commit_group_offsets(&p, &results, 1).await;
    p.start("sluice-persister");
    p.wait_count(
        "SELECT count(*) FROM jobs WHERE status = 'done'",
        20,
        Duration::from_secs(30),
    )
    .await;
}

/// A database restored from a backup older than the group's committed offsets (or a failover
/// to a replica that was behind): reading must resume from the positions stored with the rows.
/// Before the fix the persister resumed from the group's offsets, and the messages between the
/// two were never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_database_restore_reading_resumes_from_the_stored_positions() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let results = p.topics.results();
    let done = "SELECT count(*) FROM jobs WHERE status = 'done'";
    publish_results(&p, &results, 20).await;
    p.wait_count(done, 20, Duration::from_secs(30)).await;
    for backup in [
        "CREATE TABLE backup_offsets AS SELECT * FROM consumer_offsets",
        "CREATE TABLE backup_jobs AS SELECT job_id FROM jobs",
    ] {
        sqlx::query(backup).execute(&p.pool).await.unwrap();
    }
    publish_results(&p, &results, 20).await;
    p.wait_count(done, 40, Duration::from_secs(30)).await;
    assert!(p.terminate(0, Duration::from_secs(20)).await);
    // The restore: what came after the backup is gone from the database, and only from it.
    for restore in [
        "DELETE FROM jobs WHERE job_id NOT IN (SELECT job_id FROM backup_jobs)",
        "DELETE FROM consumer_offsets",
        "INSERT INTO consumer_offsets SELECT * FROM backup_offsets",
    ] {
        sqlx::query(restore).execute(&p.pool).await.unwrap();
    }
    assert_eq!(p.count(done).await, 20);
    p.start("sluice-persister");
    p.wait_count(done, 40, Duration::from_secs(30)).await;
}

/// A commit that fails says nothing about the rows: PostgreSQL fails every commit that calls
/// `pg_notify` with 54000 while its NOTIFY queue is full (a listening session that stopped
/// reading). Simulated here by a deferred trigger raising 54000 at COMMIT. Before the fix the
/// persister took it for refused data: the results became dead letters and their jobs never
/// finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_is_waited_out_not_taken_for_refused_data() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    for ddl in [
        "CREATE TABLE failing_commits (failing boolean NOT NULL)",
        "INSERT INTO failing_commits VALUES (true)",
        "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF (SELECT failing FROM failing_commits) THEN
             RAISE EXCEPTION 'too many notifications in the NOTIFY queue' USING ERRCODE = '54000';
           END IF;
           RETURN NULL;
         END $$",
        "CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT OR UPDATE ON jobs
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()",
    ] {
        sqlx::query(ddl).execute(&p.pool).await.unwrap();
    }
    let results = p.topics.results();
    publish_results(&p, &results, 5).await;
    eventually(
        Duration::from_secs(30),
        "the persister's commits failing",
        || async { p.log(0).contains("too many notifications").then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query("UPDATE failing_commits SET failing = false")
        .execute(&p.pool)
        .await
        .unwrap();
    p.wait_count(
        "SELECT count(*) FROM jobs WHERE status = 'done'",
        5,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}

/// Heartbeats are dated by the broker, not by their sender: before the fix one heartbeat from
/// a clock an hour ahead hid every later one of its worker, and a worker whose clock was behind
/// was never live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_dated_by_the_broker_not_their_sender() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let beat = |state: &str, at: chrono::DateTime<Utc>| {
        json!({"role": "compute", "instance": "skewed", "host": "h", "state": state,
               "in_flight": 0, "processed": 0, "version": "v", "at": at})
        .to_string()
        .into_bytes()
    };
    let now = Utc::now();
    let heartbeats = p.topics.heartbeats();
    p.publish_raw(
        &heartbeats,
        "skewed",
        beat("busy", now + chrono::Duration::hours(1)),
    )
    .await;
    p.publish_raw(
        &heartbeats,
        "skewed",
        beat("idle", now - chrono::Duration::seconds(30)),
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM workers WHERE instance_id = 'skewed' AND state = 'idle'
           AND last_seen BETWEEN now() - interval '10 seconds' AND now() + interval '1 second'",
        1,
        Duration::from_secs(30),
    )
    .await;
    let (code, listed) = p.sluice(&["workers"]).await;
    assert_eq!(code, 0);
    assert!(
        listed.contains("skewed"),
        "live though its clock is behind: {listed}"
    );
}

/// A header name that is not UTF-8 on a topic the persister reads: its dead letter is a row
/// written with the message's position, like every other row of the persister, not a publish
/// that a crash could lose after the position moved past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_header_becomes_a_dead_letter_row_with_its_position() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let results = p.topics.results();
    let id = Uuid::new_v4();
    p.publish_with_raw_header_name(
        &results,
        &id.to_string(),
        &result_message(id, json!({"ok": true, "result": 1.0})),
        b"\xc3\x28",
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'decode' AND reason LIKE '%not UTF-8%'",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        stored_positions(&p, &results).await,
        1,
        "the position covers the message"
    );
    assert!(p.is_running(0), "the persister keeps running");
}

/// A batch the database refuses goes row by row. One row waits on a lock (a lock timeout is
/// not refused data: it is waited out, not dead-lettered), shutdown comes meanwhile, and the
/// rows after it must not be written: before the fix the next row committed and moved the
/// stored position past the waiting one, whose job then stayed pending forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_by_row_stops_at_the_first_row_not_written() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    assert!(p.terminate(0, Duration::from_secs(20)).await);
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&p.pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} SET lock_timeout = '300ms'"
    ))
    .execute(&p.pool)
    .await
    .unwrap();
    let (locked, after) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, created_at) VALUES ($1, 'compute', 'pending', now())",
    )
    .bind(locked)
    .execute(&p.pool)
    .await
    .unwrap();
    let mut holder = p.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE")
        .bind(locked)
        .execute(&mut *holder)
        .await
        .unwrap();

    // One key, one partition, one batch: refused data (a NUL PostgreSQL cannot store), the
    // locked job, one after it.
    let results = p.topics.results();
    let ok = json!({"ok": true, "result": 1.0});
    p.publish_raw(
        &results,
        "k",
        result_message(
            Uuid::new_v4(),
            json!({"ok": true, "text": "nul \u{0} inside"}),
        ),
    )
    .await;
    p.publish_raw(&results, "k", result_message(locked, ok.clone()))
        .await;
    p.publish_raw(&results, "k", result_message(after, ok.clone()))
        .await;
    let persister = p.start_with("sluice-persister", &[("PERSISTER_BATCH_WAIT", "3s")]);
    eventually(
        Duration::from_secs(30),
        "the locked row to be waited on",
        || async {
            let log = p.log(persister);
            (log.contains("batch refused") && log.contains("write failed, retrying")).then_some(())
        },
    )
    .await;
    assert!(p.terminate(persister, Duration::from_secs(30)).await);
    holder.rollback().await.unwrap();
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{after}'"
        ))
        .await,
        0,
        "nothing after the row not written"
    );

    p.start("sluice-persister");
    p.wait_count(
        &format!(
            "SELECT count(*) FROM jobs WHERE job_id IN ('{locked}', '{after}') AND status = 'done'"
        ),
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters").await,
        1,
        "only the refused row is a dead letter"
    );
}

/// Publishes `count` valid results of new jobs straight to `results`.
async fn publish_results(p: &TestPipeline, results: &str, count: usize) {
    for _ in 0..count {
        let id = Uuid::new_v4();
        p.publish_raw(
            results,
            &id.to_string(),
            result_message(id, json!({"ok": true, "result": 1.0})),
        )
        .await;
    }
}
