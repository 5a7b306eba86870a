//! Reading and rewriting Kafka headers; their names are in [`sluice_messages::header`].

use rdkafka::message::{Header, Headers, OwnedHeaders};
use sluice_messages::header;

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
