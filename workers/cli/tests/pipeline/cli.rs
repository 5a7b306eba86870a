//! The `sluice` program's own guarantees: one listening connection however many jobs a process
//! awaits, `calc --id` idempotent (and refusing another request under a used id), and
//! `dlq replay` publishing each dead message once, to job topics only, with its own headers,
//! and never a letter cut to fit the dead letters.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;
use sluice_db::pool::connect_and_migrate;
use sluice_db::{DatabaseConfig, JobWaiter};
use sluice_messages::{header, Envelope};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{eventually, with_database, Options, TestPipeline, PARTITIONS};

// ---- the job waiter (PostgreSQL only) ----

/// A new migrated database of its own, reached through a pool of 4 connections.
async fn fresh_database() -> PgPool {
    let admin_url =
        std::env::var("DATABASE_URL").expect("DATABASE_URL is not set: run scripts/test");
    let name = format!("w{}", &Uuid::new_v4().simple().to_string()[..12]);
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .expect("admin connection to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create the test database");
    admin.close().await;
    let database = DatabaseConfig {
        url: with_database(&admin_url, &name),
        max_connections: 4,
    };
    connect_and_migrate(&database, &CancellationToken::new())
        .await
        .expect("migrated test database")
}

/// `count` pending jobs.
async fn pending_jobs(pool: &PgPool, count: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, created_at)
         SELECT id, 'compute', 'pending', now() FROM UNNEST($1::uuid[]) AS id",
    )
    .bind(&ids)
    .execute(pool)
    .await
    .unwrap();
    ids
}

