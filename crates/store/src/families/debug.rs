//! DEBUG: the subcommands Redis's own test suite leans on to look inside the server
//! (SLEEP, SET-ACTIVE-EXPIRE, OBJECT, DIGEST, DIGEST-VALUE, RELOAD, LOADAOF), so that
//! suite can be run against Tidewire.
//!
//! The digest is ours, not Redis's bytes: SHA-1 sized (40 hex digits, all zeros for
//! an empty dataset), the same for the same data whatever the insertion order of
//! set members and hash fields, and it changes with any key, value, element order of
//! a list or sorted set, or expiry. Tests only compare digests with each other.

use std::sync::atomic::Ordering;

use sha1::{Digest, Sha1};
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, keys, CommandSpec, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::server::help_lines;
use crate::keyspace::{Locked, NUM_DBS};
use crate::types::stream::StreamId;
use crate::value::{Entry, Value};

/// DEBUG's subcommands. Those that read keys declare them (or `ALL_KEYS`), so the
/// shards they read are the ones their command — or the EXEC around it — already
/// holds: a handler that locked them itself would wait for its own transaction.
/// RELOAD and LOADAOF replace the dataset through the loader, which locks shards
/// itself, so they cannot run inside MULTI.
pub fn commands() -> Vec<CommandSpec> {
    let base = ADMIN | NOSCRIPT | LOADING | STALE;
    vec![cmd(
        "debug",
        -2,
        base | NO_KEYSPACE | ACL_FIRST_ARG,
        NO_KEYS,
        help,
    )
    .group("server")
    .summary("A container for debugging commands.")
    .protected_by(PROTECTION)
    .subs(
        vec![
            cmd("sleep", 3, base | NO_KEYSPACE, NO_KEYS, sleep)
                .summary("Blocks the server for the given seconds."),
            cmd(
                "set-active-expire",
                3,
                base | NO_KEYSPACE,
                NO_KEYS,
                set_active_expire,
            )
            .summary("Stops or restarts the background expiry of keys."),
            cmd("object", 3, base | READONLY, keys(2, 2, 1), object)
                .summary("Internal details of a key's value."),
            cmd("digest", 2, base | READONLY | ALL_KEYS, NO_KEYS, digest)
                .summary("A digest of the whole dataset."),
            cmd(
                "digest-value",
                -2,
                base | READONLY,
                keys(2, -1, 1),
                digest_value,
            )
            .summary("A digest of each key's value."),
            cmd("reload", -2, base | NO_KEYSPACE | NO_MULTI, NO_KEYS, reload)
                .summary("Saves, empties and reloads the dataset from the snapshot."),
            cmd(
                "loadaof",
                2,
                base | NO_KEYSPACE | NO_MULTI,
                NO_KEYS,
                loadaof,
            )
            .summary("Empties and reloads the dataset from the AOF."),
            cmd(
                "config-rewrite-force-all",
                2,
                base | NO_KEYSPACE,
                NO_KEYS,
                config_rewrite_force_all,
            )
            .summary("Writes every configuration parameter into the config file."),
            cmd("help", 2, base | NO_KEYSPACE, NO_KEYS, help)
                .summary("Returns helpful text about the different subcommands."),
        ]
        .into_iter()
        .map(|c| c.protected_by(PROTECTION))
        .collect(),
    )]
}

/// DEBUG runs only where `enable-debug-command` allows it, as in Redis 7.
const PROTECTION: &str = "enable-debug-command";

type Sha = [u8; 20];

fn sleep(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let secs = args.next_f64()?;
    if secs > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(secs.min(3600.0)));
    }
    Ok(Reply::ok())
}

fn set_active_expire(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let on = args.next_i64()? != 0;
    ctx.store.active_expire.store(on, Ordering::Relaxed);
    Ok(Reply::ok())
}

fn config_rewrite_force_all(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    super::server::rewrite_config_file(ctx.store, true)
}

fn loadaof(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    crate::persistence::debug_loadaof(ctx.store).map_err(CmdError::err)?;
    Ok(Reply::ok())
}

fn reload(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let mut save = true;
    for opt in args.rest() {
        if opt.eq_ignore_ascii_case(b"NOSAVE") {
            save = false;
        } else {
            return Err(CmdError::err(
                "DEBUG RELOAD supports only the NOSAVE option here",
            ));
        }
    }
    crate::persistence::debug_reload(ctx.store, save).map_err(CmdError::err)?;
    Ok(Reply::ok())
}

fn digest(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::bulk_str(&hex(&dataset_digest(ctx))))
}

fn digest_value(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now);
    let digests = args
        .rest()
        .iter()
        .map(|key| {
            // Under a lazy all-shards hold (EXEC), the shard is locked here.
            let _ = ctx.ks.db(db, key);
            let d = live(ctx.ks, db, key, now).map_or([0; 20], |e| value_digest(&e.value));
            Reply::bulk_str(&hex(&d))
        })
        .collect();
    Ok(Reply::Array(digests))
}

