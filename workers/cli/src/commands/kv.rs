//! `sluice kv`: the key-value store replicated through the log (seed 000's store).
//!
//! `put` and `del` publish an update to the KV topic and, unless `--no-wait`, wait for its
//! outcome row (read-your-writes: once they print, `get` sees the write). `get` and `list`
//! read the table; `watch` follows the state topic; `rebuild` replays it into an empty table.
//! Every line printed is one JSON object; a failure prints `{"error": …}` and exits 1.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sluice_core::{kafka, Output};
use sluice_db::kv as table;
use sluice_db::JobWaiter;
use sluice_messages::kv::{self, KvChange, KvCommand as Command};
use sluice_messages::Envelope;

use crate::app::App;
use crate::render::to_line;

#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Print a key's value and version.
    Get { key: String },
    /// Print every key (with a prefix: those starting with it), one per line, in key order.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Set a key to a JSON value.
    Put {
        key: String,
        /// The value, as JSON: '{"a": 1}', '"text"', '42'; or @FILE to read it from FILE
        /// (values beyond a command line's limit, about 128 KiB).
        value: String,
        #[command(flatten)]
        update: UpdateArgs,
    },
    /// Delete a key.
    Del {
        key: String,
        #[command(flatten)]
        update: UpdateArgs,
    },
    /// Print each change as it is applied, until interrupted.
    Watch {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Replace the table with the state replayed from the KV state topic.
    Rebuild,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Apply only if the key is at this version (0: only if it does not exist).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    pub if_version: Option<u64>,
    /// Print the update's id once published instead of waiting for it to be applied.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the update to be applied, e.g. 30s.
    #[arg(long, default_value = "60s", value_parser = sluice_core::config::parse_duration)]
    pub timeout: Duration,
}

/// Keys read per query by `list`.
const LIST_PAGE: i64 = 1_000;
/// How long a read of the state topic may wait for the broker.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(app: &App, command: KvCommand) -> anyhow::Result<ExitCode> {
    match command {
        KvCommand::Get { key } => get(app, &key).await,
        KvCommand::List { prefix } => list(app, &prefix).await,
        KvCommand::Put { key, value, update } => {
            let text = match value.strip_prefix('@') {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => text,
                    Err(e) => return Ok(fail(&key, format!("cannot read {path}: {e}"))),
                },
                None => value,
            };
            let value = match kv::parse_value(&text) {
                Ok(value) => value,
                Err(e) => return Ok(fail(&key, e)),
            };
            send(app, &key, Command::put(value, update.if_version), &update).await
        }
        KvCommand::Del { key, update } => {
            send(app, &key, Command::delete(update.if_version), &update).await
        }
        KvCommand::Watch { prefix } => watch(app, &prefix).await,
        KvCommand::Rebuild => rebuild(app).await,
    }
}

fn fail(key: &str, error: impl std::fmt::Display) -> ExitCode {
    println!(
        "{}",
        to_line(&json!({"key": key, "error": error.to_string()}))
    );
    ExitCode::FAILURE
}

async fn get(app: &App, key: &str) -> anyhow::Result<ExitCode> {
    Ok(match table::get(&app.pool, key).await? {
        Some(row) => {
            println!(
                "{}",
                to_line(&json!({"key": row.key, "value": row.value, "version": row.version}))
            );
            ExitCode::SUCCESS
        }
        None => fail(key, format!("no key {key:?}")),
    })
}

