//! Capability parsing and intersection ([`Capability`]).
//!
//! The input is a key capability and a requested one, separated by a 0x1E byte (or
//! one text used for both). Invariants: parsing returns; a parsed capability's
//! canonical JSON parses back to an equal capability whose canonical JSON is the same
//! text; and the intersection a token gets never allows an operation on a channel
//! that the key or the request does not (checked on channels made from both sides'
//! patterns, `[meta]` ones included).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::Rng;
use tidewire_realtime::capability::{ops, Capability};

use crate::driver::Target;

/// Separates the key's capability from the requested one in an input.
pub const SEPARATOR: u8 = 0x1e;

pub const TARGET: Target = Target {
    name: "realtime_capability",
    check,
    generate,
    dictionary: &[
        b"{\"*\":[\"*\"]}",
        b"\"[*]*\"",
        b"\"[meta]",
        b"\"*\"",
        b":*",
        b"\"subscribe\"",
        b"\"publish\"",
        b"\"presence\"",
        b"\"history\"",
        b"\"channel-metadata\"",
        b"\x1e",
        b"[]",
        b"{}",
    ],
    max_len: 1024,
    alloc_per_byte: 512,
    alloc_base: 64 * 1024,
};

/// Every operation a capability can name, plus one it cannot.
pub const OPERATIONS: &[&str] = &[
    ops::SUBSCRIBE,
    ops::PUBLISH,
    ops::PRESENCE,
    ops::HISTORY,
    ops::CHANNEL_METADATA,
    "bogus",
];

fn check(input: &[u8]) -> Result<(), String> {
    let (key_text, req_text) = match input.iter().position(|&b| b == SEPARATOR) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, input),
    };
    let key = parse_canonical(key_text)?;
    let req = parse_canonical(req_text)?;
    let (Some(key), Some(req)) = (key, req) else {
        return Ok(());
    };
    if let Ok(granted) = key.intersect(&req) {
        is_within(&granted, &[&key, &req])?;
    }
    Ok(())
}

/// Parses `text` (when it is UTF-8) and checks the canonical-form invariants.
fn parse_canonical(text: &[u8]) -> Result<Option<Capability>, String> {
    let Ok(text) = std::str::from_utf8(text) else {
        return Ok(None);
    };
    let Ok(cap) = Capability::parse(text) else {
        return Ok(None);
    };
    let canonical = cap.to_canonical_json();
    match Capability::parse(&canonical) {
        Ok(again) if again == cap && again.to_canonical_json() == canonical => Ok(Some(cap)),
        other => Err(format!(
            "canonical form {canonical} of {text:?} parses as {other:?}"
        )),
    }
}

/// The resource patterns of `cap`, read from its canonical JSON.
pub fn patterns(cap: &Capability) -> Vec<String> {
    serde_json::from_str::<BTreeMap<String, Vec<String>>>(&cap.to_canonical_json())
        .map(|m| m.into_keys().collect())
        .unwrap_or_default()
}

/// Channel names worth asking about for these patterns: each pattern itself, with
/// its `*` segments filled in (one and two segments for a trailing one), with and
/// without a `[meta]` prefix, plus a few fixed names.
pub fn sample_channels(patterns: &[String]) -> Vec<String> {
    let mut names = vec![
        "a".to_owned(),
        "x:y".to_owned(),
        "[meta]a".to_owned(),
        "[meta]x:y".to_owned(),
    ];
    for p in patterns {
        let base = p.strip_prefix("[meta]").unwrap_or(p);
        let one = base
            .split(':')
            .map(|s| if s == "*" { "x" } else { s })
            .collect::<Vec<_>>()
            .join(":");
        let two = if base.ends_with('*') {
            format!("{one}:y")
        } else {
            one.clone()
        };
        for name in [p.clone(), base.to_owned(), one, two] {
            names.push(format!("[meta]{name}"));
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

/// `granted` allows nothing on the sample channels that one of `bounds` does not.
pub fn is_within(granted: &Capability, bounds: &[&Capability]) -> Result<(), String> {
    let mut all_patterns = patterns(granted);
    for b in bounds {
        all_patterns.extend(patterns(b));
    }
    for channel in sample_channels(&all_patterns) {
        for op in OPERATIONS {
            if granted.allows(&channel, op) {
                if let Some(b) = bounds.iter().find(|b| !b.allows(&channel, op)) {
                    return Err(format!(
                        "{} allows {op} on {channel:?}, which {} does not",
                        granted.to_canonical_json(),
                        b.to_canonical_json()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A random capability text, as JSON.
pub fn random_capability(rng: &mut SmallRng) -> String {
    const SEGMENTS: &[&str] = &["*", "a", "b", "stream", "[meta]", "[meta]a", "[*]*", "x*"];
    let mut grants = BTreeMap::new();
    for _ in 0..rng.gen_range(1..4) {
        let pattern: Vec<&str> = (0..rng.gen_range(1..4))
            .map(|_| SEGMENTS[rng.gen_range(0..SEGMENTS.len())])
            .collect();
        let ops: Vec<&str> = (0..rng.gen_range(1..3))
            .map(|_| {
                if rng.gen_bool(0.2) {
                    ops::ALL
                } else {
                    OPERATIONS[rng.gen_range(0..OPERATIONS.len() - 1)]
                }
            })
            .collect();
        grants.insert(pattern.join(":"), ops);
    }
    serde_json::to_string(&grants).unwrap_or_default()
}

fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = random_capability(rng).into_bytes();
    out.push(SEPARATOR);
    out.extend_from_slice(random_capability(rng).as_bytes());
    out
}
