//! Retry tiers and dead letters, driven by handlers that fail on purpose, running in this test
//! process on the shared core loop, with the real retry service and persister around them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sluice_core::retry::RetryPolicy;
use sluice_core::topics::Topics;
use sluice_core::{Envelope, Handler, HandlerError, Job, JobResult, Outcome, Output};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{Options, TestPipeline};

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
    async fn handle(&self, job: &Job) -> Outcome {
        let envelope: Envelope = job.envelope()?;
        self.attempts
            .lock()
            .unwrap()
            .push((job.attempt, Instant::now()));
        if self.broken.load(Ordering::SeqCst) || job.attempt <= self.failures {
            return Err(HandlerError::transient(
                "flaky",
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
) -> (TestPipeline, Arc<Flaky>, JoinHandle<()>, Uuid) {
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
    stage.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_message_is_dead_lettered_and_replay_brings_it_back() {
    let (p, flaky, stage, id) = one_job_through_flaky(3, 0, true).await;

    let sql = format!(
        "SELECT count(*) FROM dead_letters WHERE job_id = '{id}' AND attempts = 3
           AND error_class = 'flaky' AND reason = 'simulated outage of a dependency'
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
    stage.await.unwrap();
}

/// Lets the test keep a handle on the handler it gives the stage.
struct SharedHandler<H>(Arc<H>);

impl<H: Handler> Handler for SharedHandler<H> {
    async fn handle(&self, job: &Job) -> Outcome {
        self.0.handle(job).await
    }
}
