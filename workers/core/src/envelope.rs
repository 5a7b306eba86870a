//! The message shapes every stage shares: the job envelope, the result, and the retry
//! metadata that travels in Kafka headers.

use chrono::{DateTime, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// A job as published: the id is the idempotency key (a client may choose it), the payload is
/// the kind's own JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<P = Box<RawValue>> {
    pub id: Uuid,
    pub kind: String,
    pub payload: P,
    pub created_at: DateTime<Utc>,
}

impl<P> Envelope<P> {
    pub fn new(kind: &str, payload: P) -> Self {
        Self::with_id(Uuid::new_v4(), kind, payload)
    }

    pub fn with_id(id: Uuid, kind: &str, payload: P) -> Self {
        Self {
            id,
            kind: kind.to_string(),
            payload,
            created_at: Utc::now(),
        }
    }
}

/// A finished job, as published to the results topic for the persister.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub id: Uuid,
    pub kind: String,
    /// The answer, e.g. `{"ok": true, "result": 15.0, …}` or `{"ok": false, "error": "…"}`,
    /// kept as written: serialized once by the worker, stored as is by the persister.
    pub result: Box<RawValue>,
    pub worker: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Header names of the retry and dead-letter metadata.
pub mod header {
    /// Failed attempts so far; absent on a message's first delivery.
    pub const FAILURES: &str = "sluice-failures";
    /// Where the message failed first, and where the retry service sends it back to.
    pub const ORIGINAL_TOPIC: &str = "sluice-original-topic";
    pub const ORIGINAL_PARTITION: &str = "sluice-original-partition";
    pub const ORIGINAL_OFFSET: &str = "sluice-original-offset";
    pub const FIRST_FAILURE_MS: &str = "sluice-first-failure-ms";
    pub const ERROR_CLASS: &str = "sluice-error-class";
    pub const ERROR: &str = "sluice-error";
    /// On a retry topic: when (Unix ms) the message may go back to its original topic.
    pub const DUE_MS: &str = "sluice-due-ms";
    /// The job a dead letter belongs to, when the message could be decoded that far.
    pub const JOB_ID: &str = "sluice-job-id";

    /// Headers that describe one failure; replaced, never accumulated, on the next one.
    pub const PER_FAILURE: [&str; 4] = [FAILURES, ERROR_CLASS, ERROR, DUE_MS];
}

/// The value of header `name` as UTF-8, if present.
pub fn header_str<'a, H: Headers>(headers: Option<&'a H>, name: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

pub fn header_i64<H: Headers>(headers: Option<&H>, name: &str) -> Option<i64> {
    header_str(headers, name).and_then(|v| v.parse().ok())
}

/// Copies `headers` without the ones named in `drop`, then adds `add`.
pub fn rewrite_headers<H: Headers>(
    headers: Option<&H>,
    drop: &[&str],
    add: &[(&str, String)],
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(headers) = headers {
        for h in headers.iter() {
            let replaced = add.iter().any(|(name, _)| *name == h.key);
            if !replaced && !drop.contains(&h.key) {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
    }
    for (name, value) in add {
        out = out.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_replaces_and_drops_headers() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: header::FAILURES,
                value: Some("2"),
            })
            .insert(Header {
                key: header::ORIGINAL_TOPIC,
                value: Some("t"),
            })
            .insert(Header {
                key: header::DUE_MS,
                value: Some("5"),
            });
        let out = rewrite_headers(
            Some(&original),
            &[header::DUE_MS],
            &[(header::FAILURES, "3".to_string())],
        );
        assert_eq!(header_i64(Some(&out), header::FAILURES), Some(3));
        assert_eq!(header_str(Some(&out), header::ORIGINAL_TOPIC), Some("t"));
        assert_eq!(header_str(Some(&out), header::DUE_MS), None);
        assert_eq!(out.count(), 2);
    }

    #[test]
    fn envelope_round_trips_with_a_raw_payload() {
        let sent = Envelope::new("compute", serde_json::json!({"op": "add", "a": 1, "b": 2}));
        let bytes = serde_json::to_vec(&sent).unwrap();
        let got: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got.id, sent.id);
        let payload: serde_json::Value = serde_json::from_str(got.payload.get()).unwrap();
        assert_eq!(payload, serde_json::json!({"op": "add", "a": 1, "b": 2}));
    }
}
