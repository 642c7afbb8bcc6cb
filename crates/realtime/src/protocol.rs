//! Ably protocol types: [`Action`], [`ProtocolMessage`], [`Message`], [`MessageData`],
//! [`ConnectionDetails`], [`ErrorInfo`] and the flag bits.
//!
//! The same serde derives serve JSON and msgpack; format-specific differences (binary
//! data travels as base64 text in JSON) are handled by [`crate::codec`], so everything
//! past the codec sees data in one canonical form: text, bytes or a JSON value.
//! Integer fields are read leniently because some msgpack encoders write large integers
//! (timestamps) as float64.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Protocol message actions (Ably protocol v2..v6).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Heartbeat = 0,
    Ack = 1,
    Nack = 2,
    Connect = 3,
    Connected = 4,
    Disconnect = 5,
    Disconnected = 6,
    Close = 7,
    Closed = 8,
    Error = 9,
    Attach = 10,
    Attached = 11,
    Detach = 12,
    Detached = 13,
    Presence = 14,
    Message = 15,
    Sync = 16,
    Auth = 17,
    Activate = 18,
    Object = 19,
    ObjectSync = 20,
    Annotation = 21,
}

impl TryFrom<u64> for Action {
    type Error = u64;

    fn try_from(v: u64) -> Result<Self, u64> {
        use Action::*;
        Ok(match v {
            0 => Heartbeat,
            1 => Ack,
            2 => Nack,
            3 => Connect,
            4 => Connected,
            5 => Disconnect,
            6 => Disconnected,
            7 => Close,
            8 => Closed,
            9 => Error,
            10 => Attach,
            11 => Attached,
            12 => Detach,
            13 => Detached,
            14 => Presence,
            15 => Message,
            16 => Sync,
            17 => Auth,
            18 => Activate,
            19 => Object,
            20 => ObjectSync,
            21 => Annotation,
            other => return Err(other),
        })
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Strict, unlike other numeric fields: a string action is a broken frame.
        let n = d.deserialize_u64(ActionNumber)?;
        Action::try_from(n).map_err(|n| de::Error::custom(format!("unknown action {n}")))
    }
}

/// Accepts only an integer `action` (no strings, no fractions).
struct ActionNumber;

impl Visitor<'_> for ActionNumber {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer action")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom("negative action"))
    }
}

/// Flag bits on ATTACH/ATTACHED and friends.
pub mod flags {
    pub const HAS_PRESENCE: u64 = 1 << 0;
    pub const HAS_BACKLOG: u64 = 1 << 1;
    pub const RESUMED: u64 = 1 << 2;
    pub const TRANSIENT: u64 = 1 << 4;
    pub const ATTACH_RESUME: u64 = 1 << 5;
    pub const PRESENCE: u64 = 1 << 16;
    pub const PUBLISH: u64 = 1 << 17;
    pub const SUBSCRIBE: u64 = 1 << 18;
    pub const PRESENCE_SUBSCRIBE: u64 = 1 << 19;
    pub const ANNOTATION_PUBLISH: u64 = 1 << 21;
    pub const ANNOTATION_SUBSCRIBE: u64 = 1 << 22;
    /// The modes an attach gets when it asks for none (annotations are delivered
    /// only to attachments that ask for them).
    pub const MODES: u64 = PRESENCE | PUBLISH | SUBSCRIBE | PRESENCE_SUBSCRIBE | ANNOTATION_PUBLISH;
    /// Every mode bit Tidewire knows.
    pub const ALL_MODES: u64 = MODES | ANNOTATION_SUBSCRIBE;
}

/// `error` field of protocol messages and REST error bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u32"
    )]
    pub code: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u16"
    )]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

/// Limits and identity the server announces in CONNECTED.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub connection_key: String,
    pub max_message_size: u64,
    pub max_frame_size: u64,
    pub max_inbound_rate: u64,
    pub connection_state_ttl: u64,
    pub server_id: String,
    pub max_idle_interval: u64,
}

/// `auth` field of an AUTH message from the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

/// Message payload in canonical form.
///
/// JSON clients send binary as base64 text plus a `base64` encoding step; the codec
/// decodes that into [`MessageData::Binary`] on the way in and re-encodes it on the way
/// out, so a binary payload published over msgpack reaches a JSON subscriber as base64
/// and vice versa, byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageData {
    String(String),
    Binary(Bytes),
    /// A structured JSON value sent without an encoding (raw JSON clients, REST).
    Json(serde_json::Value),
}

impl MessageData {
    /// Payload size as Ably counts it for the message size limit.
    pub fn size(&self) -> usize {
        match self {
            MessageData::String(s) => s.len(),
            MessageData::Binary(b) => b.len(),
            MessageData::Json(v) => v.to_string().len(),
        }
    }
}

impl From<String> for MessageData {
    fn from(s: String) -> Self {
        MessageData::String(s)
    }
}
impl From<&str> for MessageData {
    fn from(s: &str) -> Self {
        MessageData::String(s.to_owned())
    }
}
impl From<Bytes> for MessageData {
    fn from(b: Bytes) -> Self {
        MessageData::Binary(b)
    }
}
impl From<Vec<u8>> for MessageData {
    fn from(b: Vec<u8>) -> Self {
        MessageData::Binary(Bytes::from(b))
    }
}