async fn set_done(pool: &PgPool, ids: &[Uuid]) {
    sqlx::query(
        r#"UPDATE jobs SET status = 'done', result = '{"ok": true}' WHERE job_id = ANY($1)"#,
    )
    .bind(ids)
    .execute(pool)
    .await
    .unwrap();
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Every id awaited at once on `waiter`; the waits have started once this returns.
async fn wait_all(
    waiter: &JobWaiter,
    ids: &[Uuid],
) -> Vec<JoinHandle<Option<sluice_db::queries::JobRow>>> {
    let waits: Vec<_> = ids
        .iter()
        .map(|id| {
            let (waiter, id) = (waiter.clone(), *id);
            tokio::spawn(async move { waiter.wait(id, Duration::from_secs(60)).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waits.iter().all(|w| !w.is_finished()),
        "pending jobs keep their waiters waiting"
    );
    waits
}

/// All of `waits` end within `within` with their jobs done.
async fn all_done(waits: Vec<JoinHandle<Option<sluice_db::queries::JobRow>>>, within: Duration) {
    let rows = tokio::time::timeout(within, futures::future::join_all(waits))
        .await
        .expect("every waiter woke");
    for row in rows {
        let row = row.unwrap().expect("the job exists");
        assert_eq!(row.status, "done");
    }
}

const WAITER_CONNECTIONS: &str = "SELECT count(*) FROM pg_stat_activity
     WHERE datname = current_database() AND application_name = 'sluice-job-waiter'";
const LISTENING: &str = "SELECT count(*) FROM pg_stat_activity
     WHERE datname = current_database() AND query ILIKE 'LISTEN%'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_waits_share_one_listening_connection_and_all_wake() {
    let pool = fresh_database().await;
    let ids = pending_jobs(&pool, 200).await;
    // Never re-read without a notification here: only the notifications can wake them.
    let waiter = JobWaiter::with_recheck(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    let waits = wait_all(&waiter, &ids).await;

    assert_eq!(scalar(&pool, LISTENING).await, 1, "one LISTEN connection");
    assert_eq!(scalar(&pool, WAITER_CONNECTIONS).await, 1);
    let all = scalar(
        &pool,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
    )
    .await;
    assert!(
        all <= 5,
        "{all} connections: the pool's 4 and the listener's"
    );

    // Two notifications of 100 ids each, as the persister sends them.
    set_done(&pool, &ids).await;
    for half in ids.chunks(100) {
        let payload = half
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query("SELECT pg_notify('sluice_jobs', $1)")
            .bind(payload)
            .execute(&pool)
            .await
            .unwrap();
    }
    all_done(waits, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_notification_wakes_every_waiter() {
    let pool = fresh_database().await;
    let ids = pending_jobs(&pool, 20).await;
    let waiter = JobWaiter::with_recheck(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    let waits = wait_all(&waiter, &ids).await;
    set_done(&pool, &ids).await;
    sqlx::query("SELECT pg_notify('sluice_jobs', '')")
        .execute(&pool)
        .await
        .unwrap();
    all_done(waits, Duration::from_secs(10)).await;
}

/// Jobs finish while nobody says so, then the listening connection is killed: after it
/// reconnects every waiter looks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_look_again_after_the_listener_reconnects() {
    let pool = fresh_database().await;
    let ids = pending_jobs(&pool, 20).await;
    let waiter = JobWaiter::with_recheck(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    let waits = wait_all(&waiter, &ids).await;
    set_done(&pool, &ids).await;
    let killed = scalar(
        &pool,
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = 'sluice-job-waiter') AS k",
    )
    .await;
    assert_eq!(killed, 1);
    all_done(waits, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "listening again", || async {
        (scalar(&pool, LISTENING).await == 1).then_some(())
    })
    .await;
}

/// A notification that never comes only delays the answer: the periodic re-read finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_only_delays_the_answer() {
    let pool = fresh_database().await;
    let ids = pending_jobs(&pool, 5).await;
    let waiter = JobWaiter::start(&pool).await.unwrap();
    let waits = wait_all(&waiter, &ids).await;
    set_done(&pool, &ids).await;
    all_done(waits, Duration::from_secs(5)).await;
}

// ---- the real pipeline ----

/// A message as a consumer of its topic sees it: its key and its headers, in order.
struct Consumed {
    key: String,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Every message on `topic` so far.
async fn messages_on(p: &TestPipeline, topic: &str) -> Vec<Consumed> {
    let kafka = p.kafka.clone();
    let group = format!("{}.check", kafka.topic_prefix);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = sluice_core::kafka::consumer_config(&kafka, &group, 10)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        let mut expected = 0;
        for partition in 0..PARTITIONS {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .expect("watermarks");
            expected += high - low;
            tpl.add_partition_offset(&topic, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let mut messages = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while (messages.len() as i64) < expected {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {expected}",
                messages.len()
            );
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.expect("message");
                let headers = message.headers().map_or_else(Vec::new, |all| {
                    all.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                });
                messages.push(Consumed {
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    headers,
                });
            }
        }
        messages
    })
    .await
    .unwrap()
}

/// Keys of every message on `topic` so far.
async fn keys_on(p: &TestPipeline, topic: &str) -> Vec<String> {
    messages_on(p, topic)
        .await
        .into_iter()
        .map(|m| m.key)
        .collect()
}

/// Inserts a dead letter of job `job` that first failed at `original`, as the persister
/// would; returns its id.
async fn dead_letter(
    p: &TestPipeline,
    source_offset: i64,
    job: Uuid,
    original: (&str, i32, i64),
) -> i64 {
    dead_letter_with(
        p,
        source_offset,
        job,
        original,
        &job_message(job, 2),
        &json!({}),
    )
    .await
}

/// The compute job `job` adding 1 and `b`, as published.
fn job_message(job: Uuid, b: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": job, "kind": "compute", "payload": {"op": "add", "a": 1, "b": b},
        "created_at": "2026-11-22T00:00:00Z"
    }))
    .unwrap()
}

/// [`dead_letter`] with the message `payload`, and sluice's `headers` as the persister stores
/// them (the message had none of its own).
async fn dead_letter_with(
    p: &TestPipeline,
    source_offset: i64,
    job: Uuid,
    original: (&str, i32, i64),
    payload: &[u8],
    headers: &serde_json::Value,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO dead_letters (job_id, source_topic, source_partition, source_offset,
             original_topic, original_partition, original_offset, attempts, error_class, reason,
             message_key, payload, headers, foreign_headers)
         VALUES ($1, $2, 0, $3, $4, $5, $6, 3, 'unavailable', 'simulated', $7, $8, $9, '[]')
         RETURNING id",
    )
    .bind(job)
    .bind(p.topics.dead_letters())
    .bind(source_offset)
    .bind(original.0)
    .bind(original.1)
    .bind(original.2)
    .bind(job.to_string().into_bytes())
    .bind(payload)
    .bind(headers)
    .fetch_one(&p.pool)
    .await
    .unwrap()
}

fn replayed_count(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix("replayed ")?.strip_suffix(" dead letter(s)"))
        .unwrap_or_else(|| panic!("no count in {out:?}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_publish_each_dead_message_once_and_only_to_job_topics() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let jobs_topic = p.topics.compute_jobs();
    let (twice, once, elsewhere) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, error, created_at)
         VALUES ($1, 'compute', 'dead', 'simulated', now())",
    )
    .bind(twice)
    .execute(&p.pool)
    .await
    .unwrap();
    // One message dead-lettered twice (the same original position), one once, and one whose
    // original topic is not a job topic.
    let first = dead_letter(&p, 1000, twice, (&jobs_topic, 1, 7)).await;
    let second = dead_letter(&p, 1001, twice, (&jobs_topic, 1, 7)).await;
    let other = dead_letter(&p, 1002, once, (&jobs_topic, 2, 3)).await;
    let results_topic = p.topics.results();
    let stray = dead_letter(&p, 1003, elsewhere, (&results_topic, 0, 0)).await;

    let ((exit_a, out_a), (exit_b, out_b)) = tokio::join!(
        p.sluice(&["dlq", "replay", "--all"]),
        p.sluice(&["dlq", "replay", "--all"])
    );
    assert_eq!((exit_a, exit_b), (0, 0), "{out_a}\n{out_b}");
    assert_eq!(
        replayed_count(&out_a) + replayed_count(&out_b),
        2,
        "{out_a}\n{out_b}"
    );
    let left_alone =
        format!("dead letter {stray} came from {results_topic}, not a job topic; left alone");
    assert!(out_a.contains(&left_alone), "{out_a}");

    let mut keys = keys_on(&p, &jobs_topic).await;
    keys.sort();
    let mut expected = vec![twice.to_string(), once.to_string()];
    expected.sort();
    assert_eq!(keys, expected, "each dead message published once");
    let replayed: BTreeMap<i64, bool> =
        sqlx::query_as("SELECT id, replayed_at IS NOT NULL FROM dead_letters")
            .fetch_all(&p.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let expected_replayed =
        BTreeMap::from([(first, true), (second, true), (other, true), (stray, false)]);
    assert_eq!(replayed, expected_replayed);
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE job_id = $1")
        .bind(twice)
        .fetch_one(&p.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending", "a replayed job is pending again");

    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!(exit, 0);
    assert_eq!(replayed_count(&out), 0, "{out}");
    assert_eq!(
        keys_on(&p, &jobs_topic).await.len(),
        2,
        "nothing more published"
    );
    let (exit, out) = p.sluice(&["dlq", "replay", &stray.to_string()]).await;
    assert_ne!(
        exit, 0,
        "a letter left alone is a failure when asked for by id: {out}"
    );
    assert_eq!(keys_on(&p, &results_topic).await.len(), 0, "{out}");
}

async fn compute_jobs_published(p: &TestPipeline) -> usize {
    keys_on(p, &p.topics.compute_jobs()).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calc_with_a_used_id_answers_again_or_refuses_another_request() {
    let p = TestPipeline::spawn(Options::default()).await;
    let id = Uuid::new_v4().to_string();
    let add = |b: &'static str| ["calc", "--op", "add", "--a", "2", "--b", b, "--id", &id];
    let answer = r#"{"ok": true, "result": 5.0, "a": 2.0, "b": 3.0, "op": "add"}"#;
    let (exit, out) = p.sluice(&add("3")).await;
    assert_eq!((exit, out.trim()), (0, answer));
    let published = compute_jobs_published(&p).await;

    // The same request: the stored answer, nothing published again.
    let (exit, out) = p.sluice(&add("3")).await;
    assert_eq!((exit, out.trim()), (0, answer));
    assert_eq!(compute_jobs_published(&p).await, published);

    // Another request under the same id: refused, nothing published, the answer kept.
    let (exit, out) = p.sluice(&add("4")).await;
    assert_ne!(exit, 0, "{out}");
    assert!(out.contains("different request"), "{out}");
    assert_eq!(compute_jobs_published(&p).await, published);
    let (_, shown) = p.sluice(&["job", &id]).await;
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["result"]["result"], json!(5.0));
    let rows = format!("SELECT count(*) FROM jobs WHERE job_id = '{id}'");
    assert_eq!(p.count(&rows).await, 1);

    // sum_squares without --parts is the same request whatever the split; with --parts it is
    // another.
    let sum_id = Uuid::new_v4().to_string();
    let sum = ["calc", "--op", "sum_squares", "--n", "9", "--id", &sum_id];
    let (exit, first) = p.sluice(&sum).await;
    assert_eq!(exit, 0, "{first}");
    let (exit, again) = p.sluice(&sum).await;
    assert_eq!((exit, again.trim()), (0, first.trim()));
    let mut split = sum.to_vec();
    split.extend(["--parts", "2"]);
    let (exit, out) = p.sluice(&split).await;
    assert_ne!(exit, 0, "{out}");
    assert!(out.contains("different request"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_runs_again_and_a_failed_publish_leaves_nothing_pending() {
    let p = TestPipeline::spawn(Options::default()).await;
    let id = Uuid::new_v4();
    let args = [
        "calc",
        "--op",
        "mul",
        "--a",
        "3",
        "--b",
        "4",
        "--id",
        &id.to_string(),
    ];
    let answer = r#"{"ok": true, "result": 12.0, "a": 3.0, "b": 4.0, "op": "mul"}"#;
    let (exit, out) = p.sluice(&args).await;
    assert_eq!((exit, out.trim()), (0, answer));
    let kill = "UPDATE jobs SET status = 'dead', result = NULL, error = 'simulated'
                WHERE job_id = $1";
    sqlx::query(kill).bind(id).execute(&p.pool).await.unwrap();

    // With the broker unreachable, the revived job goes back to dead with its error, and a new
    // job leaves no row.
    let unreachable = |args: &[&str]| {
        let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL");
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("KAFKA_BROKERS", "127.0.0.1:9")
            .env("KAFKA_OPT_MESSAGE_TIMEOUT_MS", "2000")
            .env("SLUICE_TOPIC_PREFIX", &p.kafka.topic_prefix)
            .env("DATABASE_URL", with_database(&admin, &p.kafka.topic_prefix))
            .output()
    };
    let failed = unreachable(&args).await.unwrap();
    let out = String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "{out}");
    assert!(out.contains("could not publish"), "{out}");
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM jobs WHERE job_id = $1")
            .bind(id)
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("dead", Some("simulated"))
    );
    let new = Uuid::new_v4();
    let failed = unreachable(&[
        "calc",
        "--op",
        "add",
        "--a",
        "1",
        "--b",
        "1",
        "--id",
        &new.to_string(),
    ])
    .await
    .unwrap();
    assert!(!failed.status.success());
    let rows = format!("SELECT count(*) FROM jobs WHERE job_id = '{new}'");
    assert_eq!(p.count(&rows).await, 0, "no pending row left behind");

    // Sent again with the broker back: it runs and is done.
    let (exit, out) = p.sluice(&args).await;
    assert_eq!((exit, out.trim()), (0, answer));
    let done = format!("SELECT count(*) FROM jobs WHERE job_id = '{id}' AND status = 'done'");
    assert_eq!(p.count(&done).await, 1);
}

// ---- dead letters: which are the same message, and replays that never finished ----

/// Jobs that died of a simulated error.
async fn dead_jobs(p: &TestPipeline, ids: &[Uuid]) {
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, error, created_at)
         SELECT id, 'compute', 'dead', 'simulated', now() FROM UNNEST($1::uuid[]) AS id",
    )
    .bind(ids)
    .execute(&p.pool)
    .await
    .unwrap();
}

async fn job_status(p: &TestPipeline, job: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM jobs WHERE job_id = $1")
        .bind(job)
        .fetch_one(&p.pool)
        .await
        .unwrap()
}

/// Each dead letter's id, whether it is replayed and whether it is claimed.
async fn replay_states(p: &TestPipeline) -> BTreeMap<i64, (bool, bool)> {
    sqlx::query_as::<_, (i64, bool, bool)>(
        "SELECT id, replayed_at IS NOT NULL, replay_claimed_at IS NOT NULL FROM dead_letters",
    )
    .fetch_all(&p.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, replayed, claimed)| (id, (replayed, claimed)))
    .collect()
}

