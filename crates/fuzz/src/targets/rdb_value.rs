//! RESTORE's object decoder ([`tidewire_store::rdb_value::decode`]): the RDB
//! type byte and object of a DUMP payload, with the listpack, ziplist, zipmap and
//! intset blobs inside, as any client can send them.
//!
//! Invariants: decoding returns; what it accepts is never an empty collection;
//! it encodes (compressed or not) to a payload that decodes to the same value; the
//! same object sealed with a footer restores to it too; and tight encoding limits
//! change only the encoding, never whether or what is accepted.

#![forbid(unsafe_code)]

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use tidewire_store::dump_payload::{put_len, put_string, seal};
use tidewire_store::rdb_value::{decode, encode, restore, Limits};
use tidewire_store::str_value::StrValue;
use tidewire_store::types::hash::{HashLimits, HashValue};
use tidewire_store::types::list::ListValue;
use tidewire_store::types::set::{SetLimits, SetValue};
use tidewire_store::types::zset::ZSetValue;
use tidewire_store::value::Value;

use crate::driver::Target;

pub const TARGET: Target = Target {
    name: "rdb_value",
    check,
    generate,
    dictionary: &[
        &[0x12, 0x01, 0x02],
        &[0x10],
        &[0x11],
        &[0x14],
        &[0x0b],
        &[0x0d],
        &[0x0a],
        &[0x0e],
        &[0xc3],
        &[0x07, 0, 0, 0, 0, 0, 0xff],
        &[0x02, 0, 0, 0, 0x01, 0, 0, 0],
        &[0xf0, 0xff, 0xff, 0xff, 0x7f],
        &[0xf4],
        &[0xfe, 0xff, 0xff],
        &[0x81, 0, 0, 0, 0x10, 0, 0, 0, 0],
    ],
    max_len: 4096,
    // An LZF back-reference turns 3 input bytes into 264 output bytes, and a
    // listpack blob spends 2 bytes per small integer that becomes a list element
    // (a `Bytes` in a `VecDeque`, plus its decimal digits): the worst case is a
    // few thousand bytes of values per input byte, linear and bounded.
    alloc_per_byte: 8000,
    alloc_base: 256 * 1024,
};

fn tight() -> Limits {
    Limits {
        hash: HashLimits {
            max_entries: 1,
            max_value: 1,
        },
        set: SetLimits {
            max_intset: 1,
            max_listpack_entries: 1,
            max_listpack_value: 1,
        },
        zset_entries: 1,
        zset_value: 1,
        list_fill: 1,
        stream_nodes: tidewire_store::types::stream::NodeLimits {
            max_entries: 1,
            max_bytes: 1,
        },
    }
}

fn check(input: &[u8]) -> Result<(), String> {
    let limits = Limits::default();
    let decoded = decode(input, &limits);
    let strict = decode(input, &tight());
    if decoded != strict {
        return Err(format!(
            "the limits changed what was accepted: {decoded:?} vs {strict:?} for {input:?}"
        ));
    }
    let Some(value) = decoded else {
        return Ok(());
    };
    if value.is_empty_collection() {
        return Err(format!("an empty collection was accepted: {input:?}"));
    }
    for (fill, compress) in [(-2, false), (1, true)] {
        let body = encode(&value, fill, compress);
        match decode(&body, &limits) {
            Some(again) if again == value => {}
            other => {
                return Err(format!(
                    "re-encoding did not read back: {value:?} -> {body:?} -> {other:?}"
                ))
            }
        }
    }
    match restore(&seal(input.to_vec()), &limits) {
        Ok(v) if v == value => Ok(()),
        other => Err(format!("sealed, it restores differently: {other:?}")),
    }
}

fn member(rng: &mut SmallRng) -> Vec<u8> {
    match rng.gen_range(0..5) {
        0 => rng.gen_range(-70_000i64..70_000).to_string().into_bytes(),
        1 => rng.gen::<i64>().to_string().into_bytes(),
        2 => vec![b'a' + rng.gen_range(0..3); rng.gen_range(0..200)],
        _ => (0..rng.gen_range(0..12)).map(|_| rng.gen()).collect(),
    }
}

/// A random value of any type, encoded (as DUMP would, or in a legacy form for
/// lists and sorted sets).
fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let n = rng.gen_range(1..40);
    let value = match rng.gen_range(0..7) {
        0 => Value::Str(StrValue::copy_from_slice(&member(rng))),
        1 => Value::List(Box::new(ListValue::from_items(
            (0..n).map(|_| Bytes::from(member(rng))),
        ))),
        2 => {
            let mut s = SetValue::default();
            for _ in 0..n {
                s.add(&member(rng), SetLimits::default());
            }
            Value::Set(s)
        }
        3 => {
            let mut h = HashValue::default();
            for _ in 0..n {
                h.set(&member(rng), &member(rng), HashLimits::default());
            }
            Value::Hash(h)
        }
        4 => {
            let mut z = ZSetValue::new();
            for _ in 0..n {
                let score = match rng.gen_range(0..3) {
                    0 => rng.gen_range(-100..100) as f64,
                    1 => rng.gen::<f64>() * 1e10,
                    _ => f64::INFINITY,
                };
                z.insert(member(rng), score);
            }
            z.update_encoding(rng.gen_range(1..200), 64);
            Value::ZSet(Box::new(z))
        }
        5 => {
            // The original list type: plain strings.
            let mut body = vec![1u8];
            put_len(&mut body, n as u64);
            for _ in 0..n {
                put_string(&mut body, &member(rng));
            }
            return body;
        }
        _ => {
            // Sorted set with text scores.
            let mut body = vec![3u8];
            put_len(&mut body, n as u64);
            for i in 0..n {
                put_string(&mut body, format!("m{i}").as_bytes());
                let score = rng.gen_range(-1000..1000).to_string();
                body.push(score.len() as u8);
                body.extend_from_slice(score.as_bytes());
            }
            return body;
        }
    };
    let fill = if rng.gen_bool(0.5) {
        -2
    } else {
        rng.gen_range(1..8)
    };
    encode(&value, fill, rng.gen_bool(0.5))
}
