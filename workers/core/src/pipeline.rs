//! The consume → handle → publish → commit loop, written once for every stage.
//!
//! A stage reads its input topics through a [`Feed`] and hands messages to its [`Handler`] in
//! one of three [`Execution`] modes. For every message the handler returns outputs (published
//! anywhere), a transient error (sent to a retry tier, or retried in place), a permanent one
//! (sent to the dead letters) or a fatal one (the stage stops). A message's offset is stored
//! only after every message it caused has been acknowledged by the broker, and only once every
//! earlier message of its partition is done too, so work may finish out of order without ever
//! skipping a message.
//!
//! The loop never stops polling: when it holds as much as its mode allows, it pauses its
//! partitions instead of leaving the consumer unserved. A panic in a handler, a broken
//! contract, a fatal error or too many dead letters ends the stage with an error, which ends
//! the process with a non-zero status.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::FutureExt;
use rdkafka::error::RDKafkaErrorCode;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{env_duration, env_or, ConfigError};
use crate::consumer::{Event, Feed, Subscription};
use crate::context::StageContext;
use crate::error::{ErrorClass, HandlerError, PipelineError};
use crate::heartbeat::HeartbeatTask;
use crate::job::{Cx, Handler, Job, Outcome, ReadFrom, TopicPartition};
use crate::kafka::{PublishError, MESSAGE_MAX_BYTES};
use crate::limits::{Alarm, DeadLetterCause, DeadLetterGuard, RateLimiter};
use crate::pause::Pause;
use crate::retry::publish_dead_letter;
use crate::shutdown::finish_within;
use crate::topics::ensure_topics;

/// How a stage runs its handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Execution {
    /// `handle_batch` over up to `max` messages gathered for at most `wait` after the first,
    /// with up to `in_flight` batches at once: cheap per-message work, multi-row writes.
    Batches {
        max: usize,
        wait: Duration,
        in_flight: usize,
    },
    /// Every message on its own, up to `in_flight` at once, at most `rate_per_sec` started a
    /// second, each given up after `timeout`: many slow calls (LLMs). A slow call holds back
    /// neither the outputs nor the commits of the fast ones beside it.
    PerMessage {
        in_flight: usize,
        rate_per_sec: Option<f64>,
        timeout: Option<Duration>,
    },
    /// Messages with the same key one at a time in offset order, different keys concurrently
    /// (up to `in_flight`); transient failures are retried in place, the key waiting meanwhile,
    /// so no later message of a key overtakes an earlier one.
    PerKey {
        in_flight: usize,
        timeout: Option<Duration>,
    },
}

impl Execution {
    /// Batches, shaped by `<ROLE>_BATCH_MAX`, `<ROLE>_BATCH_WAIT`, `<ROLE>_BATCHES_IN_FLIGHT`.
    pub fn batches_from_env(
        role: &str,
        max: usize,
        wait: &str,
        in_flight: usize,
    ) -> Result<Self, ConfigError> {
        let prefix = role.to_ascii_uppercase();
        Ok(Self::Batches {
            max: env_or(&format!("{prefix}_BATCH_MAX"), max)?.max(1),
            wait: env_duration(&format!("{prefix}_BATCH_WAIT"), wait)?,
            in_flight: env_or(&format!("{prefix}_BATCHES_IN_FLIGHT"), in_flight)?.max(1),
        })
    }

    /// One message at a time each, shaped by `<ROLE>_IN_FLIGHT`, `<ROLE>_RATE_LIMIT`
    /// (messages started per second; 0 for none) and `<ROLE>_TIMEOUT` (0 for none).
    pub fn per_message_from_env(
        role: &str,
        in_flight: usize,
        rate_per_sec: f64,
        timeout: &str,
    ) -> Result<Self, ConfigError> {
        let prefix = role.to_ascii_uppercase();
        let rate_name = format!("{prefix}_RATE_LIMIT");
        let rate: f64 = env_or(&rate_name, rate_per_sec)?;
        if !rate.is_finite() || rate < 0.0 || (rate > 0.0 && rate < crate::limits::MIN_RATE_PER_SEC)
        {
            return Err(ConfigError::Invalid {
                name: rate_name,
                value: rate.to_string(),
                reason: "must be 0 (no limit) or at least 1/3600 (one an hour)".into(),
            });
        }
        Ok(Self::PerMessage {
            in_flight: env_or(&format!("{prefix}_IN_FLIGHT"), in_flight)?.max(1),
            rate_per_sec: (rate > 0.0).then_some(rate),
            timeout: nonzero(env_duration(&format!("{prefix}_TIMEOUT"), timeout)?),
        })
    }

