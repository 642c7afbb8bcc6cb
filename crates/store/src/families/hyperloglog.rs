//! HyperLogLog commands (Redis's `hyperloglog.c`): PFADD, PFCOUNT, PFMERGE and
//! PFSELFTEST. Values are strings in Redis's `HYLL` layout ([`crate::types::hll`]).

use std::borrow::Cow;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, NO_KEYS};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::types::hll::{self, HllError};
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let h = |c: CommandSpec| c.group("hyperloglog");
    vec![
        h(cmd("pfadd", -2, WRITE | DENYOOM | FAST, keys(1, 1, 1), pfadd).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Adds elements to a HyperLogLog key. Creates the key if it doesn't exist.")),
        h(cmd("pfcount", -2, READONLY, keys(1, -1, 1), pfcount).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS])).summary("Returns the approximated cardinality of the set(s) observed by the HyperLogLog key(s).")),
        h(cmd("pfmerge", -2, WRITE | DENYOOM, keys(1, -1, 1), pfmerge).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::INSERT, kf::RO | kf::ACCESS])).summary("Merges one or more HyperLogLog values into a single key.")),
        h(cmd("pfdebug", 3, WRITE | DENYOOM | ADMIN, keys(2, 2, 1), pfdebug).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS])).summary("Internal commands for debugging HyperLogLog values.")),
        h(cmd("pfselftest", 1, ADMIN | NO_KEYSPACE, NO_KEYS, pfselftest).summary("An internal command for testing HyperLogLog values.")),
    ]
}

fn hll_err(e: HllError) -> CmdError {
    match e {
        HllError::NotHll => CmdError::raw("WRONGTYPE Key is not a valid HyperLogLog string value."),
        HllError::Corrupt => CmdError::raw("INVALIDOBJ Corrupted HLL object detected"),
    }
}

/// The HLL string at `key`: `Ok(None)` if absent, WRONGTYPE for other types or
/// strings that are not HLLs.
fn read_hll(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Bytes>, CmdError> {
    let db = ctx.db();
    match ctx.ks.lookup_read(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => {
            hll::check(s).map_err(hll_err)?;
            Ok(Some(s.to_bytes()))
        }
        Some(_) => Err(CmdError::WrongType),
    }
}

/// Replaces the string at an existing `key`, keeping its TTL, or creates it.
fn store(ctx: &mut Ctx<'_>, key: &[u8], v: Vec<u8>) {
    let db = ctx.db();
    let now = ctx.now;
    match ctx.ks.get_mut(db, key, now) {
        Some(e) => e.value = Value::Str(v.into()),
        None => {
            ctx.ks.insert(
                db,
                Bytes::copy_from_slice(key),
                Entry::new(Value::Str(v.into())),
            );
        }
    }
}

fn sparse_max(ctx: &Ctx<'_>) -> usize {
    ctx.store
        .config
        .encoding
        .get_usize(crate::config::Limit::HllSparseMaxBytes)
}

fn pfadd(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let elements = args.rest();
    let existing = read_hll(ctx, key)?;
    let created = existing.is_none();
    let base: Cow<'_, [u8]> = match &existing {
        Some(s) => Cow::Borrowed(&s[..]),
        None => {
            let mut v = hll::new_empty();
            v[15] |= 0x80;
            Cow::Owned(v)
        }
    };
    let max = sparse_max(ctx);
    let updated = hll::add(&base, elements.iter().map(|e| &e[..]), max).map_err(hll_err)?;
    if updated.is_none() && !created {
        return Ok(Reply::Int(0));
    }
    let v = updated.unwrap_or_else(|| base.into_owned());
    store(ctx, key, v);
    ctx.dirty(1);
    ctx.notify(notify::STRING, "pfadd", key);
    Ok(Reply::Int(1))
}

