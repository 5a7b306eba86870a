//! The key-value store's messages (seed 000's replicated store, kept through the log).
//!
//! An update is published to the KV topic with the KV key as the Kafka message key, so that
//! every update of a key lands in one partition, in order (the topic is never compacted: each
//! update is a command):
//! - an [`Envelope`](crate::Envelope) of kind [`KIND`] whose payload is a [`KvCommand`]: a put
//!   or a delete, either one conditional on the key's current version; its outcome is recorded
//!   under the envelope id, which is also the update's idempotency key;
//! - or a tombstone (no payload): an unconditional delete nobody waits for.
//!
//! The applier publishes every change it applies to the KV state topic, compacted: a
//! [`KvChange`] keyed by the KV key. That topic is what `sluice kv watch` follows and what
//! `sluice kv rebuild` replays; the update topic cannot serve for a rebuild, since its newest
//! update of a key does not say which version it made.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Envelope kind of a KV update, and the kind of its outcome row.
pub const KIND: &str = "kv";
/// The stage that applies updates (run by the persister process): its consumer group owns the
/// positions `kv rebuild` reads, and it is `kv` in `sluice workers`.
pub const APPLIER_ROLE: &str = "kv";
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes of JSON text.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// What an update does: `{"op": "put", "value": …}` or `{"op": "delete"}`, with
/// `"if_version": N` to apply it only when the key is at version N (0: the key does not exist).
/// Decode with serde, then [`KvCommand::check`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvCommand {
    pub op: KvOp,
    /// The value a put sets, kept as written (`null` included); absent for a delete.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvOp {
    Put,
    Delete,
}

/// A field that is there is `Some`, even when it is JSON `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

impl KvCommand {
    pub fn put(value: Box<RawValue>, if_version: Option<u64>) -> Self {
        Self {
            op: KvOp::Put,
            value: Some(value),
            if_version,
        }
    }

    pub fn delete(if_version: Option<u64>) -> Self {
        Self {
            op: KvOp::Delete,
            value: None,
            if_version,
        }
    }

    /// A put has a valid value, a delete none.
    pub fn check(&self) -> Result<(), Invalid> {
        match (self.op, &self.value) {
            (KvOp::Put, Some(value)) => validate_value(value),
            (KvOp::Put, None) => Err(Invalid("a put needs a value".into())),
            (KvOp::Delete, Some(_)) => Err(Invalid("a delete takes no value".into())),
            (KvOp::Delete, None) => Ok(()),
        }
    }
}

/// One applied change, as published to the state topic. A delete keeps its version (the next
/// put continues from it) and is published as a record, not a Kafka tombstone, so compaction
/// never forgets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvChange {
    pub version: u64,
    /// The value after the change (`null` included); absent when the change deleted the key.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The update that made the change, so a rebuild can tell changes of committed updates
    /// from those of a transaction that did not commit.
    pub source_partition: i32,
    pub source_offset: i64,
}

/// Why a key or value cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// A key is 1 to [`MAX_KEY_BYTES`] bytes of UTF-8 without NUL (PostgreSQL text cannot hold it).
pub fn validate_key(key: &[u8]) -> Result<&str, Invalid> {
    if key.is_empty() {
        return Err(Invalid("the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Invalid(format!(
            "the key is {} bytes, more than {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    let key = std::str::from_utf8(key).map_err(|_| Invalid("the key is not UTF-8".into()))?;
    if key.contains('\0') {
        return Err(Invalid("the key contains a NUL character".into()));
    }
    Ok(key)
}

/// A value is JSON of at most [`MAX_VALUE_BYTES`] that PostgreSQL's jsonb accepts as it is: no
/// NUL character in a string (`\u0000`), no lone surrogate, no number beyond `numeric`'s
/// range. The applier publishes a change before its transaction commits, so a value the
/// database refused would leave a change on the state topic that never happened.
pub fn validate_value(value: &RawValue) -> Result<(), Invalid> {
    let text = value.get();
    if text.len() > MAX_VALUE_BYTES {
        return Err(Invalid(format!(
            "the value is {} bytes, more than {MAX_VALUE_BYTES}",
            text.len()
        )));
    }
    // Decoding to a Value refuses lone surrogates; NUL and numbers are checked on it.
    let parsed: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Invalid(format!("the value is not JSON: {e}")))?;
    storable(&parsed)
}

fn storable(value: &serde_json::Value) -> Result<(), Invalid> {
    use serde_json::Value;
    let text = |s: &str| {
        if s.contains('\0') {
            Err(Invalid(
                "the value contains a NUL character (\\u0000)".into(),
            ))
        } else {
            Ok(())
        }
    };
    match value {
        Value::String(s) => text(s),
        Value::Number(n) if !number_fits(&n.to_string()) => Err(Invalid(format!(
            "the value holds a number PostgreSQL cannot store: {:.40}",
            n.to_string()
        ))),
        Value::Array(items) => items.iter().try_for_each(storable),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            text(k)?;
            storable(v)
        }),
        _ => Ok(()),
    }
}

