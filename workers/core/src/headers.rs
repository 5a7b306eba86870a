//! Reading and rewriting Kafka headers; their names are in [`sluice_messages::header`].

use std::ffi::CStr;

use rdkafka::bindings as rdsys;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::types::RDKafkaRespErr;
use sluice_messages::header;

/// Checks that every header name of a consumed message is UTF-8, through librdkafka's C API:
/// rdkafka's own accessors panic on a name that is not, and any producer can send one. Once
/// this passes, they are safe on the message's headers and on every copy of them.
pub fn check_header_names(message: &BorrowedMessage<'_>) -> Result<(), String> {
    let mut headers = std::ptr::null_mut();
    // SAFETY: the message is a live consumed message; librdkafka owns what it returns.
    let err = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Ok(()); // no headers
    }
    // SAFETY: `headers` stays valid as long as the message does.
    let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
    for idx in 0..count {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: idx < count; the out-pointers are valid for writes.
        let err = unsafe {
            rdsys::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size)
        };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return Err(format!("header {idx} cannot be read"));
        }
        // SAFETY: librdkafka keeps header names NUL-terminated.
        if let Err(e) = unsafe { CStr::from_ptr(name) }.to_str() {
            return Err(format!("the name of header {idx} is not UTF-8 ({e})"));
        }
    }
    Ok(())
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

/// The headers of a message that entered from outside, without any of sluice's own: a
/// producer may not forge an attempt count, a destination or a failure.
pub fn without_sluice_headers<H: Headers>(headers: &H) -> Option<OwnedHeaders> {
    let mut out = OwnedHeaders::new();
    let mut kept = 0;
    for h in headers.iter() {
        if !h.key.starts_with(header::PREFIX) {
            out = out.insert(Header {
                key: h.key,
                value: h.value,
            });
            kept += 1;
        }
    }
    (kept > 0).then_some(out)
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
    fn sluice_headers_from_outside_are_dropped() {
        let forged = OwnedHeaders::new()
            .insert(Header {
                key: header::FAILURES,
                value: Some("99"),
            })
            .insert(Header {
                key: "trace-id",
                value: Some("abc"),
            });
        let kept = without_sluice_headers(&forged).unwrap();
        assert_eq!(kept.count(), 1);
        assert_eq!(header_str(Some(&kept), "trace-id"), Some("abc"));
        assert_eq!(header_str(Some(&kept), header::FAILURES), None);
        let only_forged = OwnedHeaders::new().insert(Header {
            key: header::ORIGINAL_TOPIC,
            value: Some("elsewhere"),
        });
        assert!(without_sluice_headers(&only_forged).is_none());
    }
}
