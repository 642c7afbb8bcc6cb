//! The Ably wire codecs ([`tidewire_realtime::codec`]): JSON text frames and REST
//! bodies, msgpack binary frames and REST bodies.
//!
//! Invariants, for [`JSON`] and [`MSGPACK`] alike: decoding returns (a message or an
//! error); whatever decodes is stable, i.e. encoding it in either format and decoding
//! that gives the same message back (binary data survives the base64 detour of
//! JSON, and the ingress normalisation is idempotent). REST message lists
//! (`Vec<Message>`) are held to the same.

#![forbid(unsafe_code)]

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use tidewire_realtime::codec::{self, Format, Frame};
use tidewire_realtime::protocol::{Action, ProtocolMessage};
use tidewire_realtime::{Message, MessageData};

use crate::driver::Target;

const JSON_DICTIONARY: &[&[u8]] = &[
    b"{\"action\":15}",
    b"\"action\":\"10\"",
    b"\"action\":10",
    b"\"messages\":[",
    b"\"presence\":[",
    b"\"data\":",
    b"\"encoding\":\"base64\"",
    b"\"encoding\":\"json/base64\"",
    b"\"extras\":{",
    b"\"msgSerial\":",
    b"\"timestamp\":1e300",
    b"\"flags\":",
    b"\"params\":{\"a\":\"b\"}",
    b"\"error\":{\"code\":40000,\"statusCode\":400}",
    b"1.0",
    b"null",
    b"true",
    b"\"\\ud800\"",
    b"[[[[[[[[",
];

const MSGPACK_DICTIONARY: &[&[u8]] = &[
    b"\xa6action",
    b"\xa8messages",
    b"\xa4data",
    b"\xa8encoding",
    b"\xa6base64",
    b"\xa6extras",
    b"\xa9timestamp",
    b"\xa9msgSerial",
    b"\xc4\x03abc",
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\xcb\x42\x78\xbc\xfe\x56\x80\x00\x00",
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\xdb\xff\xff\xff\xff",
    b"\x91\x91\x91\x91\x91\x91",
    b"\xc0",
    b"\xd0\x05",
];

pub const JSON: Target = Target {
    name: "ably_json",
    check: check_json,
    generate: generate_json,
    dictionary: JSON_DICTIONARY,
    max_len: 2048,
    alloc_per_byte: 512,
    alloc_base: 128 * 1024,
};

pub const MSGPACK: Target = Target {
    name: "ably_msgpack",
    check: check_msgpack,
    generate: generate_msgpack,
    dictionary: MSGPACK_DICTIONARY,
    max_len: 2048,
    alloc_per_byte: 512,
    alloc_base: 128 * 1024,
};

fn check_json(input: &[u8]) -> Result<(), String> {
    if let Ok(text) = std::str::from_utf8(input) {
        if let Ok(Some(pm)) = codec::decode_frame(&Frame::Text(text.to_owned())) {
            protocol_message_is_stable(&pm)?;
        }
    }
    if let Ok(mut pm) = codec::from_json::<ProtocolMessage>(input) {
        codec::normalize_protocol_message(&mut pm);
        protocol_message_is_stable(&pm)?;
    }
    if let Ok(msgs) = codec::from_json::<Vec<Message>>(input) {
        messages_are_stable(msgs)?;
    }
    Ok(())
}

fn check_msgpack(input: &[u8]) -> Result<(), String> {
    if let Ok(Some(pm)) = codec::decode_frame(&Frame::Binary(Bytes::copy_from_slice(input))) {
        protocol_message_is_stable(&pm)?;
    }
    if let Ok(msgs) = codec::from_msgpack::<Vec<Message>>(input) {
        messages_are_stable(msgs)?;
    }
    Ok(())
}

fn protocol_message_is_stable(pm: &ProtocolMessage) -> Result<(), String> {
    for format in [Format::Json, Format::Msgpack] {
        let frame = codec::encode_frame(pm, format)
            .map_err(|e| format!("{format:?} encoding of a decoded {pm:?} failed: {e:?}"))?;
        match codec::decode_frame(&frame) {
            Ok(Some(back)) if back == *pm => {}
            other => {
                return Err(format!(
                    "{format:?}: {pm:?} encoded as {frame:?} decodes as {other:?}"
                ))
            }
        }
    }
    Ok(())
}

fn messages_are_stable(mut msgs: Vec<Message>) -> Result<(), String> {
    msgs.iter_mut().for_each(codec::normalize_message);
    for format in [Format::Json, Format::Msgpack] {
        let body = codec::encode_messages(&msgs, format)
            .map_err(|e| format!("{format:?} encoding of {msgs:?} failed: {e:?}"))?;
        let back = codec::decode_body::<Vec<Message>>(&body, format).map(|mut back| {
            back.iter_mut().for_each(codec::normalize_message);
            back
        });
        if back.as_ref() != Ok(&msgs) {
            return Err(format!("{format:?}: {msgs:?} reads back as {back:?}"));
        }
    }
    Ok(())
}

/// A random, mostly valid protocol message.
fn random_message(rng: &mut SmallRng) -> ProtocolMessage {
    let action = Action::try_from(rng.gen_range(0..23u64)).unwrap_or(Action::Message);
    let text = |rng: &mut SmallRng| -> String {
        const PARTS: &[&str] = &["a", "é", "\u{0}", "json", "base64", "AQID", "/", "💧", " "];
        (0..rng.gen_range(0..4))
            .map(|_| PARTS[rng.gen_range(0..PARTS.len())])
            .collect()
    };
    let data = |rng: &mut SmallRng| -> Option<MessageData> {
        match rng.gen_range(0..5) {
            0 => None,
            1 => Some(MessageData::String(text(rng))),
            2 => Some(MessageData::Binary(Bytes::from(
                (0..rng.gen_range(0..8))
                    .map(|_| rng.gen::<u8>())
                    .collect::<Vec<u8>>(),
            ))),
            3 => Some(MessageData::Json(
                serde_json::json!({"k": [1, -2, 2.5, null, "v"]}),
            )),
            _ => Some(MessageData::Json(serde_json::json!(rng.gen::<f64>()))),
        }
    };
    let messages = (0..rng.gen_range(0..3))
        .map(|_| Message {
            name: rng.gen_bool(0.5).then(|| text(rng)),
            data: data(rng),
            encoding: rng.gen_bool(0.4).then(|| text(rng)),
            timestamp: rng.gen_bool(0.3).then(|| rng.gen()),
            extras: rng
                .gen_bool(0.2)
                .then(|| serde_json::json!({"headers": {"x": text(rng)}})),
            ..Default::default()
        })
        .collect();
    ProtocolMessage {
        action,
        channel: rng.gen_bool(0.7).then(|| text(rng)),
        msg_serial: rng.gen_bool(0.5).then(|| rng.gen_range(-2..1000)),
        flags: rng.gen_bool(0.3).then(|| rng.gen()),
        messages: Some(messages),
        ..Default::default()
    }
}

fn generate_json(rng: &mut SmallRng) -> Vec<u8> {
    match codec::encode_frame(&random_message(rng), Format::Json) {
        Ok(Frame::Text(t)) => t.into_bytes(),
        _ => Vec::new(),
    }
}

fn generate_msgpack(rng: &mut SmallRng) -> Vec<u8> {
    match codec::encode_frame(&random_message(rng), Format::Msgpack) {
        Ok(Frame::Binary(b)) => b.to_vec(),
        _ => Vec::new(),
    }
}
