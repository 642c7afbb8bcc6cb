//! Wire codec: JSON text frames and msgpack binary frames to and from
//! [`ProtocolMessage`], plus the binary-data normalisation that keeps payloads exact
//! across formats.
//!
//! Ingress: a `base64` step at the end of a message's `encoding` is decoded into
//! [`MessageData::Binary`] and removed from the encoding. Egress to JSON: binary data is
//! base64-encoded and `base64` appended to the encoding. Egress to msgpack: binary stays
//! a msgpack `bin`. The rest of the encoding chain (`json`, `utf-8`, `cipher+…`) is the
//! client's business and passes through untouched.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{AblyError, ErrorCode};
use crate::protocol::{Message, MessageData, PresenceMessage, ProtocolMessage};

/// Wire format negotiated with `format=` (WebSocket) or Content-Type (REST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Msgpack,
}

impl Format {
    /// Parses the `format` query parameter; unknown values are refused.
    pub fn from_param(v: Option<&str>) -> Result<Format, AblyError> {
        match v {
            None | Some("json") => Ok(Format::Json),
            Some("msgpack") => Ok(Format::Msgpack),
            Some(other) => Err(AblyError::new(
                ErrorCode::InvalidParameterValue,
                format!("Unsupported format {other:?}"),
            )),
        }
    }

    /// The HTTP content type for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Msgpack => "application/x-msgpack",
        }
    }
}

/// A transport frame, independent of the WebSocket library, so that the session loop
/// can be driven by plain channels in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    /// UTF-8 text encoded once and shared by every recipient (see
    /// [`crate::channel::SharedFrame`]); only ever built from a `String`.
    SharedText(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close,
}

/// Refuses a data frame of the other format than the connection negotiated (a
/// binary frame on a JSON connection, text on a msgpack one): Ably clients never
/// send one, so it is a broken or hostile client, not something to skip silently.
pub fn check_frame_format(frame: &Frame, format: Format) -> Result<(), AblyError> {
    let wrong = match (frame, format) {
        (Frame::Binary(_), Format::Json) => "binary frame on a JSON connection",
        (Frame::Text(_) | Frame::SharedText(_), Format::Msgpack) => {
            "text frame on a msgpack connection"
        }
        _ => return Ok(()),
    };
    Err(AblyError::new(
        ErrorCode::BadRequest,
        format!("Unexpected {wrong}"),
    ))
}

/// Decodes one inbound frame: text frames as JSON, binary frames as msgpack (the
/// session first refuses the wrong kind with [`check_frame_format`]).
pub fn decode_frame(frame: &Frame) -> Result<Option<ProtocolMessage>, AblyError> {
    let mut pm: ProtocolMessage = match frame {
        Frame::Text(t) => from_json(t.as_bytes())?,
        Frame::SharedText(b) => from_json(b)?,
        Frame::Binary(b) => from_msgpack(b)?,
        Frame::Ping(_) | Frame::Pong(_) | Frame::Close => return Ok(None),
    };
    normalize_protocol_message(&mut pm);
    Ok(Some(pm))
}

/// Encodes an outbound protocol message in `format`.
pub fn encode_frame(pm: &ProtocolMessage, format: Format) -> Result<Frame, AblyError> {
    match format {
        Format::Json => {
            let mut out = pm.clone();
            if let Some(msgs) = out.messages.as_mut() {
                msgs.iter_mut().for_each(message_to_json_wire);
            }
            if let Some(ps) = out.presence.as_mut() {
                ps.iter_mut().for_each(presence_to_json_wire);
            }
            let s = serde_json::to_string(&out).map_err(internal)?;
            Ok(Frame::Text(s))
        }
        Format::Msgpack => Ok(Frame::Binary(Bytes::from(to_msgpack(pm)?))),
    }
}

/// Decodes a JSON document (REST body or text frame).
pub fn from_json<T: DeserializeOwned>(b: &[u8]) -> Result<T, AblyError> {
    serde_json::from_slice(b)
        .map_err(|e| AblyError::new(ErrorCode::BadRequest, format!("Malformed JSON: {e}")))
}

/// Deepest msgpack nesting accepted. rmp-serde's default (1024) lets a ~100-byte
/// frame of nested arrays overflow a worker thread's stack; Ably payloads never need
/// more than a few levels.
const MSGPACK_MAX_DEPTH: usize = 64;

/// Decodes a msgpack document (REST body or binary frame).
pub fn from_msgpack<T: DeserializeOwned>(b: &[u8]) -> Result<T, AblyError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(b);
    de.set_max_depth(MSGPACK_MAX_DEPTH);
    T::deserialize(&mut de)
        .map_err(|e| AblyError::new(ErrorCode::BadRequest, format!("Malformed msgpack: {e}")))
}

