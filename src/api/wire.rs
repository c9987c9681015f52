//! JSON shapes of messages on the wire, in both directions.
//!
//! Incoming values are kept as the exact JSON text the client sent (checked
//! for validity by the parser), and outgoing messages are written by hand so
//! that the stored text is copied into the response without a second parse.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::api::error::ApiError;
use crate::broker::idempotence::ProducerRequest;
use crate::broker::message::MAX_TTL_MS;
use crate::broker::{Acks, Delivery, Message, NewMessage, Payload, PublishRequest, PublishResult};

/// A batch of messages to publish or send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesIn<'a> {
    /// The messages, in order.
    #[serde(borrow)]
    pub messages: Vec<MessageIn<'a>>,
    /// Idempotent producer id; each message then carries a `sequence`.
    #[serde(default)]
    pub producer_id: Option<String>,
}

/// One message to publish or send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageIn<'a> {
    /// A JSON value; `null` is a value too.
    #[serde(borrow, default, deserialize_with = "present_raw")]
    pub value: Option<&'a RawValue>,
    /// Binary value, base64 (standard alphabet, padded).
    #[serde(default)]
    pub value_b64: Option<String>,
    /// Partitioning key.
    #[serde(default)]
    pub key: Option<String>,
    /// Dotted routing key.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// String headers.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Time to live in ms.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// Sequence number of an idempotent producer's message.
    #[serde(default)]
    pub sequence: Option<u64>,
    /// A message without a value, which deletes its key from a compacted
    /// topic.
    #[serde(default)]
    pub tombstone: bool,
}

/// Deserializes a present field as `Some` even when it is JSON `null`, so
/// that `"value": null` is a null value rather than a missing one.
fn present_raw<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl MessagesIn<'_> {
    /// Converts to a broker request, checking each message's fields and
    /// that sequences, when a producer id is given, count up by one.
    pub fn into_request(self, acks: Acks) -> Result<PublishRequest, ApiError> {
        let first_sequence = self.messages.first().and_then(|message| message.sequence);
        for (index, message) in self.messages.iter().enumerate() {
            let field = format!("messages[{index}].sequence");
            match (&self.producer_id, message.sequence, first_sequence) {
                (None, Some(_), _) => {
                    return Err(ApiError::invalid(
                        &field,
                        "is given without producer_id; sequences number an idempotent producer's messages",
                    ))
                }
                (Some(_), None, _) => {
                    return Err(ApiError::invalid(
                        &field,
                        "is missing: with producer_id every message needs a sequence",
                    ))
                }
                (Some(_), Some(sequence), Some(first))
                    if Some(sequence) != first.checked_add(index as u64) =>
                {
                    return Err(ApiError::invalid(
                        &field,
                        format!(
                            "is {sequence}, but the sequences of one request count up by one from {first}"
                        ),
                    ))
                }
                _ => {}
            }
        }
        let producer = match (self.producer_id, first_sequence) {
            (Some(producer_id), Some(first_sequence)) => Some(ProducerRequest {
                producer_id,
                first_sequence,
            }),
            _ => None,
        };
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| message.into_message(index))
            .collect::<Result<_, _>>()?;
        Ok(PublishRequest {
            messages,
            producer,
            acks,
        })
    }
}

/// Deepest nesting of arrays and objects accepted in a message value. It
/// matches serde_json's default recursion limit, so consumers written with
/// it (the `ferry` CLI among them) can read every stored value.
pub const MAX_VALUE_DEPTH: usize = 128;