/// Whether PostgreSQL's `numeric` takes the JSON number `text`: at most 131072 digits before
/// the point and 16383 after (checked on PostgreSQL 15), and an exponent of at most ±1000,
/// which older versions also require.
fn number_fits(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()),
        None => (text, Some(0)),
    };
    let Some(exponent) = exponent.filter(|e| e.abs() <= 1000) else {
        return false;
    };
    let mantissa = mantissa.trim_start_matches('-');
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let whole_digits = whole.trim_start_matches('0').len() as i64;
    whole_digits + exponent <= 131_072 && fraction.len() as i64 - exponent <= 16_383
}

/// Parses `text` as a value and checks it as [`validate_value`] does.
pub fn parse_value(text: &str) -> Result<Box<RawValue>, Invalid> {
    let value = RawValue::from_string(text.trim().to_string())
        .map_err(|e| Invalid(format!("the value is not JSON: {e}")))?;
    validate_value(&value)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_the_documented_shape() {
        let decode = |text: &str| {
            serde_json::from_str::<KvCommand>(text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check().map(|()| c).map_err(|e| e.0))
        };
        let put = decode(r#"{"op": "put", "value": {"a": [1, 2]}, "if_version": 3}"#).unwrap();
        assert_eq!(put.op, KvOp::Put);
        assert_eq!(put.value.unwrap().get(), r#"{"a": [1, 2]}"#);
        assert_eq!(put.if_version, Some(3));
        let null = decode(r#"{"op": "put", "value": null}"#).unwrap();
        assert_eq!(null.value.unwrap().get(), "null");
        let delete = decode(r#"{"op": "delete"}"#).unwrap();
        assert_eq!(delete.op, KvOp::Delete);
        assert_eq!(
            serde_json::to_string(&KvCommand::delete(None)).unwrap(),
            r#"{"op":"delete"}"#
        );
        for bad in [
            r#"{"op": "put"}"#,
            r#"{"op": "increment"}"#,
            r#"{"op": "put", "value": 1, "if_version": -1}"#,
            r#"{"op": "delete", "extra": 1}"#,
            r#"{"op": "delete", "value": 1}"#,
            r#"{"op": "put", "value": "\u0000"}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_values_are_checked() {
        assert!(validate_key(b"").is_err());
        assert!(validate_key(&[b'k'; MAX_KEY_BYTES]).is_ok());
        assert!(validate_key(&[b'k'; MAX_KEY_BYTES + 1]).is_err());
        assert!(validate_key(b"a\0b").is_err());
        assert!(validate_key(&[0xff, 0xfe]).is_err());
        assert!(parse_value("not json").is_err());
        assert!(parse_value(r#"{"a": 1} trailing"#).is_err());
        assert!(parse_value(r#"{"a": "\u0000"}"#).is_err());
        assert!(parse_value(r#"{"a": "\\u0000"}"#).is_ok());
        assert!(parse_value(" [1, 2] ").is_ok());
        assert!(parse_value(r#"{"\u0000": 1}"#).is_err());
        assert!(parse_value(r#""\ud800""#).is_err(), "a lone surrogate");
        assert!(parse_value("1e1000").is_ok());
        assert!(parse_value("-1.5E-990").is_ok());
        assert!(parse_value("[1e1001]").is_err());
        assert!(parse_value("1e99999999999999999999").is_err());
        assert!(parse_value(&format!("0.{}", "1".repeat(16_384))).is_err());
        assert!(parse_value(&"9".repeat(131_073)).is_err());
        let big = format!("\"{}\"", "x".repeat(MAX_VALUE_BYTES));
        assert!(parse_value(&big).is_err());
    }
}