impl Serialize for MessageData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MessageData::String(v) => s.serialize_str(v),
            MessageData::Binary(b) => s.serialize_bytes(b),
            MessageData::Json(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for MessageData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessageData;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("string, binary or JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageData, E> {
                Ok(MessageData::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<MessageData, E> {
                Ok(MessageData::String(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<MessageData, E> {
                Ok(MessageData::Binary(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<MessageData, E> {
                Ok(MessageData::Binary(Bytes::from(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<MessageData, E> {
                Ok(MessageData::Json(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageData, E> {
                Ok(MessageData::Json(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageData, E> {
                Ok(MessageData::Json(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MessageData, E> {
                // NaN and infinities (msgpack only) have no JSON form; turning them into
                // `null` made the payload vanish on the next hop (`data: null` reads as
                // no data), as the ably_msgpack fuzz target found.
                serde_json::Number::from_f64(v)
                    .map(|n| MessageData::Json(serde_json::Value::Number(n)))
                    .ok_or_else(|| E::custom("data is a non-finite number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MessageData, E> {
                Ok(MessageData::Json(serde_json::Value::Null))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MessageData, A::Error> {
                let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MessageData::Json(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MessageData, A::Error> {
                let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(MessageData::Json(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One published message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<MessageData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_null_json"
    )]
    pub extras: Option<serde_json::Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// What the message is: see [`message_actions`] (absent: a create).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub action: Option<u64>,
    /// For a new version of a message: its serial, timestamp and the operation's
    /// clientId, description and metadata.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_null_json"
    )]
    pub version: Option<serde_json::Value>,
    /// A summary message's annotations (`{summary: {<type>: …}}`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_null_json"
    )]
    pub annotations: Option<serde_json::Value>,
}

/// An annotation of a message (a reaction, a flag …): `type` names how the
/// server summarises it (`reaction:distinct.v1`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// 0 create, 1 delete.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub action: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_serial: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<MessageData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_null_json"
    )]
    pub extras: Option<serde_json::Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub timestamp: Option<i64>,
}

/// Ably's message actions (wire numbers).
pub mod message_actions {
    pub const CREATE: u64 = 0;
    pub const UPDATE: u64 = 1;
    pub const DELETE: u64 = 2;
    pub const SUMMARY: u64 = 4;
    pub const APPEND: u64 = 5;
}

impl Message {
    /// Size counted against `maxMessageSize`: data, name, clientId and extras.
    pub fn size(&self) -> usize {
        self.data.as_ref().map_or(0, MessageData::size)
            + self.name.as_ref().map_or(0, String::len)
            + self.client_id.as_ref().map_or(0, String::len)
            + self.extras.as_ref().map_or(0, |e| e.to_string().len())
    }
}

/// Presence message (carried for forward compatibility; presence is a later issue).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub action: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<MessageData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_null_json"
    )]
    pub extras: Option<serde_json::Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub timestamp: Option<i64>,
}

/// What one acknowledged publish gave its messages: their serials (empty for
/// presence and resends).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishResult {
    #[serde(default)]
    pub serials: Vec<String>,
}

/// The frame unit of the realtime protocol.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolMessage {
    pub action: Action,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub flags: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub timestamp: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_serial: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub msg_serial: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Annotation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<PresenceMessage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_details: Option<ConnectionDetails>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_params"
    )]
    pub params: Option<BTreeMap<String, String>>,
    /// ACK: one publish result per acknowledged message (`{serials: [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub res: Option<Vec<PublishResult>>,
}

impl ProtocolMessage {
    /// A message with only an action set.
    pub fn new(action: Action) -> Self {
        ProtocolMessage {
            action,
            ..Default::default()
        }
    }

    /// Whether `flag` is set.
    pub fn has_flag(&self, flag: u64) -> bool {
        self.flags.unwrap_or(0) & flag != 0
    }
}

/// An optional JSON value where `null` means absent. A msgpack NaN or infinity reads
/// as JSON `null`; kept as `Some(null)` it was written as `null` and so read back as
/// absent, a change on the next hop (found by the ably_msgpack fuzz target).
fn non_null_json<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    Ok(Option::<serde_json::Value>::deserialize(d)?.filter(|v| !v.is_null()))
}

/// Integer deserializers that also accept integral floats and (for params) strings,
/// because msgpack encoders in the wild write large integers as float64.
pub(crate) mod lenient {
    use super::*;

    struct NumVisitor;

    impl Visitor<'_> for NumVisitor {
        type Value = i128;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(v as i128)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(v as i128)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
            if v.fract() == 0.0 && v.is_finite() {
                Ok(v as i128)
            } else {
                Err(E::custom("expected an integer"))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
            v.parse::<i128>()
                .map_err(|_| E::custom("expected an integer"))
        }
    }

    fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        d.deserialize_any(NumVisitor)
    }

    fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i128>, D::Error> {
        struct OptV;
        impl<'de> Visitor<'de> for OptV {
            type Value = Option<i128>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an optional number")
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<i128>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<i128>, E> {
                Ok(None)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Option<i128>, D2::Error> {
                int(d).map(Some)
            }
        }
        d.deserialize_option(OptV)
    }

    fn conv<T: TryFrom<i128>, E: de::Error>(v: i128) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        opt_int(d)?.map(conv).transpose()
    }

    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        opt_int(d)?.map(conv).transpose()
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        opt_int(d)?.map(conv).transpose()
    }

    pub fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        opt_int(d)?.map(conv).transpose()
    }

    /// A param value: a string, or a number or boolean as SDKs send what the
    /// application gave (`{rewind: 1}`), kept as its text.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ParamValue {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }

    /// Channel params, whose values may come as numbers or booleans.
    pub fn opt_params<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeMap<String, String>>, D::Error> {
        let m: Option<BTreeMap<String, ParamValue>> = Option::deserialize(d)?;
        Ok(m.map(|m| {
            m.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        ParamValue::Text(s) => s,
                        ParamValue::Int(n) => n.to_string(),
                        ParamValue::Float(f) => f.to_string(),
                        ParamValue::Bool(b) => b.to_string(),
                    };
                    (k, v)
                })
                .collect()
        }))
    }
}