/// Encodes a value as msgpack with named map keys (what Ably clients expect).
pub fn to_msgpack<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, AblyError> {
    rmp_serde::to_vec_named(v).map_err(internal)
}

/// Decodes a REST body in `format`.
pub fn decode_body<T: DeserializeOwned>(b: &[u8], format: Format) -> Result<T, AblyError> {
    match format {
        Format::Json => from_json(b),
        Format::Msgpack => from_msgpack(b),
    }
}

/// Encodes a list of messages as a REST body in `format`.
pub fn encode_messages(msgs: &[Message], format: Format) -> Result<Vec<u8>, AblyError> {
    match format {
        Format::Json => {
            let wire: Vec<Message> = msgs
                .iter()
                .cloned()
                .map(|mut m| {
                    message_to_json_wire(&mut m);
                    m
                })
                .collect();
            serde_json::to_vec(&wire).map_err(internal)
        }
        Format::Msgpack => to_msgpack(msgs),
    }
}

fn internal(e: impl std::fmt::Display) -> AblyError {
    AblyError::new(ErrorCode::Internal, format!("Encoding failed: {e}"))
}

/// Applies ingress normalisation to every message and presence message.
pub fn normalize_protocol_message(pm: &mut ProtocolMessage) {
    if let Some(msgs) = pm.messages.as_mut() {
        for m in msgs {
            normalize_data(&mut m.data, &mut m.encoding);
        }
    }
    if let Some(ps) = pm.presence.as_mut() {
        for p in ps {
            normalize_data(&mut p.data, &mut p.encoding);
        }
    }
}

/// Canonicalises one message's payload (see module docs).
pub fn normalize_message(m: &mut Message) {
    normalize_data(&mut m.data, &mut m.encoding);
}

fn normalize_data(data: &mut Option<MessageData>, encoding: &mut Option<String>) {
    let Some(enc) = encoding.as_deref() else {
        return;
    };
    let (rest, last) = match enc.rsplit_once('/') {
        Some((rest, last)) => (Some(rest), last),
        None => (None, enc),
    };
    if last != "base64" {
        return;
    }
    let Some(MessageData::String(s)) = data.as_ref() else {
        return;
    };
    // Leave undecodable text alone: the client said base64 but lied; passing it through
    // unchanged keeps the publish lossless.
    if let Ok(bytes) = B64.decode(s.as_bytes()) {
        *data = Some(MessageData::Binary(Bytes::from(bytes)));
        *encoding = rest.filter(|r| !r.is_empty()).map(str::to_owned);
    }
}

fn to_json_data(data: &mut Option<MessageData>, encoding: &mut Option<String>) {
    if let Some(MessageData::Binary(b)) = data.as_ref() {
        let text = B64.encode(b);
        *data = Some(MessageData::String(text));
        *encoding = Some(match encoding.take() {
            Some(e) if !e.is_empty() => format!("{e}/base64"),
            _ => "base64".to_owned(),
        });
    }
}

/// Rewrites binary data as base64 text for JSON output.
pub fn message_to_json_wire(m: &mut Message) {
    to_json_data(&mut m.data, &mut m.encoding);
}

