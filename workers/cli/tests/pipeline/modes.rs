//! The loop's execution modes, each run as a stage of this test process against the real
//! broker, with the real persister and retry service around it: CPU-bound work on the blocking
//! pool, per-key order, many slow calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sluice_core::blocking::{BlockingHandler, BlockingPool, OnThreads};
use sluice_core::{Cx, ErrorClass, Execution, Handler, HandlerError, Job, Outcome, Output, Stage};
use sluice_messages::{JobResult, Topics};
use uuid::Uuid;

use crate::helpers::{eventually, test_worker, Options, SharedHandler, TestPipeline};

/// A result for the persister, so that a finished message shows as a row.
fn result_for(topics: &Topics, id: Uuid) -> Result<Vec<Output>, HandlerError> {
    let result = JobResult {
        id,
        kind: "test".into(),
        result: serde_json::value::to_raw_value(&json!({"ok": true})).unwrap(),
        worker: "test".into(),
        attempts: 1,
        created_at: Utc::now(),
        finished_at: Utc::now(),
    };
    Ok(vec![Output::json(
        topics.results(),
        id.to_string(),
        &result,
    )?])
}

/// Spins a core for `busy` per message, as a model fit does.
struct Fit {
    busy: Duration,
    fits: AtomicUsize,
}

