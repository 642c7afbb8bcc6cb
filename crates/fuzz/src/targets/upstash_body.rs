//! The Upstash REST body parsers ([`tidewire_server::upstash::parse_command`] and
//! [`parse_pipeline`]): JSON arrays of strings, numbers and booleans.
//!
//! Invariants: parsing returns; a command is never empty; a pipeline never has more
//! than its limit of commands; what parses is canonical after one pass (writing the
//! arguments back as a JSON array of strings and parsing that gives the same
//! arguments); and a command parses the same alone as inside a one-command pipeline.

#![forbid(unsafe_code)]

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use tidewire_server::upstash::{parse_command, parse_pipeline};

use crate::driver::Target;

/// The pipeline limit used here: small, so the limit check is reached.
const MAX_PIPELINE: usize = 8;

pub const TARGET: Target = Target {
    name: "upstash_json",
    check,
    generate,
    dictionary: &[
        b"[\"SET\",\"k\",\"v\"]",
        b"[[\"PING\"],[\"GET\",\"k\"]]",
        b"1.5",
        b"1e308",
        b"-0",
        b"true",
        b"null",
        b"18446744073709551616",
        b"\"\\u0000\"",
        b"\"\\ud83d\\ude00\"",
        b"\"\\ud800\"",
        b"{}",
        b"[]",
    ],
    max_len: 2048,
    alloc_per_byte: 128,
    alloc_base: 16 * 1024,
};

fn check(input: &[u8]) -> Result<(), String> {
    let command = parse_command(input);
    if let Ok(argv) = &command {
        if argv.is_empty() {
            return Err("an empty command was accepted".into());
        }
        is_canonical(argv)?;
        let mut wrapped = b"[".to_vec();
        wrapped.extend_from_slice(input);
        wrapped.push(b']');
        match parse_pipeline(&wrapped, MAX_PIPELINE) {
            Ok(cmds) if cmds == [argv.clone()] => {}
            other => {
                return Err(format!(
                    "as a one-command pipeline: {other:?}, alone: {argv:?}"
                ))
            }
        }
    }
    if let Ok(cmds) = parse_pipeline(input, MAX_PIPELINE) {
        if cmds.len() > MAX_PIPELINE {
            return Err(format!(
                "{} commands accepted, limit {MAX_PIPELINE}",
                cmds.len()
            ));
        }
        for argv in &cmds {
            if argv.is_empty() {
                return Err("an empty pipeline command was accepted".into());
            }
            is_canonical(argv)?;
        }
    }
    Ok(())
}

fn is_canonical(argv: &[Bytes]) -> Result<(), String> {
    let texts: Vec<&str> = argv
        .iter()
        .map(|a| std::str::from_utf8(a).map_err(|_| format!("argument {a:?} is not UTF-8")))
        .collect::<Result<_, _>>()?;
    let json = serde_json::to_vec(&texts).map_err(|e| e.to_string())?;
    match parse_command(&json) {
        Ok(again) if again == argv => Ok(()),
        other => Err(format!("{argv:?} written back as JSON parses as {other:?}")),
    }
}

fn generate(rng: &mut SmallRng) -> Vec<u8> {
    const ATOMS: &[&str] = &[
        "\"SET\"",
        "\"k\"",
        "\"\"",
        "1",
        "-1",
        "1.5",
        "1e5",
        "true",
        "false",
        "null",
        "\"\\n\\u00e9\"",
        "[]",
        "{}",
        "12345678901234567890",
    ];
    let command = |rng: &mut SmallRng| -> String {
        let args: Vec<&str> = (0..rng.gen_range(0..5))
            .map(|_| ATOMS[rng.gen_range(0..ATOMS.len())])
            .collect();
        format!("[{}]", args.join(","))
    };
    if rng.gen_bool(0.5) {
        command(rng).into_bytes()
    } else {
        let cmds: Vec<String> = (0..rng.gen_range(0..11)).map(|_| command(rng)).collect();
        format!("[{}]", cmds.join(",")).into_bytes()
    }
}
