//! What keeps a stage from stalling silently or looping forever: outputs the broker refuses,
//! handlers busy past the poll interval, panics, broken contracts, stalls, a flood of dead
//! letters, bad configuration, and headers forged by a producer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_core::headers::header_str;
use sluice_core::{
    Cx, ErrorClass, Execution, Handler, HandlerError, Job, Outcome, Output, PipelineError, Stage,
};
use sluice_messages::header;

use crate::helpers::{eventually, test_worker, Options, SharedHandler, TestPipeline};

fn one_at_a_time() -> Execution {
    Execution::Batches {
        max: 1,
        wait: Duration::ZERO,
        in_flight: 1,
    }
}

/// Publishes whatever the message asks for: `big` → a 5 MB output, `bad-topic` → an output to
/// a topic name no broker accepts, anything else → nothing.
struct Refused;

impl Handler for Refused {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        let output = |topic: &str, size: usize| Output {
            topic: topic.to_string(),
            key: None,
            payload: vec![b'x'; size],
            headers: None,
        };
        Ok(match job.payload.as_slice() {
            b"big" => vec![output("t-big", 5 * 1024 * 1024)],
            b"bad-topic" => vec![output("no such topic!", 10)],
            _ => vec![],
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_broker_can_never_accept_dead_letter_the_message_and_the_stage_moves_on() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.compute_jobs();
    let stage = p
        .run_in_process(
            Stage::new("refused", vec![topic.clone()], one_at_a_time()),
            test_worker("refused"),
            Refused,
        )
        .await;
    for payload in ["big", "bad-topic", "fine"] {
        p.publish_raw(&topic, "same-partition", payload.as_bytes().to_vec())
            .await;
    }
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'undeliverable'",
        2,
        Duration::from_secs(60),
    )
    .await;
    // The message after them was handled: its offset is committed past all three.
    eventually(
        Duration::from_secs(30),
        "the partition committed",
        || async {
            let committed = committed_offsets(&p, "refused", &topic);
            (committed.values().sum::<i64>() == 3).then_some(())
        },
    )
    .await;
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Committed offsets of `role`'s group in `topic`, per partition.
fn committed_offsets(p: &TestPipeline, role: &str, topic: &str) -> HashMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer =
        sluice_core::kafka::consumer_config(&p.kafka, &p.topics.group(role), 10)
            .create()
            .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for partition in 0..crate::helpers::PARTITIONS {
        tpl.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            e.offset()
                .to_raw()
                .filter(|o| *o >= 0)
                .map(|o| (e.partition(), o))
        })
        .collect()
}

/// Takes `pause` per message and counts how often each offset was handled.
struct Slow {
    pause: Duration,
    handled: Mutex<HashMap<i64, usize>>,
}

impl Handler for Slow {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        *self.handled.lock().unwrap().entry(job.offset).or_default() += 1;
        tokio::time::sleep(self.pause).await;
        Ok(vec![])
    }
}

/// Every slot busy for longer than `max.poll.interval.ms`: the loop keeps polling, so the
/// member stays in its group and nothing is handled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_busy_past_the_poll_interval_keeps_its_partitions() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.compute_jobs();
    let mut kafka = p.kafka.clone();
    kafka.max_poll_interval_ms = 7_000;
    let slow = Arc::new(Slow {
        pause: Duration::from_secs(9),
        handled: Mutex::new(HashMap::new()),
    });
    let stage = p
        .run_in_process_on(
            kafka,
            Stage::new("busy", vec![topic.clone()], one_at_a_time()),
            test_worker("busy"),
            SharedHandler(slow.clone()),
        )
        .await;
    for _ in 0..2 {
        p.publish_raw(&topic, "one-partition", b"{}".to_vec()).await;
    }
    eventually(Duration::from_secs(60), "both messages handled", || async {
        let committed = committed_offsets(&p, "busy", &topic);
        (committed.values().sum::<i64>() == 2).then_some(())
    })
    .await;
    let handled = slow.handled.lock().unwrap().clone();
    assert_eq!(handled.values().sum::<usize>(), 2, "each once: {handled:?}");
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Panics on every message.
struct Panics;

impl Handler for Panics {
    async fn handle(&self, _job: &Job, _cx: &Cx) -> Outcome {
        panic!("a bug in the handler")
    }
}

/// Returns no outcome at all for a batch.
struct NoOutcomes;

impl Handler for NoOutcomes {
    async fn handle(&self, _job: &Job, _cx: &Cx) -> Outcome {
        Ok(vec![])
    }

    async fn handle_batch(&self, _jobs: &[Job], _cx: &Cx) -> Vec<Outcome> {
        Vec::new()
    }
}

/// Says "interrupted" though nothing is shutting down.
struct InterruptedForNoReason;

