//! DUMP and RESTORE, as Redis 7.2's `dumpCommand` / `restoreCommand`: a value
//! serialized in Redis's RDB format with the version and CRC-64 footer
//! ([`crate::rdb_value`]), so payloads move between Tidewire and redis-server in
//! both directions.
//!
//! RESTORE checks in Redis's order (options, existing key, TTL, footer, object)
//! and changes nothing on any refusal. A relative TTL is logged as an absolute one
//! (`ABSTTL` appended), so replaying the log later never extends it.

#![forbid(unsafe_code)]

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::strings::store_key;
use crate::num;
use crate::rdb_value::{self, Limits, RestoreError};
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let g = |c: CommandSpec| c.group("generic");
    vec![
        g(cmd("dump", 2, READONLY, keys(1, 1, 1), dump)
            .summary("Returns a serialized representation of the value stored at a key.")),
        g(cmd("restore", -4, WRITE | DENYOOM, keys(1, 1, 1), restore)
            .key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE]))
            .summary("Creates a key from the serialized representation of a value.")),
    ]
}

fn dump(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let limits = Limits::from_config(&ctx.store.config);
    let compress = ctx.store.config.get_bool("rdbcompression");
    let (db, now) = (ctx.db(), ctx.now);
    Ok(match ctx.ks.lookup_read(db, key, now) {
        // RedisJSON's module payload is out of scope: no payload rather than one
        // that RESTORE would turn into another type.
        Some(e) if matches!(e.value, crate::value::Value::Json(_)) => {
            return Err(CmdError::err("DUMP is not supported for JSON keys"))
        }
        Some(e) if has_field_ttls(&e.value) => return Err(field_ttls_unsupported()),
        Some(e) => Reply::Bulk(rdb_value::dump(&e.value, &limits, compress)),
        None => Reply::Null,
    })
}

/// Whether `v` is a hash with field TTLs: Redis 7.4's payload for those (a newer
/// RDB type) is not written here, and one without the TTLs would make the fields
/// permanent where it is restored.
pub fn has_field_ttls(v: &Value) -> bool {
    matches!(v, Value::Hash(h) if h.has_field_ttls())
}

pub fn field_ttls_unsupported() -> CmdError {
    CmdError::err("DUMP of a hash with field TTLs is not supported")
}

/// RESTORE's options after the payload.
struct RestoreOpts {
    replace: bool,
    absttl: bool,
    idle_secs: Option<u64>,
    freq: Option<u8>,
}