    /// Ordered per key, shaped by `<ROLE>_IN_FLIGHT` and `<ROLE>_TIMEOUT`.
    pub fn per_key_from_env(
        role: &str,
        in_flight: usize,
        timeout: &str,
    ) -> Result<Self, ConfigError> {
        let prefix = role.to_ascii_uppercase();
        Ok(Self::PerKey {
            in_flight: env_or(&format!("{prefix}_IN_FLIGHT"), in_flight)?.max(1),
            timeout: nonzero(env_duration(&format!("{prefix}_TIMEOUT"), timeout)?),
        })
    }

    /// Units (batches or messages) handled at once.
    fn slots(&self) -> usize {
        match *self {
            Self::Batches { in_flight, .. }
            | Self::PerMessage { in_flight, .. }
            | Self::PerKey { in_flight, .. } => in_flight,
        }
    }

    fn timeout(&self) -> Option<Duration> {
        match *self {
            Self::Batches { .. } => None,
            Self::PerMessage { timeout, .. } | Self::PerKey { timeout, .. } => timeout,
        }
    }

    /// Messages received but not yet handled, past which the stage stops taking more (see
    /// `StageLoop::apply_backpressure`; so does [`BUFFER_BYTES`] of them). Batches keep two rounds of batches ready (the
    /// client's bounded prefetch holds more); slow calls stop fetching at their bound.
    fn buffer_limit(&self) -> usize {
        match *self {
            Self::Batches { max, in_flight, .. } => (max * in_flight * 2).max(1_000),
            Self::PerMessage { in_flight, .. } => in_flight,
            Self::PerKey { in_flight, .. } => in_flight * 4,
        }
    }
}

/// Bytes of messages received and not yet handed to the handler, past which a stage stops
/// taking more, whatever their count: a stage of 1,000-row prediction requests must not hold
/// thousands of them.
const BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of messages in one batch at most (a batch holds one message whatever its size).
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Longest a full stage stops taking messages before it pauses its partitions instead.
const HOLD_OFF: Duration = Duration::from_secs(5);

/// How long a partition whose seek failed (its fetch had not started) waits to be checked
/// and moved again.
const SEEK_RETRY: Duration = Duration::from_millis(200);

fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// What a stage is: its name (consumer group, heartbeats), what it reads, how it runs.
#[derive(Debug, Clone)]
pub struct Stage {
    pub role: String,
    /// Topics on a job's way to its answer: fetched with `KAFKA_FETCH_WAIT_MAX_MS`.
    pub inputs: Vec<String>,
    /// Topics nobody waits on (dead letters, heartbeats): fetched with the long
    /// `KAFKA_SLOW_FETCH_WAIT_MAX_MS`, by a consumer of their own, as is the stage's returns
    /// topic.
    pub slow_inputs: Vec<String>,
    pub execution: Execution,
    /// Transient failures retried in place (with the retry policy's delays) rather than
    /// through the retry topics. Always so for [`Execution::PerKey`].
    pub retry_in_place: bool,
    /// The handler makes a dead letter of every message it cannot take, in the same
    /// transaction as its position (the persister): it is handed the messages whose headers
    /// could not be read too, instead of the loop publishing their dead letters.
    pub own_dead_letters: bool,
}

impl Stage {
    pub fn new(role: &str, inputs: Vec<String>, execution: Execution) -> Self {
        Self {
            role: role.to_string(),
            retry_in_place: matches!(execution, Execution::PerKey { .. }),
            inputs,
            slow_inputs: Vec::new(),
            execution,
            own_dead_letters: false,
        }
    }

    /// See [`Stage::own_dead_letters`].
    pub fn writing_its_own_dead_letters(mut self) -> Self {
        self.own_dead_letters = true;
        self
    }

    /// Also reads `topics`, which nobody waits on, with the long fetch wait.
    pub fn with_slow_inputs(mut self, topics: Vec<String>) -> Self {
        self.slow_inputs = topics;
        self
    }

    /// For a stage that owns no retry topics: its rare transient failures wait in place.
    pub fn retrying_in_place(mut self) -> Self {
        self.retry_in_place = true;
        self
    }
}