impl Handler for InterruptedForNoReason {
    async fn handle(&self, _job: &Job, _cx: &Cx) -> Outcome {
        Err(HandlerError::Interrupted)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_or_a_broken_contract_stops_the_stage_with_an_error() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.compute_jobs();
    let panics = p
        .run_in_process(
            Stage::new("panics", vec![topic.clone()], one_at_a_time()),
            test_worker("panics"),
            Panics,
        )
        .await;
    let broken = p
        .run_in_process(
            Stage::new("broken", vec![topic.clone()], one_at_a_time()),
            test_worker("broken"),
            NoOutcomes,
        )
        .await;
    // Before the fix, its message stayed uncommitted and pinned the partition's commit point
    // while the stage went on looking healthy.
    let interrupted = p
        .run_in_process(
            Stage::new("interrupted", vec![topic.clone()], one_at_a_time()),
            test_worker("interrupted"),
            InterruptedForNoReason,
        )
        .await;
    p.publish_raw(&topic, "k", b"{}".to_vec()).await;
    let stopped = tokio::time::timeout(Duration::from_secs(60), panics)
        .await
        .expect("the panicking stage stopped")
        .unwrap();
    assert!(
        matches!(&stopped, Err(PipelineError::Panicked(text)) if text.contains("a bug")),
        "{stopped:?}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(60), broken)
        .await
        .expect("the broken stage stopped")
        .unwrap();
    assert!(
        matches!(&stopped, Err(PipelineError::BrokenContract(_))),
        "{stopped:?}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(60), interrupted)
        .await
        .expect("the stage whose handler said interrupted stopped")
        .unwrap();
    assert!(
        matches!(&stopped, Err(PipelineError::BrokenContract(text)) if text.contains("not shutting down")),
        "{stopped:?}"
    );
    assert!(committed_offsets(&p, "panics", &topic)
        .values()
        .all(|o| *o == 0));
}

/// Never finishes, unless shutdown tells it to give up.
struct Hangs;

impl Handler for Hangs {
    async fn handle(&self, _job: &Job, _cx: &Cx) -> Outcome {
        std::future::pending().await
    }
}

/// A stage whose work never finishes says `stalled`, and shutdown abandons that work after the
/// grace period instead of hanging; the message stays uncommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_stage_reports_stalled_and_shutdown_abandons_its_work() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.compute_jobs();
    let mut worker = test_worker("stuck");
    worker.heartbeat_interval = Duration::from_millis(300);
    worker.stall_after = Duration::from_secs(2);
    worker.shutdown_grace = Duration::from_secs(1);
    let instance = worker.instance_id.clone();
    let stage = p
        .run_in_process(
            Stage::new("stuck", vec![topic.clone()], one_at_a_time()),
            worker,
            Hangs,
        )
        .await;
    p.publish_raw(&topic, "k", b"{}".to_vec()).await;
    eventually(
        Duration::from_secs(30),
        "the stage reported stalled",
        || async {
            let state: String =
                sqlx::query_scalar("SELECT state FROM workers WHERE instance_id = $1")
                    .bind(&instance)
                    .fetch_one(&p.pool)
                    .await
                    .ok()?;
            (state == "stalled").then_some(())
        },
    )
    .await;
    let asked = Instant::now();
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        asked.elapsed()
    );
    assert!(committed_offsets(&p, "stuck", &topic)
        .values()
        .all(|o| *o == 0));
}

/// Refuses `garbage` for good; handles everything else, or fails it as a dependency would when
/// `dependency_down`.
struct Judges {
    dependency_down: bool,
}

impl Handler for Judges {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        if job.payload == b"garbage" {
            return Err(HandlerError::permanent(ErrorClass::Schema, "never valid"));
        }
        if self.dependency_down {
            return Err(HandlerError::transient(
                ErrorClass::Unavailable,
                "the database is down",
            ));
        }
        Ok(vec![])
    }
}

fn guarded_worker(role: &str) -> sluice_core::config::WorkerConfig {
    let mut worker = test_worker(role);
    worker.dead_letter_window = 10;
    worker.dead_letter_max_share = 0.5;
    worker
}

async fn alarm_of(p: &TestPipeline, instance: &str) -> Option<Option<String>> {
    sqlx::query_scalar("SELECT alarm FROM workers WHERE instance_id = $1")
        .bind(instance)
        .fetch_optional(&p.pool)
        .await
        .unwrap()
}