/// The ids `dlq list` shows.
async fn listed(p: &TestPipeline) -> Vec<i64> {
    let (exit, out) = p.sluice(&["dlq", "list"]).await;
    assert_eq!(exit, 0, "{out}");
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

async fn sorted_keys_on(p: &TestPipeline, topic: &str) -> Vec<String> {
    let mut keys = keys_on(p, topic).await;
    keys.sort();
    keys
}

fn sorted(jobs: &[Uuid]) -> Vec<String> {
    let mut keys: Vec<String> = jobs.iter().map(Uuid::to_string).collect();
    keys.sort();
    keys
}

/// A broker whose log started over (a memory engine restarted, a topic created again) gives a
/// new message the position of an old one: letters of one position are one message only with
/// the same job and the same payload, and every other one is replayed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_sharing_an_original_position_are_each_replayed_unless_the_same_message() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let jobs_topic = p.topics.compute_jobs();
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    dead_jobs(&p, &[old, new]).await;
    let at = (jobs_topic.as_str(), 0, 5);
    dead_letter(&p, 1000, old, at).await;
    dead_letter(&p, 1001, new, at).await;
    // The same job with another payload at that position is another message as well.
    dead_letter_with(&p, 1002, old, at, &job_message(old, 3), &json!({})).await;

    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!(exit, 0, "{out}");
    assert_eq!(replayed_count(&out), 3, "{out}");
    assert_eq!(
        sorted_keys_on(&p, &jobs_topic).await,
        sorted(&[old, old, new]),
        "{out}"
    );
    assert!(replay_states(&p)
        .await
        .values()
        .all(|s| *s == (true, false)));
    for job in [old, new] {
        assert_eq!(job_status(&p, job).await, "pending");
    }
}

