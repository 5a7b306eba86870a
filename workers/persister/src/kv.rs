//! Applying KV updates: in the persister's transaction, in log order per key.
//!
//! A batch's updates are applied in memory over the stored versions of the keys they touch,
//! then written as one row per changed key. Every change is published to the state topic
//! before the transaction commits, while the persister holds its position in the update's
//! partition: a change is never missing from the state topic once its row is committed. A
//! transaction that fails after publishing is applied again from the same stored versions,
//! to the same changes, so the state topic at worst holds a change twice.
//!
//! An update's id is its idempotency key: an update whose id already has an outcome for its key
//! is not applied again (a producer that published it twice), whatever its offset. Scoped to
//! the key, the check reads only what this partition's transactions wrote, so applying a batch
//! again always makes the same changes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use rdkafka::error::KafkaError;
use serde_json::json;
use serde_json::value::RawValue;
use sluice_core::config::KafkaConfig;
use sluice_core::pause::Pause;
use sluice_core::{Output, PipelineError, Publisher};
use sluice_messages::kv::{KvChange, KvOp, KIND};
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::records::{KvUpdateRow, ResultRow};

/// Where applied changes are published.
#[derive(Clone)]
pub struct Changelog {
    /// Keeps each partition's changes in the order sent: compaction keeps a key's last.
    publisher: Publisher,
    topic: String,
    /// The persister instance, recorded with each outcome.
    pub worker: String,
}

/// One applied change of a key.
#[derive(Debug, Clone)]
pub struct Change {
    pub key: String,
    pub change: KvChange,
}

impl Changelog {
    /// Publishes to `topic`, within the record size it takes now: a change too large for it
    /// is refused before anything of its batch is sent.
    pub async fn connect(
        kafka: &KafkaConfig,
        topic: String,
        worker: &str,
        shutdown: &CancellationToken,
    ) -> Result<Self, PipelineError> {
        let mut pause = Pause::starting_at(Duration::from_millis(200));
        let topic_max_bytes = loop {
            match sluice_core::topics::max_message_bytes(kafka, &topic).await {
                Err(e) if e.is_retryable() && !shutdown.is_cancelled() => {
                    tracing::warn!(error = %e, %topic, "cannot read the state topic's size limit yet, retrying");
                    pause.wait(shutdown).await;
                }
                read => break read?,
            }
        };
        Ok(Self {
            publisher: Publisher::ordered(kafka, topic_max_bytes)?,
            topic,
            worker: worker.to_string(),
        })
    }

    /// Publishes `changes` in order and waits for the broker to acknowledge all of them. Every
    /// send is waited for, failed or not, and a batch given up (shutdown) purges the ones not
    /// sent: one still in the client could land after the changes of the partition's next
    /// owner, and compaction would keep it.
    pub async fn publish(&self, changes: &[Change]) -> Result<(), KafkaError> {
        let outputs: Vec<Output> = changes
            .iter()
            .map(|c| Output {
                topic: self.topic.clone(),
                key: Some(c.key.as_bytes().to_vec()),
                payload: serde_json::to_vec(&c.change).expect("a change serializes"),
                headers: None,
            })
            .collect();
        self.publisher.publish_in_order(&outputs).await
    }
}

/// A key as stored: its version, and whether it exists (a deleted key keeps its version).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub version: i64,
    pub exists: bool,
}

impl Stored {
    /// The version a conditional update compares with: 0 for a key that does not exist.
    fn visible(self) -> i64 {
        if self.exists {
            self.version
        } else {
            0
        }
    }
}

/// A key's row after the batch: its value (`None`: deleted) and version.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Option<String>,
    pub version: i64,
}

/// What a batch of updates did.
#[derive(Debug, Default)]
pub struct Applied {
    pub entries: Vec<Entry>,
    /// One per update with an id not seen before: applied or a conflict.
    pub outcomes: Vec<(Uuid, serde_json::Value)>,
    pub changes: Vec<Change>,
}

