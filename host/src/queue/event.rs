//! Ingest validation: turns a request body into validated events, or an error
//! that names the field and, in a batch, the event's index (SPEC §4.1).
//!
//! Nothing here allocates in proportion to anything but the input, and every
//! limit is checked before the event is accepted, so a hostile body costs a
//! 4xx and nothing else.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const MAX_ID_LEN: usize = 200;
pub const MAX_TYPE_LEN: usize = 200;
pub const MAX_KEYS: usize = 64;
pub const MAX_KEY_LEN: usize = 200;

/// A validated event, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    /// Distinct keys in the order given.
    pub keys: Vec<String>,
    /// The payload as compact JSON text.
    pub payload: String,
    /// SHA-256 over type, keys and payload: a re-post with the same id and the
    /// same digest is a duplicate, with another digest a conflict.
    pub digest: [u8; 32],
}

/// What a replay's copy of an event carries in its id
/// (`<original id>~replay-<replay id>`); no posted id may hold it.
pub const REPLAY_MARK: &str = "~replay-";

/// Why a request was refused. `code` is stable and machine-readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
    /// The event's index within a batch (absent for a single event or a
    /// body-level problem).
    pub index: Option<usize>,
    pub field: Option<&'static str>,
}

impl ValidationError {
    fn body(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            index: None,
            field: None,
        }
    }
}

pub(crate) fn is_type_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-')
}