/// A copy of a letter persisted after the letter was replayed is the same death (a replayed
/// job that dies again does so from a new position), so it is not published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_replayed_letter_is_marked_replayed_without_publishing() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let jobs_topic = p.topics.compute_jobs();
    let job = Uuid::new_v4();
    dead_jobs(&p, &[job]).await;
    let first = dead_letter(&p, 1000, job, (&jobs_topic, 1, 7)).await;
    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!((exit, replayed_count(&out)), (0, 1), "{out}");
    // Done meanwhile: the copy must not touch it.
    set_done(&p.pool, &[job]).await;

    let copy = dead_letter(&p, 1001, job, (&jobs_topic, 1, 7)).await;
    assert_eq!(listed(&p).await, vec![copy]);
    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!((exit, replayed_count(&out)), (0, 0), "{out}");
    let said = format!("dead letter {copy} is a copy of {first}, already replayed");
    assert!(out.contains(&said), "{out}");
    assert_eq!(sorted_keys_on(&p, &jobs_topic).await, sorted(&[job]));
    assert_eq!(
        replay_states(&p).await,
        BTreeMap::from([(first, (true, false)), (copy, (true, false))])
    );
    assert!(listed(&p).await.is_empty());
    assert_eq!(job_status(&p, job).await, "done");
}

