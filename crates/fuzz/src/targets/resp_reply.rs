//! The reply side of RESP: [`Reply::encode`] and the strict reader
//! [`tidewire_resp::decode`].
//!
//! - [`DECODE`] feeds raw bytes to the decoder. Invariants: it returns; a decoded
//!   reply used between 1 and all of the bytes; every shorter prefix of it reads as
//!   "incomplete" (never as an error or another reply); bytes after it change
//!   nothing; and encoding it (RESP3) then decoding gives the same reply again (a
//!   RESP2 null array becoming RESP3's one null), whose encoding is the same bytes
//!   (a fixed point).
//! - [`ROUNDTRIP`] builds a reply tree from the input bytes, encodes it for RESP2
//!   and RESP3, and requires the decoder to read back exactly the shape each protocol
//!   promises (RESP3 types degrade to RESP2 ones as Redis does). Doubles must come
//!   back bit for bit, which checks `format_double`'s shortest-text promise.

#![forbid(unsafe_code)]

use arbitrary::Unstructured;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use tidewire_resp::{decode, decode_exact, format_double, BulkArray, Protocol, Reply};

use crate::driver::Target;
use crate::finding::{escape, fnv1a};
use crate::targets::resp_request::random_bytes;

const DICTIONARY: &[&[u8]] = &[
    b"+OK\r\n",
    b"-ERR x\r\n",
    b":1\r\n",
    b"$1\r\na\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*2\r\n",
    b"%1\r\n",
    b"~1\r\n",
    b">2\r\n",
    b"_\r\n",
    b"#t\r\n",
    b",1.5\r\n",
    b",inf\r\n",
    b",nan\r\n",
    b"(12345678901234567890\r\n",
    b"=7\r\ntxt:abc\r\n",
    b"$536870912\r\n",
    b"*2147483647\r\n",
];

pub const DECODE: Target = Target {
    name: "resp_reply_decode",
    check: check_decode,
    generate: generate_wire,
    dictionary: DICTIONARY,
    max_len: 1024,
    alloc_per_byte: 256,
    alloc_base: 16 * 1024,
};

pub const ROUNDTRIP: Target = Target {
    name: "resp_reply_roundtrip",
    check: check_roundtrip,
    generate: random_bytes,
    dictionary: &[],
    max_len: 512,
    alloc_per_byte: 512,
    alloc_base: 16 * 1024,
};

fn check_decode(input: &[u8]) -> Result<(), String> {
    let Ok(Some((reply, used))) = decode(input) else {
        return Ok(());
    };
    if used == 0 || used > input.len() {
        return Err(format!("used {used} of {} bytes", input.len()));
    }
    let frame = &input[..used];
    // Every prefix is incomplete; a few, chosen from the input, are tried.
    let h = fnv1a(input);
    for k in [0, h % used as u64, (h >> 20) % used as u64, used as u64 - 1] {
        let k = k as usize;
        if decode(&frame[..k]) != Ok(None) {
            return Err(format!(
                "prefix of {k} bytes gives {:?}",
                decode(&frame[..k])
            ));
        }
    }
    let mut longer = frame.to_vec();
    longer.extend_from_slice(b"+tail\r\n");
    if !matches!(decode(&longer), Ok(Some((r, u))) if u == used && same(&r, &reply)) {
        return Err("bytes after the reply changed how it was read".into());
    }
    let wire = reply.to_bytes(Protocol::Resp3);
    let again = decode_exact(&wire).map_err(|e| {
        format!(
            "re-encoded reply b\"{}\" does not decode: {e}",
            escape(&wire)
        )
    })?;
    // RESP3 has one null: a RESP2 `*-1` comes back as `_`.
    let expected = expected_shape(&reply, Protocol::Resp3);
    if !same(&again, &expected) {
        return Err(format!(
            "decode→encode→decode gives {again:?}, expected {expected:?}"
        ));
    }
    if again.to_bytes(Protocol::Resp3) != wire {
        return Err("encoding is not a fixed point".into());
    }
    Ok(())
}

/// Encoded random reply trees, for mutation to start from well-formed frames.
fn generate_wire(rng: &mut SmallRng) -> Vec<u8> {
    let seed = random_bytes(rng);
    let mut u = Unstructured::new(&seed);
    let reply = arbitrary_reply(&mut u, 0).unwrap_or(Reply::Null);
    let proto = if rng.gen_bool(0.5) {
        Protocol::Resp2
    } else {
        Protocol::Resp3
    };
    reply.to_bytes(proto).to_vec()
}

fn check_roundtrip(input: &[u8]) -> Result<(), String> {
    let mut u = Unstructured::new(input);
    let Ok(reply) = arbitrary_reply(&mut u, 0) else {
        return Ok(());
    };
    for proto in [Protocol::Resp2, Protocol::Resp3] {
        let wire = reply.to_bytes(proto);
        let got = decode_exact(&wire).map_err(|e| {
            format!(
                "{proto:?} encoding b\"{}\" of {reply:?}: {e}",
                escape(&wire)
            )
        })?;
        let expected = expected_shape(&reply, proto);
        if !same(&got, &expected) {
            return Err(format!(
                "{proto:?}: {reply:?} encoded as b\"{}\" reads back as {got:?}, expected {expected:?}",
                escape(&wire)
            ));
        }
    }
    Ok(())
}

const STATUSES: &[&str] = &["OK", "PONG", "QUEUED", ""];

