//! MIGRATE, as Redis 7.2's `migrateCommand`: the keys go to another server as DUMP
//! payloads that it RESTOREs, and are deleted here once it acknowledged each one
//! (kept with `COPY`). The target may be redis-server or another Tidewire.
//!
//! Like Redis, the command waits for the target while it runs (up to `timeout`
//! ms per connect, write and read), holding the keys it moves. Unlike Redis it
//! opens a connection per call instead of caching one per target, so a `SELECT`
//! is always sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, CommandSpec, KeyRoles, Keys};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::num;
use crate::persistence::format::encode;
use crate::rdb_value::{self, Limits};

pub fn commands() -> Vec<CommandSpec> {
    vec![
        cmd("migrate", -6, WRITE, Keys::Custom(migrate_keys), migrate)
            .key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE]))
            .group("generic")
            .summary("Atomically transfers a key from one Redis instance to another."),
    ]
}

/// The key argument, or with `KEYS` (the key argument empty) the keys after it;
/// the passwords of `AUTH` / `AUTH2` are skipped, so a password spelled "KEYS" is
/// not taken for the option.
fn migrate_keys(argv: &[Bytes]) -> Vec<usize> {
    let mut i = 6;
    while i < argv.len() {
        let a = &argv[i];
        if a.eq_ignore_ascii_case(b"AUTH") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"AUTH2") {
            i += 3;
        } else if a.eq_ignore_ascii_case(b"KEYS") {
            if !argv[3].is_empty() {
                return Vec::new();
            }
            return (i + 1..argv.len()).collect();
        } else {
            i += 1;
        }
    }
    vec![3]
}

struct Options {
    copy: bool,
    replace: bool,
    /// (username, password) for AUTH2, (None, password) for AUTH.
    auth: Option<(Option<Bytes>, Bytes)>,
    keys: Vec<Bytes>,
}