impl BlockingHandler for Fit {
    fn handle(&self, _job: &Job, _cx: &Cx) -> Outcome {
        let started = Instant::now();
        let mut x: u64 = 1;
        while started.elapsed() < self.busy {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        self.fits.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }
}

/// One runtime thread only: a fit run on it would starve the heartbeat. On the blocking pool
/// it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_long_fit_on_the_blocking_pool_does_not_delay_heartbeats() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let fit = Fit {
        busy: Duration::from_secs(4),
        fits: AtomicUsize::new(0),
    };
    let handler = OnThreads::new(fit, BlockingPool::new(1));
    let worker = test_worker("fit");
    let instance = worker.instance_id.clone();
    let execution = Execution::PerMessage {
        in_flight: 2,
        rate_per_sec: None,
        timeout: None,
    };
    let stage = p
        .run_in_process(
            Stage::new("fit", vec![p.topics.compute_jobs()], execution),
            worker,
            handler,
        )
        .await;
    p.wait_live("fit", 1).await;
    for i in 0..2 {
        p.publish_raw(&p.topics.compute_jobs(), &format!("k{i}"), b"{}".to_vec())
            .await;
    }
    // Two fits of 4 s each on one pool thread: about 8 s busy. The heartbeat (every 500 ms)
    // must keep landing all along.
    let started = Instant::now();
    let mut worst = 0.0f64;
    let mut seen_busy = false;
    while started.elapsed() < Duration::from_secs(7) {
        let (age, state): (f64, String) = sqlx::query_as(
            "SELECT extract(epoch FROM now() - last_seen)::float8, state FROM workers
             WHERE instance_id = $1",
        )
        .bind(&instance)
        .fetch_one(&p.pool)
        .await
        .unwrap();
        worst = worst.max(age);
        seen_busy |= state == "busy";
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_busy, "the stage reported itself busy during the fit");
    assert!(
        worst < 2.0,
        "a heartbeat was {worst:.1} s old during the fit"
    );
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Records every handled message per key, fails one message transiently once, and counts
/// how many keys were handled at the same time.
struct KeyRecorder {
    seen: Mutex<HashMap<String, Vec<u32>>>,
    failed_once: Mutex<bool>,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl Handler for KeyRecorder {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        let body: serde_json::Value = job.decode()?;
        let key = body["key"].as_str().unwrap_or_default().to_string();
        let seq = body["seq"].as_u64().unwrap_or_default() as u32;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(u64::from(seq % 4))).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        if key == "key-3"
            && seq == 5
            && !std::mem::replace(&mut *self.failed_once.lock().unwrap(), true)
        {
            return Err(HandlerError::transient(ErrorClass::Unavailable, "once"));
        }
        self.seen.lock().unwrap().entry(key).or_default().push(seq);
        Ok(vec![])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_under_concurrency_and_a_transient_failure() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let recorder = Arc::new(KeyRecorder {
        seen: Mutex::new(HashMap::new()),
        failed_once: Mutex::new(false),
        running: AtomicUsize::new(0),
        most_running: AtomicUsize::new(0),
    });
    let topic = p.topics.compute_jobs();
    let execution = Execution::PerKey {
        in_flight: 8,
        timeout: None,
    };
    let stage = p
        .run_in_process(
            Stage::new("ordered", vec![topic.clone()], execution),
            test_worker("ordered"),
            SharedHandler(recorder.clone()),
        )
        .await;
    let (keys, per_key) = (12u32, 25u32);
    for seq in 0..per_key {
        for k in 0..keys {
            let key = format!("key-{k}");
            let body = json!({"key": key, "seq": seq}).to_string().into_bytes();
            p.publish_raw(&topic, &key, body).await;
        }
    }
    eventually(Duration::from_secs(60), "every update handled", || async {
        let seen = recorder.seen.lock().unwrap();
        (seen.values().map(Vec::len).sum::<usize>() == (keys * per_key) as usize).then_some(())
    })
    .await;
    let seen = recorder.seen.lock().unwrap().clone();
    for (key, order) in &seen {
        let expected: Vec<u32> = (0..per_key).collect();
        assert_eq!(order, &expected, "order of {key}");
    }
    assert!(
        *recorder.failed_once.lock().unwrap(),
        "the transient failure happened"
    );
    assert!(
        recorder.most_running.load(Ordering::SeqCst) > 1,
        "different keys ran concurrently"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters").await,
        0,
        "retried in place, nothing dead-lettered"
    );
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Answers every message with a result row; messages whose key is `slow` take 4 s. Records
/// when each call started.
struct SlowAndFast {
    topics: Topics,
    starts: Mutex<Vec<Instant>>,
}

impl Handler for SlowAndFast {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        self.starts.lock().unwrap().push(Instant::now());
        let slow = job.key.as_deref() == Some(b"slow".as_slice());
        let pause = if slow { 4_000 } else { 20 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let id: Uuid = serde_json::from_slice::<serde_json::Value>(&job.payload)
            .ok()
            .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| HandlerError::permanent(ErrorClass::Decode, "no id"))?;
        result_for(&self.topics, id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_holds_back_no_fast_one_and_the_rate_limit_holds() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let handler = Arc::new(SlowAndFast {
        topics: p.topics.clone(),
        starts: Mutex::new(Vec::new()),
    });
    let topic = p.topics.compute_jobs();
    let rate = 20.0;
    let execution = Execution::PerMessage {
        in_flight: 16,
        rate_per_sec: Some(rate),
        timeout: Some(Duration::from_secs(30)),
    };
    let stage = p
        .run_in_process(
            Stage::new("calls", vec![topic.clone()], execution),
            test_worker("calls"),
            SharedHandler(handler.clone()),
        )
        .await;
    let slow = Uuid::new_v4();
    p.publish_raw(&topic, "slow", json!({"id": slow}).to_string().into_bytes())
        .await;
    let fast: Vec<Uuid> = (0..60).map(|_| Uuid::new_v4()).collect();
    for (i, id) in fast.iter().enumerate() {
        p.publish_raw(
            &topic,
            &format!("fast-{i}"),
            json!({"id": id}).to_string().into_bytes(),
        )
        .await;
    }
    // The first fast results are stored while the slow call is still running.
    let first_fast = fast[..5]
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!("SELECT count(*) FROM jobs WHERE job_id IN ({first_fast})");
    let waited = Instant::now();
    p.wait_count(&sql, 5, Duration::from_secs(3)).await;
    assert!(waited.elapsed() < Duration::from_secs(3));
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{slow}'"
        ))
        .await,
        0,
        "the slow call is still running"
    );
    p.wait_count("SELECT count(*) FROM jobs", 61, Duration::from_secs(30))
        .await;

    // 61 calls at 20/s, with a burst of at most 2: no less than (61 - 2) / 20 s from the
    // first start to the last.
    let starts = handler.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 61);
    let span = *starts.iter().max().unwrap() - *starts.iter().min().unwrap();
    let least = Duration::from_secs_f64((61.0 - 2.0) / rate * 0.95);
    assert!(
        span >= least,
        "61 calls started within {span:?}: over the limit"
    );
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Fails every message transiently (so it is retried in place), or handles it, and counts the
/// calls per key.
struct KeyAttempts {
    fails: bool,
    calls: Mutex<HashMap<String, usize>>,
}

impl KeyAttempts {
    fn new(fails: bool) -> Arc<Self> {
        Arc::new(Self {
            fails,
            calls: Mutex::new(HashMap::new()),
        })
    }

    fn calls(&self) -> HashMap<String, usize> {
        self.calls.lock().unwrap().clone()
    }
}

impl Handler for KeyAttempts {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        let key = String::from_utf8_lossy(job.key.as_deref().unwrap_or_default()).into_owned();
        *self.calls.lock().unwrap().entry(key).or_default() += 1;
        if self.fails {
            Err(HandlerError::transient(ErrorClass::Unavailable, "down"))
        } else {
            Ok(vec![])
        }
    }
}

