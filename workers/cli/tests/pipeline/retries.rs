//! Retry tiers and dead letters, driven by handlers that fail on purpose, running in this test
//! process on the shared core loop, with the real retry service and persister around them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sluice_core::retry::RetryPolicy;
use sluice_core::{Cx, ErrorClass, Handler, HandlerError, Job, Outcome, Output, PipelineError};
use sluice_messages::{header, Envelope, JobResult, Topics};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{Options, SharedHandler, TestPipeline};

/// Fails with a transient error for the first `failures` attempts of every job (for all of
/// them while `broken` is set), then answers. Records when each attempt came.
struct Flaky {
    topics: Topics,
    failures: u32,
    broken: AtomicBool,
    attempts: Mutex<Vec<(u32, Instant)>>,
}

impl Flaky {
    fn new(topics: Topics, failures: u32, broken: bool) -> Self {
        Self {
            topics,
            failures,
            broken: AtomicBool::new(broken),
            attempts: Mutex::new(Vec::new()),
        }
    }
}

impl Handler for Flaky {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        let envelope: Envelope = job.envelope()?;
        self.attempts
            .lock()
            .unwrap()
            .push((job.attempt, Instant::now()));
        if self.broken.load(Ordering::SeqCst) || job.attempt <= self.failures {
            return Err(HandlerError::transient(
                ErrorClass::Unavailable,
                "simulated outage of a dependency",
            ));
        }
        let result = JobResult {
            id: envelope.id,
            kind: envelope.kind,
            result: serde_json::value::to_raw_value(&json!({"ok": true, "result": 1})).unwrap(),
            worker: "flaky".into(),
            attempts: job.attempt,
            created_at: envelope.created_at,
            finished_at: Utc::now(),
        };
        Ok(vec![Output::json(
            self.topics.results(),
            result.id.to_string(),
            &result,
        )?])
    }
}