impl MessageIn<'_> {
    fn into_message(self, index: usize) -> Result<NewMessage, ApiError> {
        let field = |name: &str| format!("messages[{index}].{name}");
        let payload = match (self.value, self.value_b64) {
            (None, None) if self.tombstone => Payload::Tombstone,
            _ if self.tombstone => {
                return Err(ApiError::invalid(
                    &format!("messages[{index}]"),
                    "a tombstone has no value: give tombstone or a value, not both",
                ))
            }
            (Some(raw), None) => {
                let text = raw.get();
                if nesting_depth(text) > MAX_VALUE_DEPTH {
                    return Err(ApiError::invalid(
                        &field("value"),
                        format!("nests arrays and objects deeper than {MAX_VALUE_DEPTH} levels"),
                    ));
                }
                Payload::Json(Bytes::copy_from_slice(text.as_bytes()))
            }
            (None, Some(text)) => {
                let bytes = BASE64.decode(text.as_bytes()).map_err(|err| {
                    ApiError::invalid(&field("value_b64"), format!("not valid base64: {err}"))
                })?;
                Payload::Binary(Bytes::from(bytes))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    &format!("messages[{index}]"),
                    "give either value or value_b64, not both",
                ))
            }
            (None, None) => return Err(ApiError::invalid(
                &format!("messages[{index}]"),
                "missing value: give value (any JSON), value_b64 (base64 bytes) or tombstone: true",
            )),
        };
        if let Some(routing_key) = &self.routing_key {
            if routing_key.len() > 255 {
                return Err(ApiError::invalid(
                    &field("routing_key"),
                    format!("is {} bytes long, the maximum is 255", routing_key.len()),
                ));
            }
        }
        if let Some(ttl_ms) = self.ttl_ms {
            if !(1..=MAX_TTL_MS).contains(&ttl_ms) {
                return Err(ApiError::invalid(
                    &field("ttl_ms"),
                    format!("{ttl_ms} is outside 1..={MAX_TTL_MS} ms"),
                ));
            }
        }
        Ok(NewMessage {
            payload,
            key: self.key,
            routing_key: self.routing_key,
            headers: self.headers.unwrap_or_default().into_iter().collect(),
            ttl_ms: self.ttl_ms,
        })
    }
}

/// The deepest nesting of arrays and objects in valid JSON text.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Writes `{"messages": [...]}` and any extra top-level fields already
/// formatted as `"name":value` pairs.
pub fn messages_json(messages: &[Message], extra: &[(&str, u64)]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + messages.len() * 256);
    out.push_str("{\"messages\":[");
    for (index, message) in messages.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_message(&mut out, message, None);
    }
    out.push(']');
    for (name, value) in extra {
        let _ = write!(out, ",\"{name}\":{value}");
    }
    out.push('}');
    out.into_bytes()
}

/// Writes `{"offsets": [{"partition": p, "offset": o}, ...]}`.
pub fn offsets_json(result: &PublishResult) -> Vec<u8> {
    let mut out = String::with_capacity(32 + result.offsets.len() * 32);
    out.push_str("{\"offsets\":[");
    for (index, (partition, offset)) in result.offsets.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"partition\":{partition},\"offset\":{offset}}}");
    }
    out.push(']');
    if result.duplicate {
        out.push_str(",\"duplicate\":true");
    }
    out.push('}');
    out.into_bytes()
}

/// Writes `{"messages": [...]}` for queue deliveries.
pub fn deliveries_json(deliveries: &[Delivery]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + deliveries.len() * 256);
    out.push_str("{\"messages\":[");
    for (index, delivery) in deliveries.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_message(&mut out, &delivery.message, Some(delivery));
    }
    out.push_str("]}");
    out.into_bytes()
}

/// Writes one message object, with `"type":"message"` first for streams.
pub fn stream_message_json(message: &Message, delivery: Option<&Delivery>) -> String {
    let mut out = String::with_capacity(256);
    write_message(&mut out, message, delivery);
    // Insert the frame type as the first member.
    out.replace_range(0..1, "{\"type\":\"message\",");
    out
}

fn write_message(out: &mut String, message: &Message, delivery: Option<&Delivery>) {
    out.push('{');
    if let Some(delivery) = delivery {
        out.push_str("\"id\":");
        write_str(out, &delivery.id);
        let _ = write!(out, ",\"delivery_count\":{},", delivery.delivery_count);
    }
    let _ = write!(
        out,
        "\"partition\":{},\"offset\":{},\"timestamp\":{},\"producer\":",
        message.partition, message.offset, message.timestamp_ms
    );
    write_str(out, &message.producer);
    out.push_str(",\"key\":");
    write_opt_str(out, message.key.as_deref());
    out.push_str(",\"routing_key\":");
    write_opt_str(out, message.routing_key.as_deref());
    out.push_str(",\"headers\":{");
    for (index, (name, value)) in message.headers.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_str(out, name);
        out.push(':');
        write_str(out, value);
    }
    out.push('}');
    match &message.payload {
        Payload::Json(bytes) => {
            out.push_str(",\"value\":");
            // Stored JSON text was validated when it was published.
            out.push_str(&String::from_utf8_lossy(bytes));
        }
        Payload::Binary(bytes) => {
            out.push_str(",\"value_b64\":\"");
            out.push_str(&BASE64.encode(bytes));
            out.push('"');
        }
        Payload::Tombstone => out.push_str(",\"tombstone\":true"),
    }
    out.push('}');
}

