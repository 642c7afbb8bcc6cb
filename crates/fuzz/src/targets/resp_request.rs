//! The RESP request parser ([`RequestParser`]): multibulk and inline commands as
//! they arrive from a client socket, before authentication.
//!
//! - [`STREAM`] feeds raw bytes. Invariants: every call returns; each command
//!   returned consumed input and is non-empty; the arguments returned never add up to
//!   more bytes than arrived; and the outcome (commands, then the error if any) is
//!   the same whether the bytes arrive whole, split at a point chosen from the input,
//!   or (for short inputs) one byte at a time. Small limits are also exercised, where
//!   only termination and the error path are checked.
//! - [`ROUNDTRIP`] builds commands from the input bytes, writes them as multibulk
//!   and as quoted inline lines, and requires the parser to give back exactly them.

#![forbid(unsafe_code)]

use arbitrary::Unstructured;
use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::Rng;
use tidewire_resp::{Limits, ProtocolError, RequestParser};

use crate::driver::Target;
use crate::finding::{escape, fnv1a};

const DICTIONARY: &[&[u8]] = &[
    b"*1\r\n",
    b"*2\r\n",
    b"*3\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b"$0\r\n\r\n",
    b"$1\r\n",
    b"$4\r\nPING\r\n",
    b"$3\r\nGET\r\n",
    b"$536870912\r\n",
    b"$-1\r\n",
    b"*2147483647\r\n",
    b"PING",
    b"GET a",
    b"SET k v",
    b"\"\\x41\"",
    b"'\\''",
    b"\"a b\"",
];

pub const STREAM: Target = Target {
    name: "resp_request",
    check: check_stream,
    generate: generate_stream,
    dictionary: DICTIONARY,
    max_len: 1024,
    // Inline arguments are copied, and each argument costs a 32-byte `Bytes` in a
    // doubling Vec; the base covers the parser's own bounded pre-allocation
    // (`min(count, 1024)` argument slots).
    alloc_per_byte: 96,
    alloc_base: 64 * 1024,
};

pub const ROUNDTRIP: Target = Target {
    name: "resp_request_roundtrip",
    check: check_roundtrip,
    generate: random_bytes,
    dictionary: &[],
    max_len: 512,
    alloc_per_byte: 256,
    alloc_base: 64 * 1024,
};

/// What parsing a byte stream produced: the commands, then the error if one ended it.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    commands: Vec<Vec<Bytes>>,
    error: Option<ProtocolError>,
}

/// Feeds `input` in pieces ending at `cuts` (the last cut must be `input.len()`),
/// taking every command out after each piece, and checks the per-call invariants.
fn parse_in_pieces(input: &[u8], cuts: &[usize], limits: Limits) -> Result<Outcome, String> {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        commands: Vec::new(),
        error: None,
    };
    let mut from = 0;
    for &to in cuts {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        loop {
            let before = buf.len();
            match parser.next_command(&mut buf) {
                Ok(None) => break,
                Ok(Some(cmd)) => {
                    if buf.len() >= before {
                        return Err(format!(
                            "a command came back without consuming input: {cmd:?}"
                        ));
                    }
                    if cmd.is_empty() {
                        return Err("an empty command came back (they are skipped)".into());
                    }
                    out.commands.push(cmd);
                    if out.commands.len() > input.len() {
                        return Err("more commands than input bytes".into());
                    }
                }
                Err(e) => {
                    out.error = Some(e);
                    return Ok(out);
                }
            }
        }
    }
    let arg_bytes: usize = out.commands.iter().flatten().map(Bytes::len).sum();
    if arg_bytes > input.len() {
        return Err(format!(
            "{arg_bytes} argument bytes out of {} input bytes",
            input.len()
        ));
    }
    Ok(out)
}

fn check_stream(input: &[u8]) -> Result<(), String> {
    let limits = Limits::default();
    let whole = parse_in_pieces(input, &[input.len()], limits)?;
    let cut = (fnv1a(input) % (input.len() as u64 + 1)) as usize;
    let split = parse_in_pieces(input, &[cut, input.len()], limits)?;
    if split != whole {
        return Err(format!(
            "split at {cut} gives {split:?}, whole input gives {whole:?}"
        ));
    }
    if input.len() <= 64 {
        let cuts: Vec<usize> = (1..=input.len()).collect();
        let bytewise = parse_in_pieces(input, &cuts, limits)?;
        if bytewise != whole {
            return Err(format!(
                "byte by byte gives {bytewise:?}, whole input gives {whole:?}"
            ));
        }
    }
    // Tight limits reach the "too big" paths with short inputs; only termination,
    // consumption and the argument-byte bound apply (where a limit trips can depend
    // on how the bytes were split, as in Redis).
    let tight = Limits {
        max_bulk_len: 16,
        max_multibulk_len: 8,
        max_inline_len: 24,
    };
    parse_in_pieces(input, &[input.len()], tight)?;
    parse_in_pieces(input, &[cut, input.len()], tight)?;
    Ok(())
}