fn arbitrary_reply(u: &mut Unstructured, depth: usize) -> arbitrary::Result<Reply> {
    let leaf_kinds = 12;
    let kinds = if depth >= 4 {
        leaf_kinds
    } else {
        leaf_kinds + 6
    };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Reply::Status(u.choose(STATUSES)?),
        1 => Reply::SimpleString(u.arbitrary::<String>()?),
        2 => Reply::Error(u.arbitrary::<String>()?),
        3 => Reply::Int(u.arbitrary()?),
        4 => Reply::Bulk(Bytes::from(u.arbitrary::<Vec<u8>>()?)),
        5 => Reply::Null,
        6 => Reply::NullArray,
        7 => Reply::Double(arbitrary_double(u)?),
        8 => Reply::Bool(u.arbitrary()?),
        9 => {
            let digits = u.int_in_range(1..=40)?;
            let mut n = String::from(if u.arbitrary()? { "-" } else { "" });
            for _ in 0..digits {
                n.push(char::from(b'0' + u.int_in_range(0..=9)?));
            }
            Reply::BigNumber(n)
        }
        10 => Reply::Verbatim(
            u.choose(&["txt", "mkd"])?,
            Bytes::from(u.arbitrary::<Vec<u8>>()?),
        ),
        11 => {
            let mut list = BulkArray::default();
            for _ in 0..u.int_in_range(0..=4)? {
                list.push(&u.arbitrary::<Vec<u8>>()?);
            }
            Reply::Bulks(list)
        }
        k => {
            let n = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(arbitrary_reply(u, depth + 1)?);
            }
            match k - leaf_kinds {
                0 | 1 => Reply::Array(items),
                2 => Reply::Set(items),
                3 => Reply::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(n);
                    for key in items {
                        pairs.push((key, arbitrary_reply(u, depth + 1)?));
                    }
                    Reply::Map(pairs)
                }
            }
        }
    })
}

/// Any f64, with the awkward ones (zeros, infinities, NaN, extremes, subnormals,
/// values near the `%.17g` layout switch points) over-represented.
fn arbitrary_double(u: &mut Unstructured) -> arbitrary::Result<f64> {
    const SPECIAL: &[f64] = &[
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        1e16,
        1e17,
        9.999999999999999e16,
        0.0001,
        0.00001,
        1.0 / 3.0,
        0.1,
    ];
    Ok(if u.arbitrary::<bool>()? {
        *u.choose(SPECIAL)?
    } else {
        f64::from_bits(u.arbitrary()?)
    })
}

/// What the decoder must read back for `reply` sent in `proto`: statuses read as
/// simple strings, line breaks in status and error text become spaces, arrays of
/// bulks read as arrays, `NullArray` is `_` in RESP3, and RESP2 flattens maps and
/// carries sets and pushes as arrays, doubles and big numbers as bulk text, booleans
/// as integers and verbatim strings as bulks.
fn expected_shape(reply: &Reply, proto: Protocol) -> Reply {
    let resp2 = proto == Protocol::Resp2;
    let all = |items: &[Reply]| -> Vec<Reply> {
        items.iter().map(|r| expected_shape(r, proto)).collect()
    };
    let line = |s: &str| s.replace(['\r', '\n'], " ");
    match reply {
        Reply::Status(s) => Reply::SimpleString((*s).to_owned()),
        Reply::SimpleString(s) => Reply::SimpleString(line(s)),
        Reply::Error(s) => Reply::Error(line(s)),
        Reply::NullArray if !resp2 => Reply::Null,
        Reply::Bulks(list) => Reply::Array(
            list.iter()
                .map(|b| Reply::Bulk(Bytes::copy_from_slice(b)))
                .collect(),
        ),
        Reply::Array(items) => Reply::Array(all(items)),
        Reply::Set(items) if resp2 => Reply::Array(all(items)),
        Reply::Set(items) => Reply::Set(all(items)),
        Reply::Push(items) if resp2 => Reply::Array(all(items)),
        Reply::Push(items) => Reply::Push(all(items)),
        Reply::Map(pairs) if resp2 => Reply::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [expected_shape(k, proto), expected_shape(v, proto)])
                .collect(),
        ),
        Reply::Map(pairs) => Reply::Map(
            pairs
                .iter()
                .map(|(k, v)| (expected_shape(k, proto), expected_shape(v, proto)))
                .collect(),
        ),
        Reply::Double(d) if resp2 => Reply::Bulk(Bytes::from(format_double(*d))),
        Reply::Bool(b) if resp2 => Reply::Int(i64::from(*b)),
        Reply::BigNumber(n) if resp2 => Reply::Bulk(Bytes::from(n.clone())),
        Reply::Verbatim(_, body) if resp2 => Reply::Bulk(body.clone()),
        other => other.clone(),
    }
}

/// Structural equality where doubles compare by bits (so NaN equals NaN and -0
/// differs from 0), which is what a lossless round trip means.
fn same(a: &Reply, b: &Reply) -> bool {
    let all =
        |x: &[Reply], y: &[Reply]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q));
    match (a, b) {
        (Reply::Double(x), Reply::Double(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        (Reply::Array(x), Reply::Array(y))
        | (Reply::Set(x), Reply::Set(y))
        | (Reply::Push(x), Reply::Push(y)) => all(x, y),
        (Reply::Map(x), Reply::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => a == b,
    }
}