fn pfcount(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let keys = args.rest();
    if keys.len() == 1 {
        let key = &keys[0];
        let Some(s) = read_hll(ctx, key)? else {
            return Ok(Reply::Int(0));
        };
        if let Some(c) = hll::cached(&s) {
            return Ok(Reply::Int(c as i64));
        }
        let regs = hll::registers(&s).map_err(hll_err)?;
        let c = hll::count(&regs);
        // Keep the cached cardinality in the value, as Redis does, so a GET shows it.
        let db = ctx.db();
        if let Some(e) = ctx.ks.get_mut(db, key, ctx.now) {
            e.value = Value::Str(hll::with_cache(&s, c).into());
        }
        return Ok(Reply::Int(c as i64));
    }
    let mut max = vec![0u8; hll::REGISTERS];
    for key in keys {
        if let Some(s) = read_hll(ctx, key)? {
            let regs = hll::registers(&s).map_err(hll_err)?;
            for (m, r) in max.iter_mut().zip(regs) {
                *m = (*m).max(r);
            }
        }
    }
    Ok(Reply::Int(hll::count(&max) as i64))
}

fn pfmerge(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let keys = args.rest();
    let dest = &keys[0];
    let mut max = vec![0u8; hll::REGISTERS];
    let mut use_dense = false;
    for key in keys {
        if let Some(s) = read_hll(ctx, key)? {
            use_dense |= hll::check(&s).map_err(hll_err)?;
            let regs = hll::registers(&s).map_err(hll_err)?;
            for (m, r) in max.iter_mut().zip(regs) {
                *m = (*m).max(r);
            }
        }
    }
    let v = hll::encode(&max, use_dense, sparse_max(ctx));
    store(ctx, dest, v);
    ctx.dirty(1);
    ctx.notify(notify::STRING, "pfadd", dest);
    Ok(Reply::ok())
}

/// PFDEBUG GETREG|ENCODING|TODENSE|DECODE key, as Redis (GETREG and TODENSE
/// convert a sparse value to dense).
fn pfdebug(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let sub = args.next_bytes()?;
    let key = args.next_bytes()?;
    let Some(s) = read_hll(ctx, key)? else {
        return Err(CmdError::err("The specified key does not exist"));
    };
    let dense = hll::check(&s).map_err(hll_err)?;
    let lower = sub.to_ascii_lowercase();
    match lower.as_slice() {
        b"getreg" | b"todense" => {
            let regs = hll::registers(&s).map_err(hll_err)?;
            if !dense {
                let mut v = hll::encode_dense(&regs, None);
                v[8..16].copy_from_slice(&s[8..16]);
                store(ctx, key, v);
                ctx.dirty(1);
            }
            if lower == b"todense" {
                return Ok(Reply::Int(!dense as i64));
            }
            Ok(Reply::Array(
                regs.into_iter().map(|r| Reply::Int(r as i64)).collect(),
            ))
        }
        b"encoding" => Ok(Reply::Status(if dense { "dense" } else { "sparse" })),
        b"decode" => {
            if dense {
                return Err(CmdError::err("HLL encoding is not sparse"));
            }
            let text = hll::decode_sparse(&s).map_err(hll_err)?;
            Ok(Reply::Bulk(Bytes::from(text)))
        }
        _ => Err(CmdError::err(format!(
            "Unknown PFDEBUG subcommand '{}'",
            String::from_utf8_lossy(sub)
        ))),
    }
}