/// Parses and validates an ingest body: one event object or an array of them
/// (an empty array is a batch of none). `max_batch` bounds the number of
/// events in one request.
pub fn parse_body(body: &[u8], max_batch: usize) -> Result<Vec<NewEvent>, ValidationError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ValidationError::body(
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Array(items) => {
            if items.len() > max_batch {
                return Err(ValidationError::body(
                    "batch_too_large",
                    format!(
                        "a batch holds at most {max_batch} events, this one has {}",
                        items.len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(validate_event(item).map_err(|mut e| {
                    e.index = Some(i);
                    e.message = format!("event {i}: {}", e.message);
                    e
                })?);
            }
            Ok(out)
        }
        Value::Object(_) => Ok(vec![validate_event(value)?]),
        _ => Err(ValidationError::body(
            "invalid_body",
            "request body must be an event object or an array of event objects",
        )),
    }
}

fn field_error(field: &'static str, code: &'static str, message: String) -> ValidationError {
    ValidationError {
        code,
        message,
        index: None,
        field: Some(field),
    }
}

fn validate_event(value: Value) -> Result<NewEvent, ValidationError> {
    let Value::Object(mut map) = value else {
        return Err(ValidationError::body(
            "invalid_event",
            "an event must be a JSON object",
        ));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "id" | "type" | "keys" | "payload"))
    {
        return Err(ValidationError::body(
            "unknown_field",
            format!(
                "unknown field `{}`: an event has only `id`, `type`, `keys` and `payload`",
                truncate(unknown, 64)
            ),
        ));
    }

    let id = match map.remove("id") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(field_error(
                "id",
                "invalid_type",
                "`id` must be a string".into(),
            ))
        }
        None => {
            return Err(field_error(
                "id",
                "missing_field",
                "`id` is required".into(),
            ))
        }
    };
    let id_len = id.chars().count();
    if id_len == 0 || id_len > MAX_ID_LEN {
        return Err(field_error(
            "id",
            "invalid_length",
            format!("`id` must be 1 to {MAX_ID_LEN} characters, got {id_len}"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(field_error(
            "id",
            "invalid_value",
            "`id` must not contain control characters".into(),
        ));
    }
    if id.contains(REPLAY_MARK) {
        return Err(field_error(
            "id",
            "invalid_value",
            format!("`id` must not contain {REPLAY_MARK:?}: it marks the copies replays make"),
        ));
    }

    let event_type = match map.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(field_error(
                "type",
                "invalid_type",
                "`type` must be a string".into(),
            ))
        }
        None => {
            return Err(field_error(
                "type",
                "missing_field",
                "`type` is required".into(),
            ))
        }
    };
    if event_type.is_empty()
        || event_type.len() > MAX_TYPE_LEN
        || !event_type.bytes().all(is_type_byte)
    {
        return Err(field_error(
            "type",
            "invalid_value",
            format!(
                "`type` must be 1 to {MAX_TYPE_LEN} characters of a-z 0-9 _ . -, got {:?}",
                truncate(&event_type, 64)
            ),
        ));
    }

    let keys = match map.remove("keys") {
        // Absent means none; `null` is refused like any other non-array, so
        // the one spelling of "no keys" is to leave the field out (or `[]`).
        None => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_KEYS {
                return Err(field_error(
                    "keys",
                    "too_many_keys",
                    format!("`keys` holds at most {MAX_KEYS} keys, got {}", items.len()),
                ));
            }
            let mut keys: Vec<String> = Vec::with_capacity(items.len());
            for (k, item) in items.into_iter().enumerate() {
                let Value::String(key) = item else {
                    return Err(field_error(
                        "keys",
                        "invalid_type",
                        format!("`keys[{k}]` must be a string"),
                    ));
                };
                let len = key.chars().count();
                if len == 0 || len > MAX_KEY_LEN {
                    return Err(field_error(
                        "keys",
                        "invalid_length",
                        format!("`keys[{k}]` must be 1 to {MAX_KEY_LEN} characters, got {len}"),
                    ));
                }
                if key.chars().any(char::is_control) {
                    return Err(field_error(
                        "keys",
                        "invalid_value",
                        format!("`keys[{k}]` must not contain control characters"),
                    ));
                }
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            keys
        }
        Some(_) => {
            return Err(field_error(
                "keys",
                "invalid_type",
                "`keys` must be an array of strings".into(),
            ))
        }
    };

    let Some(payload) = map.remove("payload") else {
        return Err(field_error(
            "payload",
            "missing_field",
            "`payload` is required (any JSON value)".into(),
        ));
    };
    // serde_json's maps are ordered by key, so this text is canonical: the same
    // payload re-posted with other whitespace or key order has the same digest.
    let payload = payload.to_string();

    let mut h = Sha256::new();
    h.update(event_type.as_bytes());
    h.update([0]);
    for k in &keys {
        h.update(k.as_bytes());
        h.update([0]);
    }
    h.update([1]);
    h.update(payload.as_bytes());
    Ok(NewEvent {
        id,
        event_type,
        keys,
        payload,
        digest: h.finalize().into(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ValidationError {
        parse_body(body.as_bytes(), 1000).unwrap_err()
    }

    #[test]
    fn accepts_single_and_batch() {
        let one = parse_body(
            br#"{"id":"e1","type":"number.assign","keys":["msisdn:1","customer:A"],"payload":{"b":1,"a":2}}"#,
            10,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].payload, r#"{"a":2,"b":1}"#);
        let batch = parse_body(
            br#"[{"id":"e1","type":"a","payload":null},{"id":"e2","type":"b","payload":[1]}]"#,
            10,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert!(batch[0].keys.is_empty());
    }

    #[test]
    fn an_empty_batch_is_valid_and_holds_nothing() {
        assert_eq!(parse_body(b"[]", 10), Ok(Vec::new()));
    }

    #[test]
    fn digest_ignores_formatting_but_not_content() {
        let a = parse_body(br#"{"id":"e","type":"t","payload":{"a":1,"b":2}}"#, 1).unwrap();
        let b = parse_body(br#"{ "payload": {"b":2, "a":1}, "type":"t", "id":"e" }"#, 1).unwrap();
        let c = parse_body(br#"{"id":"e","type":"t","payload":{"a":1,"b":3}}"#, 1).unwrap();
        assert_eq!(a[0].digest, b[0].digest);
        assert_ne!(a[0].digest, c[0].digest);
    }

    #[test]
    fn an_id_may_not_carry_the_mark_of_a_replays_copy() {
        let e = parse_body(br#"{"id":"evt-1~replay-3","type":"t","payload":1}"#, 1).unwrap_err();
        assert_eq!(e.field, Some("id"), "{e:?}");
        assert!(e.message.contains("~replay-"), "{e:?}");
        assert!(parse_body(br#"{"id":"evt~1-replay","type":"t","payload":1}"#, 1).is_ok());
    }

    #[test]
    fn duplicate_keys_collapse() {
        let e = parse_body(
            br#"{"id":"e","type":"t","keys":["k","j","k"],"payload":1}"#,
            1,
        )
        .unwrap();
        assert_eq!(e[0].keys, vec!["k", "j"]);
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let long = "x".repeat(201);
        let cases: Vec<(String, &str, Option<&str>)> = vec![
            ("{".into(), "malformed_json", None),
            ("42".into(), "invalid_body", None),
            (
                r#"{"type":"t","payload":1}"#.into(),
                "missing_field",
                Some("id"),
            ),
            (
                r#"{"id":7,"type":"t","payload":1}"#.into(),
                "invalid_type",
                Some("id"),
            ),
            (
                r#"{"id":"","type":"t","payload":1}"#.into(),
                "invalid_length",
                Some("id"),
            ),
            (
                format!(r#"{{"id":"{long}","type":"t","payload":1}}"#),
                "invalid_length",
                Some("id"),
            ),
            (
                r#"{"id":"e","payload":1}"#.into(),
                "missing_field",
                Some("type"),
            ),
            (
                r#"{"id":"e","type":"Bad Type","payload":1}"#.into(),
                "invalid_value",
                Some("type"),
            ),
            (
                r#"{"id":"e","type":"t"}"#.into(),
                "missing_field",
                Some("payload"),
            ),
            (
                r#"{"id":"e","type":"t","keys":"k","payload":1}"#.into(),
                "invalid_type",
                Some("keys"),
            ),
            (
                r#"{"id":"e","type":"t","keys":null,"payload":1}"#.into(),
                "invalid_type",
                Some("keys"),
            ),
            (
                r#"{"id":"e","type":"t","keys":[1],"payload":1}"#.into(),
                "invalid_type",
                Some("keys"),
            ),
            (
                format!(r#"{{"id":"e","type":"t","keys":["{long}"],"payload":1}}"#),
                "invalid_length",
                Some("keys"),
            ),
            (
                r#"{"id":"e","type":"t","payload":1,"extra":true}"#.into(),
                "unknown_field",
                None,
            ),
        ];
        for (body, code, field) in cases {
            let e = err(&body);
            assert_eq!(e.code, code, "{body}: {e}");
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    #[test]
    fn too_many_keys_is_refused() {
        let keys: Vec<String> = (0..65).map(|i| format!("\"k{i}\"")).collect();
        let body = format!(
            r#"{{"id":"e","type":"t","keys":[{}],"payload":1}}"#,
            keys.join(",")
        );
        assert_eq!(err(&body).code, "too_many_keys");
    }

    #[test]
    fn batch_error_carries_the_index() {
        let e = err(r#"[{"id":"a","type":"t","payload":1},{"id":"b","type":"t"}]"#);
        assert_eq!(e.index, Some(1));
        assert_eq!(e.field, Some("payload"));
        assert!(e.message.starts_with("event 1:"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_and_invalid_utf8_are_errors_not_crashes() {
        let deep = format!(
            r#"{{"id":"e","type":"t","payload":{}1{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(err(&deep).code, "malformed_json");
        let bad = b"{\"id\":\"\xff\xfe\",\"type\":\"t\",\"payload\":1}";
        assert_eq!(parse_body(bad, 10).unwrap_err().code, "malformed_json");
    }

    /// An object payload nested `depth` levels deep: `{"deep":[[…[1]…]]}`.
    fn nested_payload(depth: usize) -> String {
        format!(
            r#"{{"deep":{}1{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    /// The deepest payload ingest accepts is 126 levels (the JSON parser's
    /// limit of 128, less the event object around the payload). Connectors
    /// are built to parse and re-encode that much on their 128 KiB stack:
    /// `sdk/harness/tests/connectors/crm.rs` delivers a payload this deep.
    #[test]
    fn payloads_nest_at_most_126_deep() {
        let event = |depth| {
            format!(
                r#"{{"id":"e","type":"t","payload":{}}}"#,
                nested_payload(depth)
            )
        };
        assert!(parse_body(event(126).as_bytes(), 10).is_ok());
        assert_eq!(err(&event(127)).code, "malformed_json");
    }

    #[test]
    fn oversize_batch_is_refused() {
        let items: Vec<String> = (0..11)
            .map(|i| format!(r#"{{"id":"e{i}","type":"t","payload":1}}"#))
            .collect();
        let body = format!("[{}]", items.join(","));
        assert_eq!(
            parse_body(body.as_bytes(), 10).unwrap_err().code,
            "batch_too_large"
        );
    }
}
