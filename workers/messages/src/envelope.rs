//! The job envelope and the job result.

use chrono::{DateTime, Utc};
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

#[cfg(test)]
mod tests {
    use super::*;

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