/// Applies `updates`, in order, over the `stored` state of their keys. Updates whose (id, key)
/// is in `done` (or repeats an earlier one of the batch) are skipped.
pub fn apply(
    updates: &[&KvUpdateRow],
    mut stored: HashMap<String, Stored>,
    mut done: HashSet<(Uuid, String)>,
) -> Applied {
    let mut applied = Applied::default();
    let mut last_values: HashMap<&str, Option<&RawValue>> = HashMap::new();
    for update in updates {
        if let Some(id) = update.id {
            if !done.insert((id, update.key.clone())) {
                continue;
            }
        }
        let state = stored.entry(update.key.clone()).or_default();
        let op = match update.op {
            KvOp::Put => "put",
            KvOp::Delete => "delete",
        };
        let outcome = match update.if_version {
            Some(expected) if expected != state.visible() => json!({
                "ok": false,
                "error": conflict_message(&update.key, expected, state.visible()),
                "conflict": true,
                "key": update.key,
                "op": op,
                "expected_version": expected,
                "current_version": state.visible(),
            }),
            _ => {
                let changed = update.op == KvOp::Put || state.exists;
                if changed {
                    state.version += 1;
                    state.exists = update.op == KvOp::Put;
                    let value = update.value.as_deref().filter(|_| state.exists);
                    last_values.insert(&update.key, value);
                    applied.changes.push(Change {
                        key: update.key.clone(),
                        change: KvChange {
                            version: state.version as u64,
                            value: value.map(RawValue::to_owned),
                            deleted: !state.exists,
                            source_partition: update.partition,
                            source_offset: update.offset,
                        },
                    });
                }
                // A delete's version is the one it took; nothing changed, the key's (0).
                let version = if changed {
                    state.version
                } else {
                    state.visible()
                };
                json!({
                    "ok": true,
                    "key": update.key,
                    "op": op,
                    "version": version,
                    "changed": changed,
                })
            }
        };
        if let Some(id) = update.id {
            applied.outcomes.push((id, outcome));
        }
    }
    applied.entries = last_values
        .into_iter()
        .map(|(key, value)| Entry {
            key: key.to_string(),
            value: value.map(|v| v.get().to_string()),
            version: stored[key].version,
        })
        .collect();
    applied
}

fn conflict_message(key: &str, expected: i64, current: i64) -> String {
    let now = if current == 0 {
        "does not exist (version 0)".to_string()
    } else {
        format!("is at version {current}")
    };
    format!("conflict: key {key:?} {now}, not version {expected}")
}

