//! Dead letters: listing them, and replaying each dead message once however many `sluice dlq
//! replay` run at the same time, and whatever becomes of a run half-way.
//!
//! A replay goes in three steps. [`claim_replay`] *claims* the letter, with every other unreplayed
//! letter of the same message (one dead-lettered twice), by stamping `replay_claimed_at`: other
//! runs leave a claimed message alone for [`REPLAY_LEASE`]. The caller publishes it, then
//! [`finish_replay`] marks the letters replayed and makes the job pending again; a failed publish
//! [`release`]s the claim instead. A run that dies in between leaves only a claim, which the next
//! replay takes over once it is older than the lease: the letter is never counted replayed
//! without having been published (though a run that dies after the broker's acknowledgement and
//! before finishing has its message published again).
//!
//! A replay sends what the message's producer sent: its key, its payload and its own headers
//! ([`ForeignHeaders`]), none of sluice's.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use sluice_messages::header;
use sqlx::postgres::PgPool;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub job_id: Option<Uuid>,
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub attempts: i32,
    pub error_class: String,
    pub reason: String,
    pub message_key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub dead_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    /// None when the letter did not keep them (see the migration that added them).
    pub foreign_headers: Option<Json<ForeignHeaders>>,
    /// The payload's size before it was cut to fit the dead-letter topic, when it was
    /// ([`header::TRUNCATED_FROM`]): the letter is then not the message that died.
    pub truncated_from: Option<String>,
}

static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "id, job_id, original_topic, original_partition, original_offset, attempts, \
         error_class, reason, message_key, payload, dead_at, replayed_at, foreign_headers, \
         headers ->> '{}' AS truncated_from",
        header::TRUNCATED_FROM
    )
});

/// A message's own headers, those not sluice's ([`header::PREFIX`]), in its order and with
/// their values as it carried them: what a dead letter keeps for its replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignHeaders(pub Vec<(String, Option<Vec<u8>>)>);

impl ForeignHeaders {
    /// The headers of `headers`, names and values, that are not sluice's.
    pub fn of<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        Self(
            headers
                .into_iter()
                .filter(|(name, _)| !name.starts_with(header::PREFIX))
                .map(|(name, value)| (name.to_string(), value.map(<[u8]>::to_vec)))
                .collect(),
        )
    }

    /// As the `foreign_headers` column keeps them: `[[name, value], ...]`, each value in hex
    /// (JSON text cannot hold every byte string), or null for a header without one. Names are
    /// text already: Kafka's are UTF-8 without NUL.
    pub fn to_json(&self) -> String {
        let pairs = self.0.iter().map(|(name, value)| {
            let value = value
                .as_deref()
                .map_or(Value::Null, |v| hex::encode(v).into());
            Value::Array(vec![name.as_str().into(), value])
        });
        Value::Array(pairs.collect()).to_string()
    }
}