/// A run that died between claiming a letter and publishing it leaves the letter listed and
/// claimed; once the claim is older than the lease another replay takes it over, while a fresh
/// claim is left to the run that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replay_claim_is_taken_over_and_a_fresh_one_left_to_its_run() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let jobs_topic = p.topics.compute_jobs();
    let (stale_job, fresh_job) = (Uuid::new_v4(), Uuid::new_v4());
    dead_jobs(&p, &[stale_job, fresh_job]).await;
    let stale = dead_letter(&p, 1000, stale_job, (&jobs_topic, 0, 1)).await;
    let fresh = dead_letter(&p, 1001, fresh_job, (&jobs_topic, 1, 1)).await;
    for (id, claimed) in [(stale, "now() - interval '10 minutes'"), (fresh, "now()")] {
        sqlx::query(&format!(
            "UPDATE dead_letters SET replay_claimed_at = {claimed} WHERE id = $1"
        ))
        .bind(id)
        .execute(&p.pool)
        .await
        .unwrap();
    }
    assert_eq!(
        listed(&p).await,
        vec![stale, fresh],
        "claimed, not replayed"
    );

    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!((exit, replayed_count(&out)), (0, 1), "{out}");
    assert!(
        out.contains(&format!(
            "dead letter {fresh} is being replayed by another run"
        )),
        "{out}"
    );
    assert_eq!(sorted_keys_on(&p, &jobs_topic).await, sorted(&[stale_job]));
    assert_eq!(
        replay_states(&p).await,
        BTreeMap::from([(stale, (true, false)), (fresh, (false, true))])
    );
    assert_eq!(listed(&p).await, vec![fresh]);
    assert_eq!(job_status(&p, stale_job).await, "pending");
    assert_eq!(job_status(&p, fresh_job).await, "dead");
}