/// Applies `updates` in `tx`: reads the versions of their keys and which of their ids already
/// have an outcome, writes the changed keys, and returns the outcome rows and the changes.
/// `tx` must hold the positions of the updates' partitions: then no other transaction writes
/// these keys or outcomes until it ends, so the two reads run at once on connections of their
/// own from `pool` and see what `tx` would.
pub async fn write(
    tx: &mut Transaction<'_, Postgres>,
    pool: &PgPool,
    updates: &[KvUpdateRow],
    worker: &str,
) -> Result<(Vec<ResultRow>, Vec<Change>), sqlx::Error> {
    let keys: Vec<&str> = updates
        .iter()
        .map(|u| u.key.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let ids: Vec<Uuid> = updates.iter().filter_map(|u| u.id).collect();
    let versions = sqlx::query_as::<_, (String, i64, bool)>(
        "SELECT key, version, value IS NOT NULL FROM kv_entries WHERE key = ANY($1)",
    )
    .bind(&keys)
    .fetch_all(pool);
    let outcomes = sqlx::query_as::<_, (Uuid, String)>(
        "SELECT job_id, result->>'key' FROM jobs
         WHERE job_id = ANY($1) AND kind = $2 AND result ? 'key'",
    )
    .bind(&ids)
    .bind(KIND)
    .fetch_all(pool);
    let (stored, done) = tokio::try_join!(versions, outcomes)?;
    let stored = stored
        .into_iter()
        .map(|(key, version, exists)| (key, Stored { version, exists }))
        .collect();
    let updates: Vec<&KvUpdateRow> = updates.iter().collect();
    let applied = apply(&updates, stored, done.into_iter().collect());
    let size = |e: &Entry| e.key.len() + e.value.as_ref().map_or(0, String::len);
    for entries in sluice_db::kv::statements(&applied.entries, size) {
        sqlx::query(
            "INSERT INTO kv_entries (key, value, version, updated_at)
             SELECT e.key, e.value::jsonb, e.version, clock_timestamp()
             FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS e(key, value, version)
             ON CONFLICT (key) DO UPDATE
             SET value = EXCLUDED.value, version = EXCLUDED.version,
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>())
        .bind(
            entries
                .iter()
                .map(|e| e.value.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(entries.iter().map(|e| e.version).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let created: HashMap<Uuid, _> = updates
        .iter()
        .filter_map(|u| u.id.map(|id| (id, u.created_at)))
        .collect();
    let now = Utc::now();
    let outcomes = applied
        .outcomes
        .into_iter()
        .map(|(id, outcome)| ResultRow {
            job_id: id,
            kind: KIND.to_string(),
            error: outcome["error"].as_str().map(str::to_string),
            result: outcome.to_string(),
            worker: worker.to_string(),
            attempts: 1,
            created_at: created[&id],
            finished_at: now,
        })
        .collect();
    Ok((outcomes, applied.changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(key: &str, op: KvOp, value: Option<&str>, if_version: Option<i64>) -> KvUpdateRow {
        KvUpdateRow {
            key: key.into(),
            id: Some(Uuid::new_v4()),
            op,
            value: value.map(|v| RawValue::from_string(v.into()).unwrap()),
            if_version,
            created_at: Utc::now(),
            partition: 0,
            offset: 0,
        }
    }

    fn put(key: &str, value: &str) -> KvUpdateRow {
        update(key, KvOp::Put, Some(value), None)
    }

    fn run(updates: &[KvUpdateRow], stored: &[(&str, i64, bool)]) -> Applied {
        let stored = stored
            .iter()
            .map(|(k, version, exists)| {
                (
                    k.to_string(),
                    Stored {
                        version: *version,
                        exists: *exists,
                    },
                )
            })
            .collect();
        apply(&updates.iter().collect::<Vec<_>>(), stored, HashSet::new())
    }

    fn entry(applied: &Applied, key: &str) -> Entry {
        applied
            .entries
            .iter()
            .find(|e| e.key == key)
            .cloned()
            .unwrap()
    }

    #[test]
    fn versions_count_every_change_and_continue_after_a_delete() {
        let applied = run(
            &[
                put("a", "1"),
                put("a", "2"),
                update("a", KvOp::Delete, None, None),
                put("a", "3"),
                put("b", "\"x\""),
            ],
            &[],
        );
        let versions: Vec<u64> = applied.changes.iter().map(|c| c.change.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 1]);
        assert!(applied.changes[2].change.deleted);
        assert_eq!(
            applied.outcomes[2].1["version"], 3,
            "a delete takes a version"
        );
        assert_eq!(
            entry(&applied, "a"),
            Entry {
                key: "a".into(),
                value: Some("3".into()),
                version: 4
            }
        );
        assert_eq!(applied.outcomes.len(), 5);
    }

    #[test]
    fn conditional_updates_compare_with_the_visible_version() {
        let applied = run(
            &[
                update("a", KvOp::Put, Some("1"), Some(7)),
                update("a", KvOp::Put, Some("2"), Some(7)),
                update("gone", KvOp::Put, Some("1"), Some(0)),
                update("new", KvOp::Delete, None, Some(0)),
            ],
            &[("a", 7, true), ("gone", 4, false)],
        );
        let ok: Vec<bool> = applied
            .outcomes
            .iter()
            .map(|(_, o)| o["ok"].as_bool().unwrap())
            .collect();
        assert_eq!(ok, [true, false, true, true]);
        assert_eq!(applied.outcomes[1].1["current_version"], 8);
        assert_eq!(entry(&applied, "gone").version, 5);
        // Deleting a key that does not exist changes nothing.
        assert_eq!(applied.outcomes[3].1["changed"], false);
        assert!(applied.entries.iter().all(|e| e.key != "new"));
    }

    #[test]
    fn an_update_whose_id_has_an_outcome_is_not_applied_again() {
        let first = put("a", "1");
        let again = KvUpdateRow {
            offset: 9,
            ..first.clone()
        };
        let seen = put("a", "5");
        let done = HashSet::from([(seen.id.unwrap(), "a".to_string())]);
        let applied = apply(&[&first, &again, &seen], HashMap::new(), done);
        assert_eq!(applied.outcomes.len(), 1);
        assert_eq!(entry(&applied, "a").version, 1);
    }
}