fn help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(help_lines(
        "DEBUG",
        &[
            "CONFIG-REWRITE-FORCE-ALL",
            "    Like CONFIG REWRITE, writing every parameter, defaults too.",
            "DIGEST",
            "    A 40-digit hex digest of every database (all zeros when empty).",
            "DIGEST-VALUE <key> [<key> ...]",
            "    The digest of each key's value (all zeros for a missing key).",
            "LOADAOF",
            "    Write out the AOF, empty the databases and load them from the AOF.",
            "OBJECT <key>",
            "    Internal details of the key's value: encoding, size, access data.",
            "RELOAD [NOSAVE]",
            "    Save the snapshot (unless NOSAVE), empty the databases, load the snapshot.",
            "SET-ACTIVE-EXPIRE <0|1>",
            "    0 stops the background expiry of keys nobody reads; 1 restarts it.",
            "SLEEP <seconds>",
            "    Block the server for <seconds> (fractions allowed).",
        ],
    ))
}

/// A key's entry unless it has expired (read without lazy expiry: DEBUG observes).
fn live<'k>(ks: &'k Locked, db: usize, key: &[u8], now: u64) -> Option<&'k Entry> {
    ks.peek(db, key).filter(|e| !e.is_expired(now))
}

/// Redis's line, with the fields its tests match on (`encoding:`, `lru_seconds_idle:`).
fn object(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let (db, now) = (ctx.db(), ctx.now);
    // Under a lazy all-shards hold (EXEC), the shard is locked here.
    let _ = ctx.ks.db(db, key);
    let Some(e) = live(ctx.ks, db, key, now) else {
        return Err(CmdError::err("no such key"));
    };
    let line = format!(
        "Value at:{:p} refcount:1 encoding:{} serializedlength:{} lru:{} lru_seconds_idle:{}",
        e as *const Entry,
        e.value.encoding(),
        e.value.mem_usage(),
        e.access & 0xFF_FFFF,
        crate::evict::idle_secs(e),
    );
    Ok(Reply::SimpleString(line))
}

/// The XOR of every live key's digest (key, value, expiry, database): independent
/// of the order keys are stored in.
fn dataset_digest(ctx: &mut Ctx<'_>) -> Sha {
    let now = ctx.now;
    let mut total = [0u8; 20];
    for db in 0..NUM_DBS {
        for part in ctx.ks.db_parts(db) {
            for (key, e) in part.map.iter() {
                if e.is_expired(now) {
                    continue;
                }
                let mut h = Sha1::new();
                h.update((db as u64).to_le_bytes());
                framed(&mut h, key.as_ref());
                h.update(value_digest(&e.value));
                h.update(e.expire_at.to_le_bytes());
                xor_into(&mut total, &h.finalize().into());
            }
        }
    }
    total
}

/// A value's digest: elements in order for strings, lists and sorted sets; XOR of
/// per-element digests for sets and hashes (whose order means nothing).
fn value_digest(v: &Value) -> Sha {
    let mut h = Sha1::new();
    match v {
        Value::Str(s) => {
            h.update(b"string");
            framed(&mut h, s);
        }
        Value::Json(j) => {
            h.update(b"ReJSON-RL");
            framed(&mut h, j.to_text().as_bytes());
        }
        Value::List(l) => {
            h.update(b"list");
            for e in l.iter() {
                framed(&mut h, e);
            }
        }
        Value::Stream(st) => {
            h.update(b"stream");
            for (id, fields) in st.range(StreamId::MIN, StreamId::MAX, 0) {
                framed(&mut h, id.to_string().as_bytes());
                for f in fields {
                    framed(&mut h, &f);
                }
            }
            framed(&mut h, st.last_id.to_string().as_bytes());
            for (name, g) in st.groups().into_iter().flatten() {
                framed(&mut h, name);
                framed(&mut h, g.last_id.to_string().as_bytes());
                for id in g.pel.keys() {
                    framed(&mut h, id.to_string().as_bytes());
                }
            }
        }
        Value::ZSet(z) => {
            h.update(b"zset");
            for (member, score) in z.iter() {
                framed(&mut h, member);
                framed(&mut h, tidewire_resp::format_double(score).as_bytes());
            }
        }
        Value::Set(s) => {
            let mut acc = [0u8; 20];
            for member in s.iter() {
                let mut m = Sha1::new();
                framed(&mut m, &member);
                xor_into(&mut acc, &m.finalize().into());
            }
            h.update(b"set");
            h.update(acc);
        }
        Value::Hash(hv) => {
            let mut acc = [0u8; 20];
            for (field, value) in hv.iter() {
                let mut m = Sha1::new();
                framed(&mut m, field);
                framed(&mut m, value);
                xor_into(&mut acc, &m.finalize().into());
            }
            h.update(b"hash");
            h.update(acc);
        }
    }
    h.finalize().into()
}

