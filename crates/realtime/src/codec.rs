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
    declared_sizes_fit(b)
        .map_err(|e| AblyError::new(ErrorCode::BadRequest, format!("Malformed msgpack: {e}")))?;
    let mut de = rmp_serde::Deserializer::from_read_ref(b);
    de.set_max_depth(MSGPACK_MAX_DEPTH);
    T::deserialize(&mut de)
        .map_err(|e| AblyError::new(ErrorCode::BadRequest, format!("Malformed msgpack: {e}")))
}

/// Checks, in one pass and without allocating, that no array or map count and no
/// string, binary or extension length in the first msgpack value of `b` exceeds the
/// bytes left. serde pre-allocates from declared counts (up to 1 MiB per sequence),
/// so without this a 24-byte frame declaring 2^32 messages cost a megabyte (found by
/// the ably_msgpack fuzz target). Truncated input passes: the decoder reports it.
fn declared_sizes_fit(b: &[u8]) -> Result<(), &'static str> {
    let mut pos = 0usize;
    // Values still to read: each needs at least one byte.
    let mut pending = 1usize;
    while pending > 0 {
        let Some(&marker) = b.get(pos) else {
            return Ok(());
        };
        pos += 1;
        pending -= 1;
        // The big-endian number of `n` bytes after the marker.
        let number = |n: usize| -> Option<usize> {
            let bytes = b.get(pos..pos + n)?;
            Some(bytes.iter().fold(0, |acc, &x| (acc << 8) | usize::from(x)))
        };
        // A length of `n` bytes, then that many bytes (plus `extra`, an ext's type).
        let sized = |n: usize, extra: usize| number(n).map(|len| (n + len + extra, 0));
        // A count of `n` bytes, then `count * per` values.
        let items = |n: usize, per: usize| number(n).map(|c| (n, c.saturating_mul(per)));
        // (bytes after the marker, values inside)
        let shape = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Some((0, 0)),
            0x80..=0x8f => Some((0, 2 * usize::from(marker & 0x0f))),
            0x90..=0x9f => Some((0, usize::from(marker & 0x0f))),
            0xa0..=0xbf => Some((usize::from(marker & 0x1f), 0)),
            0xcc | 0xd0 => Some((1, 0)),
            0xcd | 0xd1 | 0xd4 => Some((2, 0)),
            0xd5 => Some((3, 0)),
            0xca | 0xce | 0xd2 => Some((4, 0)),
            0xd6 => Some((5, 0)),
            0xcb | 0xcf | 0xd3 => Some((8, 0)),
            0xd7 => Some((9, 0)),
            0xd8 => Some((17, 0)),
            0xc4 | 0xd9 => sized(1, 0),
            0xc5 | 0xda => sized(2, 0),
            0xc6 | 0xdb => sized(4, 0),
            0xc7 => sized(1, 1),
            0xc8 => sized(2, 1),
            0xc9 => sized(4, 1),
            0xdc => items(2, 1),
            0xdd => items(4, 1),
            0xde => items(2, 2),
            0xdf => items(4, 2),
            0xc1 => return Err("reserved marker 0xc1"),
        };
        let Some((skip, values)) = shape else {
            return Ok(());
        };
        if skip > b.len() - pos {
            return Err("a declared length exceeds the frame");
        }
        pos += skip;
        pending = pending.saturating_add(values);
        if pending > b.len() - pos {
            return Err("a declared count exceeds the frame");
        }
    }
    Ok(())
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
    // An empty encoding is no encoding; kept, it read differently after a JSON hop
    // with binary data (`""` became `base64`, then nothing).
    if encoding.as_deref() == Some("") {
        *encoding = None;
    }
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

/// Rewrites binary data as base64 text (and its encoding) for JSON output.
pub(crate) fn to_json_data(data: &mut Option<MessageData>, encoding: &mut Option<String>) {
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
    fn declared_counts_and_lengths_beyond_the_frame_are_refused_up_front() {
        // {"action":15,"messages":<array32 of 2^32-1>} and a bin32 of 4 GB: refused
        // before serde could reserve room for them.
        let mut huge_array = vec![0x82, 0xa6];
        huge_array.extend_from_slice(b"action");
        huge_array.extend_from_slice(&[0x0f, 0xa8]);
        huge_array.extend_from_slice(b"messages");
        let mut huge_bin = huge_array.clone();
        huge_array.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x80]);
        huge_bin.extend_from_slice(&[0x91, 0x81, 0xa4]);
        huge_bin.extend_from_slice(b"data");
        huge_bin.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff, b'a']);
        for frame in [huge_array, huge_bin] {
            let e = decode_frame(&Frame::Binary(Bytes::from(frame))).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("exceeds the frame"), "{}", e.message);
        }
        // Every size at its exact limit still decodes, ext types included.
        assert_eq!(declared_sizes_fit(&[0x92, 0x01, 0xc4, 0x01, 0x07]), Ok(()));
        assert_eq!(
            declared_sizes_fit(&[0xde, 0x00, 0x01, 0xa1, b'k', 0xc0]),
            Ok(())
        );
        assert_eq!(declared_sizes_fit(&[0xc7, 0x02, 0x05, 0xaa, 0xbb]), Ok(()));
        assert_eq!(declared_sizes_fit(&[0xd6, 0x05, 1, 2, 3, 4]), Ok(()));
        assert!(declared_sizes_fit(&[0xc7, 0x03, 0x05, 0xaa, 0xbb]).is_err());
        assert!(declared_sizes_fit(&[0xde, 0x00, 0x02, 0xa1, b'k', 0xc0]).is_err());
    }

    #[test]
    fn non_finite_msgpack_data_is_refused_and_extras_dropped_not_turned_into_null() {
        // {"action":15,"messages":[{"data":NaN}]}
        let mut frame = vec![0x82, 0xa6];
        frame.extend_from_slice(b"action");
        frame.extend_from_slice(&[0x0f, 0xa8]);
        frame.extend_from_slice(b"messages");
        frame.extend_from_slice(&[0x91, 0x81, 0xa4]);
        frame.extend_from_slice(b"data");
        frame.push(0xcb);
        frame.extend_from_slice(&f64::NAN.to_be_bytes());
        let e = decode_frame(&Frame::Binary(Bytes::from(frame))).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        // {"action":15,"messages":[{"extras":NaN}]}: no extras, as `null` would be.
        let mut frame = vec![0x82, 0xa6];
        frame.extend_from_slice(b"action");
        frame.extend_from_slice(&[0x0f, 0xa8]);
        frame.extend_from_slice(b"messages");
        frame.extend_from_slice(&[0x91, 0x81, 0xa6]);
        frame.extend_from_slice(b"extras");
        frame.push(0xcb);
        frame.extend_from_slice(&f64::NAN.to_be_bytes());
        let pm = decode_frame(&Frame::Binary(Bytes::from(frame)))
            .unwrap()
            .unwrap();
        assert_eq!(pm.messages.unwrap()[0].extras, None);
    }

    #[test]
    fn an_empty_encoding_is_no_encoding() {
        let f = Frame::Text(r#"{"action":15,"messages":[{"data":"x","encoding":""}]}"#.into());
        let pm = decode_frame(&f).unwrap().unwrap();
        assert_eq!(pm.messages.as_ref().unwrap()[0].encoding, None);
        let binary = publish_with(MessageData::Binary(Bytes::from_static(&[1])), None);
        for f in [Format::Json, Format::Msgpack] {
            assert_eq!(roundtrip(&binary, f), binary);
        }
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
