//! The engine's byte forms of what the broker moves: a publication as it is fanned
//! out, and a history entry as its sorted set keeps it.
//!
//! Both are written before the positions exist (the script that takes them cannot
//! build msgpack), so both leave the stamping to whoever reads them back, with
//! [`Publication::stamp`]: every node then stamps alike, and alike with the
//! in-process broker.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewire_realtime::channel::{format_serial, Origin};
use tidewire_realtime::engine::{Payload, Publication};
use tidewire_realtime::history::StoredMessage;
use tidewire_realtime::protocol::{Annotation, Message, PresenceMessage};

/// A [`Publication`] without positions, as msgpack.
#[derive(Serialize, Deserialize)]
struct Wire {
    channel: String,
    proto_id: String,
    connection_id: Option<String>,
    node: String,
    publisher_conn: Option<u64>,
    timestamp: i64,
    origin: u8,
    retention_ms: u64,
    payload: WirePayload,
}

#[derive(Serialize, Deserialize)]
enum WirePayload {
    Messages(Vec<Message>),
    Version {
        stored: Box<Message>,
        sent: Box<Message>,
    },
    Annotation(Box<Annotation>),
    Presence(Vec<PresenceMessage>),
    Occupancy(String),
}

fn origin_code(origin: Origin) -> u8 {
    match origin {
        Origin::Realtime => 0,
        Origin::Rest => 1,
        Origin::Backend => 2,
    }
}

fn origin_of(code: u8) -> Origin {
    match code {
        0 => Origin::Realtime,
        1 => Origin::Rest,
        _ => Origin::Backend,
    }
}

/// The publication's bytes for the fan-out, positions left out.
pub fn encode(p: &Publication) -> Vec<u8> {
    let payload = match &p.payload {
        Payload::Messages(m) => WirePayload::Messages(m.clone()),
        Payload::Version { stored, sent } => WirePayload::Version {
            stored: stored.clone(),
            sent: sent.clone(),
        },
        Payload::Annotation(a) => WirePayload::Annotation(a.clone()),
        Payload::Presence(events) => WirePayload::Presence(events.clone()),
        Payload::Occupancy(name) => WirePayload::Occupancy(name.clone()),
    };
    let wire = Wire {
        channel: p.channel.clone(),
        proto_id: p.proto_id.clone(),
        connection_id: p.connection_id.clone(),
        node: p.node.clone(),
        publisher_conn: p.publisher_conn,
        timestamp: p.timestamp,
        origin: origin_code(p.origin),
        retention_ms: p.retention.as_millis().min(u64::MAX as u128) as u64,
        payload,
    };
    rmp_serde::to_vec_named(&wire).unwrap_or_default()
}

/// A fanned-out publication back, stamped with the positions from `first` on.
/// `None` for bytes no node wrote (they are dropped, and logged by the caller).
pub fn decode(bytes: &[u8], first: u64) -> Option<Publication> {
    let wire: Wire = tidewire_realtime::codec::from_msgpack(bytes).ok()?;
    let payload = match wire.payload {
        WirePayload::Messages(m) => Payload::Messages(m),
        WirePayload::Version { stored, sent } => Payload::Version { stored, sent },
        WirePayload::Annotation(a) => Payload::Annotation(a),
        WirePayload::Presence(events) => Payload::Presence(events),
        WirePayload::Occupancy(name) => Payload::Occupancy(name),
    };
    let mut p = Publication {
        channel: wire.channel,
        proto_id: wire.proto_id,
        connection_id: wire.connection_id,
        node: wire.node,
        publisher_conn: wire.publisher_conn,
        timestamp: wire.timestamp,
        origin: origin_of(wire.origin),
        retention: Duration::from_millis(wire.retention_ms),
        payload,
        positions: Vec::new(),
    };
    let positions = (0..p.positions_needed() as u64)
        .map(|i| first.saturating_add(i))
        .collect();
    p.stamp(positions);
    Some(p)
}

/// Width of each decimal field at the head of a history member.
const POSITION_DIGITS: usize = 16;
const TIME_DIGITS: usize = 15;
/// The largest time a member can carry (a retention beyond it never expires).
const TIME_MAX: i64 = 999_999_999_999_999;

/// Kind of a history entry: a message, or the latest version of one.
const MESSAGE: u8 = b'm';
const VERSION: u8 = b'v';

