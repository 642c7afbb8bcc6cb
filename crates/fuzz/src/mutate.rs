//! Mutation of seeds: the blind half of the search, next to each target's
//! structured generator.
//!
//! Mutations are the classic ones (bit flips, interesting bytes, deletions,
//! duplications, splices) plus insertion of tokens that matter to the parsers under
//! test: line ends, NUL, quotes, lengths that are huge, negative or overflow, and each
//! target's own dictionary.

#![forbid(unsafe_code)]

use rand::rngs::SmallRng;
use rand::Rng;

/// Tokens every target gets, whatever its format.
const COMMON_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\"",
    b"'",
    b"\\",
    b"\\x00",
    b" ",
    b"0",
    b"-1",
    b"-0",
    b"536870912",
    b"2147483647",
    b"2147483648",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"99999999999999999999",
    b"1e308",
    b"1.5",
    b"\xff\xfe",
    b"\xc3\xa9",
];

/// Bytes that sit at decision points of the formats under test.
const INTERESTING_BYTES: &[u8] = b"\x00\x7f\x80\xff\r\n \t\"'\\*$:+-_,#(=%~>{}[].,/";

/// Applies one to eight random mutations to `data`, keeping it at most `max_len`
/// bytes. `other` is a second seed for splicing; `dictionary` the target's tokens.
pub fn mutate(
    rng: &mut SmallRng,
    data: &mut Vec<u8>,
    other: &[u8],
    dictionary: &[&[u8]],
    max_len: usize,
) {
    let rounds = 1 + rng.gen_range(0..8usize).min(rng.gen_range(0..8usize));
    for _ in 0..rounds {
        mutate_once(rng, data, other, dictionary);
    }
    data.truncate(max_len);
}

fn token<'a>(rng: &mut SmallRng, dictionary: &[&'a [u8]]) -> &'a [u8] {
    if !dictionary.is_empty() && rng.gen_bool(0.6) {
        dictionary[rng.gen_range(0..dictionary.len())]
    } else {
        COMMON_TOKENS[rng.gen_range(0..COMMON_TOKENS.len())]
    }
}

fn mutate_once(rng: &mut SmallRng, data: &mut Vec<u8>, other: &[u8], dictionary: &[&[u8]]) {
    let len = data.len();
    let at = rng.gen_range(0..=len);
    match rng.gen_range(0..11) {
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            data[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            data[i] = rng.gen();
        }
        2 if len > 0 => {
            let i = rng.gen_range(0..len);
            data[i] = INTERESTING_BYTES[rng.gen_range(0..INTERESTING_BYTES.len())];
        }
        3 | 4 => {
            let t = token(rng, dictionary);
            data.splice(at..at, t.iter().copied());
        }
        5 if len > 0 => {
            // Overwrite with a token.
            let t = token(rng, dictionary);
            let end = (at + t.len()).min(len);
            data.splice(at..end, t.iter().copied());
        }
        6 if len > 0 => {
            let end = (at + 1 + rng.gen_range(0..16)).min(len);
            data.drain(at.min(end)..end);
        }
        7 if len > 0 => {
            // Duplicate a range (repeats frames, lines, quotes).
            let from = rng.gen_range(0..len);
            let to = (from + 1 + rng.gen_range(0..32)).min(len);
            let chunk = data[from..to].to_vec();
            data.splice(at..at, chunk);
        }
        8 if !other.is_empty() => {
            // Splice: our head, the other seed's tail.
            let cut = rng.gen_range(0..=other.len());
            data.truncate(at);
            data.extend_from_slice(&other[cut..]);
        }
        9 => {
            let n = rng.gen_range(1..8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            data.splice(at..at, bytes);
        }
        _ => data.truncate(at),
    }
}