/// Any producer can write to a public topic: its garbage is dead-lettered, raises an alarm an
/// operator sees in the workers table (and `sluice health`), and does not stop the stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_past_the_dead_letter_share_raises_an_alarm_and_the_stage_goes_on() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.compute_jobs();
    let mut worker = guarded_worker("garbage");
    // `sluice health` answers for the workers on its own host.
    worker.host = hostname::get().unwrap().to_string_lossy().into_owned();
    let instance = worker.instance_id.clone();
    let stage = p
        .run_in_process(
            Stage::new("garbage", vec![topic.clone()], one_at_a_time()),
            worker,
            Judges {
                dependency_down: false,
            },
        )
        .await;
    for _ in 0..20 {
        p.publish_raw(&topic, "k", b"garbage".to_vec()).await;
    }
    for _ in 0..2 {
        p.publish_raw(&topic, "k", b"fine".to_vec()).await;
    }
    p.wait_count(
        "SELECT count(*) FROM dead_letters",
        20,
        Duration::from_secs(60),
    )
    .await;
    let reason = eventually(Duration::from_secs(30), "the alarm", || async {
        alarm_of(&p, &instance).await.flatten()
    })
    .await;
    assert!(
        reason.contains("of the last 10 messages were dead-lettered"),
        "{reason}"
    );
    assert!(!stage.is_finished(), "the stage goes on");
    let (status, said) = p.sluice(&["health"]).await;
    assert_ne!(status, 0, "{said}");
    assert!(
        said.contains(&format!("unhealthy: garbage ({instance})")),
        "{said}"
    );
    let (_, listed) = p.sluice(&["workers"]).await;
    assert!(listed.contains("  alarm: "), "{listed}");
    // Good messages bring the share down, and the alarm goes.
    for _ in 0..10 {
        p.publish_raw(&topic, "k", b"fine".to_vec()).await;
    }
    eventually(Duration::from_secs(30), "the alarm cleared", || async {
        (alarm_of(&p, &instance).await == Some(None)).then_some(())
    })
    .await;
    let (status, said) = p.sluice(&["health"]).await;
    assert_eq!(status, 0, "{said}");
    eventually(
        Duration::from_secs(30),
        "every offset committed",
        || async {
            let committed = committed_offsets(&p, "garbage", &topic);
            (committed.values().sum::<i64>() == 32).then_some(())
        },
    )
    .await;
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}

/// Runs `handler` on 20 messages of `payload` with a share of 0.5 over 10, and checks that the
/// stage stops at the sixth dead letter.
async fn stops_at_the_sixth_of_ten<H: Handler>(role: &str, handler: H, payload: &[u8]) {
    let p = TestPipeline::spawn(Options {
        max_attempts: 1,
        ..Options::no_workers()
    })
    .await;
    let topic = p.topics.compute_jobs();
    let stage = p
        .run_in_process(
            Stage::new(role, vec![topic.clone()], one_at_a_time()),
            guarded_worker(role),
            handler,
        )
        .await;
    for i in 0..20 {
        p.publish_raw(&topic, &i.to_string(), payload.to_vec())
            .await;
    }
    let stopped = tokio::time::timeout(Duration::from_secs(60), stage)
        .await
        .expect("the stage stopped")
        .unwrap();
    assert!(
        matches!(
            stopped,
            Err(PipelineError::TooManyDeadLetters {
                dead: 6,
                window: 10,
                ..
            })
        ),
        "{stopped:?}"
    );
    assert!(p.count("SELECT count(*) FROM dead_letters").await <= 6);
}

/// A failing dependency — attempts spent on transient failures, an output topic the broker
/// refuses — fails every message: past the share the stage stops, instead of emptying the
/// topic into the dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dependency_past_the_dead_letter_share_stops_the_stage() {
    let failing = Judges {
        dependency_down: true,
    };
    stops_at_the_sixth_of_ten("failing", failing, b"{}").await;
    stops_at_the_sixth_of_ten("refused-topic", Refused, b"bad-topic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_heartbeat_interval_stops_a_worker_at_start_with_a_clear_error() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let index = p.start_with("sluice-compute", &[("HEARTBEAT_INTERVAL", "0")]);
    eventually(Duration::from_secs(30), "the worker exited", || async {
        (!p.is_running(index)).then_some(())
    })
    .await;
    assert!(!p.exit_success(index), "a non-zero exit status");
    assert!(
        p.log(index).contains("HEARTBEAT_INTERVAL"),
        "{}",
        p.log(index)
    );
}

/// Records the attempt and sluice headers each message arrived with.
struct Inspects {
    seen: Mutex<Vec<(u32, Option<String>)>>,
    calls: AtomicUsize,
}

impl Handler for Inspects {
    async fn handle(&self, job: &Job, _cx: &Cx) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let original = header_str(job.headers.as_ref(), header::ORIGINAL_TOPIC).map(String::from);
        self.seen.lock().unwrap().push((job.attempt, original));
        Ok(vec![])
    }
}

/// A producer cannot forge an attempt count, a destination or a failure on a job topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_headers_on_a_public_topic_are_dropped() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.compute_jobs();
    let inspects = Arc::new(Inspects {
        seen: Mutex::new(Vec::new()),
        calls: AtomicUsize::new(0),
    });
    let stage = p
        .run_in_process(
            Stage::new("inspects", vec![topic.clone()], one_at_a_time()),
            test_worker("inspects"),
            SharedHandler(inspects.clone()),
        )
        .await;
    let results = p.topics.results();
    p.publish_with_headers(
        &topic,
        "k",
        b"{}".to_vec(),
        &[
            (header::FAILURES, "99"),
            (header::ORIGINAL_TOPIC, results.as_str()),
            ("trace-id", "kept"),
        ],
    )
    .await;
    eventually(Duration::from_secs(30), "the message handled", || async {
        (inspects.calls.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert_eq!(*inspects.seen.lock().unwrap(), vec![(1, None)]);
    p.shutdown.cancel();
    stage.await.unwrap().unwrap();
}