async fn list(app: &App, prefix: &str) -> anyhow::Result<ExitCode> {
    let mut after: Option<String> = None;
    loop {
        let page = table::list(&app.pool, prefix, after.as_deref(), LIST_PAGE).await?;
        for row in &page {
            println!(
                "{}",
                to_line(&json!({"key": row.key, "value": row.value, "version": row.version}))
            );
        }
        match page.last() {
            Some(last) if page.len() as i64 == LIST_PAGE => after = Some(last.key.clone()),
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Publishes `command` for `key` and, unless told not to, waits for its outcome.
async fn send(
    app: &App,
    key: &str,
    command: Command,
    args: &UpdateArgs,
) -> anyhow::Result<ExitCode> {
    if let Err(e) = kv::validate_key(key.as_bytes()) {
        return Ok(fail(key, e));
    }
    let envelope = Envelope::new(kv::KIND, command);
    let id = envelope.id;
    // Listening before the update can be applied.
    let waiter = if args.no_wait {
        None
    } else {
        Some(JobWaiter::start(&app.pool).await?)
    };
    let output = Output {
        topic: app.topics.kv_updates(),
        key: Some(key.as_bytes().to_vec()),
        payload: serde_json::to_vec(&envelope)?,
        headers: None,
    };
    if let Err(e) = app.publisher()?.try_publish(&output).await {
        return Ok(fail(key, format!("could not publish the update: {e}")));
    }
    let Some(waiter) = waiter else {
        println!("{}", to_line(&json!({"key": key, "id": id})));
        return Ok(ExitCode::SUCCESS);
    };
    let Some(row) = waiter.wait(id, args.timeout).await? else {
        return Ok(fail(
            key,
            format!(
                "not applied within {:?}; see `sluice job {id}`",
                args.timeout
            ),
        ));
    };
    let outcome = row.result.unwrap_or(Value::Null);
    Ok(match row.status.as_str() {
        "done" if outcome["ok"] == true => {
            println!(
                "{}",
                to_line(&json!({"key": key, "version": outcome["version"]}))
            );
            ExitCode::SUCCESS
        }
        "done" => {
            println!(
                "{}",
                to_line(&json!({
                    "key": key,
                    "error": outcome["error"],
                    "current_version": outcome["current_version"],
                }))
            );
            ExitCode::FAILURE
        }
        _ => fail(
            key,
            format!(
                "dead-lettered: {}",
                row.error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
    })
}

/// How many partitions `topic` has; an error when it does not exist yet.
fn partition_count(consumer: &impl Consumer, topic: &str) -> anyhow::Result<i32> {
    let metadata = consumer.fetch_metadata(Some(topic), BROKER_TIMEOUT)?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    anyhow::ensure!(
        partitions > 0,
        "topic {topic} does not exist yet: start the pipeline first (scripts/run)"
    );
    Ok(partitions as i32)
}

/// A consumer of no group, answered within 100 ms when there is nothing to read.
fn reader(app: &App) -> rdkafka::ClientConfig {
    let mut config = kafka::reader_config(&app.kafka, "sluice-kv-reader");
    config.set("fetch.wait.max.ms", "100");
    config
}

/// Prints a change as `{"key", "value", "version"}`, or `{"key", "version", "deleted": true}`.
fn change_line(key: &str, change: &KvChange) -> String {
    if change.deleted {
        return to_line(&json!({"key": key, "version": change.version, "deleted": true}));
    }
    let value: Value = change
        .value
        .as_ref()
        .and_then(|v| serde_json::from_str(v.get()).ok())
        .unwrap_or(Value::Null);
    to_line(&json!({"key": key, "value": value, "version": change.version}))
}

/// Most keys whose last printed version `watch` remembers; it forgets them all when full.
const WATCH_MEMORY: usize = 100_000;

async fn watch(app: &App, prefix: &str) -> anyhow::Result<ExitCode> {
    let consumer: StreamConsumer = reader(app).create()?;
    let topic = app.topics.kv_state();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partition_count(&consumer, &topic)? {
        assignment.add_partition_offset(&topic, partition, Offset::End)?;
    }
    consumer.assign(&assignment)?;
    // A transaction that failed after publishing is applied again, to the same changes:
    // one already printed is not printed twice.
    let mut printed: HashMap<String, u64> = HashMap::new();
    loop {
        let message = consumer.recv().await?;
        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        if !key.starts_with(prefix) {
            continue;
        }
        let Some(change) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<KvChange>(p).ok())
        else {
            continue;
        };
        if printed.get(key).is_some_and(|v| *v >= change.version) {
            continue;
        }
        if printed.len() >= WATCH_MEMORY {
            printed.clear();
        }
        printed.insert(key.to_string(), change.version);
        println!("{}", change_line(key, &change));
    }
}

/// Replays the state topic into an empty table. The applier's positions are locked for the
/// whole rebuild, so it applies nothing meanwhile; a change counts only if its update is
/// below the applier's position (committed), and each key ends at its highest such version.
async fn rebuild(app: &App) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let consumer: BaseConsumer = reader(app).create()?;
    let updates = app.topics.kv_updates();
    let partitions = partition_count(&consumer, &updates)?;
    let mut tx = app.pool.begin().await?;
    // The transaction waits on the broker while it reads the state topic.
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
        .execute(&mut *tx)
        .await?;
    let positions: HashMap<i32, i64> = table::lock_positions(
        &mut tx,
        &app.topics.group(kv::APPLIER_ROLE),
        &updates,
        partitions,
    )
    .await?
    .into_iter()
    .collect();
    let applied_nothing = positions.values().all(|p| *p == 0);
    let topic = app.topics.kv_state();
    let Replayed {
        latest,
        read,
        uncommitted,
        uncommitted_keys,
    } = tokio::task::spawn_blocking(move || read_state(&consumer, &topic, &positions)).await??;
    if applied_nothing && read > 0 {
        println!(
            "{}",
            to_line(&json!({"error": format!(
                "the KV applier has no position in {updates} (a new database?), so no change \
                 on the state topic can be told committed; the table is left as it is"
            )}))
        );
        return Ok(ExitCode::FAILURE);
    }
    // Compaction never removes a key's newest change: a stored key the topic does not name at
    // all means the topic lost data (deleted and created again, a broker that lost it), and
    // replacing the table with it would forget the key and restart its count.
    let stored_keys = table::keys(&mut tx).await?;
    let missing: Vec<&String> = stored_keys
        .iter()
        .filter(|key| !latest.contains_key(*key) && !uncommitted_keys.contains(*key))
        .collect();
    if let Some(first) = missing.first() {
        println!(
            "{}",
            to_line(&json!({"error": format!(
                "{} stored key(s), {first:?} among them, have no change on {topic}: the topic \
                 lost data; the table is left as it is",
                missing.len(),
                topic = app.topics.kv_state()
            )}))
        );
        return Ok(ExitCode::FAILURE);
    }
    // A key whose only changes left are of a transaction being retried (compaction removed
    // the committed ones before them) keeps the row it has: that row is what committed.
    let kept: Vec<&str> = uncommitted_keys
        .iter()
        .filter(|key| !latest.contains_key(*key))
        .map(String::as_str)
        .collect();
    let mut entries = table::entries_of(&mut tx, &kept).await?;
    entries.extend(latest.into_iter().map(|(key, change)| {
        let value = match (change.deleted, change.value) {
            (false, Some(value)) => Some(value.get().to_string()),
            // A change without a value only comes from another producer: keep it deleted.
            _ => None,
        };
        (key, value, change.version as i64)
    }));
    entries.sort();
    table::replace_entries(&mut tx, &entries).await?;
    tx.commit().await?;
    println!(
        "{}",
        to_line(&json!({
            "keys": entries.iter().filter(|e| e.1.is_some()).count(),
            "deleted_keys": entries.iter().filter(|e| e.1.is_none()).count(),
            "changes_read": read,
            "uncommitted_changes_skipped": uncommitted,
            "seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        }))
    );
    Ok(ExitCode::SUCCESS)
}

/// The state topic, read to its end as it is now.
struct Replayed {
    /// The newest committed change of every key.
    latest: HashMap<String, KvChange>,
    /// Changes read.
    read: u64,
    /// Changes skipped as not committed (their update is not below the applier's position).
    uncommitted: u64,
    /// The keys of those.
    uncommitted_keys: HashSet<String>,
}

fn read_state(
    consumer: &BaseConsumer,
    topic: &str,
    positions: &HashMap<i32, i64>,
) -> anyhow::Result<Replayed> {
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in 0..partition_count(consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, partition, BROKER_TIMEOUT)?;
        if high > low {
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
            ends.insert(partition, high);
        }
    }
    let mut replayed = Replayed {
        latest: HashMap::new(),
        read: 0,
        uncommitted: 0,
        uncommitted_keys: HashSet::new(),
    };
    if ends.is_empty() {
        return Ok(replayed);
    }
    consumer.assign(&list)?;
    let mut quiet_since = Instant::now();
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            anyhow::ensure!(
                quiet_since.elapsed() < BROKER_TIMEOUT,
                "the state topic stopped delivering before its end"
            );
            continue;
        };
        quiet_since = Instant::now();
        let message = message?;
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        let (Some(key), Some(payload)) = (message.key(), message.payload()) else {
            continue;
        };
        let (Ok(key), Ok(change)) = (
            std::str::from_utf8(key),
            serde_json::from_slice::<KvChange>(payload),
        ) else {
            continue;
        };
        replayed.read += 1;
        let applied_below = positions
            .get(&change.source_partition)
            .copied()
            .unwrap_or(0);
        if change.source_offset >= applied_below {
            replayed.uncommitted += 1;
            replayed.uncommitted_keys.insert(key.to_string());
            continue;
        }
        match replayed.latest.get(key) {
            Some(known) if known.version >= change.version => {}
            _ => {
                replayed.latest.insert(key.to_string(), change);
            }
        }
    }
    Ok(replayed)
}