fn write_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(value) => write_str(out, value),
        None => out.push_str("null"),
    }
}

fn write_str(out: &mut String, value: &str) {
    out.push_str(&serde_json::to_string(value).expect("a string always serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &'static str) -> Result<Vec<NewMessage>, ApiError> {
        let bytes: &'static Bytes = Box::leak(Box::new(Bytes::from_static(body.as_bytes())));
        crate::api::request::parse_json::<MessagesIn>(bytes)?
            .into_request(Acks::All)
            .map(|request| request.messages)
    }

    fn parse_request(body: &'static str) -> Result<PublishRequest, ApiError> {
        let bytes: &'static Bytes = Box::leak(Box::new(Bytes::from_static(body.as_bytes())));
        crate::api::request::parse_json::<MessagesIn>(bytes)?.into_request(Acks::Leader)
    }

    #[test]
    fn producer_fields_are_checked_together() {
        let request = parse_request(
            r#"{"producer_id":"p","messages":[{"value":1,"sequence":7},{"value":2,"sequence":8}]}"#,
        )
        .unwrap();
        assert_eq!(
            request.producer,
            Some(ProducerRequest {
                producer_id: "p".into(),
                first_sequence: 7
            })
        );
        assert_eq!(request.acks, Acks::Leader);
        assert_eq!(
            parse_request(r#"{"messages":[{"value":1}]}"#)
                .unwrap()
                .producer,
            None
        );
        for (body, field) in [
            (
                r#"{"messages":[{"value":1,"sequence":0}]}"#,
                "messages[0].sequence",
            ),
            (
                r#"{"producer_id":"p","messages":[{"value":1}]}"#,
                "messages[0].sequence",
            ),
            (
                r#"{"producer_id":"p","messages":[{"value":1,"sequence":1},{"value":1,"sequence":1}]}"#,
                "messages[1].sequence",
            ),
        ] {
            let err = parse_request(body).unwrap_err();
            assert!(err.message.contains(field), "{body}: {}", err.message);
        }
    }

    #[test]
    fn nesting_depth_ignores_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth(r#"[{"a": [1]}, []]"#), 3);
        assert_eq!(nesting_depth(r#"["[[[", "\"{{"]"#), 1);
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert_eq!(nesting_depth(&deep), 129);
    }

    #[test]
    fn null_value_is_a_value() {
        let messages = parse(r#"{"messages":[{"value":null}]}"#).unwrap();
        assert_eq!(
            messages[0].payload,
            Payload::Json(Bytes::from_static(b"null"))
        );
    }

    #[test]
    fn missing_and_double_values_rejected() {
        let err = parse(r#"{"messages":[{"key":"k"}]}"#).unwrap_err();
        assert!(err.message.contains("messages[0]"), "{}", err.message);
        let err = parse(r#"{"messages":[{"value":1,"value_b64":"AA=="}]}"#).unwrap_err();
        assert!(err.message.contains("not both"), "{}", err.message);
        let err = parse(r#"{"messages":[{"value_b64":"%%%"}]}"#).unwrap_err();
        assert!(
            err.message.contains("messages[0].value_b64"),
            "{}",
            err.message
        );
    }

    #[test]
    fn written_message_is_valid_json() {
        let message = Message {
            partition: 1,
            offset: 9,
            timestamp_ms: 5,
            producer: "al\"ice".into(),
            key: None,
            routing_key: Some("a.b".into()),
            headers: vec![("h".into(), "ü\n".into())],
            payload: Payload::Json(Bytes::from_static(br#"{"x": [1, 2]}"#)),
            ttl_ms: 0,
        };
        let json: serde_json::Value = serde_json::from_slice(&messages_json(
            std::slice::from_ref(&message),
            &[("next_offset", 10)],
        ))
        .unwrap();
        assert_eq!(json["messages"][0]["producer"], "al\"ice");
        assert_eq!(json["messages"][0]["value"]["x"][1], 2);
        assert_eq!(json["messages"][0]["headers"]["h"], "ü\n");
        assert_eq!(json["next_offset"], 10);

        let binary = Message {
            payload: Payload::Binary(Bytes::from_static(b"\x00\xff")),
            ..message
        };
        let frame: serde_json::Value =
            serde_json::from_str(&stream_message_json(&binary, None)).unwrap();
        assert_eq!(frame["type"], "message");
        assert_eq!(frame["value_b64"], "AP8=");
        assert_eq!(frame["offset"], 9);
    }
}
