//! The native primitives' state (throttles, idempotency keys, locks): one ordinary
//! string key each, written with an absolute expiry so that a log replay never
//! extends it, and read back with the primitive's own parser.

use bytes::Bytes;

use crate::args::Args;
use crate::config::notify;
use crate::error::CmdError;
use crate::exec::{read_string, Ctx};
use crate::families::strings::store_key;
use crate::num;
use crate::str_value::StrValue;
use crate::value::{Entry, Value};

/// The record under `key` as `parse` reads it; a string it cannot read is an error
/// naming `what` the key should hold.
pub fn load<T>(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    what: &str,
    parse: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<Option<T>, CmdError> {
    match read_string(ctx, key)? {
        None => Ok(None),
        Some(v) => parse(&v)
            .map(Some)
            .ok_or_else(|| CmdError::err(format!("the key does not hold {what}"))),
    }
}

/// A time argument in milliseconds, which must be positive.
pub fn positive_ms(args: &mut Args<'_>) -> Result<u64, CmdError> {
    match args.next_i64()? {
        n if n > 0 => Ok(n as u64),
        _ => Err(CmdError::err(
            "invalid expire time, must be a positive number of milliseconds",
        )),
    }
}

/// Stores the string `value` under `key` until unix ms `at` (0: no expiry).
pub fn store_at(ctx: &mut Ctx<'_>, key: &Bytes, value: Bytes, at: u64) {
    let db = ctx.db();
    store_key(
        ctx,
        db,
        key,
        Entry::with_expiry(Value::Str(StrValue::copy_from_slice(&value)), at),
    );
    ctx.dirty(1);
    ctx.notify(notify::STRING, "set", key);
    let mut record = vec![Bytes::from_static(b"SET"), key.clone(), value];
    if at > 0 {
        record.push(Bytes::from_static(b"PXAT"));
        record.push(num::i64_to_bytes(at as i64));
    }
    ctx.propagate(record);
}

/// Removes the record, if there is one.
pub fn delete(ctx: &mut Ctx<'_>, key: &Bytes) {
    let db = ctx.db();
    if ctx.ks.remove(db, key).is_some() {
        ctx.dirty(1);
        ctx.notify(notify::GENERIC, "del", key);
        ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
    } else {
        ctx.propagate_nothing();
    }
}