/// A publish that fails gives the claim back at once: the letter is listed, unclaimed, its job
/// still dead, and the next replay sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replay_publish_gives_the_claim_back() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let jobs_topic = p.topics.compute_jobs();
    let job = Uuid::new_v4();
    dead_jobs(&p, &[job]).await;
    let letter = dead_letter(&p, 1000, job, (&jobs_topic, 0, 1)).await;

    let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let failed = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["dlq", "replay", &letter.to_string()])
        .env("KAFKA_BROKERS", "127.0.0.1:9")
        .env("KAFKA_OPT_MESSAGE_TIMEOUT_MS", "2000")
        .env("SLUICE_TOPIC_PREFIX", &p.kafka.topic_prefix)
        .env("DATABASE_URL", with_database(&admin, &p.kafka.topic_prefix))
        .output()
        .await
        .unwrap();
    assert!(!failed.status.success());
    assert_eq!(
        replay_states(&p).await,
        BTreeMap::from([(letter, (false, false))])
    );
    assert_eq!(job_status(&p, job).await, "dead");

    let (exit, out) = p.sluice(&["dlq", "replay", &letter.to_string()]).await;
    assert_eq!((exit, replayed_count(&out)), (0, 1), "{out}");
    assert_eq!(sorted_keys_on(&p, &jobs_topic).await, sorted(&[job]));
    assert_eq!(job_status(&p, job).await, "pending");
}

/// The message's own headers (a trace id here) go back with its replay, and sluice's
/// bookkeeping of its failure (attempts, error, original position) does not: the replayed
/// message is the one its producer sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_message_carries_its_own_headers_and_none_of_sluices() {
    let p = TestPipeline::spawn(Options::default()).await;
    let jobs_topic = p.topics.compute_jobs();
    let job = Uuid::new_v4();
    // An operation the compute workers do not know: dead-lettered at once.
    let envelope = Envelope::with_id(job, "compute", json!({"op": "pow", "a": 1, "b": 2}));
    let trace = ("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736");
    p.publish_with_headers(
        &jobs_topic,
        &job.to_string(),
        serde_json::to_vec(&envelope).unwrap(),
        &[trace],
    )
    .await;
    let letters = format!("SELECT count(*) FROM dead_letters WHERE job_id = '{job}'");
    p.wait_count(&letters, 1, Duration::from_secs(60)).await;

    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!((exit, replayed_count(&out)), (0, 1), "{out}");
    let sent = messages_on(&p, &jobs_topic).await;
    assert_eq!(sent.len(), 2, "the job and its replay");
    let own = vec![(trace.0.to_string(), Some(trace.1.as_bytes().to_vec()))];
    for message in &sent {
        assert_eq!(message.key, job.to_string());
        assert_eq!(
            message.headers, own,
            "the replay sends the message's own headers alone"
        );
    }
}

/// A letter cut to fit the dead-letter topic (`sluice-truncated-from`) is not the message that
/// died: sent again it could only fail again. Replay refuses it, as a failure when asked for by
/// id and counted by `--all`, and leaves it listed with its job dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_dead_letter_is_refused_and_left_listed() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let jobs_topic = p.topics.compute_jobs();
    let (cut_job, whole_job) = (Uuid::new_v4(), Uuid::new_v4());
    dead_jobs(&p, &[cut_job, whole_job]).await;
    let cut_headers = json!({header::TRUNCATED_FROM: "2000000"});
    let cut = dead_letter_with(
        &p,
        1000,
        cut_job,
        (&jobs_topic, 0, 1),
        &job_message(cut_job, 2),
        &cut_headers,
    )
    .await;
    let whole = dead_letter(&p, 1001, whole_job, (&jobs_topic, 0, 2)).await;

    let (exit, out) = p.sluice(&["dlq", "replay", &cut.to_string()]).await;
    assert_ne!(
        exit, 0,
        "a refused letter asked for by id is a failure: {out}"
    );
    let refused = format!("dead letter {cut} was cut to fit the dead letters");
    assert!(out.contains(&refused), "{out}");
    assert!(out.contains("2000000 bytes"), "{out}");

    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!((exit, replayed_count(&out)), (0, 1), "{out}");
    assert!(out.contains(&refused), "{out}");
    assert!(
        out.contains(&format!("refused 1 dead letter(s): {cut}")),
        "{out}"
    );
    assert_eq!(sorted_keys_on(&p, &jobs_topic).await, sorted(&[whole_job]));
    assert_eq!(
        replay_states(&p).await,
        BTreeMap::from([(cut, (false, false)), (whole, (true, false))])
    );
    assert_eq!(listed(&p).await, vec![cut]);
    assert_eq!(job_status(&p, cut_job).await, "dead");
}