/// Runs `handler` as `stage` until `shutdown` fires; then stops taking messages, lets the work
/// in flight finish within the shutdown grace (abandoning the rest uncommitted), commits and
/// returns. An error means the stage could not go on; the process should exit non-zero.
pub async fn run_stage<H: Handler>(
    ctx: Arc<StageContext>,
    stage: Stage,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    let return_topic = ctx.topics.returns(&stage.role);
    let mut slow = stage.slow_inputs.clone();
    if !stage.retry_in_place {
        ensure_topics(&ctx.kafka, std::slice::from_ref(&return_topic)).await?;
        // A retried message has waited a tier delay already; a long fetch wait adds little.
        slow.push(return_topic.clone());
    }
    let public = ctx.topics.job_inputs();
    let untrusted: Vec<String> = stage
        .inputs
        .iter()
        .chain(&stage.slow_inputs)
        .filter(|t| public.contains(t))
        .cloned()
        .collect();
    let subscriptions = [
        Subscription {
            topics: stage.inputs.clone(),
            fetch_wait_ms: ctx.kafka.fetch_wait_max_ms,
            group: ctx.topics.group(&stage.role),
        },
        Subscription {
            topics: slow,
            fetch_wait_ms: ctx.kafka.slow_fetch_wait_max_ms,
            group: ctx.topics.slow_group(&stage.role),
        },
    ];
    let feed = Feed::subscribe(&ctx.kafka, &subscriptions, &untrusted)?;
    let mut heartbeat = HeartbeatTask::spawn(ctx.clone(), &stage.role);
    tracing::info!(role = %stage.role, instance = %ctx.worker.instance_id,
        inputs = ?stage.inputs, slow_inputs = ?stage.slow_inputs, execution = ?stage.execution,
        "stage started");

    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        handler,
        way_back: (!stage.retry_in_place).then_some(return_topic),
        batched: matches!(stage.execution, Execution::Batches { .. }),
        timeout: stage.execution.timeout(),
        own_dead_letters: stage.own_dead_letters,
        shutdown: shutdown.clone(),
    });
    let mut stage_loop = StageLoop::new(shared, stage.execution.clone(), feed);
    let outcome = stage_loop.run(&mut heartbeat, &shutdown).await;
    match &outcome {
        Ok(()) => tracing::info!(role = %stage.role, in_flight = stage_loop.tasks.len(),
            "shutting down: finishing work in flight"),
        Err(e) => tracing::error!(role = %stage.role, error = %e, "stage stopping"),
    }
    stage_loop.wind_down(ctx.worker.shutdown_grace).await;
    heartbeat.stop().await;
    ctx.publisher.flush(Duration::from_secs(5));
    tracing::info!(role = %stage.role, "stage stopped");
    outcome
}

/// What every unit of work needs, shared by the loop and its tasks.
struct Shared<H> {
    ctx: Arc<StageContext>,
    handler: H,
    /// The stage's returns topic, where retried messages come back; none for a stage that
    /// retries in place.
    way_back: Option<String>,
    batched: bool,
    timeout: Option<Duration>,
    own_dead_letters: bool,
    shutdown: CancellationToken,
}

/// A received message and the ownership (generation) it was received under.
struct Pending {
    job: Job,
    generation: u64,
    received: Instant,
}

impl Pending {
    /// What the message holds in memory, near enough.
    fn bytes(&self) -> usize {
        self.job.payload.len() + self.job.key.as_ref().map_or(0, Vec::len)
    }
}

/// Messages of one key, in order: the topic and partition, then the key (none for keyless
/// messages, which are ordered per partition).
type KeyId = (String, i32, Option<Vec<u8>>);