/// A per-key stage retrying a message in place loses its partition to a second instance: the
/// retries must stop there, or the old instance would apply an older update of the key after
/// the new owner applied newer ones. Before the fix the in-place retries went on after the
/// revoke. Two partitions and two instances: the first instance loses exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_retries_stop_when_their_partition_is_revoked() {
    let p = TestPipeline::spawn(Options {
        max_attempts: 100,
        ..Options::no_workers()
    })
    .await;
    let topic = p.topics.returns("keyed-input");
    let two_partitions = sluice_core::config::KafkaConfig {
        partitions: 2,
        ..p.kafka.clone()
    };
    sluice_core::topics::ensure_topics(&two_partitions, std::slice::from_ref(&topic))
        .await
        .expect("the input topic");
    let execution = Execution::PerKey {
        in_flight: 16,
        timeout: None,
    };
    let stage = || Stage::new("keyed", vec![topic.clone()], execution.clone());
    let first = KeyAttempts::new(true);
    let first_stage = p
        .run_in_process(
            stage(),
            test_worker("keyed-a"),
            SharedHandler(first.clone()),
        )
        .await;
    let keys: Vec<String> = (0..10).map(|k| format!("key-{k}")).collect();
    for key in &keys {
        p.publish_raw(&topic, key, b"{}".to_vec()).await;
    }
    eventually(
        Duration::from_secs(60),
        "every key retried in place",
        || async {
            (first.calls().values().filter(|c| **c >= 2).count() == keys.len()).then_some(())
        },
    )
    .await;

    let second = KeyAttempts::new(false);
    let second_stage = p
        .run_in_process(
            stage(),
            test_worker("keyed-b"),
            SharedHandler(second.clone()),
        )
        .await;
    let moved: Vec<String> = eventually(
        Duration::from_secs(60),
        "the second instance to handle the keys of the partition it took",
        || async {
            let handled: Vec<String> = second.calls().into_keys().collect();
            (!handled.is_empty()).then_some(handled)
        },
    )
    .await;
    // Let the moved keys' handling settle, then watch the first instance: with retries every
    // 200 ms to 2 s, three seconds would show any that went on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = first.calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = first.calls();
    for key in &moved {
        assert_eq!(
            before.get(key),
            after.get(key),
            "{key} moved to the second instance but the first went on retrying it"
        );
    }
    assert!(
        moved.len() < keys.len(),
        "the first instance kept one partition"
    );
    p.shutdown.cancel();
    first_stage.await.unwrap().unwrap();
    second_stage.await.unwrap().unwrap();
}

/// Records the count and bytes of every batch it is given, slowly, so that messages pile up
/// meanwhile.
struct BatchSizes {
    sizes: Arc<Mutex<Vec<(usize, usize)>>>,
}

impl Handler for BatchSizes {
    async fn handle(&self, _job: &Job, _cx: &Cx) -> Outcome {
        Ok(vec![])
    }

    async fn handle_batch(&self, jobs: &[Job], _cx: &Cx) -> Vec<Outcome> {
        let bytes = jobs.iter().map(|j| j.payload.len()).sum();
        self.sizes.lock().unwrap().push((jobs.len(), bytes));
        tokio::time::sleep(Duration::from_millis(300)).await;
        jobs.iter().map(|_| Ok(vec![])).collect()
    }
}

#[tokio::test]
async fn batches_are_bounded_by_bytes_as_well_as_by_count() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let handler = BatchSizes {
        sizes: sizes.clone(),
    };
    let execution = Execution::Batches {
        max: 1_000,
        wait: Duration::from_millis(200),
        in_flight: 1,
    };
    let stage = p
        .run_in_process(
            Stage::new("big", vec![p.topics.compute_jobs()], execution),
            test_worker("big"),
            handler,
        )
        .await;
    p.wait_live("big", 1).await;
    // 48 messages of 1 MiB: one batch of them all would be three times the bound.
    const MESSAGE: usize = 1024 * 1024;
    for _ in 0..48 {
        p.publish_raw(
            &p.topics.compute_jobs(),
            "one-partition",
            vec![b'x'; MESSAGE],
        )
        .await;
    }
    let handled = || sizes.lock().unwrap().iter().map(|(n, _)| n).sum::<usize>();
    eventually(Duration::from_secs(60), "48 messages handled", || async {
        (handled() >= 48).then_some(())
    })
    .await;
    let sizes = sizes.lock().unwrap().clone();
    assert!(sizes.len() >= 3, "{sizes:?}");
    for (count, bytes) in &sizes {
        assert!(
            *bytes <= 16 * MESSAGE,
            "a batch of {count} messages held {bytes} bytes: {sizes:?}"
        );
    }
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}