/// Parses `[REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]` as Redis does: IDLETIME and
/// FREQ exclude each other (the second one met is a syntax error), either may be
/// repeated, and their values are checked as they are read.
fn parse_opts(args: &mut Args<'_>) -> Result<RestoreOpts, CmdError> {
    let mut o = RestoreOpts {
        replace: false,
        absttl: false,
        idle_secs: None,
        freq: None,
    };
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        let has_value = !args.is_empty();
        if opt.eq_ignore_ascii_case(b"REPLACE") {
            o.replace = true;
        } else if opt.eq_ignore_ascii_case(b"ABSTTL") {
            o.absttl = true;
        } else if opt.eq_ignore_ascii_case(b"IDLETIME") && has_value && o.freq.is_none() {
            let n = args.next_i64()?;
            let n = u64::try_from(n)
                .map_err(|_| CmdError::err("Invalid IDLETIME value, must be >= 0"))?;
            o.idle_secs = Some(n);
        } else if opt.eq_ignore_ascii_case(b"FREQ") && has_value && o.idle_secs.is_none() {
            let n = args.next_i64()?;
            let n = u8::try_from(n)
                .map_err(|_| CmdError::err("Invalid FREQ value, must be >= 0 and <= 255"))?;
            o.freq = Some(n);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(o)
}

fn restore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ttl_arg = args.next_bytes()?;
    let payload = args.next_bytes()?;
    let o = parse_opts(args)?;
    let (db, now) = (ctx.db(), ctx.now);
    let existed = ctx.ks.get(db, key, now).is_some();
    if existed && !o.replace {
        return Err(CmdError::raw("BUSYKEY Target key name already exists."));
    }
    let ttl = num::parse_i64(ttl_arg).ok_or(CmdError::NotInteger)?;
    if ttl < 0 {
        return Err(CmdError::err("Invalid TTL value, must be >= 0"));
    }
    let limits = Limits::from_config(&ctx.store.config);
    let value = rdb_value::restore(payload, &limits).map_err(|e| match e {
        RestoreError::Footer => CmdError::err("DUMP payload version or checksum are wrong"),
        RestoreError::BadData => CmdError::err("Bad data format"),
    })?;
    let expire_at = match ttl {
        0 => 0,
        t if o.absttl => t as u64,
        t => (now as i64).saturating_add(t) as u64,
    };
    if existed {
        ctx.ks.remove(db, key);
    }
    if expire_at != 0 && expire_at <= now {
        // Already expired: not created; an existing key it replaced is deleted.
        if existed {
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "del", key);
            let del: &'static [u8] = if ctx.store.config.get_bool("lazyfree-lazy-server-del") {
                b"UNLINK"
            } else {
                b"DEL"
            };
            ctx.propagate(vec![Bytes::from_static(del), key.clone()]);
        }
        return Ok(Reply::ok());
    }
    let wakes = matches!(value, Value::List(_) | Value::ZSet(_));
    let mut entry = Entry::with_expiry(value, expire_at);
    if let Some(access) = crate::evict::restored_access(o.freq, o.idle_secs) {
        entry.access = access;
    }
    store_key(ctx, db, key, entry);
    if wakes {
        ctx.signal_ready(key);
    }
    ctx.notify(notify::GENERIC, "restore", key);
    ctx.dirty(1);
    if ttl != 0 && !o.absttl {
        let mut argv = ctx.argv.to_vec();
        argv[2] = num::i64_to_bytes(expire_at as i64);
        argv.push(Bytes::from_static(b"ABSTTL"));
        ctx.propagate(argv);
    }
    Ok(Reply::ok())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tidewire_resp::Reply;

    use crate::testkit::*;

    fn dump_of(t: &mut TestClient, key: &str) -> Bytes {
        match t.run(&["DUMP", key]) {
            Reply::Bulk(b) => b,
            other => panic!("DUMP {key}: {other:?}"),
        }
    }

    fn restore(t: &mut TestClient, args: &[&[u8]]) -> Reply {
        let mut argv = vec![Bytes::from_static(b"RESTORE")];
        argv.extend(args.iter().map(|a| Bytes::copy_from_slice(a)));
        t.run_bytes(argv)
    }

    #[test]
    fn dump_and_restore_every_type() {
        let mut t = TestClient::with_debug();
        t.run(&["SET", "str", "hello"]);
        t.run(&["SET", "int", "-42"]);
        t.run(&["RPUSH", "list", "a", "1", "b"]);
        t.run(&["SADD", "iset", "1", "2", "3"]);
        t.run(&["SADD", "lset", "a", "b"]);
        t.run(&["HSET", "hash", "f", "v", "g", "w"]);
        t.run(&["ZADD", "zset", "1", "a", "2.5", "b"]);
        t.run(&["PFADD", "hll", "x", "y", "z"]);
        for key in ["str", "int", "list", "iset", "lset", "hash", "zset", "hll"] {
            let payload = dump_of(&mut t, key);
            let copy = format!("{key}-copy");
            assert_eq!(
                restore(&mut t, &[copy.as_bytes(), b"0", &payload]),
                ok(),
                "{key}"
            );
            let digest = |t: &mut TestClient, k: &str| t.run(&["DEBUG", "DIGEST-VALUE", k]);
            assert_eq!(digest(&mut t, key), digest(&mut t, &copy), "{key}");
            assert_eq!(encoding_of(&t, key), encoding_of(&t, &copy), "{key}");
            assert_eq!(t.run(&["TTL", &copy]), int(-1));
        }
        assert_eq!(t.run(&["PFCOUNT", "hll-copy"]), int(3));
        assert_eq!(t.run(&["DUMP", "nokey"]), Reply::Null);
    }

    #[test]
    fn restore_errors_in_redis_order() {
        let mut t = TestClient::new();
        t.run(&["SET", "k", "v"]);
        let p = dump_of(&mut t, "k");
        let busy = err("BUSYKEY Target key name already exists.");
        assert_eq!(restore(&mut t, &[b"k", b"0", &p]), busy);
        // Options are checked before the key, the key before the TTL and payload.
        assert_eq!(
            restore(&mut t, &[b"k", b"0", &p, b"NOPE"]),
            err("ERR syntax error")
        );
        assert_eq!(restore(&mut t, &[b"k", b"-1", b"junk"]), busy);
        assert_eq!(
            restore(&mut t, &[b"n", b"-1", &p]),
            err("ERR Invalid TTL value, must be >= 0")
        );
        assert_eq!(
            restore(&mut t, &[b"n", b"x", &p]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            restore(&mut t, &[b"n", b"0", b"junk-payload"]),
            err("ERR DUMP payload version or checksum are wrong")
        );
        let mut bad_crc = p.to_vec();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert_eq!(
            restore(&mut t, &[b"n", b"0", &bad_crc]),
            err("ERR DUMP payload version or checksum are wrong")
        );
        // Right checksum, broken object.
        let stream = crate::dump_payload::seal(vec![21, 0]);
        assert_eq!(
            restore(&mut t, &[b"n", b"0", &stream]),
            err("ERR Bad data format")
        );
        // A refused REPLACE leaves the old value.
        assert_eq!(
            restore(&mut t, &[b"k", b"0", &stream, b"REPLACE"]),
            err("ERR Bad data format")
        );
        assert_eq!(t.run(&["GET", "k"]), bulk("v"));
        // IDLETIME / FREQ values and their exclusion.
        let cases: [(&[&[u8]], &str); 7] = [
            (
                &[b"IDLETIME", b"-1"],
                "ERR Invalid IDLETIME value, must be >= 0",
            ),
            (
                &[b"IDLETIME", b"x"],
                "ERR value is not an integer or out of range",
            ),
            (
                &[b"FREQ", b"256"],
                "ERR Invalid FREQ value, must be >= 0 and <= 255",
            ),
            (
                &[b"FREQ", b"-1"],
                "ERR Invalid FREQ value, must be >= 0 and <= 255",
            ),
            (&[b"FREQ", b"1", b"IDLETIME", b"1"], "ERR syntax error"),
            (&[b"IDLETIME", b"1", b"FREQ", b"1"], "ERR syntax error"),
            (&[b"IDLETIME"], "ERR syntax error"),
        ];
        for (opts, want) in cases {
            let mut a: Vec<&[u8]> = vec![b"n", b"0", &p];
            a.extend_from_slice(opts);
            assert_eq!(restore(&mut t, &a), err(want), "{opts:?}");
        }
        assert_eq!(t.run(&["EXISTS", "n"]), int(0));
        assert_eq!(
            t.run(&["RESTORE", "n", "0"]),
            err("ERR wrong number of arguments for 'restore' command")
        );
    }

    #[test]
    fn ttl_replace_and_absttl() {
        let mut t = TestClient::new();
        t.run(&["SET", "k", "v1"]);
        let p1 = dump_of(&mut t, "k");
        t.run(&["SET", "k", "v2"]);
        let p2 = dump_of(&mut t, "k");
        t.run(&["DEL", "k"]);
        assert_eq!(restore(&mut t, &[b"k", b"5000", &p1]), ok());
        let Reply::Int(pttl) = t.run(&["PTTL", "k"]) else {
            panic!()
        };
        assert!((4000..=5000).contains(&pttl), "{pttl}");
        assert_eq!(restore(&mut t, &[b"k", b"0", &p2, b"replace"]), ok());
        assert_eq!(t.run(&["GET", "k"]), bulk("v2"));
        assert_eq!(t.run(&["TTL", "k"]), int(-1));
        let at = (crate::clock::now_ms() + 100_000).to_string();
        assert_eq!(
            restore(&mut t, &[b"a", at.as_bytes(), &p1, b"ABSTTL"]),
            ok()
        );
        assert_eq!(
            t.run(&["PEXPIRETIME", "a"]),
            Reply::Int(at.parse().unwrap())
        );
        // A TTL beyond 32 bits.
        assert_eq!(restore(&mut t, &[b"big", b"2569591501", &p1]), ok());
        assert!(matches!(t.run(&["PTTL", "big"]), Reply::Int(n) if n > 2_569_000_000));
        // ABSTTL in the past: not created; with REPLACE the old key goes.
        let past = (crate::clock::now_ms() - 3000).to_string();
        assert_eq!(
            restore(&mut t, &[b"gone", past.as_bytes(), &p1, b"ABSTTL"]),
            ok()
        );
        assert_eq!(t.run(&["EXISTS", "gone"]), int(0));
        assert_eq!(
            restore(&mut t, &[b"k", past.as_bytes(), &p1, b"ABSTTL", b"REPLACE"]),
            ok()
        );
        assert_eq!(t.run(&["EXISTS", "k"]), int(0));
    }

    struct Log(parking_lot::Mutex<Vec<Vec<Bytes>>>);

    impl crate::WriteLog for Log {
        fn append(&self, cmds: &[(usize, Vec<Bytes>)]) -> u64 {
            self.0
                .lock()
                .extend(cmds.iter().map(|(_, argv)| argv.clone()));
            0
        }
    }

    /// A relative TTL is logged as an absolute one with ABSTTL; an expired
    /// RESTORE that replaced a key is logged as DEL; one that did nothing is not
    /// logged.
    #[test]
    fn propagation() {
        let mut t = TestClient::new();
        let log = Arc::new(Log(Default::default()));
        t.run(&["SET", "src", "v"]);
        let p = dump_of(&mut t, "src");
        t.store.set_write_log(log.clone());
        let before = crate::clock::now_ms();
        restore(&mut t, &[b"a", b"100000", &p]);
        restore(&mut t, &[b"b", b"0", &p, b"IDLETIME", b"5"]);
        let past = (before - 5000).to_string();
        restore(&mut t, &[b"c", past.as_bytes(), &p, b"ABSTTL"]);
        restore(&mut t, &[b"a", past.as_bytes(), &p, b"ABSTTL", b"REPLACE"]);
        let got = log.0.lock().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0][0], "RESTORE");
        assert_eq!(got[0][1], "a");
        let at: u64 = std::str::from_utf8(&got[0][2]).unwrap().parse().unwrap();
        assert!(at >= before + 100_000 && at <= crate::clock::now_ms() + 100_000);
        assert_eq!(got[0][3], p);
        assert_eq!(got[0][4], "ABSTTL");
        assert_eq!(got[1].len(), 6);
        assert_eq!(got[1][2], "0");
        assert_eq!(got[2], vec![Bytes::from("DEL"), Bytes::from("a")]);
        // The logged command replays to the same absolute expiry.
        let mut replay = TestClient::new();
        assert_eq!(replay.run_bytes(got[0].clone()), ok());
        assert_eq!(replay.run(&["PEXPIRETIME", "a"]), Reply::Int(at as i64));
    }

    #[test]
    fn idletime_and_freq() {
        let _turn = crate::evict::access_mode_turn();
        let mut t = TestClient::new();
        t.run(&["SET", "src", "v"]);
        let p = dump_of(&mut t, "src");
        assert_eq!(
            restore(&mut t, &[b"i", b"0", &p, b"IDLETIME", b"1000"]),
            ok()
        );
        let Reply::Int(idle) = t.run(&["OBJECT", "IDLETIME", "i"]) else {
            panic!()
        };
        assert!((1000..=1010).contains(&idle), "{idle}");
        // FREQ means nothing without an LFU policy.
        assert_eq!(restore(&mut t, &[b"f0", b"0", &p, b"FREQ", b"100"]), ok());
        t.run(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"]);
        assert_eq!(restore(&mut t, &[b"f", b"0", &p, b"FREQ", b"100"]), ok());
        assert_eq!(t.run(&["OBJECT", "FREQ", "f"]), int(100));
        t.run(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    }

    /// RESTORE raises `restore` (and `new`) and wakes clients blocked on the key.
    #[test]
    fn events_and_blocked_clients() {
        let mut t = TestClient::new();
        t.run(&["RPUSH", "src", "x"]);
        let p = dump_of(&mut t, "src");
        let w = t
            .store
            .blocking
            .register(99, &[(0, Bytes::from_static(b"dst"))], None);
        t.run(&["CONFIG", "SET", "notify-keyspace-events", "KEAn"]);
        let mut sub = t.other();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        sub.client.info.set_push_channel(tx);
        sub.run(&["PSUBSCRIBE", "__keyevent@*"]);
        assert_eq!(restore(&mut t, &[b"dst", b"0", &p]), ok());
        assert!(w.take_wakeup());
        let mut events = Vec::new();
        while let Ok((Reply::Push(v), _)) = rx.try_recv() {
            if let Some(Reply::Bulk(ch)) = v.get(2) {
                events.push(String::from_utf8_lossy(ch).into_owned());
            }
        }
        assert_eq!(
            events,
            ["__keyevent@0__:new", "__keyevent@0__:restore"],
            "{events:?}"
        );
    }

    /// The command table declares both commands as Redis does.
    #[test]
    fn command_info() {
        let mut t = TestClient::new();
        let info =
            |t: &mut TestClient, name: &str| format!("{:?}", t.run(&["COMMAND", "INFO", name]));
        let dump = info(&mut t, "dump");
        assert!(
            dump.contains("readonly") && !dump.contains("@dangerous"),
            "{dump}"
        );
        let restore = info(&mut t, "restore");
        for word in ["write", "denyoom", "@dangerous", "@keyspace"] {
            assert!(restore.contains(word), "{restore}");
        }
    }
}