impl<'de> Deserialize<'de> for ForeignHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Vec::<(String, Option<String>)>::deserialize(deserializer)?;
        stored
            .into_iter()
            .map(|(name, value)| {
                let value = value.map(hex::decode).transpose().map_err(|e| {
                    serde::de::Error::custom(format!("the value of header {name:?}: {e}"))
                })?;
                Ok((name, value))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Up to `limit` dead letters not replayed yet with ids above `after` and not above `through`,
/// oldest first: pages of a walk through all of them that never holds more than one page of
/// payloads.
pub async fn unreplayed(
    pool: &PgPool,
    after: i64,
    through: i64,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {} FROM dead_letters
         WHERE replayed_at IS NULL AND id > $1 AND id <= $2
         ORDER BY id LIMIT $3",
        *COLUMNS
    ))
    .bind(after)
    .bind(through)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The id of the newest dead letter, if there is one.
pub async fn newest_id(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(id) FROM dead_letters")
        .fetch_one(pool)
        .await
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {} FROM dead_letters WHERE id = $1",
        *COLUMNS
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// How long a claim keeps other runs off a message. Longer than a publish can take (up to 30 s
/// waiting for room in the producer's queue, then `message.timeout.ms`, 30 s by default), so a
/// message is only taken over from a run that is no longer publishing it.
pub const REPLAY_LEASE: Duration = Duration::from_secs(120);

/// What claiming a letter for replay found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Ours to publish, then to [`finish_replay`] or [`release`].
    Claimed(ReplayClaim),
    /// Replayed already, by another run or with a copy of it.
    Replayed,
    /// The same message as letter `of`, which is replayed already: the letters `copies` (this
    /// one among them) are marked replayed now, and must not be published.
    CopyOf { of: i64, copies: Vec<i64> },
    /// Another run claimed the message less than [`REPLAY_LEASE`] ago and may be publishing it.
    Busy,
}

/// The letters of one message claimed for replay.
#[derive(Debug, Clone)]
pub struct ReplayClaim {
    /// The unreplayed letters of the message, the one asked for among them.
    letters: Vec<i64>,
    /// The claim's stamp: only the claim this run made is given back.
    claimed_at: DateTime<Utc>,
}

/// A letter of the same message as the one being replayed, as it stands.
#[derive(Debug, FromRow)]
struct LetterState {
    id: i64,
    replayed: bool,
    /// Claimed by a replay less than [`REPLAY_LEASE`] ago.
    claimed: bool,
}

/// Claims `letter` for replay, with the other unreplayed letters of the same message, unless
/// the message is replayed already or another run holds it.
pub async fn claim_replay(pool: &PgPool, letter: &DeadLetter) -> Result<Claim, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let message = lock_same_message(&mut tx, letter).await?;
    if !message.iter().any(|c| c.id == letter.id && !c.replayed) {
        return Ok(Claim::Replayed);
    }
    let unreplayed = unreplayed_ids(&message);
    // The same death replayed before: see `lock_same_message` for why it is not a new one.
    if let Some(of) = message.iter().find(|c| c.replayed).map(|c| c.id) {
        mark_replayed(&mut tx, &unreplayed).await?;
        tx.commit().await?;
        return Ok(Claim::CopyOf {
            of,
            copies: unreplayed,
        });
    }
    if message.iter().any(|c| c.claimed) {
        return Ok(Claim::Busy);
    }
    // The transaction's time, the clock every lease is measured by.
    let claimed_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("UPDATE dead_letters SET replay_claimed_at = $2 WHERE id = ANY($1)")
        .bind(&unreplayed)
        .bind(claimed_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Claim::Claimed(ReplayClaim {
        letters: unreplayed,
        claimed_at,
    }))
}

/// Ends the replay of `letter` once the broker acknowledged it: marks it replayed with every
/// unreplayed letter of the same message (those persisted since the claim too), ends the claim,
/// and makes the job pending again if it is dead. Returns the other letters marked.
pub async fn finish_replay(
    pool: &PgPool,
    letter: &DeadLetter,
    claim: &ReplayClaim,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let message = lock_same_message(&mut tx, letter).await?;
    let unreplayed = unreplayed_ids(&message);
    mark_replayed(&mut tx, &unreplayed).await?;
    if let Some(job_id) = letter.job_id {
        let copies: Vec<i64> = message.iter().map(|c| c.id).collect();
        revive_job(&mut tx, job_id, claim.claimed_at, &copies).await?;
    }
    tx.commit().await?;
    Ok(unreplayed
        .into_iter()
        .filter(|id| *id != letter.id)
        .collect())
}