fn key_of(job: &Job) -> KeyId {
    (job.topic.clone(), job.partition, job.key.clone())
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Delivery {
    Done,
    DeadLettered(DeadLetterCause),
    /// Not durable (shutdown came first): left uncommitted, delivered again later.
    Abandoned,
}

impl Delivery {
    fn finished(self) -> bool {
        self != Self::Abandoned
    }
}

/// A finished unit of work, handed back to the loop.
struct Report {
    jobs: Vec<Job>,
    generations: Vec<u64>,
    deliveries: Vec<Delivery>,
    key: Option<KeyId>,
    /// Why the stage must stop, if it must.
    failure: Option<PipelineError>,
}

struct StageLoop<H> {
    shared: Arc<Shared<H>>,
    execution: Execution,
    feed: Feed,
    tracker: crate::offsets::OffsetTracker,
    /// Received, waiting for a slot (batches and per-message modes).
    waiting: VecDeque<Pending>,
    /// The bytes of `waiting`.
    waiting_bytes: usize,
    /// Per-key mode: each key's waiting messages, the keys ready to go, the keys in flight.
    keys: HashMap<KeyId, VecDeque<Pending>>,
    ready: VecDeque<KeyId>,
    busy: HashSet<KeyId>,
    keyed: usize,
    tasks: JoinSet<Report>,
    limiter: Option<RateLimiter>,
    /// When the rate limiter lets the next message start.
    rate_wait: Option<Instant>,
    guard: DeadLetterGuard,
    /// The handler's `on_assigned` running; nothing is dispatched meanwhile.
    assigning: Option<JoinHandle<Result<ReadFrom, HandlerError>>>,
    /// Assignments to check, each after its delay (a rewind that failed is checked again).
    assignments: VecDeque<(Vec<TopicPartition>, Duration)>,
    /// Cancelled when a partition is revoked, so that its work still in flight — a call, or
    /// a transient failure retried in place — stops instead of racing the partition's next
    /// owner (which would let an older message of a key land after a newer one).
    ownership: HashMap<TopicPartition, CancellationToken>,
    /// Since when the stage has held all it may; see [`StageLoop::apply_backpressure`].
    saturated_since: Option<Instant>,
    /// How long a full stage stops taking messages before it pauses its partitions.
    hold_off: Duration,
}

impl<H: Handler> StageLoop<H> {
    fn new(shared: Arc<Shared<H>>, execution: Execution, feed: Feed) -> Self {
        // Well inside max.poll.interval.ms: not polling while full must never cost the member
        // its place in the group.
        let hold_off = Duration::from_millis(u64::from(shared.ctx.kafka.max_poll_interval_ms) / 4)
            .min(HOLD_OFF);
        let worker = &shared.ctx.worker;
        let guard = DeadLetterGuard::new(worker.dead_letter_window, worker.dead_letter_max_share);
        let limiter = match execution {
            Execution::PerMessage {
                rate_per_sec: Some(rate),
                ..
            } => Some(RateLimiter::new(rate)),
            _ => None,
        };
        Self {
            shared,
            execution,
            feed,
            tracker: Default::default(),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            keys: HashMap::new(),
            ready: VecDeque::new(),
            busy: HashSet::new(),
            keyed: 0,
            tasks: JoinSet::new(),
            limiter,
            rate_wait: None,
            guard,
            assigning: None,
            assignments: VecDeque::new(),
            ownership: HashMap::new(),
            saturated_since: None,
            hold_off,
        }
    }

    async fn run(
        &mut self,
        heartbeat: &mut HeartbeatTask,
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        loop {
            self.dispatch();
            // Every pass, not only when something is dispatched: messages piling up while
            // assigned partitions are checked must show as waiting (and then as stalled).
            self.shared.ctx.stats.set_waiting(self.buffered());
            self.apply_backpressure();
            let taking = self.taking();
            let timer = self.next_timer();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                reason = heartbeat.failed() => return Err(PipelineError::Panicked(reason)),
                assigned = assignment_done(&mut self.assigning) => self.assignment_finished(assigned)?,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done)?,
                event = self.feed.next(), if taking => {
                    self.on_event(event);
                    // Take what else the client already holds, so batches fill in one go.
                    for _ in 0..1_024 {
                        match self.feed.next().now_or_never() {
                            Some(event) => self.on_event(event),
                            None => break,
                        }
                    }
                }
                _ = sleep_until(timer), if timer.is_some() => {}
            }
        }
    }

    fn buffered(&self) -> usize {
        self.waiting.len() + self.keyed
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(job) => {
                let generation = self.tracker.begin(&job.topic, job.partition, job.offset);
                let pending = Pending {
                    job,
                    generation,
                    received: Instant::now(),
                };
                if matches!(self.execution, Execution::PerKey { .. }) {
                    let key = key_of(&pending.job);
                    let queue = self.keys.entry(key.clone()).or_default();
                    if queue.is_empty() && !self.busy.contains(&key) {
                        self.ready.push_back(key);
                    }
                    queue.push_back(pending);
                    self.keyed += 1;
                } else {
                    self.waiting_bytes += pending.bytes();
                    self.waiting.push_back(pending);
                }
            }
            Event::Revoked(revoked) => {
                // Not stored: the partitions' next owner receives these again.
                self.forget(&revoked);
                for (pending, _) in &mut self.assignments {
                    pending.retain(|p| !revoked.contains(p));
                }
                for p in &revoked {
                    if let Some(ownership) = self.ownership.remove(p) {
                        ownership.cancel();
                    }
                }
            }
            // Incremental rebalancing tells every member of each rebalance, most of them of
            // nothing new: nothing to check, and dispatch must not wait on it.
            Event::Assigned(assigned) if assigned.is_empty() => {}
            Event::Assigned(assigned) => {
                self.assignments.push_back((assigned, Duration::ZERO));
                self.start_assignment();
            }
        }
    }

    /// Drops what was received from `partitions` and not handled yet, and starts their offset
    /// tracking over.
    fn forget(&mut self, partitions: &[TopicPartition]) {
        let gone: HashSet<(&str, i32)> = partitions
            .iter()
            .map(|p| (p.topic.as_str(), p.partition))
            .collect();
        self.waiting
            .retain(|p| !gone.contains(&(p.job.topic.as_str(), p.job.partition)));
        self.waiting_bytes = self.waiting.iter().map(Pending::bytes).sum();
        self.keys
            .retain(|(topic, partition, _), _| !gone.contains(&(topic.as_str(), *partition)));
        self.ready
            .retain(|(topic, partition, _)| !gone.contains(&(topic.as_str(), *partition)));
        self.keyed = self.keys.values().map(VecDeque::len).sum();
        for p in partitions {
            self.tracker.forget(&p.topic, p.partition);
        }
    }

    /// Runs the handler's `on_assigned` for the oldest assignment not checked yet, retrying
    /// transient failures with backoff.
    fn start_assignment(&mut self) {
        if self.assigning.is_some() {
            return;
        }
        let Some((partitions, delay)) = self.assignments.pop_front() else {
            return;
        };
        let shared = self.shared.clone();
        self.assigning = Some(tokio::spawn(async move {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return Err(HandlerError::Interrupted),
                _ = tokio::time::sleep(delay) => {}
            }
            let mut pause = Pause::starting_at(Duration::from_millis(200));
            loop {
                match shared.handler.on_assigned(&partitions).await {
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, pause = ?pause.next(),
                            "checking assigned partitions failed, retrying");
                        if !pause.wait(&shared.shutdown).await {
                            return Err(HandlerError::Interrupted);
                        }
                    }
                    done => return done,
                }
            }
        }));
    }

    fn assignment_finished(
        &mut self,
        done: Result<Result<ReadFrom, HandlerError>, JoinError>,
    ) -> Result<(), PipelineError> {
        self.assigning = None;
        match done {
            Ok(Ok(positions)) => {
                if !positions.is_empty() {
                    // Nothing of these was dispatched while they were checked.
                    let moved: Vec<TopicPartition> =
                        positions.iter().map(|(p, _)| p.clone()).collect();
                    self.forget(&moved);
                    let failed = self.feed.seek(&positions);
                    if !failed.is_empty() {
                        // Checked again, and nothing dispatched, until the seek holds: a
                        // message read from the old offset would move the position past the
                        // ones below it.
                        self.assignments.push_front((failed, SEEK_RETRY));
                    }
                }
                self.start_assignment();
                Ok(())
            }
            Ok(Err(HandlerError::Interrupted)) => {
                self.start_assignment();
                Ok(())
            }
            Ok(Err(e)) => Err(PipelineError::Fatal {
                class: e.class().unwrap_or(ErrorClass::Unavailable),
                message: format!("checking assigned partitions: {}", e.message()),
            }),
            Err(e) => Err(PipelineError::Panicked(e.to_string())),
        }
    }

    /// Starts as much waiting work as the mode allows.
    fn dispatch(&mut self) {
        if self.assigning.is_some() {
            return;
        }
        let slots = self.execution.slots();
        let now = Instant::now();
        match self.execution {
            Execution::Batches { max, wait, .. } => {
                while self.tasks.len() < slots {
                    let Some(first) = self.waiting.front() else {
                        break;
                    };
                    if self.waiting.len() < max
                        && self.waiting_bytes < BATCH_BYTES
                        && first.received + wait > now
                    {
                        break;
                    }
                    // Up to `max` messages and BATCH_BYTES, and at least one.
                    let mut bytes = 0;
                    let take = self
                        .waiting
                        .iter()
                        .take(max)
                        .take_while(|p| {
                            bytes += p.bytes();
                            bytes <= BATCH_BYTES
                        })
                        .count()
                        .max(1);
                    let unit: Vec<Pending> = self.waiting.drain(..take).collect();
                    self.waiting_bytes -= unit.iter().map(Pending::bytes).sum::<usize>();
                    self.spawn(unit, None);
                }
            }
            Execution::PerMessage { .. } => {
                self.rate_wait = None;
                while self.tasks.len() < slots && !self.waiting.is_empty() {
                    if let Some(limiter) = &mut self.limiter {
                        if let Err(at) = limiter.try_take(now) {
                            self.rate_wait = Some(at);
                            break;
                        }
                    }
                    let pending = self.waiting.pop_front().expect("not empty");
                    self.waiting_bytes -= pending.bytes();
                    self.spawn(vec![pending], None);
                }
            }
            Execution::PerKey { .. } => {
                while self.tasks.len() < slots {
                    let Some(key) = self.ready.pop_front() else {
                        break;
                    };
                    let Some(pending) = self.keys.get_mut(&key).and_then(VecDeque::pop_front)
                    else {
                        continue;
                    };
                    self.keyed -= 1;
                    self.busy.insert(key.clone());
                    self.spawn(vec![pending], Some(key));
                }
            }
        }
    }

    fn spawn(&mut self, unit: Vec<Pending>, key: Option<KeyId>) {
        self.shared.ctx.stats.started(unit.len());
        // A batch may span partitions and finishes quickly: only single messages, which may
        // call slowly or wait to retry in place, stop when their partition is revoked.
        let revoked = match unit.as_slice() {
            [one] => self
                .ownership
                .entry(one.job.topic_partition())
                .or_default()
                .child_token(),
            _ => CancellationToken::new(),
        };
        let (jobs, generations) = unit.into_iter().map(|p| (p.job, p.generation)).unzip();
        self.tasks.spawn(run_unit(
            self.shared.clone(),
            jobs,
            generations,
            key,
            revoked,
        ));
    }

    /// When the loop must wake with no event: a batch window closing, a rate token coming.
    fn next_timer(&self) -> Option<Instant> {
        // Wakes to pause the partitions if the stage is still full by then.
        let pause = self
            .saturated_since
            .filter(|_| !self.taking())
            .map(|since| since + self.hold_off);
        let work = if self.assigning.is_some() || self.tasks.len() >= self.execution.slots() {
            None
        } else {
            match self.execution {
                Execution::Batches { wait, .. } => self.waiting.front().map(|p| p.received + wait),
                Execution::PerMessage { .. } => self.rate_wait,
                Execution::PerKey { .. } => None,
            }
        };
        match (pause, work) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Once the stage holds all it may, it stops taking messages, and the client stops
    /// fetching when its bounded prefetch is full; it takes again at half. Held that way longer
    /// than `hold_off` (a database outage, slow handlers), the stage pauses its partitions
    /// instead, and takes again, so it keeps polling and keeps its place in the group. Pausing
    /// at once would be simpler, but each pause drops the client's prefetch and a resume takes
    /// up to a fetch wait to fetch again: under a burst (with 500 ms waits), a third of the time lost.
    fn apply_backpressure(&mut self) {
        let limit = self.execution.buffer_limit();
        let buffered = self.buffered();
        if buffered >= limit || self.waiting_bytes >= BUFFER_BYTES {
            let since = *self.saturated_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.hold_off {
                self.feed.set_saturated(true);
            }
        } else if buffered <= limit / 2 && self.waiting_bytes <= BUFFER_BYTES / 2 {
            self.saturated_since = None;
            self.feed.set_saturated(false);
        }
    }

    /// Whether the loop takes messages (and rebalances) from the feed now.
    fn taking(&self) -> bool {
        self.saturated_since
            .is_none_or(|since| since.elapsed() >= self.hold_off)
    }

    /// Takes a finished unit back: stores the offsets it made safe, frees its key.
    fn finished(&mut self, done: Result<Report, JoinError>) -> Result<(), PipelineError> {
        let report = match done {
            Ok(report) => report,
            Err(e) if e.is_panic() => return Err(PipelineError::Panicked(panic_text(e))),
            // Aborted at the end of the shutdown grace: left uncommitted on purpose.
            Err(_) => return Ok(()),
        };
        let mut points: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for ((job, generation), delivery) in report
            .jobs
            .iter()
            .zip(&report.generations)
            .zip(&report.deliveries)
        {
            if delivery.finished() {
                if let Some(next) =
                    self.tracker
                        .complete(&job.topic, job.partition, job.offset, *generation)
                {
                    // Commit points only grow: the last one per partition is the one to store.
                    points.insert((job.topic.as_str(), job.partition), next);
                }
            }
        }
        self.feed
            .store(points.into_iter().map(|((t, p), next)| (t, p, next)));
        let durable = report.deliveries.iter().filter(|d| d.finished()).count();
        self.shared.ctx.stats.finished(report.jobs.len(), durable);
        if let Some(key) = report.key {
            self.busy.remove(&key);
            if self.keys.get(&key).is_some_and(|q| !q.is_empty()) {
                self.ready.push_back(key);
            } else {
                self.keys.remove(&key);
            }
        }
        if let Some(failure) = report.failure {
            return Err(failure);
        }
        for delivery in &report.deliveries {
            let dead_lettered = match *delivery {
                Delivery::Abandoned => continue,
                Delivery::Done => None,
                Delivery::DeadLettered(cause) => Some(cause),
            };
            let stats = &self.shared.ctx.stats;
            if dead_lettered.is_some() {
                stats.dead_lettered_one();
            }
            match self.guard.record(dead_lettered)? {
                None => {}
                Some(Alarm::Raised(reason)) => {
                    tracing::error!(%reason, "dead-letter alarm: the stage goes on");
                    stats.set_alarm(Some(reason));
                }
                Some(Alarm::Cleared) => {
                    tracing::info!("dead-letter alarm cleared");
                    stats.set_alarm(None);
                }
            }
        }
        Ok(())
    }

    /// After the loop: nothing new starts; work in flight has `grace` to finish, then it is
    /// abandoned uncommitted; what finished is committed.
    async fn wind_down(&mut self, grace: Duration) {
        self.waiting.clear();
        self.waiting_bytes = 0;
        self.keys.clear();
        self.ready.clear();
        self.keyed = 0;
        let mut tasks = std::mem::take(&mut self.tasks);
        finish_within(&mut tasks, grace, |done| {
            if let Err(e) = self.finished(done) {
                tracing::error!(error = %e, "while shutting down");
            }
        })
        .await;
        if let Some(assigning) = self.assigning.take() {
            assigning.abort();
        }
        self.feed.commit();
    }
}