/// The history members a publication appends, without their positions (the
/// script puts the position, [`POSITION_DIGITS`] zero-padded digits, in front,
/// which also keeps equal messages apart): expiry time, receive time, kind, then
/// the unstamped message as msgpack. The times lead in fixed-width digits so that
/// the scripts filter by them without decoding anything.
pub fn history_bodies(p: &Publication) -> Vec<Vec<u8>> {
    let retention_ms = p.retention.as_millis().min(TIME_MAX as u128) as i64;
    let received = p.timestamp.clamp(0, TIME_MAX);
    let expires = received.saturating_add(retention_ms).min(TIME_MAX);
    let body = |kind: u8, m: &Message| {
        let mut out = format!("{expires:015}{received:015}").into_bytes();
        out.push(kind);
        out.extend(rmp_serde::to_vec_named(m).unwrap_or_default());
        out
    };
    match &p.payload {
        Payload::Messages(msgs) => msgs.iter().map(|m| body(MESSAGE, m)).collect(),
        Payload::Version { stored, .. } => vec![body(VERSION, stored)],
        // Kept in the channel's presence history (see `RedisBroker`).
        Payload::Presence(_) => p
            .presence_history_messages()
            .iter()
            .map(|m| body(MESSAGE, m))
            .collect(),
        Payload::Annotation(_) | Payload::Occupancy(_) => Vec::new(),
    }
}

/// A history member back as the entry the in-process broker would have kept.
pub fn history_entry(member: &[u8]) -> Option<StoredMessage> {
    let digits = |from: usize, len: usize| -> Option<i64> {
        std::str::from_utf8(member.get(from..from + len)?)
            .ok()?
            .parse()
            .ok()
    };
    let position = u64::try_from(digits(0, POSITION_DIGITS)?).ok()?;
    let received = digits(POSITION_DIGITS + TIME_DIGITS, TIME_DIGITS)?;
    let kind_at = POSITION_DIGITS + 2 * TIME_DIGITS;
    let kind = *member.get(kind_at)?;
    let mut message: Message =
        tidewire_realtime::codec::from_msgpack(member.get(kind_at + 1..)?).ok()?;
    match kind {
        MESSAGE => message.serial = Some(format_serial(position)),
        VERSION => {
            // Stamped as the publication stamped it (Publication::stamp).
            let mut p = Publication {
                channel: String::new(),
                proto_id: String::new(),
                connection_id: None,
                node: String::new(),
                publisher_conn: None,
                timestamp: received,
                origin: Origin::Rest,
                retention: Duration::ZERO,
                payload: Payload::Version {
                    stored: Box::new(message),
                    sent: Box::default(),
                },
                positions: Vec::new(),
            };
            p.stamp(vec![position]);
            let Payload::Version { stored, .. } = p.payload else {
                return None;
            };
            message = *stored;
        }
        _ => return None,
    }
    Some(StoredMessage {
        serial: position,
        received_ms: received,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(payload: Payload) -> Publication {
        Publication {
            channel: "c".into(),
            proto_id: "p:0".into(),
            connection_id: Some("conn".into()),
            node: "n".into(),
            publisher_conn: Some(7),
            timestamp: 1_800_000_000_123,
            origin: Origin::Realtime,
            retention: Duration::from_secs(60),
            payload,
            positions: Vec::new(),
        }
    }

    /// What a receiver decodes and stamps is what the publisher stamped.
    #[test]
    fn a_fanned_out_publication_is_stamped_like_the_original() {
        for payload in [
            Payload::Messages(vec![
                Message {
                    name: Some("a".into()),
                    ..Default::default()
                },
                Message::default(),
            ]),
            Payload::Version {
                stored: Box::new(Message {
                    name: Some("s".into()),
                    ..Default::default()
                }),
                sent: Box::default(),
            },
            Payload::Annotation(Box::default()),
            Payload::Presence(vec![PresenceMessage::default()]),
            Payload::Occupancy("[?rewind=1]c".into()),
        ] {
            let p = publication(payload);
            let first = 1_800_000_000_123_000;
            let mut stamped = p.clone();
            let n = stamped.positions_needed() as u64;
            stamped.stamp((first..first + n).collect());
            assert_eq!(decode(&encode(&p), first), Some(stamped));
        }
        assert_eq!(decode(b"junk", 1), None);
    }

    /// A history member, with the position the script puts in front, reads back
    /// as the entry the in-process broker keeps.
    #[test]
    fn history_members_read_back_as_stamped_entries() {
        let p = publication(Payload::Version {
            stored: Box::new(Message {
                name: Some("s".into()),
                ..Default::default()
            }),
            sent: Box::default(),
        });
        let position = 1_800_000_000_123_004;
        let mut stamped = p.clone();
        stamped.stamp(vec![position]);
        let bodies = history_bodies(&p);
        assert_eq!(bodies.len(), 1);
        let mut member = format!("{position:016}").into_bytes();
        member.extend(&bodies[0]);
        assert_eq!(
            history_entry(&member),
            stamped.history_entries().pop(),
            "version entry"
        );
        assert_eq!(history_entry(b"0001"), None);
    }
}
