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
        // Without `all`: the script sends the message's annotations beside the
        // publication (see [`Envelope`]).
        Payload::Annotation { annotation, .. } => WirePayload::Annotation(annotation.clone()),
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
        WirePayload::Annotation(annotation) => Payload::Annotation {
            annotation,
            all: Vec::new(),
        },
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
/// Kind of an annotations-list member.
const ANNOTATION: u8 = b'a';

/// The history members a publication appends, without their positions (the
/// script puts the position, [`POSITION_DIGITS`] zero-padded digits, in front,
/// which also keeps equal messages apart): expiry time, receive time, kind, then
/// the unstamped message as msgpack. The times lead in fixed-width digits so that
/// the scripts filter by them without decoding anything.
pub fn history_bodies(p: &Publication) -> Vec<Vec<u8>> {
    let (expires, received) = times(p);
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
        Payload::Annotation { .. } | Payload::Occupancy(_) => Vec::new(),
    }
}

/// What a publication appends to its message's list (a version to the
/// message's versions, an annotation to its annotations), in the form of a
/// history member without its position; empty for none.
pub fn list_entry(p: &Publication) -> Vec<u8> {
    match &p.payload {
        Payload::Version { .. } => history_bodies(p).pop().unwrap_or_default(),
        Payload::Annotation { annotation, .. } => {
            let (expires, received) = times(p);
            let mut out = format!("{expires:015}{received:015}").into_bytes();
            out.push(ANNOTATION);
            out.extend(rmp_serde::to_vec_named(annotation.as_ref()).unwrap_or_default());
            out
        }
        _ => Vec::new(),
    }
}

/// An annotations-list member back as the stamped annotation, `None` if it
/// expired by `now_ms` or is not one.
pub fn annotation_entry(member: &[u8], now_ms: i64) -> Option<Annotation> {
    let head = Head::parse(member)?;
    if head.expires <= now_ms || head.kind != ANNOTATION {
        return None;
    }
    let mut a: Annotation = tidewire_realtime::codec::from_msgpack(head.body).ok()?;
    a.serial = Some(format_serial(head.position));
    Some(a)
}

/// The fixed-width head of a history or list member (see [`history_bodies`]):
/// position, expiry, receive time and kind, then the msgpack body.
struct Head<'a> {
    position: u64,
    expires: i64,
    received: i64,
    kind: u8,
    body: &'a [u8],
}

impl<'a> Head<'a> {
    fn parse(member: &'a [u8]) -> Option<Head<'a>> {
        let digits = |from: usize, len: usize| -> Option<i64> {
            std::str::from_utf8(member.get(from..from + len)?)
                .ok()?
                .parse()
                .ok()
        };
        let kind_at = POSITION_DIGITS + 2 * TIME_DIGITS;
        Some(Head {
            position: u64::try_from(digits(0, POSITION_DIGITS)?).ok()?,
            expires: digits(POSITION_DIGITS, TIME_DIGITS)?,
            received: digits(POSITION_DIGITS + TIME_DIGITS, TIME_DIGITS)?,
            kind: *member.get(kind_at)?,
            body: member.get(kind_at + 1..)?,
        })
    }
}

/// A fanned-out message: the first position, the publication (see [`encode`])
/// and, for an annotation, every annotation of its message so far (list
/// members, see [`annotation_entry`]). On the wire: the position in decimal, a
/// newline and the publication; or, with the list, the position, `;`, the
/// publication's length, a newline, the publication, then each member as its
/// length, a newline and the member.
pub struct Envelope<'a> {
    pub first: u64,
    pub body: &'a [u8],
    pub list: Vec<&'a [u8]>,
}

impl<'a> Envelope<'a> {
    pub fn parse(payload: &'a [u8]) -> Option<Envelope<'a>> {
        let (head, rest) = split_line(payload)?;
        let Some((first, len)) = head.split_once(';') else {
            return Some(Envelope {
                first: head.parse().ok()?,
                body: rest,
                list: Vec::new(),
            });
        };
        let len: usize = len.parse().ok()?;
        let body = rest.get(..len)?;
        let mut more = rest.get(len..)?;
        let mut list = Vec::new();
        while !more.is_empty() {
            let (n, tail) = split_line(more)?;
            let n: usize = n.parse().ok()?;
            list.push(tail.get(..n)?);
            more = tail.get(n..)?;
        }
        Some(Envelope {
            first: first.parse().ok()?,
            body,
            list,
        })
    }
}

/// The decimal text before the first newline, and what follows it.
fn split_line(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let at = bytes.iter().position(|b| *b == b'\n')?;
    Some((std::str::from_utf8(&bytes[..at]).ok()?, &bytes[at + 1..]))
}

/// When what `p` keeps expires, and when it was received (ms).
fn times(p: &Publication) -> (i64, i64) {
    let retention_ms = p.retention.as_millis().min(TIME_MAX as u128) as i64;
    let received = p.timestamp.clamp(0, TIME_MAX);
    (
        received.saturating_add(retention_ms).min(TIME_MAX),
        received,
    )
}

/// A history member back as the entry the in-process broker would have kept.
pub fn history_entry(member: &[u8]) -> Option<StoredMessage> {
    let Head {
        position,
        received,
        kind,
        body,
        ..
    } = Head::parse(member)?;
    let mut message: Message = tidewire_realtime::codec::from_msgpack(body).ok()?;
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
            Payload::Annotation {
                annotation: Box::default(),
                all: Vec::new(),
            },
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

    /// An annotations-list member reads back as the stamped annotation, and an
    /// envelope with a list splits into the publication and the members.
    #[test]
    fn annotation_members_and_envelopes_read_back() {
        let p = publication(Payload::Annotation {
            annotation: Box::new(Annotation {
                name: Some("like".into()),
                ..Default::default()
            }),
            all: Vec::new(),
        });
        let position = 1_800_000_000_123_005;
        let mut member = format!("{position:016}").into_bytes();
        member.extend(list_entry(&p));
        let read = annotation_entry(&member, p.timestamp).expect("an annotation");
        assert_eq!(read.name.as_deref(), Some("like"));
        assert_eq!(read.serial, Some(format_serial(position)));
        assert_eq!(annotation_entry(&member, i64::MAX / 2), None, "expired");

        let body = encode(&p);
        let mut wire = format!("{position};{}\n", body.len()).into_bytes();
        wire.extend(&body);
        for m in [&member[..], b"x\ny"] {
            wire.extend(format!("{}\n", m.len()).into_bytes());
            wire.extend(m);
        }
        let e = Envelope::parse(&wire).expect("an envelope");
        assert_eq!((e.first, e.body), (position, &body[..]));
        assert_eq!(e.list, vec![&member[..], &b"x\ny"[..]]);
        let plain = Envelope::parse(b"7\nbody").expect("a plain envelope");
        assert_eq!(
            (plain.first, plain.body, plain.list.len()),
            (7, &b"body"[..], 0)
        );
        assert!(
            Envelope::parse(b"7;99\nshort").is_none(),
            "a truncated body"
        );
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