fn parse(args: &mut Args<'_>, key: &Bytes) -> Result<Options, CmdError> {
    let mut o = Options {
        copy: false,
        replace: false,
        auth: None,
        keys: vec![key.clone()],
    };
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        if opt.eq_ignore_ascii_case(b"COPY") {
            o.copy = true;
        } else if opt.eq_ignore_ascii_case(b"REPLACE") {
            o.replace = true;
        } else if opt.eq_ignore_ascii_case(b"AUTH") {
            let pass = args.next_bytes().map_err(|_| CmdError::Syntax)?.clone();
            o.auth = Some((None, pass));
        } else if opt.eq_ignore_ascii_case(b"AUTH2") {
            if args.remaining() < 2 {
                return Err(CmdError::Syntax);
            }
            let user = args.next_bytes()?.clone();
            let pass = args.next_bytes()?.clone();
            o.auth = Some((Some(user), pass));
        } else if opt.eq_ignore_ascii_case(b"KEYS") {
            if !key.is_empty() {
                return Err(CmdError::err(
                    "When using MIGRATE KEYS option, the key argument must be set to the empty string",
                ));
            }
            o.keys = args.rest().to_vec();
            break;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(o)
}

/// Redis's reply when the target cannot be reached or stops answering.
fn io_error(what: &str) -> CmdError {
    CmdError::raw(format!("IOERR error or timeout {what} to target instance"))
}

fn connect(host: &[u8], port: &[u8], timeout: Duration) -> Option<TcpStream> {
    let host = std::str::from_utf8(host).ok()?;
    let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    Some(stream)
}

/// Reads one reply line (the target answers AUTH, SELECT and RESTORE with a
/// status or an error), without its CRLF; `None` on a socket error or timeout.
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    // Bounded, as Redis reads these into 1 KB buffers.
    let n = reader
        .by_ref()
        .take(1024)
        .read_until(b'\n', &mut line)
        .ok()?;
    if n == 0 {
        return None;
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// What the target answered: the first AUTH/SELECT error, one line per RESTORE
/// read before any socket error, and whether one happened.
struct Exchange {
    setup_error: Option<String>,
    replies: Vec<String>,
    socket_error: bool,
}

/// Sends AUTH, SELECT and one RESTORE per key in one write, then reads the
/// replies. An error before any RESTORE reply was read is the command's error.
fn talk(
    host: &[u8],
    port: &[u8],
    timeout: Duration,
    o: &Options,
    target_db: i64,
    moving: &[(Bytes, u64, Bytes)],
) -> Result<Exchange, CmdError> {
    let Some(stream) = connect(host, port, timeout) else {
        return Err(CmdError::raw(
            "IOERR error or timeout connecting to the client",
        ));
    };
    let mut request = Vec::new();
    if let Some((user, pass)) = &o.auth {
        match user {
            Some(u) => encode(&mut request, &[&b"AUTH"[..], u, pass]),
            None => encode(&mut request, &[&b"AUTH"[..], pass]),
        }
    }
    encode(
        &mut request,
        &[&b"SELECT"[..], target_db.to_string().as_bytes()],
    );
    for (k, ttl, payload) in moving {
        let ttl = ttl.to_string();
        let mut parts: Vec<&[u8]> = vec![b"RESTORE", k, ttl.as_bytes(), payload];
        if o.replace {
            parts.push(b"REPLACE");
        }
        encode(&mut request, &parts);
    }
    let mut writer = &stream;
    if writer
        .write_all(&request)
        .and_then(|_| writer.flush())
        .is_err()
    {
        return Err(io_error("writing"));
    }
    let mut reader = BufReader::new(&stream);
    let mut setup_error = None;
    for _ in 0..usize::from(o.auth.is_some()) + 1 {
        let Some(line) = read_line(&mut reader) else {
            return Err(io_error("reading"));
        };
        if setup_error.is_none() && line.starts_with('-') {
            setup_error = Some(line);
        }
    }
    let mut replies = Vec::with_capacity(moving.len());
    let mut socket_error = false;
    for _ in moving {
        match read_line(&mut reader) {
            Some(line) => replies.push(line),
            None => {
                socket_error = true;
                break;
            }
        }
    }
    if socket_error && replies.is_empty() && setup_error.is_none() {
        return Err(io_error("reading"));
    }
    Ok(Exchange {
        setup_error,
        replies,
        socket_error,
    })
}

fn migrate(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let host = args.next_bytes()?.clone();
    let port = args.next_bytes()?.clone();
    let key = args.next_bytes()?.clone();
    let db_arg = args.next_bytes()?.clone();
    let timeout_arg = args.next_bytes()?.clone();
    let o = parse(args, &key)?;
    let timeout = num::parse_i64(&timeout_arg).ok_or(CmdError::NotInteger)?;
    let target_db = num::parse_i64(&db_arg).ok_or(CmdError::NotInteger)?;
    let timeout = Duration::from_millis(if timeout <= 0 { 1000 } else { timeout as u64 });
    ctx.propagate_nothing();

    // The keys that exist, with what RESTORE needs for each.
    let (db, now) = (ctx.db(), ctx.now);
    let limits = Limits::from_config(&ctx.store.config);
    let compress = ctx.store.config.get_bool("rdbcompression");
    let mut moving = Vec::new();
    for k in &o.keys {
        if let Some(e) = ctx.ks.lookup_read(db, k, now) {
            if matches!(e.value, crate::value::Value::Json(_)) {
                return Err(CmdError::err("MIGRATE is not supported for JSON keys"));
            }
            if crate::families::dump::has_field_ttls(&e.value) {
                return Err(crate::families::dump::field_ttls_unsupported());
            }
            let ttl = match e.expire_at {
                0 => 0,
                at => at.saturating_sub(now).max(1),
            };
            moving.push((k.clone(), ttl, rdb_value::dump(&e.value, &limits, compress)));
        }
    }
    if moving.is_empty() {
        return Ok(Reply::SimpleString("NOKEY".into()));
    }

    let exchange = || talk(&host, &port, timeout, &o, target_db, &moving);
    // On a multi-threaded runtime the worker's other tasks move to another thread
    // while this one waits for the target (which may be served by this process).
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let Exchange {
        setup_error,
        replies,
        socket_error,
    } = if multi_thread {
        tokio::task::block_in_place(exchange)?
    } else {
        exchange()?
    };

    // As Redis: each key the target acknowledged leaves this server (unless COPY),
    // even when another key's RESTORE failed; the first error is the reply.
    let failed_setup = setup_error.is_some();
    let mut target_error = setup_error;
    let mut moved = Vec::new();
    for ((k, _, _), line) in moving.iter().zip(replies) {
        if line.starts_with('-') {
            target_error.get_or_insert(line);
        } else if !failed_setup && !o.copy {
            moved.push(k.clone());
        }
    }
    if !moved.is_empty() {
        for k in &moved {
            if ctx.ks.remove(db, k).is_some() {
                ctx.notify(notify::GENERIC, "del", k);
            }
        }
        ctx.dirty(moved.len() as u64);
        let mut del = vec![Bytes::from_static(b"DEL")];
        del.extend(moved);
        ctx.propagate(del);
    }
    if let Some(line) = target_error {
        return Err(CmdError::err(format!(
            "Target instance replied with error: {}",
            &line[1..]
        )));
    }
    if socket_error {
        return Err(io_error("reading"));
    }
    Ok(Reply::ok())
}

#[cfg(test)]
mod tests {
    use super::migrate_keys;
    use bytes::Bytes;

    fn argv(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn keys_are_the_key_argument_or_those_after_keys() {
        let base = ["MIGRATE", "h", "1", "k", "0", "500"];
        assert_eq!(migrate_keys(&argv(&base)), vec![3]);
        assert_eq!(
            migrate_keys(&argv(&[
                "MIGRATE", "h", "1", "", "0", "500", "KEYS", "a", "b"
            ])),
            vec![7, 8]
        );
        // A password that reads "KEYS" is not the option.
        assert_eq!(
            migrate_keys(&argv(&[
                "MIGRATE", "h", "1", "", "0", "500", "AUTH", "KEYS", "KEYS", "rw"
            ])),
            vec![9]
        );
        assert_eq!(
            migrate_keys(&argv(&[
                "MIGRATE", "h", "1", "", "0", "500", "AUTH2", "u", "KEYS", "KEYS", "x"
            ])),
            vec![10]
        );
    }
}
