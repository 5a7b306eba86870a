//! The key-value store: `sluice kv` end to end, bad input, updates from other producers, and
//! a randomized run with the applier killed mid-way, checked against a replay of the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use sluice_core::config::KafkaConfig;
use sluice_core::kafka;
use sluice_db::kv::{entries, KvEntry};
use sluice_messages::kv::{KvCommand, KvOp, KIND};
use sluice_messages::{Envelope, Topics};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

use crate::helpers::{eventually, Options, TestPipeline, PARTITIONS};

fn line(output: &str) -> Value {
    serde_json::from_str(output.trim()).unwrap_or_else(|e| panic!("{output:?}: {e}"))
}

/// Messages in the KV update topic: what was published.
fn published_updates(p: &TestPipeline) -> i64 {
    let consumer: BaseConsumer = kafka::client_config(&p.kafka).create().unwrap();
    (0..PARTITIONS)
        .map(|partition| {
            consumer
                .fetch_watermarks(&p.topics.kv_updates(), partition, Duration::from_secs(10))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

#[tokio::test]
async fn kv_put_get_conditional_delete_list_and_read_your_writes() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    // The persister process runs two stages, each live in its own role.
    p.wait_live("kv", 1).await;
    let (_, workers) = p.sluice(&["workers"]).await;
    for role in ["persister", "kv"] {
        let live = sluice_db::queries::live_workers(&p.pool, Some(role))
            .await
            .unwrap();
        assert_eq!(live.len(), 1, "{role}: {workers}");
    }
    let put = |args: &'static [&'static str]| {
        let p = &p;
        async move { p.sluice(&[&["kv", "put"][..], args].concat()).await }
    };
    assert_eq!(
        put(&["a", r#"{"n": 1}"#]).await,
        (0, "{\"key\": \"a\", \"version\": 1}\n".into())
    );
    assert_eq!(line(&put(&["a", "[1, 2]"]).await.1)["version"], 2);
    // Read-your-writes: the put printed, so get sees it.
    let (code, out) = p.sluice(&["kv", "get", "a"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        line(&out),
        json!({"key": "a", "value": [1, 2], "version": 2})
    );

    let (code, out) = put(&["a", "3", "--if-version", "1"]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(line(&out)["current_version"], 2, "{out}");
    assert!(
        out.contains("version 2"),
        "the conflict names the current version: {out}"
    );
    assert_eq!(
        line(&put(&["a", "3", "--if-version", "2"]).await.1)["version"],
        3
    );

    let (code, out) = p.sluice(&["kv", "del", "a", "--if-version", "3"]).await;
    assert_eq!(
        (code, line(&out)["version"].clone()),
        (0, json!(4)),
        "{out}"
    );
    let (code, out) = p.sluice(&["kv", "get", "a"]).await;
    assert_eq!(code, 1);
    assert!(
        line(&out)["error"].as_str().unwrap().contains("no key"),
        "{out}"
    );
    // A put after a delete continues the count; a compare-and-set from before cannot match.
    let (code, _) = put(&["a", "5", "--if-version", "3"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        line(&put(&["a", "5", "--if-version", "0"]).await.1)["version"],
        5
    );
    // Deleting a key that does not exist changes nothing.
    let (code, out) = p.sluice(&["kv", "del", "never"]).await;
    assert_eq!(
        (code, line(&out)["version"].clone()),
        (0, json!(0)),
        "{out}"
    );

    for key in ["user/1", "user/2", "users", "other"] {
        assert_eq!(p.sluice(&["kv", "put", key, "true"]).await.0, 0);
    }
    let (code, out) = p.sluice(&["kv", "list", "--prefix", "user/"]).await;
    assert_eq!(code, 0);
    let keys: Vec<Value> = out.lines().map(|l| line(l)["key"].clone()).collect();
    assert_eq!(keys, [json!("user/1"), json!("user/2")]);
    assert_eq!(p.sluice(&["kv", "list"]).await.1.lines().count(), 5);

    let (code, out) = p.sluice(&["kv", "put", "later", "1", "--no-wait"]).await;
    assert_eq!(code, 0);
    let id: Uuid = line(&out)["id"].as_str().unwrap().parse().unwrap();
    eventually(
        Duration::from_secs(10),
        "the unwaited put applied",
        || async {
            let (code, _) = p.sluice(&["kv", "get", "later"]).await;
            (code == 0).then_some(())
        },
    )
    .await;
    let (_, job) = p.sluice(&["job", &id.to_string()]).await;
    assert_eq!(line(&job)["result"]["version"], 1, "{job}");

    // JSON null is a value like any other, in the table and through a rebuild.
    assert_eq!(p.sluice(&["kv", "put", "nothing", "null"]).await.0, 0);
    let (_, out) = p.sluice(&["kv", "get", "nothing"]).await;
    assert_eq!(
        line(&out),
        json!({"key": "nothing", "value": null, "version": 1})
    );
    // A key whose committed changes compaction removed, leaving only a change of a transaction
    // being retried (its update not below the applier's position): the rebuild keeps its row.
    sqlx::query("INSERT INTO kv_entries (key, value, version) VALUES ('compacted', '\"kept\"', 3)")
        .execute(&p.pool)
        .await
        .unwrap();
    let retried = json!({"version": 4, "value": "retried", "source_partition": 0,
                         "source_offset": 1_000_000});
    p.publish_raw(
        &p.topics.kv_state(),
        "compacted",
        serde_json::to_vec(&retried).unwrap(),
    )
    .await;
    let before = entries(&p.pool).await.unwrap();
    let (code, out) = p.sluice(&["kv", "rebuild"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(entries(&p.pool).await.unwrap(), before);

    // A stored key the state topic does not name at all: the topic lost data; the table stays.
    sqlx::query("INSERT INTO kv_entries (key, value, version) VALUES ('orphan', '1', 1)")
        .execute(&p.pool)
        .await
        .unwrap();
    let (code, out) = p.sluice(&["kv", "rebuild"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("lost data"), "{out}");
    assert_eq!(entries(&p.pool).await.unwrap().len(), before.len() + 1);
    sqlx::query("DELETE FROM kv_entries WHERE key = 'orphan'")
        .execute(&p.pool)
        .await
        .unwrap();

    // Without the applier's positions no change can be told committed: the table stays.
    sqlx::query("DELETE FROM consumer_offsets WHERE topic = $1")
        .bind(p.topics.kv_updates())
        .execute(&p.pool)
        .await
        .unwrap();
    let (code, out) = p.sluice(&["kv", "rebuild"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no position"), "{out}");
    assert_eq!(entries(&p.pool).await.unwrap(), before);
}

#[tokio::test]
async fn kv_bad_input_is_refused_before_publishing() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let big = std::env::temp_dir().join(format!("sluice-big-{}.json", Uuid::new_v4()));
    std::fs::write(&big, format!("\"{}\"", "x".repeat(1024 * 1024))).unwrap();
    let big_arg = format!("@{}", big.display());
    let long_key = "k".repeat(1025);
    for (args, says) in [
        (vec!["kv", "put", "", "1"], "empty"),
        (vec!["kv", "put", &long_key, "1"], "1024"),
        (vec!["kv", "del", &long_key], "1024"),
        (vec!["kv", "put", "k", "{not json"], "not JSON"),
        (vec!["kv", "put", "k", "1 2"], "not JSON"),
        (vec!["kv", "put", "k", r#""\u0000""#], "NUL"),
        (vec!["kv", "put", "k", &big_arg], "1048576"),
    ] {
        let (code, out) = p.sluice(&args).await;
        assert_eq!(code, 1, "{args:?}: {out}");
        let error = line(&out)["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{args:?}: {error}");
    }
    std::fs::remove_file(big).unwrap();
    let (code, _) = p
        .sluice(&["kv", "put", "k", "1", "--if-version", "9223372036854775808"])
        .await;
    assert_ne!(code, 0, "a version beyond the stored range is refused");
    assert_eq!(published_updates(&p), 0, "nothing was published");
    // Just under the limit is fine, and comes back whole.
    let fits = std::env::temp_dir().join(format!("sluice-fits-{}.json", Uuid::new_v4()));
    std::fs::write(&fits, format!("\"{}\"", "y".repeat(1024 * 1024 - 2))).unwrap();
    let (code, out) = p
        .sluice(&["kv", "put", "big", &format!("@{}", fits.display())])
        .await;
    std::fs::remove_file(fits).unwrap();
    assert_eq!(code, 0, "{out}");
    let (_, out) = p.sluice(&["kv", "get", "big"]).await;
    assert_eq!(line(&out)["value"].as_str().unwrap().len(), 1024 * 1024 - 2);
}

#[tokio::test]
async fn kv_malformed_updates_from_other_producers_are_dead_lettered_and_the_key_goes_on() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.kv_updates();
    assert_eq!(p.sluice(&["kv", "put", "m", "1"]).await.0, 0);
    let put = |value: &str| {
        serde_json::to_vec(&Envelope::new(
            KIND,
            json!({"op": "put", "value": serde_json::from_str::<Value>(value).unwrap()}),
        ))
        .unwrap()
    };
    p.publish_raw(&topic, "m", b"not json".to_vec()).await;
    p.publish_raw(&topic, "m", br#"{"op": "put", "value": 1}"#.to_vec())
        .await;
    let wrong_op = Envelope::new(KIND, json!({"op": "increment"}));
    p.publish_raw(&topic, "m", serde_json::to_vec(&wrong_op).unwrap())
        .await;
    let nul = Envelope::new(KIND, json!({"op": "put", "value": "a\u{0}b"}));
    p.publish_raw(&topic, "m", serde_json::to_vec(&nul).unwrap())
        .await;
    p.publish_raw(&topic, "", put("7")).await;
    // A time PostgreSQL cannot store: refused before the update is applied, not when its row
    // is written (by then its change would be on the state topic, and a rebuild would find it).
    let ancient = json!({"id": Uuid::new_v4(), "kind": KIND, "created_at": "-5000-01-01T00:00:00Z",
                         "payload": {"op": "put", "value": "never"}});
    p.publish_raw(&topic, "m", serde_json::to_vec(&ancient).unwrap())
        .await;
    p.publish_raw(&topic, "m", put("2")).await;
    p.wait_count(
        &format!(
            "SELECT count(*) FROM dead_letters WHERE source_topic = '{topic}' \
             AND error_class = 'invalid_result'"
        ),
        6,
        Duration::from_secs(30),
    )
    .await;
    let dead_reason: String = sqlx::query_scalar("SELECT error FROM jobs WHERE job_id = $1")
        .bind(wrong_op.id)
        .fetch_one(&p.pool)
        .await
        .unwrap();
    assert!(dead_reason.contains("increment"), "{dead_reason}");
    eventually(Duration::from_secs(30), "the later put applied", || async {
        let (_, out) = p.sluice(&["kv", "get", "m"]).await;
        (line(&out)["version"] == 2).then_some(())
    })
    .await;
    // A tombstone (no payload) deletes.
    p.publish_raw(&topic, "m", Vec::new()).await;
    eventually(Duration::from_secs(30), "the tombstone applied", || async {
        let (code, _) = p.sluice(&["kv", "get", "m"]).await;
        (code == 1).then_some(())
    })
    .await;
    assert_eq!(
        p.sluice(&["kv", "put", "m", "3"]).await.1.trim(),
        r#"{"key": "m", "version": 4}"#
    );
    let before = entries(&p.pool).await.unwrap();
    let (code, out) = p.sluice(&["kv", "rebuild"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(entries(&p.pool).await.unwrap(), before);
}

#[tokio::test]
async fn kv_watch_prints_each_change_as_applied() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let mut watch = p.sluice_child(&["kv", "watch", "--prefix", "w/"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The watch starts at the end of the state topic: put until it has seen one.
    let mut version = 0;
    let first = loop {
        version += 1;
        p.sluice(&["kv", "put", "w/a", &version.to_string()]).await;
        p.sluice(&["kv", "put", "x/ignored", "1"]).await;
        match tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await {
            Ok(first) => break first.unwrap().expect("watch ended"),
            Err(_) => assert!(version < 40, "watch printed nothing"),
        }
    };
    let first = line(&first);
    assert_eq!(first["key"], "w/a");
    let seen = first["version"].as_i64().unwrap();
    assert_eq!(first["value"], seen);
    p.sluice(&["kv", "del", "w/a"]).await;
    p.sluice(&["kv", "put", "w/b", r#"{"x": null}"#]).await;
    let mut rest = Vec::new();
    while rest.len() < (version - seen) as usize + 2 {
        let next = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("watch printed in time")
            .unwrap()
            .expect("a line");
        rest.push(line(&next));
    }
    let deleted = &rest[rest.len() - 2];
    assert_eq!(
        *deleted,
        json!({"key": "w/a", "version": version + 1, "deleted": true})
    );
    assert_eq!(
        rest[rest.len() - 1],
        json!({"key": "w/b", "value": {"x": null}, "version": 1})
    );
    watch.kill().await.unwrap();
}

// ---- a randomized run against a replay of the log ----

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The update `i` of publisher `publisher`: mostly puts, some conditional, some deletes.
fn random_update(rng: &mut Rng, publisher: u64, i: u64) -> (String, KvCommand) {
    let key = format!("key-{}", rng.below(1_000));
    let value = serde_json::value::to_raw_value(&json!({"by": publisher, "i": i})).unwrap();
    let if_version = (rng.below(3) == 0).then(|| rng.below(6));
    let command = match rng.below(10) {
        0 => KvCommand::delete(if_version),
        _ => KvCommand::put(value, if_version),
    };
    (key, command)
}

/// The table a replay of the update topic in log order produces: the model the applier must
/// match, written apart from it.
fn replay_log(kafka_config: &KafkaConfig, topics: &Topics) -> BTreeMap<String, KvEntry> {
    let consumer: BaseConsumer = kafka::reader_config(kafka_config, "kv-test-replay")
        .create()
        .unwrap();
    let topic = topics.kv_updates();
    let mut state: BTreeMap<String, KvEntry> = BTreeMap::new();
    let mut seen_ids = HashSet::new();
    for partition in 0..PARTITIONS {
        let (_, end) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .unwrap();
        if end == 0 {
            continue;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        let mut next = 0;
        while next < end {
            let Some(message) = consumer.poll(Duration::from_secs(10)) else {
                panic!("the update topic stopped at {next} of {end}");
            };
            let message = message.unwrap();
            assert_eq!(message.offset(), next, "offsets in order");
            next += 1;
            let key = std::str::from_utf8(message.key().unwrap())
                .unwrap()
                .to_string();
            let update: Envelope<KvCommand> =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            if !seen_ids.insert(update.id) {
                continue;
            }
            let entry = state.entry(key.clone()).or_insert(KvEntry {
                key,
                value: None,
                version: 0,
            });
            let visible = if entry.value.is_some() {
                entry.version
            } else {
                0
            };
            if update
                .payload
                .if_version
                .is_some_and(|v| v as i64 != visible)
            {
                continue;
            }
            match update.payload.op {
                KvOp::Put => {
                    entry.version += 1;
                    entry.value =
                        Some(serde_json::from_str(update.payload.value.unwrap().get()).unwrap());
                }
                KvOp::Delete if entry.value.is_some() => {
                    entry.version += 1;
                    entry.value = None;
                }
                KvOp::Delete => {}
            }
        }
    }
    state.retain(|_, e| e.version > 0);
    state
}

#[tokio::test]
async fn kv_random_updates_with_the_applier_killed_match_a_replay_of_the_log_and_rebuild() {
    const PUBLISHERS: u64 = 4;
    const PER_PUBLISHER: u64 = 12_500;
    const TOTAL: i64 = (PUBLISHERS * PER_PUBLISHER) as i64;
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let mut config = kafka::producer_config(&p.kafka);
    config.set("linger.ms", "5");
    let producer: FutureProducer = config.create().unwrap();
    let topic = p.topics.kv_updates();
    let publishers = (0..PUBLISHERS).map(|publisher| {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (publisher + 1));
            let updates: Vec<(String, Vec<u8>)> = (0..PER_PUBLISHER)
                .map(|i| {
                    let (key, command) = random_update(&mut rng, publisher, i);
                    (
                        key,
                        serde_json::to_vec(&Envelope::new(KIND, command)).unwrap(),
                    )
                })
                .collect();
            stream::iter(updates)
                .map(|(key, payload)| {
                    let (producer, topic) = (producer.clone(), topic.clone());
                    async move {
                        producer
                            .send(
                                FutureRecord::to(&topic).key(&key).payload(&payload),
                                Timeout::Never,
                            )
                            .await
                            .map(|_| ())
                            .map_err(|(e, _)| e)
                    }
                })
                .buffer_unordered(500)
                .for_each(|sent| async move {
                    sent.expect("published");
                })
                .await;
        })
    });
    let publishers: Vec<_> = publishers.collect();
    let outcomes = "SELECT count(*) FROM jobs WHERE kind = 'kv'";
    eventually(
        Duration::from_secs(60),
        "a fifth of the updates applied",
        || async { (p.count(outcomes).await >= TOTAL / 5).then_some(()) },
    )
    .await;
    p.kill(0);
    let restarted = p.start("sluice-persister");
    for publisher in publishers {
        publisher.await.unwrap();
    }
    p.wait_count(outcomes, TOTAL, Duration::from_secs(120))
        .await;
    assert!(p.is_running(restarted));
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);

    let expected = tokio::task::spawn_blocking({
        let (kafka_config, topics) = (p.kafka.clone(), p.topics.clone());
        move || replay_log(&kafka_config, &topics)
    })
    .await
    .unwrap();
    let table: BTreeMap<String, KvEntry> = entries(&p.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.key.clone(), e))
        .collect();
    assert_eq!(table.len(), expected.len());
    for (key, entry) in &expected {
        assert_eq!(table.get(key), Some(entry), "key {key}");
    }

    // Every applied change of a key took the next version: 1, 2, 3, … with no gap or repeat.
    let applied: Vec<(String, i64)> = sqlx::query_as(
        "SELECT result->>'key', (result->>'version')::int8 FROM jobs
         WHERE kind = 'kv' AND (result->>'changed')::bool",
    )
    .fetch_all(&p.pool)
    .await
    .unwrap();
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    for (key, version) in applied {
        versions.entry(key).or_default().push(version);
    }
    for (key, mut list) in versions {
        list.sort();
        let counted: Vec<i64> = (1..=list.len() as i64).collect();
        assert_eq!(list, counted, "versions of {key}");
        assert_eq!(table[&key].version, list.len() as i64);
    }
    let conflicts = p
        .count("SELECT count(*) FROM jobs WHERE kind = 'kv' AND result->>'conflict' = 'true'")
        .await;
    assert!(
        conflicts > 1_000,
        "the run had conflicts to check: {conflicts}"
    );

    // Of concurrent compare-and-sets on one version, exactly one wins.
    let version = table["key-7"].version;
    let value_version = if table["key-7"].value.is_some() {
        version
    } else {
        0
    };
    let racers = (0..8).map(|i| {
        let value = i.to_string();
        let at = value_version.to_string();
        let p = &p;
        async move {
            p.sluice(&["kv", "put", "key-7", &value, "--if-version", &at])
                .await
        }
    });
    let results = futures::future::join_all(racers).await;
    let winners = results.iter().filter(|(code, _)| *code == 0).count();
    assert_eq!(winners, 1, "{results:?}");

    // A rebuild from the state topic reproduces the table.
    let before = entries(&p.pool).await.unwrap();
    let started = Instant::now();
    let (code, out) = p.sluice(&["kv", "rebuild"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        entries(&p.pool).await.unwrap(),
        before,
        "rebuilt in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn kv_stage_heartbeats_count_its_own_work() {
    let p = TestPipeline::spawn(Options::no_workers()).await;
    p.wait_live("kv", 1).await;
    assert_eq!(p.sluice(&["kv", "put", "counted", "1"]).await.0, 0);
    assert_eq!(p.sluice(&["kv", "put", "counted", "2"]).await.0, 0);
    // The persister stage, beside it in the process, meanwhile stores every heartbeat.
    eventually(
        Duration::from_secs(10),
        "the kv stage to report its 2 updates",
        || async {
            let live = sluice_db::queries::live_workers(&p.pool, Some("kv"))
                .await
                .ok()?;
            (live.first()?.processed == 2).then_some(())
        },
    )
    .await;
    let persister = sluice_db::queries::live_workers(&p.pool, Some("persister"))
        .await
        .unwrap();
    assert!(persister[0].processed > 2, "{persister:?}");
}

/// A state topic an operator created with a smaller `max.message.bytes` than the updates
/// topic's: the change of a large update can never be published. It was retried forever,
/// holding every update behind it while heartbeats said live; now the update is dead-lettered
/// (its key unchanged) and the rest are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_change_the_state_topic_refuses_is_dead_lettered() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let p = TestPipeline::spawn(Options::no_workers()).await;
    let topic = p.topics.kv_state();
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(&p.kafka)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let small = AlterConfig::new(ResourceSpecifier::Topic(&topic))
        .set("cleanup.policy", "compact")
        .set("max.message.bytes", "2048");
    for outcome in admin.alter_configs([&small], &options).await.unwrap() {
        outcome.expect("the state topic's limit lowered");
    }
    // The broker applies a change it acknowledged a moment later (KRaft replays it).
    eventually(
        Duration::from_secs(30),
        "the lower limit in force",
        || async {
            let described = admin
                .describe_configs([&ResourceSpecifier::Topic(&topic)], &options)
                .await
                .ok()?
                .pop()?
                .ok()?;
            (described.get("max.message.bytes")?.value.as_deref() == Some("2048")).then_some(())
        },
    )
    .await;
    // Hex digits of a counter's hash: little for compression to take away.
    let large: String = (0..20_000u64)
        .map(|i| format!("{:x}", (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60)))
        .collect();
    let (code, out) = p
        .sluice(&["kv", "put", "large", &format!("\"{large}\""), "--no-wait"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        p.sluice(&["kv", "put", "small", "1"]).await,
        (0, "{\"key\": \"small\", \"version\": 1}\n".into())
    );
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'undeliverable'
           AND reason LIKE '%publishing KV changes%'",
        1,
        Duration::from_secs(60),
    )
    .await;
    let (code, out) = p.sluice(&["kv", "get", "large"]).await;
    assert_eq!(code, 1, "the large update was not applied: {out}");

    // Restarted, the applier knows the limit: a change over it is refused before anything of
    // its batch is sent, so the state topic holds no change that did not commit (a rebuild
    // from it gives the table back).
    assert!(p.terminate(0, Duration::from_secs(20)).await);
    p.start("sluice-persister");
    p.wait_live("kv", 1).await;
    let (code, out) = p
        .sluice(&["kv", "put", "k", &format!("\"{large}\""), "--no-wait"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        p.sluice(&["kv", "put", "k", "2"]).await,
        (0, "{\"key\": \"k\", \"version\": 1}\n".into())
    );
    p.wait_count(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'undeliverable'",
        2,
        Duration::from_secs(60),
    )
    .await;
    let (code, out) = p.sluice(&["kv", "rebuild"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = p.sluice(&["kv", "get", "k"]).await;
    assert_eq!(
        (code, line(&out)),
        (0, json!({"key": "k", "value": 2, "version": 1}))
    );
}

/// Earlier versions made `kv.updates` compacted, and compaction loses commands (an update a
/// later one of its key replaced before the applier read it: Nisshi compacted them away at a
/// broker restart). A service starting against such a topic makes it a delete-policy topic
/// with a long retention, keeping the settings an operator gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_kv_updates_topic_becomes_a_delete_topic_at_start() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let p = TestPipeline::spawn(Options::no_workers()).await;
    assert!(p.terminate(0, Duration::from_secs(20)).await);
    let topic = p.topics.kv_updates();
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(&p.kafka)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let max_bytes = kafka::BATCH_MAX_BYTES.to_string();
    let as_before = AlterConfig::new(ResourceSpecifier::Topic(&topic))
        .set("cleanup.policy", "compact")
        .set("min.compaction.lag.ms", "604800000")
        .set("max.message.bytes", &max_bytes)
        .set("segment.ms", "3600000");
    for outcome in admin.alter_configs([&as_before], &options).await.unwrap() {
        outcome.expect("the topic made compacted, as earlier versions did");
    }
    let config = |name: &'static str| {
        let (admin, options, topic) = (&admin, &options, topic.clone());
        async move {
            let described = admin
                .describe_configs([&ResourceSpecifier::Topic(&topic)], options)
                .await
                .ok()?
                .pop()?
                .ok()?;
            described.get(name)?.value.clone()
        }
    };
    assert_eq!(config("cleanup.policy").await.as_deref(), Some("compact"));

    let persister = p.start("sluice-persister");
    eventually(
        Duration::from_secs(60),
        "kv.updates made a delete-policy topic",
        || async { (config("cleanup.policy").await.as_deref() == Some("delete")).then_some(()) },
    )
    .await;
    assert_eq!(
        config("retention.ms").await.as_deref(),
        Some(sluice_messages::topics::KV_UPDATES_RETENTION_MS)
    );
    assert_eq!(
        config("segment.ms").await.as_deref(),
        Some("3600000"),
        "the operator's setting kept"
    );
    assert_eq!(config("max.message.bytes").await, Some(max_bytes));
    let log = p.log(persister);
    assert!(log.contains("changing the topic's configuration"), "{log}");
}