/// Rewrites binary presence data as base64 text for JSON output.
pub fn presence_to_json_wire(p: &mut PresenceMessage) {
    to_json_data(&mut p.data, &mut p.encoding);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Action;

    fn publish_with(data: MessageData, encoding: Option<&str>) -> ProtocolMessage {
        ProtocolMessage {
            action: Action::Message,
            channel: Some("c".into()),
            msg_serial: Some(3),
            messages: Some(vec![Message {
                name: Some("n".into()),
                data: Some(data),
                encoding: encoding.map(str::to_owned),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn roundtrip(pm: &ProtocolMessage, f: Format) -> ProtocolMessage {
        let frame = encode_frame(pm, f).expect("encode");
        decode_frame(&frame).expect("decode").expect("message")
    }

    #[test]
    fn json_and_msgpack_roundtrip_string_binary_json() {
        let cases = [
            (MessageData::String("héllo".into()), None),
            (MessageData::String("{\"a\":1}".into()), Some("json")),
            (
                MessageData::Binary(Bytes::from_static(&[0, 1, 2, 255])),
                None,
            ),
            (
                MessageData::Binary(Bytes::from_static(b"\x00cipher")),
                Some("utf-8/cipher+aes-128-cbc"),
            ),
            (MessageData::Json(serde_json::json!({"k": [1, 2]})), None),
        ];
        for (data, enc) in cases {
            let pm = publish_with(data, enc);
            for f in [Format::Json, Format::Msgpack] {
                assert_eq!(roundtrip(&pm, f), pm, "format {f:?}");
            }
        }
    }

    #[test]
    fn json_binary_is_base64_on_the_wire() {
        let pm = publish_with(
            MessageData::Binary(Bytes::from_static(&[1, 2, 3])),
            Some("utf-8"),
        );
        let Frame::Text(t) = encode_frame(&pm, Format::Json).unwrap() else {
            panic!("text expected")
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["messages"][0]["data"], "AQID");
        assert_eq!(v["messages"][0]["encoding"], "utf-8/base64");
    }

    #[test]
    fn msgpack_binary_is_bin() {
        let pm = publish_with(MessageData::Binary(Bytes::from_static(&[9, 9])), None);
        let Frame::Binary(b) = encode_frame(&pm, Format::Msgpack).unwrap() else {
            panic!("binary expected")
        };
        // 0xc4 0x02 = bin8 of length 2
        assert!(b.windows(4).any(|w| w == [0xc4, 0x02, 9, 9]));
    }

    #[test]
    fn json_base64_input_becomes_binary() {
        let f = Frame::Text(
            r#"{"action":15,"msgSerial":0,"messages":[{"data":"AQID","encoding":"base64"}]}"#
                .into(),
        );
        let pm = decode_frame(&f).unwrap().unwrap();
        let m = &pm.messages.unwrap()[0];
        assert_eq!(
            m.data,
            Some(MessageData::Binary(Bytes::from_static(&[1, 2, 3])))
        );
        assert_eq!(m.encoding, None);
    }

    #[test]
    fn float_timestamps_and_unknown_fields_are_accepted() {
        let f = Frame::Text(
            r#"{"action":15,"msgSerial":1.0,"timestamp":1700000000000.0,"bogus":{"x":1},"messages":[]}"#.into(),
        );
        let pm = decode_frame(&f).unwrap().unwrap();
        assert_eq!(pm.msg_serial, Some(1));
        assert_eq!(pm.timestamp, Some(1_700_000_000_000));
    }

    /// Deterministic garbage, truncations and bit flips of valid frames must decode
    /// to a message or an error, never panic.
    #[test]
    fn garbage_never_panics() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = publish_with(
            MessageData::Binary(Bytes::from_static(&[1, 2, 3])),
            Some("json"),
        );
        let Frame::Binary(mp) = encode_frame(&valid, Format::Msgpack).unwrap() else {
            panic!("binary expected")
        };
        let Frame::Text(js) = encode_frame(&valid, Format::Json).unwrap() else {
            panic!("text expected")
        };
        for round in 0..3000 {
            let len = (next() % 64) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode_frame(&Frame::Binary(Bytes::from(random.clone())));
            let _ = decode_frame(&Frame::Text(String::from_utf8_lossy(&random).into_owned()));
            let mut flipped = mp.to_vec();
            let i = (next() as usize) % flipped.len();
            flipped[i] ^= 1 << (round % 8);
            flipped.truncate((next() as usize) % (flipped.len() + 1));
            let _ = decode_frame(&Frame::Binary(Bytes::from(flipped)));
            let cut = (next() as usize) % (js.len() + 1);
            if js.is_char_boundary(cut) {
                let _ = decode_frame(&Frame::Text(js[..cut].to_owned()));
            }
        }
        // Deep nesting is bounded by the decoders' recursion limits.
        let deep = format!(
            "{{\"action\":15,\"messages\":[{{\"extras\":{}}}]}}",
            "[".repeat(10_000)
        );
        assert!(decode_frame(&Frame::Text(deep)).is_err());
        let mut deep_mp = vec![0x82, 0xa6];
        deep_mp.extend_from_slice(b"action");
        deep_mp.extend_from_slice(&[0x0f, 0xa8]);
        deep_mp.extend_from_slice(b"messages");
        deep_mp.extend_from_slice(&[0x91, 0x81, 0xa6]);
        deep_mp.extend_from_slice(b"extras");
        deep_mp.extend(std::iter::repeat_n(0x91, 100_000));
        deep_mp.push(0xc0);
        assert!(decode_frame(&Frame::Binary(Bytes::from(deep_mp))).is_err());
    }

    #[test]
    fn malformed_frames_are_errors() {
        for f in [
            Frame::Text("not json".into()),
            Frame::Text(r#"{"action":99}"#.into()),
            Frame::Text(r#"{"noaction":1}"#.into()),
            Frame::Binary(Bytes::from_static(&[0xc1, 0xff])),
        ] {
            let e = decode_frame(&f).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
        }
    }
}