/// Near-valid pipelines: multibulk frames (some with huge or odd lengths) and inline
/// lines with quotes, escapes and NULs.
fn generate_stream(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..4) {
        if rng.gen_bool(0.6) {
            let argc = rng.gen_range(0..5);
            out.extend_from_slice(format!("*{argc}\r\n").as_bytes());
            for _ in 0..argc {
                let arg = random_arg(rng);
                let declared = match rng.gen_range(0..10) {
                    0 => "536870912".to_owned(),
                    1 => "-1".to_owned(),
                    2 => format!("{}", arg.len() + 1),
                    _ => arg.len().to_string(),
                };
                out.extend_from_slice(format!("${declared}\r\n").as_bytes());
                out.extend_from_slice(&arg);
                out.extend_from_slice(b"\r\n");
            }
        } else {
            let words = rng.gen_range(0..4);
            for w in 0..words {
                if w > 0 {
                    out.push(b' ');
                }
                match rng.gen_range(0..4) {
                    0 => {
                        out.push(b'"');
                        out.extend_from_slice(&random_arg(rng));
                        out.push(b'"');
                    }
                    1 => {
                        out.push(b'\'');
                        out.extend_from_slice(&random_arg(rng));
                        out.push(b'\'');
                    }
                    _ => out.extend_from_slice(&random_arg(rng)),
                }
            }
            out.extend_from_slice(if rng.gen_bool(0.7) { b"\r\n" } else { b"\n" });
        }
    }
    out
}

fn random_arg(rng: &mut SmallRng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcGETSPINx0\x00 \t\"'\\\r\n";
    let len = rng.gen_range(0..8);
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect()
}

/// Raw bytes for the structured targets, which read any bytes as a structure.
pub fn random_bytes(rng: &mut SmallRng) -> Vec<u8> {
    let len = rng.gen_range(0..256);
    (0..len).map(|_| rng.gen()).collect()
}

fn check_roundtrip(input: &[u8]) -> Result<(), String> {
    let mut u = Unstructured::new(input);
    let Ok(commands) = arbitrary_commands(&mut u) else {
        return Ok(());
    };
    let mut multibulk = Vec::new();
    let mut inline = Vec::new();
    for cmd in &commands {
        multibulk.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
        for arg in cmd {
            multibulk.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            multibulk.extend_from_slice(arg);
            multibulk.extend_from_slice(b"\r\n");
        }
        for (i, arg) in cmd.iter().enumerate() {
            if i > 0 {
                inline.push(b' ');
            }
            let bare = u.arbitrary::<bool>().unwrap_or(false) && can_be_bare(arg, i == 0);
            if bare {
                inline.extend_from_slice(arg);
            } else {
                quote(arg, &mut inline);
            }
        }
        inline.extend_from_slice(b"\r\n");
    }
    for (form, wire) in [("multibulk", &multibulk), ("inline", &inline)] {
        let cut = (fnv1a(wire) % (wire.len() as u64 + 1)) as usize;
        for cuts in [vec![wire.len()], vec![cut, wire.len()]] {
            let got = parse_in_pieces(wire, &cuts, Limits::default())?;
            let expected: Vec<Vec<Bytes>> = commands
                .iter()
                .map(|c| c.iter().map(|a| Bytes::copy_from_slice(a)).collect())
                .collect();
            if got.error.is_some() || got.commands != expected {
                return Err(format!(
                    "{form} b\"{}\" (cuts {cuts:?}) parsed as {got:?}, expected {expected:?}",
                    escape(wire)
                ));
            }
        }
    }
    Ok(())
}

fn arbitrary_commands(u: &mut Unstructured) -> arbitrary::Result<Vec<Vec<Vec<u8>>>> {
    let n = u.int_in_range(1..=4)?;
    (0..n)
        .map(|_| {
            let argc = u.int_in_range(1..=6)?;
            (0..argc)
                .map(|_| {
                    let len = u.int_in_range(0..=24)?;
                    Ok(u.bytes(len)?.to_vec())
                })
                .collect()
        })
        .collect()
}

/// Whether `arg` can be written unquoted: no separators, quotes or NUL, not empty,
/// and (as a first word) not starting with `*`, which would make it multibulk.
fn can_be_bare(arg: &[u8], first: bool) -> bool {
    !arg.is_empty()
        && (!first || arg[0] != b'*')
        && arg
            .iter()
            .all(|&b| !b.is_ascii_whitespace() && !matches!(b, b'"' | b'\'' | 0 | 0x0b))
}

/// Writes `arg` double-quoted, printable ASCII as is and everything else as `\xHH`.
fn quote(arg: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in arg {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out.push(b'"');
}
