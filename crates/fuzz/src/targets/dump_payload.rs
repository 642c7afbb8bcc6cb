//! Redis's serialized payloads ([`tidewire_store::dump_payload`]), as FUNCTION
//! RESTORE reads them from any client: the version/CRC footer, RDB lengths and
//! strings, including LZF-compressed ones.
//!
//! Invariants: reading returns; a footer is accepted only with its CRC; what a
//! payload decodes to is bounded by its size (LZF cannot expand 1 byte into more
//! than a few hundred); and strings written with `put_string` and `seal` read back
//! the same.

#![forbid(unsafe_code)]

use rand::rngs::SmallRng;
use rand::Rng;
use tidewire_store::dump_payload::{open, put_string, seal, Reader, OPCODE_FUNCTION2};

use crate::driver::Target;

pub const TARGET: Target = Target {
    name: "dump_payload",
    check,
    generate,
    dictionary: &[
        &[OPCODE_FUNCTION2],
        &[0xc3],
        &[0xc0],
        &[0xc1],
        &[0xc2],
        &[0x80, 0x7f, 0xff, 0xff, 0xff],
        &[0x81, 0, 0, 0, 1, 0, 0, 0, 0],
        &[0x40, 0x10],
        &[0xe0, 0x00, 0x00],
        &[11, 0],
    ],
    max_len: 4096,
    // An LZF back-reference turns 2–3 input bytes into up to 264 output bytes.
    alloc_per_byte: 600,
    alloc_base: 64 * 1024,
};

fn check(input: &[u8]) -> Result<(), String> {
    // The footer: what `open` accepts is the input minus its 10 footer bytes, and
    // sealing that body with the input's version gives the input back (the CRC
    // matched).
    if let Some(body) = open(input) {
        if input.len() < 10 || body != &input[..input.len() - 10] {
            return Err(format!(
                "open returned a body that is not the input's: {input:?}"
            ));
        }
        let resealed = seal(body.to_vec());
        let version_matches =
            resealed[body.len()..body.len() + 2] == input[body.len()..body.len() + 2];
        if version_matches && resealed[..] != input[..] {
            return Err(format!("open accepted a wrong checksum: {input:?}"));
        }
    }
    // The items: a type byte, then a string, until the input ends or fails.
    let mut reader = Reader::new(input);
    let mut produced = 0usize;
    while !reader.is_empty() {
        if reader.byte().is_none() {
            break;
        }
        match reader.string() {
            Some(s) => produced += s.len(),
            None => break,
        }
    }
    if produced > input.len().saturating_mul(300) + 16 {
        return Err(format!(
            "{} input bytes decoded to {produced} bytes",
            input.len()
        ));
    }
    Ok(())
}

/// A valid payload of a few strings (some long enough to need 2- or 4-byte
/// lengths), sealed; the check above also reads it back.
fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let mut body = Vec::new();
    let mut strings = Vec::new();
    for _ in 0..rng.gen_range(0..4) {
        let len = match rng.gen_range(0..3) {
            0 => rng.gen_range(0..64),
            1 => rng.gen_range(64..400),
            _ => rng.gen_range(0..20),
        };
        let s: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        body.push(OPCODE_FUNCTION2);
        put_string(&mut body, &s);
        strings.push(s);
    }
    let payload = seal(body);
    // Round trip, checked here where the expected strings are known.
    let Some(opened) = open(&payload) else {
        panic!("a sealed payload did not open");
    };
    let mut reader = Reader::new(opened);
    for s in &strings {
        assert_eq!(reader.byte(), Some(OPCODE_FUNCTION2));
        assert_eq!(reader.string().as_deref(), Some(&s[..]));
    }
    assert!(reader.is_empty());
    payload.to_vec()
}