async fn assignment_done(
    slot: &mut Option<JoinHandle<Result<ReadFrom, HandlerError>>>,
) -> Result<Result<ReadFrom, HandlerError>, JoinError> {
    match slot {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn panic_text(e: JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a handler panicked".into())
}

/// Handles one unit (a batch, or one message), then publishes what became of each message.
/// When `revoked` fires first, the unit is abandoned: the partition's next owner handles it.
async fn run_unit<H: Handler>(
    shared: Arc<Shared<H>>,
    mut jobs: Vec<Job>,
    generations: Vec<u64>,
    key: Option<KeyId>,
    revoked: CancellationToken,
) -> Report {
    let mut outcomes = if shared.batched {
        let cx = Cx::new(shared.shutdown.clone(), None);
        match handle_readable(&shared, &jobs, &cx).await {
            Ok(outcomes) => outcomes,
            Err(failure) => {
                return Report {
                    deliveries: vec![Delivery::Abandoned; jobs.len()],
                    jobs,
                    generations,
                    key,
                    failure: Some(failure),
                }
            }
        }
    } else {
        let mut outcomes = Vec::with_capacity(1);
        for job in &jobs {
            outcomes.push(attempt(&shared, job, &revoked).await);
        }
        outcomes
    };
    if shared.way_back.is_none() {
        for (job, outcome) in jobs.iter_mut().zip(outcomes.iter_mut()) {
            retry_in_place(&shared, job, outcome, &revoked).await;
        }
    }
    if revoked.is_cancelled() {
        return Report {
            deliveries: vec![Delivery::Abandoned; jobs.len()],
            jobs,
            generations,
            key,
            failure: None,
        };
    }
    let delivered = join_all(
        jobs.iter()
            .zip(outcomes)
            .map(|(job, outcome)| deliver(&shared, job, outcome)),
    )
    .await;
    let mut failure = None;
    let deliveries = delivered
        .into_iter()
        .map(|d| {
            d.unwrap_or_else(|e| {
                failure.get_or_insert(e);
                Delivery::Abandoned
            })
        })
        .collect();
    Report {
        jobs,
        generations,
        deliveries,
        key,
        failure,
    }
}

/// The dead-letter reason of a message whose headers could not be read, when the loop
/// dead-letters it itself: its handler never sees it.
fn unreadable<H>(shared: &Shared<H>, job: &Job) -> Option<HandlerError> {
    if shared.own_dead_letters {
        return None;
    }
    job.header_error()
}

/// `handle_batch` over the messages whose headers could be read; the others fail as
/// [`unreadable`]. One outcome per message, in order, or the handler broke its contract.
async fn handle_readable<H: Handler>(
    shared: &Shared<H>,
    jobs: &[Job],
    cx: &Cx,
) -> Result<Vec<Outcome>, PipelineError> {
    let refused: Vec<Option<HandlerError>> =
        jobs.iter().map(|job| unreadable(shared, job)).collect();
    if refused.iter().all(Option::is_none) {
        return one_per_message(shared.handler.handle_batch(jobs, cx).await, jobs.len());
    }
    // Cloned only in the rare batch that holds an unreadable message.
    let readable: Vec<Job> = jobs
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| refused.is_none())
        .map(|(job, _)| job.clone())
        .collect();
    let handled = if readable.is_empty() {
        Vec::new()
    } else {
        one_per_message(
            shared.handler.handle_batch(&readable, cx).await,
            readable.len(),
        )?
    };
    let mut handled = handled.into_iter();
    Ok(refused
        .into_iter()
        .map(|refused| match refused {
            Some(error) => Err(error),
            None => handled.next().expect("one outcome per readable message"),
        })
        .collect())
}

/// `outcomes` of a batch of `count` messages, if the handler kept its contract.
fn one_per_message(outcomes: Vec<Outcome>, count: usize) -> Result<Vec<Outcome>, PipelineError> {
    if outcomes.len() == count {
        Ok(outcomes)
    } else {
        Err(PipelineError::BrokenContract(format!(
            "handle_batch returned {} outcomes for {count} messages",
            outcomes.len()
        )))
    }
}

/// One call of the handler for one message, within the stage's timeout; given up (as
/// interrupted) when the message's partition is revoked meanwhile.
async fn attempt<H: Handler>(
    shared: &Shared<H>,
    job: &Job,
    revoked: &CancellationToken,
) -> Outcome {
    if let Some(error) = unreadable(shared, job) {
        return Err(error);
    }
    let cx = Cx::new(shared.shutdown.clone(), shared.timeout);
    let call = async {
        match shared.timeout {
            None => shared.handler.handle(job, &cx).await,
            Some(limit) => tokio::time::timeout(limit, shared.handler.handle(job, &cx))
                .await
                .unwrap_or_else(|_| {
                    Err(HandlerError::transient(
                        ErrorClass::Timeout,
                        format!("no outcome within {limit:?}"),
                    ))
                }),
        }
    };
    tokio::select! {
        biased;
        _ = revoked.cancelled() => Err(HandlerError::Interrupted),
        outcome = call => outcome,
    }
}

/// Retries a transient failure in place, with the retry policy's delays (or longer, when the
/// dependency asked), until it passes or its attempts are spent; the message's key waits.
async fn retry_in_place<H: Handler>(
    shared: &Shared<H>,
    job: &mut Job,
    outcome: &mut Outcome,
    revoked: &CancellationToken,
) {
    let policy = &shared.ctx.retry;
    loop {
        let delay = match outcome {
            Err(e) if e.is_retryable() && job.attempt < policy.max_attempts() => policy
                .delay_for(job.attempt)
                .max(e.earliest_retry().unwrap_or_default()),
            _ => return,
        };
        tracing::warn!(topic = %job.topic, partition = job.partition, offset = job.offset,
            attempt = job.attempt, ?delay, error = ?outcome.as_ref().err(), "retrying in place");
        tokio::select! {
            _ = shared.shutdown.cancelled() => {
                *outcome = Err(HandlerError::Interrupted);
                return;
            }
            _ = revoked.cancelled() => {
                *outcome = Err(HandlerError::Interrupted);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
        job.attempt += 1;
        *outcome = attempt(shared, job, revoked).await;
    }
}

/// Publishes what one message produced, or where its failure goes. An output the broker can
/// never accept sends the message to the dead letters instead.
async fn deliver<H: Handler>(
    shared: &Shared<H>,
    job: &Job,
    outcome: Outcome,
) -> Result<Delivery, PipelineError> {
    let ctx = &shared.ctx;
    let (outputs, dead) = match outcome {
        Ok(outputs) => (outputs, None),
        Err(HandlerError::Interrupted) if shared.shutdown.is_cancelled() => {
            return Ok(Delivery::Abandoned)
        }
        // Left uncommitted with the stage running, it would pin its partition's commit point
        // until the process restarts, with nothing to show for it.
        Err(HandlerError::Interrupted) => {
            return Err(PipelineError::BrokenContract(format!(
                "the handler said interrupted for {}[{}]@{} while the stage was not shutting down",
                job.topic, job.partition, job.offset
            )))
        }
        Err(HandlerError::Fatal { class, message }) => {
            return Err(PipelineError::Fatal { class, message })
        }
        Err(error) => {
            let next =
                ctx.retry
                    .route_failure(&ctx.topics, shared.way_back.as_deref(), job, &error);
            let dead =
                (next.topic == ctx.topics.dead_letters()).then_some(if error.is_retryable() {
                    DeadLetterCause::DependencyFailing
                } else {
                    DeadLetterCause::Rejected
                });
            tracing::warn!(topic = %job.topic, partition = job.partition, offset = job.offset,
                attempt = job.attempt, to = %next.topic, %error, "message failed");
            (vec![next], dead)
        }
    };
    // An output too large for any broker is refused before any is sent: publishing the others
    // first would send them twice when the dead letter is replayed.
    let mut undeliverable = outputs
        .iter()
        .find(|o| o.size() > MESSAGE_MAX_BYTES)
        .map(|o| PublishError::Undeliverable {
            topic: o.topic.clone(),
            code: RDKafkaErrorCode::MessageSizeTooLarge,
        });
    if undeliverable.is_none() {
        let published = join_all(
            outputs
                .iter()
                .map(|o| ctx.publisher.publish(o, &shared.shutdown)),
        )
        .await;
        for result in published {
            match result {
                Ok(()) => {}
                Err(PublishError::Interrupted) => return Ok(Delivery::Abandoned),
                Err(e) => undeliverable = Some(e),
            }
        }
    }
    let Some(refused) = undeliverable else {
        return Ok(dead.map_or(Delivery::Done, Delivery::DeadLettered));
    };
    tracing::warn!(topic = %job.topic, partition = job.partition, offset = job.offset,
        error = %refused, "an output can never be published; dead-lettering the message");
    let error = HandlerError::permanent(ErrorClass::Undeliverable, &refused);
    let letter = ctx
        .retry
        .route_failure(&ctx.topics, shared.way_back.as_deref(), job, &error);
    // A refused record is this message's doing; a topic the broker refuses fails every one.
    let cause = if refused.refuses_the_message() {
        DeadLetterCause::Rejected
    } else {
        DeadLetterCause::DependencyFailing
    };
    Ok(
        if publish_dead_letter(&ctx.publisher, &letter, &shared.shutdown).await? {
            Delivery::DeadLettered(cause)
        } else {
            Delivery::Abandoned
        },
    )
}