/// A pipeline without compute workers whose compute jobs go to a [`Flaky`] stage in this
/// process, and one job published to it.
async fn one_job_through_flaky(
    max_attempts: u32,
    failures: u32,
    broken: bool,
) -> (
    TestPipeline,
    Arc<Flaky>,
    JoinHandle<Result<(), PipelineError>>,
    Uuid,
) {
    let p = TestPipeline::spawn(Options {
        compute_workers: 0,
        max_attempts,
        ..Options::default()
    })
    .await;
    let flaky = Arc::new(Flaky::new(p.topics.clone(), failures, broken));
    let inputs = vec![p.topics.compute_jobs()];
    let stage = p
        .run_stage_in_process("flaky", inputs, SharedHandler(flaky.clone()))
        .await;
    let id = Uuid::new_v4();
    let job = json!({"op": "add", "a": 1, "b": 1});
    p.publish_job(&Envelope::with_id(id, "compute", job)).await;
    (p, flaky, stage, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_pass_through_the_retry_tiers_and_are_persisted() {
    let (p, flaky, stage, id) = one_job_through_flaky(5, 3, false).await;

    let sql = format!(
        "SELECT count(*) FROM jobs WHERE job_id = '{id}' AND status = 'done' AND attempts = 4"
    );
    p.wait_count(&sql, 1, Duration::from_secs(60)).await;
    let attempts = flaky.attempts.lock().unwrap().clone();
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4], "three failures, then success");
    let policy = RetryPolicy::new(p.retry.clone());
    for (failure, pair) in attempts.windows(2).enumerate() {
        let observed = pair[1].1 - pair[0].1;
        let policy_delay = policy.delay_for(failure as u32 + 1);
        assert!(
            observed >= policy_delay,
            "retry {} came after {observed:?}, sooner than the policy's {policy_delay:?}",
            failure + 1
        );
    }
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_message_is_dead_lettered_and_replay_brings_it_back() {
    let (p, flaky, stage, id) = one_job_through_flaky(3, 0, true).await;

    let sql = format!(
        "SELECT count(*) FROM dead_letters WHERE job_id = '{id}' AND attempts = 3
           AND error_class = 'unavailable' AND reason = 'simulated outage of a dependency'
           AND original_topic = '{}'",
        p.topics.compute_jobs()
    );
    p.wait_count(&sql, 1, Duration::from_secs(60)).await;
    p.wait_count(
        &format!("SELECT count(*) FROM jobs WHERE job_id = '{id}' AND status = 'dead'"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        flaky.attempts.lock().unwrap().len(),
        3,
        "MAX_ATTEMPTS attempts in all"
    );
    let (exit, listing) = p.sluice(&["dlq", "list"]).await;
    assert_eq!(exit, 0);
    assert!(listing.contains(&id.to_string()), "{listing}");
    let (exit, out) = p.sluice(&["job", &id.to_string()]).await;
    assert_eq!(exit, 0);
    assert!(out.contains(r#""status": "dead""#), "{out}");

    // The dependency is back: replay, and the job completes as a fresh message.
    flaky.broken.store(false, Ordering::SeqCst);
    let (exit, out) = p.sluice(&["dlq", "replay", "--all"]).await;
    assert_eq!(exit, 0);
    assert_eq!(out.trim(), "replayed 1 dead letter(s)");
    let sql = format!(
        "SELECT count(*) FROM jobs WHERE job_id = '{id}' AND status = 'done' AND attempts = 1"
    );
    p.wait_count(&sql, 1, Duration::from_secs(60)).await;
    let (_, listing) = p.sluice(&["dlq", "list"]).await;
    assert_eq!(listing.trim(), "no dead letters");
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Records the ids that reach it through its returns topic.
struct Arrivals {
    ids: Mutex<Vec<String>>,
}

impl Handler for Arrivals {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        self.ids
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&job.payload).into_owned());
        Ok(vec![])
    }
}

/// A stage in this process that only receives what the retry service sends back to it.
async fn arrivals_stage(
    p: &TestPipeline,
    role: &str,
) -> (Arc<Arrivals>, JoinHandle<Result<(), PipelineError>>) {
    let arrivals = Arc::new(Arrivals {
        ids: Mutex::new(Vec::new()),
    });
    // Its input is a topic nobody publishes to: everything it gets comes back from the tiers.
    let input = p.topics.returns(&format!("{role}-input"));
    sluice_core::topics::ensure_topics(&p.kafka, std::slice::from_ref(&input))
        .await
        .expect("the stage's input topic");
    let stage = p
        .run_stage_in_process(role, vec![input], SharedHandler(arrivals.clone()))
        .await;
    (arrivals, stage)
}

/// Publishes `id` straight to retry tier `tier`, due at `due_ms`, on its way back to `to`.
async fn park(p: &TestPipeline, tier: usize, id: &str, due_ms: i64, to: &str) {
    let due = due_ms.to_string();
    p.publish_with_headers(
        &p.retry_tiers_topic(tier),
        id,
        id.as_bytes().to_vec(),
        &[
            (header::FAILURES, "1"),
            (header::DUE_MS, due.as_str()),
            (header::RETURN_TOPIC, to),
        ],
    )
    .await;
}

/// A due time in the far future (a producer's clock, or a forged header) is clamped to the
/// tier's delay after the retry service received the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_time_is_never_later_than_the_tier_delay() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let (arrivals, stage) = arrivals_stage(&p, "clamped").await;
    let in_an_hour = Utc::now().timestamp_millis() + 3_600_000;
    let sent = Instant::now();
    park(&p, 0, "late", in_an_hour, &p.topics.returns("clamped")).await;
    crate::helpers::eventually(Duration::from_secs(20), "the message back", || async {
        (arrivals.ids.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// The retry service sends a message back only to a returns topic; one aimed anywhere else
/// (here: the results topic) is dead-lettered as misrouted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_message_aimed_elsewhere_is_dead_lettered() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let now = Utc::now().timestamp_millis();
    park(&p, 0, "forged", now, &p.topics.results()).await;
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'misrouted'",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM jobs").await,
        0,
        "nothing reached results"
    );
}

/// Messages waiting in the longest tier while a second retry service joins the group and
/// leaves it again (two rebalances, with messages arriving meanwhile): every one comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_held_is_lost_when_retry_instances_join_and_leave() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let (arrivals, stage) = arrivals_stage(&p, "held").await;
    let back_to = p.topics.returns("held");
    let longest = p.retry.tiers.len() - 1;
    let mut sent = Vec::new();
    let mut second = None;
    for round in 0..40 {
        for i in 0..5 {
            let id = format!("m-{round}-{i}");
            let due = Utc::now().timestamp_millis() + 2_000;
            park(&p, longest, &id, due, &back_to).await;
            sent.push(id);
        }
        match round {
            5 => second = Some(p.start("sluice-retry")),
            25 => {
                let index = second.expect("started");
                assert!(p.terminate(index, Duration::from_secs(20)).await);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    every_message_back(&arrivals, &sent, Duration::from_secs(90)).await;
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// A retry instance whose sends fail for longer than `max.poll.interval.ms` (every publish of
/// it fails: its producer is transactional and never begins a transaction) keeps polling while
/// they retry: it keeps its partitions, so no other instance takes its messages over and sends
/// them meanwhile; once it stops, every one of them comes back through the other instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_instance_whose_sends_fail_past_the_poll_interval_keeps_its_partitions() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let (arrivals, stage) = arrivals_stage(&p, "stuck").await;
    let back_to = p.topics.returns("stuck");
    let broken = p.start_with(
        "sluice-retry",
        &[
            ("KAFKA_OPT_TRANSACTIONAL_ID", "never-begun"),
            ("KAFKA_MAX_POLL_INTERVAL_MS", "6000"),
        ],
    );
    // Incremental rebalancing first assigns the newcomer nothing, then what the other gave up.
    crate::helpers::eventually(Duration::from_secs(30), "partitions for it", || async {
        p.log(broken)
            .contains("partitions assigned assigned=[TopicPartition")
            .then_some(())
    })
    .await;
    // Every tier, due at once: the assignor balances the count of partitions, not each tier's,
    // so either instance may hold all of one tier.
    let sent: Vec<String> = (0..20).map(|i| format!("s-{i}")).collect();
    for (i, id) in sent.iter().enumerate() {
        let tier = i % p.retry.tiers.len();
        park(&p, tier, id, Utc::now().timestamp_millis(), &back_to).await;
    }
    crate::helpers::eventually(Duration::from_secs(30), "a send failing", || async {
        p.log(broken)
            .contains("publish failed, retrying")
            .then_some(())
    })
    .await;
    // Well past the poll interval: a member that stopped polling would have been thrown out,
    // and the other instance would have sent everything by now.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(p.is_running(broken), "{}", p.log(broken));
    let got = arrivals.ids.lock().unwrap().len();
    assert!(
        0 < got && got < sent.len(),
        "{got} of {} back: the stuck instance lost its partitions",
        sent.len()
    );

    assert!(p.terminate(broken, Duration::from_secs(20)).await);
    every_message_back(&arrivals, &sent, Duration::from_secs(60)).await;
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Waits until every id of `sent` has come back to the arrivals stage.
async fn every_message_back(arrivals: &Arrivals, sent: &[String], within: Duration) {
    crate::helpers::eventually(within, "every message back", || async {
        let got: std::collections::HashSet<String> =
            arrivals.ids.lock().unwrap().iter().cloned().collect();
        sent.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;
}