/// Gives a claim back after its publish failed, so the next replay need not wait for the lease.
/// A claim another run took over meanwhile is that run's and stays.
pub async fn release(pool: &PgPool, claim: &ReplayClaim) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letters SET replay_claimed_at = NULL
         WHERE id = ANY($1) AND replay_claimed_at = $2",
    )
    .bind(&claim.letters)
    .bind(claim.claimed_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Locks every letter of the same message as `letter`, replayed or not, in id order, so two
/// runs replaying letters of one message queue up instead of deadlocking.
///
/// Two letters are the same message when they failed at the same original position (topic,
/// partition, offset) with the same payload and, when both have one, the same job id. The
/// position alone is not enough: a broker whose log started over (a memory engine restarted, a
/// topic created again) gives new messages the positions of old ones. Without a complete
/// position, the letters of the same job id, topic, key and payload that have none either (the
/// key matters: every part of a split job carries the job's id); without a job id there is no
/// telling, and a letter is its own.
///
/// A letter of a message replayed already is the same death persisted again, never a new one:
/// a replay publishes the message afresh, so a job that fails again after its replay dies from
/// a new position.
async fn lock_same_message(
    tx: &mut sqlx::PgConnection,
    letter: &DeadLetter,
) -> Result<Vec<LetterState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, replayed_at IS NOT NULL AS replayed,
                coalesce(replay_claimed_at > now() - make_interval(secs => $8), false) AS claimed
         FROM dead_letters
         WHERE id = $1
            OR ($2::text IS NOT NULL AND $3::int IS NOT NULL AND $4::bigint IS NOT NULL
                AND (original_topic, original_partition, original_offset) = ($2, $3, $4)
                AND (job_id IS NULL OR $5::uuid IS NULL OR job_id = $5)
                AND payload = $7)
            OR (($2::text IS NULL OR $3::int IS NULL OR $4::bigint IS NULL)
                AND $5::uuid IS NOT NULL AND job_id = $5
                AND original_topic IS NOT DISTINCT FROM $2
                AND message_key IS NOT DISTINCT FROM $6
                AND (original_topic IS NULL OR original_partition IS NULL
                     OR original_offset IS NULL)
                AND payload = $7)
         ORDER BY id
         FOR UPDATE",
    )
    .bind(letter.id)
    .bind(&letter.original_topic)
    .bind(letter.original_partition)
    .bind(letter.original_offset)
    .bind(letter.job_id)
    .bind(&letter.message_key)
    .bind(&letter.payload)
    .bind(REPLAY_LEASE.as_secs_f64())
    .fetch_all(tx)
    .await
}

fn unreplayed_ids(message: &[LetterState]) -> Vec<i64> {
    message
        .iter()
        .filter(|c| !c.replayed)
        .map(|c| c.id)
        .collect()
}

async fn mark_replayed(tx: &mut sqlx::PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letters SET replayed_at = now(), replay_claimed_at = NULL
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(tx)
    .await?;
    Ok(())
}

/// Makes a dead job pending again after its message was published, unless it died once more
/// since the claim (a letter of it that is not this message arrived meanwhile): it ran and
/// failed again between the publish and now, and dead is then the truth.
async fn revive_job(
    tx: &mut sqlx::PgConnection,
    job_id: Uuid,
    claimed_at: DateTime<Utc>,
    message: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = 'pending', error = NULL
         WHERE job_id = $1 AND status = 'dead'
           AND NOT EXISTS (SELECT 1 FROM dead_letters
                           WHERE job_id = $1 AND dead_at > $2 AND id <> ALL($3))",
    )
    .bind(job_id)
    .bind(claimed_at)
    .bind(message)
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_headers_keep_their_order_and_exact_values_and_drop_sluices() {
        let binary: &[u8] = &[0, 0xff, b'a', 0xc3];
        let headers: [(&str, Option<&[u8]>); 5] = [
            ("trace-id", Some(b"abc")),
            (header::FAILURES, Some(b"3")),
            ("binary", Some(binary)),
            ("trace-id", Some(b"again")),
            ("flag", None),
        ];
        let kept = ForeignHeaders::of(headers);
        let names: Vec<&str> = kept.0.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["trace-id", "binary", "trace-id", "flag"]);
        let json = kept.to_json();
        assert_eq!(
            json,
            r#"[["trace-id","616263"],["binary","00ff61c3"],["trace-id","616761696e"],["flag",null]]"#
        );
        let back: ForeignHeaders = serde_json::from_str(&json).unwrap();
        assert_eq!(back, kept);
        assert!(serde_json::from_str::<ForeignHeaders>(r#"[["x","zz"]]"#).is_err());
    }
}
