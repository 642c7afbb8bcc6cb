//! Messages as VCDIFF deltas (`delta=vcdiff` attachments, see [`crate::vcdiff`]):
//! what a message's payload is for delta purposes, and the delta form of a run
//! of messages.
//!
//! The payload is the message's data as the SDK holds it before decoding its
//! encodings (a string's UTF-8 bytes, binary as is), which is what ably-js keeps
//! as the base for the next delta. Structured JSON data (`data` sent as a JSON
//! value by REST clients, no encoding) and messages without data have none: they
//! go out whole and the next message does too.

use crate::protocol::{Message, MessageData};

/// The id and payload a following message's delta is taken against.
pub fn base_of(m: &Message) -> Option<(String, Vec<u8>)> {
    let payload = match m.data.as_ref()? {
        MessageData::String(s) => s.as_bytes().to_vec(),
        MessageData::Binary(b) => b.to_vec(),
        MessageData::Json(_) => return None,
    };
    Some((m.id.clone()?, payload))
}

/// Rewrites `msgs` (in publish order) as deltas, the first against `base` (the
/// message published before them), each next one against the one before it. A
/// message without a base or a payload stays whole.
pub fn encode_messages(mut base: Option<(String, Vec<u8>)>, msgs: &mut [Message]) {
    for m in msgs.iter_mut() {
        let next = base_of(m);
        if let (Some((from, source)), Some((_, target))) = (&base, &next) {
            let delta = crate::vcdiff::encode(source, target);
            let suffix = match m.data {
                Some(MessageData::String(_)) => "utf-8/vcdiff",
                _ => "vcdiff",
            };
            m.encoding = Some(match m.encoding.take() {
                Some(e) if !e.is_empty() => format!("{e}/{suffix}"),
                _ => suffix.to_owned(),
            });
            m.data = Some(MessageData::Binary(delta.into()));
            let mut extras = match m.extras.take() {
                Some(serde_json::Value::Object(x)) => x,
                _ => serde_json::Map::new(),
            };
            extras.insert(
                "delta".into(),
                serde_json::json!({"from": from, "format": "vcdiff"}),
            );
            m.extras = Some(serde_json::Value::Object(extras));
        }
        base = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, data: MessageData, encoding: Option<&str>) -> Message {
        Message {
            id: Some(id.into()),
            data: Some(data),
            encoding: encoding.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn runs_of_messages_become_deltas_against_their_predecessor() {
        let base = Some(("p:0".to_string(), br#"{"n":1}"#.to_vec()));
        let mut msgs = vec![
            msg(
                "q:0",
                MessageData::String(r#"{"n":2}"#.into()),
                Some("json"),
            ),
            msg("q:1", MessageData::Binary(vec![1, 2, 3].into()), None),
            msg("q:2", MessageData::Json(serde_json::json!({"a": 1})), None),
            msg("q:3", MessageData::String("x".into()), None),
        ];
        encode_messages(base, &mut msgs);
        assert_eq!(msgs[0].encoding.as_deref(), Some("json/utf-8/vcdiff"));
        assert_eq!(msgs[0].extras.as_ref().unwrap()["delta"]["from"], "p:0");
        assert!(matches!(msgs[0].data, Some(MessageData::Binary(_))));
        assert_eq!(msgs[1].encoding.as_deref(), Some("vcdiff"));
        assert_eq!(msgs[1].extras.as_ref().unwrap()["delta"]["from"], "q:0");
        // JSON-valued data has no payload: it and the message after it go whole.
        assert!(msgs[2].extras.is_none());
        assert_eq!(msgs[3].encoding, None);
        assert!(matches!(msgs[3].data, Some(MessageData::String(_))));
    }
}