/// Length-prefixed, so ("ab","c") and ("a","bc") differ.
fn framed(h: &mut Sha1, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn xor_into(acc: &mut Sha, d: &Sha) {
    for (a, b) in acc.iter_mut().zip(d) {
        *a ^= b;
    }
}

fn hex(d: &Sha) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn digest(t: &mut TestClient) -> String {
        match t.run(&["DEBUG", "DIGEST"]) {
            Reply::Bulk(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// DEBUG is refused unless `enable-debug-command` allows it, before
    /// authentication and inside MULTI too (the transaction is aborted), as in
    /// Redis 7; `local` allows a loopback client; the setting is the config file's.
    #[test]
    fn debug_needs_enable_debug_command() {
        let refused = err("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.");
        let mut t = TestClient::new();
        assert_eq!(t.run(&["DEBUG", "SLEEP", "0"]), refused);
        assert_eq!(t.run(&["DEBUG", "NOSUCH"]), refused);
        assert_eq!(t.run(&["DEBUG", "HELP"]), refused);
        assert_eq!(t.run(&["MULTI"]), ok());
        assert_eq!(t.run(&["DEBUG", "DIGEST"]), refused);
        assert!(matches!(t.run(&["EXEC"]), Reply::Error(e) if e.starts_with("EXECABORT")));
        assert_eq!(
            t.run(&["CONFIG", "SET", "enable-debug-command", "yes"]),
            err("ERR CONFIG SET failed (possibly related to argument 'enable-debug-command') - can't set immutable config")
        );
        assert_eq!(
            t.run(&["CONFIG", "GET", "enable-debug-command"]),
            Reply::Map(vec![(bulk("enable-debug-command"), bulk("no"))])
        );
        // The test client is on 127.0.0.1.
        t.store.config.set("enable-debug-command", "local").unwrap();
        assert_eq!(t.run(&["DEBUG", "SLEEP", "0"]), ok());
        let client =
            t.store
                .new_client("10.1.2.3:5000".into(), "127.0.0.1:6379".into(), "internal");
        let mut remote = TestClient {
            store: t.store.clone(),
            client,
        };
        assert_eq!(remote.run(&["DEBUG", "SLEEP", "0"]), refused);
        t.store.config.set("enable-debug-command", "yes").unwrap();
        assert_eq!(remote.run(&["DEBUG", "SLEEP", "0"]), ok());
    }

    #[test]
    fn digest_follows_content_not_insertion_order() {
        let mut t = TestClient::with_debug();
        assert_eq!(digest(&mut t), ZERO);
        t.run(&["SADD", "s", "a", "b", "c"]);
        t.run(&["HSET", "h", "f1", "1", "f2", "2"]);
        t.run(&["RPUSH", "l", "x", "y"]);
        t.run(&["ZADD", "z", "1", "m", "2", "n"]);
        t.run(&["SET", "k", "v", "PX", "100000"]);
        let first = digest(&mut t);
        assert_eq!(first.len(), 40);
        assert_ne!(first, ZERO);

        let mut u = TestClient::with_debug();
        u.run(&["ZADD", "z", "2", "n", "1", "m"]);
        u.run(&["HSET", "h", "f2", "2", "f1", "1"]);
        u.run(&["SADD", "s", "c", "a", "b"]);
        u.run(&["RPUSH", "l", "x", "y"]);
        let expire_at = t.run(&["PEXPIRETIME", "k"]);
        let Reply::Int(at) = expire_at else { panic!() };
        u.run(&["SET", "k", "v", "PXAT", &at.to_string()]);
        assert_eq!(digest(&mut u), first, "same data, other order");

        u.run(&["LSET", "l", "0", "y"]);
        u.run(&["LSET", "l", "1", "x"]);
        assert_ne!(digest(&mut u), first, "a list's order counts");
        u.run(&["FLUSHALL"]);
        assert_eq!(digest(&mut u), ZERO);
    }

    #[test]
    fn digest_value_object_and_active_expire() {
        let _turn = crate::evict::access_mode_turn();
        let mut t = TestClient::with_debug();
        t.run(&["SADD", "a", "1", "2"]);
        t.run(&["SADD", "b", "2", "1"]);
        let Reply::Array(d) = t.run(&["DEBUG", "DIGEST-VALUE", "a", "b", "nokey"]) else {
            panic!()
        };
        assert_eq!(d[0], d[1]);
        assert_eq!(d[2], bulk(ZERO));

        t.run(&["SET", "s", "hello"]);
        let Reply::SimpleString(line) = t.run(&["DEBUG", "OBJECT", "s"]) else {
            panic!()
        };
        assert!(line.contains(" encoding:embstr "), "{line}");
        assert!(line.contains(" lru_seconds_idle:0"), "{line}");
        assert_eq!(t.run(&["DEBUG", "OBJECT", "nokey"]), err("ERR no such key"));

        assert_eq!(t.run(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]), ok());
        t.run(&["SET", "gone", "1", "PX", "1"]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let sweep = |t: &TestClient| {
            (0..crate::expire::SWEEP_TICKS)
                .map(|_| crate::expire::active_expire_cycle(&t.store))
                .sum::<u64>()
        };
        assert_eq!(sweep(&t), 0);
        assert_eq!(t.run(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]), ok());
        assert_eq!(sweep(&t), 1);
    }
}