/// A quick consistency check of the implementation (Redis's runs much longer):
/// register packing, sparse/dense agreement and the estimator's error bound.
fn pfselftest(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let fail = |what: &str| Err(CmdError::err(format!("TESTFAILED {what}")));
    let regs: Vec<u8> = (0..hll::REGISTERS).map(|i| (i * 7 % 64) as u8).collect();
    match hll::registers(&hll::encode_dense(&regs, None)) {
        Ok(r) if r == regs => {}
        _ => return fail("Register error"),
    }
    let mut s = hll::new_empty();
    let n = 10_000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let elems: Vec<[u8; 8]> = chunk.iter().map(|i| i.to_le_bytes()).collect();
        if let Ok(Some(v)) = hll::add(&s, elems.iter().map(|e| &e[..]), 3000) {
            s = v;
        }
    }
    let Ok(r) = hll::registers(&s) else {
        return fail("Sparse error");
    };
    let est = hll::count(&r) as f64;
    if (est - n as f64).abs() / n as f64 > 5.0 * 1.04 / 128.0 {
        return fail("Too big error");
    }
    Ok(Reply::ok())
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn pfadd_pfcount_pfmerge() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["PFADD", "h"]), int(1));
        assert_eq!(t.run(&["PFADD", "h"]), int(0));
        assert_eq!(t.run(&["TYPE", "h"]), Reply::Status("string"));
        assert_eq!(t.run(&["PFCOUNT", "h"]), int(0));
        assert_eq!(t.run(&["PFADD", "h", "a", "b", "c", "foo"]), int(1));
        assert_eq!(t.run(&["PFADD", "h", "a"]), int(0));
        assert_eq!(t.run(&["PFCOUNT", "h"]), int(4));
        assert_eq!(t.run(&["PFCOUNT", "h"]), int(4));
        assert_eq!(t.run(&["PFADD", "h2", "x", "y", "a"]), int(1));
        assert_eq!(t.run(&["PFCOUNT", "h", "h2", "nokey"]), int(6));
        assert_eq!(t.run(&["PFMERGE", "m", "h", "h2"]), ok());
        assert_eq!(t.run(&["PFCOUNT", "m"]), int(6));
        assert_eq!(t.run(&["PFMERGE", "empty"]), ok());
        assert_eq!(t.run(&["PFCOUNT", "empty"]), int(0));
        t.run(&["SET", "s", "hello"]);
        let bad = err("WRONGTYPE Key is not a valid HyperLogLog string value.");
        assert_eq!(t.run(&["PFADD", "s", "a"]), bad);
        assert_eq!(t.run(&["PFCOUNT", "s"]), bad);
        assert_eq!(t.run(&["PFMERGE", "m", "s"]), bad);
        t.run(&["HSET", "hash", "f", "v"]);
        assert_eq!(
            t.run(&["PFCOUNT", "hash"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        assert_eq!(t.run(&["PFSELFTEST"]), ok());
    }

    #[test]
    fn pfdebug() {
        let mut t = TestClient::new();
        t.run(&["PFADD", "h", "a"]);
        assert_eq!(
            t.run(&["PFDEBUG", "ENCODING", "h"]),
            Reply::Status("sparse")
        );
        let Reply::Bulk(d) = t.run(&["PFDEBUG", "DECODE", "h"]) else {
            panic!()
        };
        let d = String::from_utf8(d.to_vec()).unwrap();
        assert!(d.starts_with("Z:") && d.contains("v:"), "{d}");
        assert_eq!(t.run(&["PFDEBUG", "TODENSE", "h"]), int(1));
        assert_eq!(t.run(&["PFDEBUG", "TODENSE", "h"]), int(0));
        assert_eq!(t.run(&["PFDEBUG", "ENCODING", "h"]), Reply::Status("dense"));
        assert_eq!(t.run(&["PFCOUNT", "h"]), int(1));
        let Reply::Array(regs) = t.run(&["PFDEBUG", "GETREG", "h"]) else {
            panic!()
        };
        assert_eq!(regs.len(), 16384);
        assert_eq!(
            t.run(&["PFDEBUG", "DECODE", "h"]),
            err("ERR HLL encoding is not sparse")
        );
        assert_eq!(
            t.run(&["PFDEBUG", "NOPE", "h"]),
            err("ERR Unknown PFDEBUG subcommand 'NOPE'")
        );
        assert_eq!(
            t.run(&["PFDEBUG", "ENCODING", "nokey"]),
            err("ERR The specified key does not exist")
        );
    }
}
