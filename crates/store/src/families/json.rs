//! JSON commands (RedisJSON 2.x, as Upstash serves them): a document per key in
//! [`crate::types::json::JsonValue`], addressed by [`JsonPath`].
//!
//! Reply shapes follow RedisJSON: a JSONPath (`$…`) answers one entry per match,
//! nil for a match of the wrong type; a legacy path answers for its first match
//! and errors when nothing matches or the match has the wrong type. Every write
//! is deterministic and so logged as received; keyspace events are RedisJSON's
//! (`json.set`, `json.del`, … in the module class).

use std::collections::HashSet;

use bytes::Bytes;
use indexmap::IndexMap;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, keys, CommandSpec};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::types::json::{json_eq, Format, JsonValue, MAX_DEPTH};
use crate::types::json_path::{get_mut, remove_all, JsonPath, Loc};
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let j = |c: CommandSpec| c.group("json");
    vec![
        j(cmd("json.set", -4, WRITE | DENYOOM, keys(1, 1, 1), set).summary("Sets or updates the JSON value at a path.")),
        j(cmd("json.get", -2, READONLY, keys(1, 1, 1), get).summary("Gets the value at one or more paths in JSON serialized form.")),
        j(cmd("json.mget", -3, READONLY, keys(1, -2, 1), mget).summary("Returns the values at a path from one or more keys.")),
        j(cmd("json.mset", -4, WRITE | DENYOOM, keys(1, -1, 3), mset).summary("Sets or updates the JSON value of one or more keys.")),
        j(cmd("json.merge", 4, WRITE | DENYOOM, keys(1, 1, 1), merge).summary("Merges a given JSON value into matching paths.")),
        j(cmd("json.del", -2, WRITE, keys(1, 1, 1), del).summary("Deletes a value.")),
        j(cmd("json.forget", -2, WRITE, keys(1, 1, 1), del).summary("Deletes a value.")),
        j(cmd("json.type", -2, READONLY, keys(1, 1, 1), json_type).summary("Returns the type of the JSON value at path.")),
        j(cmd("json.clear", -2, WRITE, keys(1, 1, 1), clear).summary("Clears all values from an array or an object and sets numeric values to 0.")),
        j(cmd("json.toggle", 3, WRITE, keys(1, 1, 1), toggle).summary("Toggles a boolean value.")),
        j(cmd("json.strlen", -2, READONLY, keys(1, 1, 1), strlen).summary("Returns the length of the JSON string at path.")),
        j(cmd("json.strappend", -3, WRITE | DENYOOM, keys(1, 1, 1), strappend).summary("Appends a string to a JSON string value at path.")),
        j(cmd("json.numincrby", 4, WRITE, keys(1, 1, 1), numincrby).summary("Increments the numeric value at path by a value.")),
        j(cmd("json.nummultby", 4, WRITE, keys(1, 1, 1), nummultby).summary("Multiplies the numeric value at path by a value.")),
        j(cmd("json.arrappend", -3, WRITE | DENYOOM, keys(1, 1, 1), arrappend).summary("Appends one or more JSON values to the array at path.")),
        j(cmd("json.arrindex", -4, READONLY, keys(1, 1, 1), arrindex).summary("Returns the index of the first occurrence of a JSON scalar value in the array at path.")),
        j(cmd("json.arrinsert", -5, WRITE | DENYOOM, keys(1, 1, 1), arrinsert).summary("Inserts JSON values into the array at path before the index.")),
        j(cmd("json.arrlen", -2, READONLY, keys(1, 1, 1), arrlen).summary("Returns the length of the array at path.")),
        j(cmd("json.arrpop", -2, WRITE, keys(1, 1, 1), arrpop).summary("Removes and returns the element at the index in the array at path.")),
        j(cmd("json.arrtrim", 5, WRITE, keys(1, 1, 1), arrtrim).summary("Trims the array at path to contain only the given inclusive range of indexes.")),
        j(cmd("json.objkeys", -2, READONLY, keys(1, 1, 1), objkeys).summary("Returns the JSON keys of the object at path.")),
        j(cmd("json.objlen", -2, READONLY, keys(1, 1, 1), objlen).summary("Returns the number of keys of the object at path.")),
        j(cmd("json.resp", -2, READONLY, keys(1, 1, 1), resp).summary("Returns the JSON value at path in Redis Serialization Protocol (RESP).")),
    ]
}

// ---- helpers ---------------------------------------------------------------------

fn path_missing(p: &[u8]) -> CmdError {
    CmdError::raw(format!(
        "ERR Path '{}' does not exist",
        String::from_utf8_lossy(p)
    ))
}

fn wrong_type(expected: &str, found: &str) -> CmdError {
    CmdError::raw(format!(
        "WRONGTYPE wrong type of path value - expected {expected} but found {found}"
    ))
}

fn no_key() -> CmdError {
    CmdError::err("could not perform this operation on a key that doesn't exist")
}

fn parse_path(text: &[u8]) -> Result<JsonPath, CmdError> {
    JsonPath::parse(text).map_err(CmdError::Err)
}

fn parse_json(text: &[u8]) -> Result<JsonValue, CmdError> {
    JsonValue::parse(text).map_err(CmdError::Err)
}

/// Refuses a value that would nest deeper than [`MAX_DEPTH`] once stored `at`
/// levels below the root (keeps every later walk of the document shallow).
fn check_depth(at: usize, v: &JsonValue) -> Result<(), CmdError> {
    if at + v.depth() > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(())
}

fn too_deep() -> CmdError {
    CmdError::err(format!(
        "JSON document nesting would exceed the maximum depth of {MAX_DEPTH}"
    ))
}

fn bulk(s: String) -> Reply {
    Reply::Bulk(Bytes::from(s))
}

/// The optional path argument (the root when absent).
fn opt_path<'a>(args: &mut Args<'a>) -> Result<&'a [u8], CmdError> {
    Ok(match args.peek() {
        Some(_) => &args.next_bytes()?[..],
        None => b".",
    })
}

/// The document at `key` for reading: `Ok(None)` if absent, WRONGTYPE for another type.
fn read_doc<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c JsonValue>, CmdError> {
    let db = ctx.db();
    match ctx.ks.lookup_read(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Json(j),
            ..
        }) => Ok(Some(j)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The document at `key` for writing.
fn doc_mut<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c mut JsonValue>, CmdError> {
    let db = ctx.db();
    match ctx.ks.get_mut(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Json(j),
            ..
        }) => Ok(Some(j)),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn changed(ctx: &mut Ctx<'_>, key: &[u8], event: &'static str) {
    ctx.dirty(1);
    ctx.notify(notify::MODULE, event, key);
}

/// A read command's reply from `f` on each match (`None`: the wrong type).
fn per_match(
    path: &JsonPath,
    ptext: &[u8],
    doc: &JsonValue,
    expected: &str,
    f: impl Fn(&JsonValue) -> Option<Reply>,
) -> CmdResult {
    let matches = path.select(doc);
    if path.legacy {
        let (_, v) = matches.first().ok_or_else(|| path_missing(ptext))?;
        return f(v).ok_or_else(|| wrong_type(expected, v.type_name()));
    }
    Ok(Reply::Array(
        matches
            .iter()
            .map(|(_, v)| f(v).unwrap_or(Reply::Null))
            .collect(),
    ))
}

/// `COMMAND key [path]` readers: nil for a missing key.
fn read_cmd(
    ctx: &mut Ctx<'_>,
    args: &mut Args<'_>,
    expected: &str,
    f: impl Fn(&JsonValue) -> Option<Reply>,
) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = opt_path(args)?;
    args.finish()?;
    let path = parse_path(ptext)?;
    match read_doc(ctx, key)? {
        None => Ok(Reply::Null),
        Some(doc) => per_match(&path, ptext, doc, expected, f),
    }
}

/// Per-match results of a write: one entry per match (`None`: the wrong type).
struct Written {
    legacy: bool,
    results: Vec<Option<Reply>>,
}

impl Written {
    fn reply(self) -> Reply {
        if self.legacy {
            self.results
                .into_iter()
                .next()
                .flatten()
                .unwrap_or(Reply::Null)
        } else {
            Reply::Array(
                self.results
                    .into_iter()
                    .map(|r| r.unwrap_or(Reply::Null))
                    .collect(),
            )
        }
    }
}

/// Runs a write on each match of `path` (the first only for a legacy path).
/// `check` sees every target first (with its depth) and may refuse the whole
/// command before anything changes; `f` then applies the change and returns the
/// match's reply and whether it changed anything, or `None` for the wrong type.
/// `Ok(None)`: the key does not exist.
#[allow(clippy::too_many_arguments)]
fn write_each(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    path: &JsonPath,
    ptext: &[u8],
    expected: &str,
    event: &'static str,
    check: impl Fn(&JsonValue, usize) -> Result<(), CmdError>,
    mut f: impl FnMut(&mut JsonValue) -> Option<(Reply, bool)>,
) -> Result<Option<Written>, CmdError> {
    let Some(doc) = doc_mut(ctx, key)? else {
        return Ok(None);
    };
    let mut locs: Vec<Loc> = path.locations(doc);
    if path.legacy {
        if locs.is_empty() {
            return Err(path_missing(ptext));
        }
        locs.truncate(1);
    }
    for loc in &locs {
        if let Some(v) = get_mut(doc, loc) {
            check(v, loc.len())?;
        }
    }
    let mut results = Vec::with_capacity(locs.len());
    let mut any = false;
    for loc in &locs {
        let Some(v) = get_mut(doc, loc) else {
            results.push(None);
            continue;
        };
        let found = v.type_name();
        match f(v) {
            Some((r, c)) => {
                any |= c;
                results.push(Some(r));
            }
            None if path.legacy => return Err(wrong_type(expected, found)),
            None => results.push(None),
        }
    }
    if any {
        changed(ctx, key, event);
    }
    Ok(Some(Written {
        legacy: path.legacy,
        results,
    }))
}

/// The value a path selects, as JSON.GET prints it: the first match for a legacy
/// path, an array of all matches for JSONPath.
fn path_value(doc: &JsonValue, path: &JsonPath, ptext: &[u8]) -> Result<JsonValue, CmdError> {
    let matches = path.select(doc);
    if path.legacy {
        return matches
            .first()
            .map(|(_, v)| (*v).clone())
            .ok_or_else(|| path_missing(ptext));
    }
    Ok(JsonValue::Array(
        matches.into_iter().map(|(_, v)| v.clone()).collect(),
    ))
}

// ---- set / get -----------------------------------------------------------------

/// JSON.SET's effect; `Ok(false)` when NX/XX or a missing parent left it undone.
fn set_value(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    path: &JsonPath,
    value: JsonValue,
    nx: bool,
    xx: bool,
    event: &'static str,
) -> Result<bool, CmdError> {
    let db = ctx.db();
    match doc_mut(ctx, key)? {
        None => {
            if !path.is_root() {
                return Err(CmdError::err("new objects must be created at the root"));
            }
            if xx {
                return Ok(false);
            }
            check_depth(0, &value)?;
            ctx.ks.insert(
                db,
                Bytes::copy_from_slice(key),
                Entry::new(Value::Json(Box::new(value))),
            );
        }
        Some(doc) => {
            let locs = path.locations(doc);
            if !locs.is_empty() {
                if nx {
                    return Ok(false);
                }
                for loc in &locs {
                    check_depth(loc.len(), &value)?;
                }
                for loc in &locs {
                    if let Some(slot) = get_mut(doc, loc) {
                        *slot = value.clone();
                    }
                }
            } else {
                if xx {
                    return Ok(false);
                }
                let Some((parent, name)) = path.split_last_name() else {
                    return Ok(false);
                };
                let targets: Vec<Loc> = parent
                    .locations(doc)
                    .into_iter()
                    .filter(|l| matches!(get_mut(doc, l), Some(JsonValue::Object(_))))
                    .collect();
                if targets.is_empty() {
                    return Ok(false);
                }
                for l in &targets {
                    check_depth(l.len() + 1, &value)?;
                }
                for l in &targets {
                    if let Some(JsonValue::Object(o)) = get_mut(doc, l) {
                        o.insert(name.to_string(), value.clone());
                    }
                }
            }
        }
    }
    changed(ctx, key, event);
    Ok(true)
}

fn set(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = args.next_bytes()?;
    let vtext = args.next_bytes()?;
    let (mut nx, mut xx) = (false, false);
    while !args.is_empty() {
        if args.flag("NX") {
            nx = true;
        } else if args.flag("XX") {
            xx = true;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if nx && xx {
        return Err(CmdError::Syntax);
    }
    let path = parse_path(ptext)?;
    let value = parse_json(vtext)?;
    Ok(if set_value(ctx, key, &path, value, nx, xx, "json.set")? {
        Reply::ok()
    } else {
        Reply::Null
    })
}

fn utf8(b: &[u8]) -> Result<&str, CmdError> {
    std::str::from_utf8(b).map_err(|_| CmdError::Syntax)
}

fn get(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let (mut indent, mut newline, mut space) = ("", "", "");
    let mut paths: Vec<&[u8]> = Vec::new();
    while let Some(a) = args.peek() {
        if a.eq_ignore_ascii_case(b"INDENT") {
            args.next_bytes()?;
            indent = utf8(args.next_bytes()?)?;
        } else if a.eq_ignore_ascii_case(b"NEWLINE") {
            args.next_bytes()?;
            newline = utf8(args.next_bytes()?)?;
        } else if a.eq_ignore_ascii_case(b"SPACE") {
            args.next_bytes()?;
            space = utf8(args.next_bytes()?)?;
        } else if a.eq_ignore_ascii_case(b"NOESCAPE") {
            // Accepted and ignored, as RedisJSON 2.x does.
            args.next_bytes()?;
        } else {
            paths.push(args.next_bytes()?);
        }
    }
    let fmt = Format {
        indent,
        newline,
        space,
    };
    let parsed = paths
        .iter()
        .map(|p| parse_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(doc) = read_doc(ctx, key)? else {
        return Ok(Reply::Null);
    };
    let out = match parsed.len() {
        0 => doc.to_text_with(&fmt),
        1 => path_value(doc, &parsed[0], paths[0])?.to_text_with(&fmt),
        _ => {
            // Any JSONPath among them makes every answer an array of matches.
            let legacy = parsed.iter().all(|p| p.legacy);
            let mut obj = IndexMap::new();
            for (p, t) in parsed.iter().zip(&paths) {
                let v = if legacy {
                    path_value(doc, p, t)?
                } else {
                    JsonValue::Array(p.select(doc).into_iter().map(|(_, v)| v.clone()).collect())
                };
                obj.insert(String::from_utf8_lossy(t).into_owned(), v);
            }
            JsonValue::Object(obj).to_text_with(&fmt)
        }
    };
    Ok(bulk(out))
}

fn mget(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let all = args.rest();
    let Some((ptext, keys)) = all.split_last() else {
        return Err(CmdError::Syntax);
    };
    let path = parse_path(ptext)?;
    let (db, now) = (ctx.db(), ctx.now);
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let reply = match ctx.ks.lookup_read(db, key, now) {
            Some(Entry {
                value: Value::Json(doc),
                ..
            }) => path_value(doc, &path, ptext).map_or(Reply::Null, |v| bulk(v.to_text())),
            _ => Reply::Null,
        };
        out.push(reply);
    }
    Ok(Reply::Array(out))
}

fn mset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let rest = args.rest();
    if rest.is_empty() || !rest.len().is_multiple_of(3) {
        return Err(CmdError::WrongArity(ctx.cmd.full_name.clone()));
    }
    // Everything is parsed and checked before the first key changes.
    let mut triples = Vec::with_capacity(rest.len() / 3);
    let mut known: HashSet<&[u8]> = HashSet::new();
    for t in rest.chunks(3) {
        let path = parse_path(&t[1])?;
        let value = parse_json(&t[2])?;
        let exists = known.contains(&t[0][..]) || read_doc(ctx, &t[0])?.is_some();
        if !exists && !path.is_root() {
            return Err(CmdError::err("new objects must be created at the root"));
        }
        known.insert(&t[0][..]);
        triples.push((&t[0], path, value));
    }
    for (key, path, value) in triples {
        set_value(ctx, key, &path, value, false, false, "json.mset")?;
    }
    Ok(Reply::ok())
}

fn merge(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = args.next_bytes()?;
    let path = parse_path(ptext)?;
    let patch = parse_json(args.next_bytes()?)?;
    let db = ctx.db();
    let mut delete_key = false;
    let mut done = false;
    match doc_mut(ctx, key)? {
        None => {
            if !path.is_root() {
                return Err(CmdError::err("new objects must be created at the root"));
            }
            check_depth(0, &patch)?;
            let mut v = JsonValue::Null;
            v.merge(patch);
            ctx.ks.insert(
                db,
                Bytes::copy_from_slice(key),
                Entry::new(Value::Json(Box::new(v))),
            );
            done = true;
        }
        Some(doc) => {
            let locs = path.locations(doc);
            if locs.is_empty() {
                // A missing last key is added under each matching parent object.
                if let (Some((parent, name)), false) =
                    (path.split_last_name(), matches!(patch, JsonValue::Null))
                {
                    let targets: Vec<Loc> = parent
                        .locations(doc)
                        .into_iter()
                        .filter(|l| matches!(get_mut(doc, l), Some(JsonValue::Object(_))))
                        .collect();
                    for l in &targets {
                        check_depth(l.len() + 1, &patch)?;
                    }
                    for l in &targets {
                        if let Some(JsonValue::Object(o)) = get_mut(doc, l) {
                            let mut v = JsonValue::Null;
                            v.merge(patch.clone());
                            o.insert(name.to_string(), v);
                            done = true;
                        }
                    }
                }
            } else if matches!(patch, JsonValue::Null) {
                // Merging null removes the target (the whole key at the root).
                if locs.iter().any(|l| l.is_empty()) {
                    delete_key = true;
                } else {
                    done = remove_all(doc, locs) > 0;
                }
            } else {
                for l in &locs {
                    check_depth(l.len(), &patch)?;
                }
                for l in &locs {
                    if let Some(v) = get_mut(doc, l) {
                        v.merge(patch.clone());
                        done = true;
                    }
                }
            }
        }
    }
    if delete_key {
        ctx.ks.remove(db, key);
        done = true;
    }
    if done {
        changed(ctx, key, "json.merge");
    }
    Ok(Reply::ok())
}

// ---- delete / type / clear -------------------------------------------------------

fn del(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = opt_path(args)?;
    args.finish()?;
    let path = parse_path(ptext)?;
    let db = ctx.db();
    let n = match doc_mut(ctx, key)? {
        None => 0,
        Some(_) if path.is_root() => {
            ctx.ks.remove(db, key);
            1
        }
        Some(doc) => {
            let locs = path.locations(doc);
            remove_all(doc, locs)
        }
    };
    if n > 0 {
        changed(ctx, key, "json.del");
    }
    Ok(Reply::Int(n as i64))
}

fn json_type(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = opt_path(args)?;
    args.finish()?;
    let path = parse_path(ptext)?;
    let Some(doc) = read_doc(ctx, key)? else {
        return Ok(Reply::Null);
    };
    let matches = path.select(doc);
    Ok(if path.legacy {
        matches
            .first()
            .map_or(Reply::Null, |(_, v)| Reply::Status(v.type_name()))
    } else {
        Reply::Array(
            matches
                .iter()
                .map(|(_, v)| bulk(v.type_name().to_string()))
                .collect(),
        )
    })
}

fn clear(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = opt_path(args)?;
    args.finish()?;
    let path = parse_path(ptext)?;
    let Some(doc) = doc_mut(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let mut n = 0;
    for loc in path.locations(doc) {
        match get_mut(doc, &loc) {
            Some(JsonValue::Array(a)) => {
                a.clear();
                n += 1;
            }
            Some(JsonValue::Object(o)) => {
                o.clear();
                n += 1;
            }
            Some(v @ (JsonValue::Int(_) | JsonValue::Float(_))) => {
                *v = JsonValue::Int(0);
                n += 1;
            }
            _ => {}
        }
    }
    if n > 0 {
        changed(ctx, key, "json.clear");
    }
    Ok(Reply::Int(n))
}

// ---- scalars ---------------------------------------------------------------------

fn toggle(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = args.next_bytes()?;
    let path = parse_path(ptext)?;
    let legacy = path.legacy;
    let written = write_each(
        ctx,
        key,
        &path,
        ptext,
        "boolean",
        "json.toggle",
        |_, _| Ok(()),
        |v| match v {
            JsonValue::Bool(b) => {
                *b = !*b;
                let r = if legacy {
                    bulk(b.to_string())
                } else {
                    Reply::Int(*b as i64)
                };
                Some((r, true))
            }
            _ => None,
        },
    )?;
    written.map(Written::reply).ok_or_else(no_key)
}

fn strlen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    read_cmd(ctx, args, "string", |v| match v {
        JsonValue::Str(s) => Some(Reply::Int(s.len() as i64)),
        _ => None,
    })
}

fn strappend(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext: &[u8] = if args.remaining() >= 2 {
        args.next_bytes()?
    } else {
        b"."
    };
    let vtext = args.next_bytes()?;
    args.finish()?;
    let path = parse_path(ptext)?;
    let suffix = match parse_json(vtext)? {
        JsonValue::Str(s) => s,
        other => return Err(wrong_type("string", other.type_name())),
    };
    let written = write_each(
        ctx,
        key,
        &path,
        ptext,
        "string",
        "json.strappend",
        |_, _| Ok(()),
        |v| match v {
            JsonValue::Str(s) => {
                s.push_str(&suffix);
                Some((Reply::Int(s.len() as i64), !suffix.is_empty()))
            }
            _ => None,
        },
    )?;
    written.map(Written::reply).ok_or_else(no_key)
}

/// `a + b` or `a * b`: integers stay integers unless they overflow; `None` for
/// a result that is not a finite number.
fn arith(a: &JsonValue, b: &JsonValue, mul: bool) -> Option<JsonValue> {
    if let (JsonValue::Int(x), JsonValue::Int(y)) = (a, b) {
        let r = if mul {
            x.checked_mul(*y)
        } else {
            x.checked_add(*y)
        };
        if let Some(r) = r {
            return Some(JsonValue::Int(r));
        }
    }
    let (x, y) = (a.as_f64()?, b.as_f64()?);
    let r = if mul { x * y } else { x + y };
    r.is_finite().then_some(JsonValue::Float(r))
}

fn num_op(ctx: &mut Ctx<'_>, args: &mut Args<'_>, mul: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = args.next_bytes()?;
    let path = parse_path(ptext)?;
    let by = parse_json(args.next_bytes()?)?;
    if by.as_f64().is_none() {
        return Err(CmdError::err("expected a number argument"));
    }
    let event = if mul {
        "json.nummultby"
    } else {
        "json.numincrby"
    };
    let written = write_each(
        ctx,
        key,
        &path,
        ptext,
        "a number",
        event,
        |v, _| match v {
            JsonValue::Int(_) | JsonValue::Float(_) if arith(v, &by, mul).is_none() => {
                Err(CmdError::err("result is not a finite number"))
            }
            _ => Ok(()),
        },
        |v| {
            let r = arith(v, &by, mul)?;
            let text = r.to_text();
            *v = r;
            Some((bulk(text), true))
        },
    )?
    .ok_or_else(no_key)?;
    if written.legacy {
        return Ok(written.reply());
    }
    // JSONPath: one bulk string holding the JSON array of results.
    let items: Vec<String> = written
        .results
        .into_iter()
        .map(|r| match r {
            Some(Reply::Bulk(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => "null".to_string(),
        })
        .collect();
    Ok(bulk(format!("[{}]", items.join(","))))
}

fn numincrby(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    num_op(ctx, args, false)
}

fn nummultby(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    num_op(ctx, args, true)
}

// ---- arrays ----------------------------------------------------------------------

fn parse_values(texts: &[Bytes]) -> Result<Vec<JsonValue>, CmdError> {
    texts.iter().map(|t| parse_json(t)).collect()
}

fn max_depth(values: &[JsonValue]) -> usize {
    values.iter().map(|v| v.depth()).max().unwrap_or(0)
}

fn arrappend(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let rest = args.rest();
    let (ptext, texts): (&[u8], &[Bytes]) = match rest {
        [only] => (b".", std::slice::from_ref(only)),
        [p, values @ ..] => (&p[..], values),
        [] => return Err(CmdError::Syntax),
    };
    let path = parse_path(ptext)?;
    let values = parse_values(texts)?;
    let depth = max_depth(&values);
    let written = write_each(
        ctx,
        key,
        &path,
        ptext,
        "array",
        "json.arrappend",
        |v, at| match v {
            JsonValue::Array(_) if at + 1 + depth > MAX_DEPTH => Err(too_deep()),
            _ => Ok(()),
        },
        |v| match v {
            JsonValue::Array(a) => {
                a.extend(values.iter().cloned());
                Some((Reply::Int(a.len() as i64), true))
            }
            _ => None,
        },
    )?;
    written.map(Written::reply).ok_or_else(no_key)
}

fn arrindex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = args.next_bytes()?;
    let needle = parse_json(args.next_bytes()?)?;
    let start = if args.is_empty() { 0 } else { args.next_i64()? };
    let stop = if args.is_empty() { 0 } else { args.next_i64()? };
    args.finish()?;
    let path = parse_path(ptext)?;
    let Some(doc) = read_doc(ctx, key)? else {
        return Err(no_key());
    };
    per_match(&path, ptext, doc, "array", |v| match v {
        JsonValue::Array(a) => {
            let len = a.len() as i64;
            let s = if start < 0 {
                (len + start).max(0)
            } else {
                start.min(len)
            };
            let e = match stop {
                0 => len,
                e if e < 0 => (len + e).max(0),
                e => e.min(len),
            };
            let found = (s < e)
                .then(|| {
                    a[s as usize..e as usize]
                        .iter()
                        .position(|x| json_eq(x, &needle))
                })
                .flatten()
                .map_or(-1, |p| p as i64 + s);
            Some(Reply::Int(found))
        }
        _ => None,
    })
}

fn arrinsert(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = args.next_bytes()?;
    let index = args.next_i64()?;
    let values = parse_values(args.rest())?;
    let path = parse_path(ptext)?;
    let depth = max_depth(&values);
    let at = |len: usize| -> Option<usize> {
        let len = len as i64;
        let i = if index < 0 { len + index } else { index };
        (0..=len).contains(&i).then_some(i as usize)
    };
    let written = write_each(
        ctx,
        key,
        &path,
        ptext,
        "array",
        "json.arrinsert",
        |v, d| match v {
            JsonValue::Array(a) => {
                if at(a.len()).is_none() {
                    return Err(CmdError::err("index out of bounds"));
                }
                if d + 1 + depth > MAX_DEPTH {
                    return Err(too_deep());
                }
                Ok(())
            }
            _ => Ok(()),
        },
        |v| match v {
            JsonValue::Array(a) => {
                let i = at(a.len())?;
                a.splice(i..i, values.iter().cloned());
                Some((Reply::Int(a.len() as i64), true))
            }
            _ => None,
        },
    )?;
    written.map(Written::reply).ok_or_else(no_key)
}

fn arrlen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    read_cmd(ctx, args, "array", |v| match v {
        JsonValue::Array(a) => Some(Reply::Int(a.len() as i64)),
        _ => None,
    })
}

fn arrpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = opt_path(args)?;
    let index = if args.is_empty() {
        -1
    } else {
        args.next_i64()?
    };
    args.finish()?;
    let path = parse_path(ptext)?;
    let written = write_each(
        ctx,
        key,
        &path,
        ptext,
        "array",
        "json.arrpop",
        |_, _| Ok(()),
        |v| match v {
            JsonValue::Array(a) if a.is_empty() => Some((Reply::Null, false)),
            JsonValue::Array(a) => {
                let len = a.len() as i64;
                let i = if index < 0 {
                    (len + index).max(0)
                } else {
                    index.min(len - 1)
                };
                let popped = a.remove(i as usize);
                Some((bulk(popped.to_text()), true))
            }
            _ => None,
        },
    )?;
    Ok(written.map_or(Reply::Null, Written::reply))
}

fn arrtrim(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let ptext = args.next_bytes()?;
    let start = args.next_i64()?;
    let stop = args.next_i64()?;
    let path = parse_path(ptext)?;
    let written = write_each(
        ctx,
        key,
        &path,
        ptext,
        "array",
        "json.arrtrim",
        |_, _| Ok(()),
        |v| match v {
            JsonValue::Array(a) => {
                let len = a.len() as i64;
                let s = if start < 0 {
                    (len + start).max(0)
                } else {
                    start
                };
                let e = if stop < 0 {
                    len + stop
                } else {
                    stop.min(len - 1)
                };
                let before = a.len();
                if s >= len || s > e {
                    a.clear();
                } else {
                    a.truncate(e as usize + 1);
                    a.drain(..s as usize);
                }
                Some((Reply::Int(a.len() as i64), a.len() != before))
            }
            _ => None,
        },
    )?;
    written.map(Written::reply).ok_or_else(no_key)
}

// ---- objects and RESP ------------------------------------------------------------

fn objkeys(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    read_cmd(ctx, args, "object", |v| match v {
        JsonValue::Object(o) => Some(Reply::Array(
            o.keys()
                .map(|k| Reply::Bulk(Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
        )),
        _ => None,
    })
}

fn objlen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    read_cmd(ctx, args, "object", |v| match v {
        JsonValue::Object(o) => Some(Reply::Int(o.len() as i64)),
        _ => None,
    })
}

fn resp(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    read_cmd(ctx, args, "any", |v| Some(v.to_resp()))
}

#[cfg(test)]
mod tests {
    use crate::testkit::{bulk, bulks, int, ok, TestClient};
    use crate::value::Value;
    use tidewire_resp::Reply;

    fn setup(t: &mut TestClient, doc: &str) {
        assert_eq!(t.run(&["JSON.SET", "doc", "$", doc]), ok());
    }

    fn err_of(t: &mut TestClient, args: &[&str]) -> String {
        match t.run(args) {
            Reply::Error(e) => e,
            other => panic!("expected an error from {args:?}, got {other:?}"),
        }
    }

    fn ints(v: &[Option<i64>]) -> Reply {
        Reply::Array(v.iter().map(|i| i.map_or(Reply::Null, int)).collect())
    }

    #[test]
    fn set_and_get_with_both_path_syntaxes() {
        let mut t = TestClient::new();
        setup(&mut t, r#"{"a":2,"b":3,"nested":{"a":4,"b":null}}"#);
        assert_eq!(t.run(&["JSON.GET", "doc", "$..b"]), bulk("[null,3]"));
        assert_eq!(t.run(&["JSON.GET", "doc", ".nested.a"]), bulk("4"));
        assert_eq!(
            t.run(&["JSON.GET", "doc", "nested"]),
            bulk(r#"{"a":4,"b":null}"#)
        );
        let both = t.run(&["JSON.GET", "doc", "..a", "$..b"]);
        assert_eq!(both, bulk(r#"{"..a":[4,2],"$..b":[null,3]}"#));
        assert_eq!(
            t.run(&["JSON.GET", "doc", ".a", ".b"]),
            bulk(r#"{".a":2,".b":3}"#)
        );
        assert_eq!(t.run(&["JSON.GET", "doc", "$.nope"]), bulk("[]"));
        assert_eq!(
            err_of(&mut t, &["JSON.GET", "doc", ".nope"]),
            "ERR Path '.nope' does not exist"
        );
        assert_eq!(t.run(&["JSON.GET", "missing"]), Reply::Null);
        // Replace, add, multi-path update.
        assert_eq!(t.run(&["JSON.SET", "doc", "$.a", "3"]), ok());
        assert_eq!(t.run(&["JSON.SET", "doc", "$.c", "[1,2.5]"]), ok());
        assert_eq!(t.run(&["JSON.SET", "doc", "$..a", "7"]), ok());
        assert_eq!(
            t.run(&["JSON.GET", "doc"]),
            bulk(r#"{"a":7,"b":3,"nested":{"a":7,"b":null},"c":[1,2.5]}"#)
        );
        // A missing parent: nothing set.
        assert_eq!(t.run(&["JSON.SET", "doc", "$.x.y", "1"]), Reply::Null);
        assert_eq!(
            err_of(&mut t, &["JSON.SET", "new", "$.a", "1"]),
            "ERR new objects must be created at the root"
        );
        assert!(err_of(&mut t, &["JSON.SET", "new", "$", "{bad"]).starts_with("ERR "));
        assert!(err_of(&mut t, &["JSON.SET", "doc", "$[", "1"]).starts_with("ERR "));
        t.run(&["SET", "str", "x"]);
        assert!(err_of(&mut t, &["JSON.GET", "str"]).starts_with("WRONGTYPE"));
        assert!(err_of(&mut t, &["JSON.SET", "str", "$", "1"]).starts_with("WRONGTYPE"));
    }

    #[test]
    fn set_nx_xx_and_type_of_key() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["JSON.SET", "k", "$", "{}", "XX"]), Reply::Null);
        assert_eq!(t.run(&["JSON.SET", "k", ".", "{}", "NX"]), ok());
        assert_eq!(t.run(&["JSON.SET", "k", "$", "{}", "NX"]), Reply::Null);
        assert_eq!(t.run(&["JSON.SET", "k", "$.a", "1", "XX"]), Reply::Null);
        assert_eq!(t.run(&["JSON.SET", "k", "$.a", "1", "NX"]), ok());
        assert_eq!(t.run(&["JSON.SET", "k", "$.a", "2", "NX"]), Reply::Null);
        assert_eq!(t.run(&["JSON.SET", "k", "$.a", "2", "XX"]), ok());
        assert_eq!(t.run(&["JSON.GET", "k"]), bulk(r#"{"a":2}"#));
        assert_eq!(t.run(&["TYPE", "k"]), Reply::Status("ReJSON-RL"));
        assert_eq!(t.run(&["OBJECT", "ENCODING", "k"]), bulk("raw"));
        let e = err_of(&mut t, &["JSON.SET", "k", "$", "1", "NX", "XX"]);
        assert!(e.starts_with("ERR syntax"), "{e}");
    }

    #[test]
    fn get_formatting() {
        let mut t = TestClient::new();
        setup(&mut t, r#"{"a":[1,{"b":true}]}"#);
        assert_eq!(
            t.run(&["JSON.GET", "doc", "INDENT", "  ", "NEWLINE", "\n", "SPACE", " ", "$"]),
            bulk("[\n  {\n    \"a\": [\n      1,\n      {\n        \"b\": true\n      }\n    ]\n  }\n]")
        );
    }

    #[test]
    fn mget_and_mset() {
        let mut t = TestClient::new();
        assert_eq!(
            t.run(&[
                "JSON.MSET",
                "doc1",
                "$",
                r#"{"a":1,"b":2,"nested":{"a":3},"c":null}"#,
                "doc2",
                "$",
                r#"{"a":4,"b":5,"nested":{"a":6},"c":null}"#,
            ]),
            ok()
        );
        assert_eq!(
            t.run(&["JSON.MGET", "doc1", "doc2", "nope", "$..a"]),
            Reply::Array(vec![bulk("[3,1]"), bulk("[6,4]"), Reply::Null])
        );
        assert_eq!(
            t.run(&["JSON.MGET", "doc1", "doc2", ".b"]),
            bulks(&["2", "5"])
        );
        assert_eq!(
            t.run(&["JSON.MSET", "doc1", "$..a", "0", "doc3", "$", "[]"]),
            ok()
        );
        assert_eq!(t.run(&["JSON.GET", "doc1", "$..a"]), bulk("[0,0]"));
        // Checked before anything changes.
        let e = err_of(
            &mut t,
            &["JSON.MSET", "doc1", "$", "1", "fresh", "$.a", "1"],
        );
        assert_eq!(e, "ERR new objects must be created at the root");
        assert_eq!(t.run(&["JSON.GET", "doc1", "$.b"]), bulk("[2]"));
        let e = err_of(&mut t, &["JSON.MSET", "doc1", "$"]);
        assert!(e.contains("wrong number of arguments"), "{e}");
    }

    #[test]
    fn merge_patches() {
        let mut t = TestClient::new();
        setup(&mut t, r#"{"a":2}"#);
        assert_eq!(t.run(&["JSON.MERGE", "doc", "$.b", "8"]), ok());
        assert_eq!(t.run(&["JSON.MERGE", "doc", "$.a", "3"]), ok());
        assert_eq!(t.run(&["JSON.GET", "doc"]), bulk(r#"{"a":3,"b":8}"#));
        assert_eq!(t.run(&["JSON.MERGE", "doc", "$", r#"{"a":null}"#]), ok());
        assert_eq!(t.run(&["JSON.GET", "doc"]), bulk(r#"{"b":8}"#));
        setup(&mut t, r#"{"f1":{"a":1},"f2":{"a":2}}"#);
        let patch = r#"{"f1":null,"f2":{"a":3,"b":4},"f3":[2,4,6]}"#;
        assert_eq!(t.run(&["JSON.MERGE", "doc", "$", patch]), ok());
        assert_eq!(
            t.run(&["JSON.GET", "doc", "$"]),
            bulk(r#"[{"f2":{"a":3,"b":4},"f3":[2,4,6]}]"#)
        );
        assert_eq!(
            t.run(&["JSON.MERGE", "fresh", "$", r#"{"x":null,"y":1}"#]),
            ok()
        );
        assert_eq!(t.run(&["JSON.GET", "fresh"]), bulk(r#"{"y":1}"#));
    }

    #[test]
    fn del_forget_type_clear() {
        let mut t = TestClient::new();
        setup(&mut t, r#"{"a":1,"nested":{"a":2,"b":3}}"#);
        assert_eq!(t.run(&["JSON.DEL", "doc", "$..a"]), int(2));
        assert_eq!(
            t.run(&["JSON.GET", "doc", "$"]),
            bulk(r#"[{"nested":{"b":3}}]"#)
        );
        assert_eq!(t.run(&["JSON.FORGET", "doc", ".nested.b"]), int(1));
        assert_eq!(t.run(&["JSON.DEL", "doc", ".nested.b"]), int(0));
        assert_eq!(t.run(&["JSON.DEL", "doc"]), int(1));
        assert_eq!(t.run(&["EXISTS", "doc"]), int(0));
        assert_eq!(t.run(&["JSON.DEL", "doc"]), int(0));

        setup(
            &mut t,
            r#"{"a":2,"nested":{"a":true},"foo":"bar","f":1.5,"n":null}"#,
        );
        assert_eq!(
            t.run(&["JSON.TYPE", "doc", "$..a"]),
            bulks(&["boolean", "integer"])
        );
        assert_eq!(
            t.run(&["JSON.TYPE", "doc", ".foo"]),
            Reply::Status("string")
        );
        assert_eq!(t.run(&["JSON.TYPE", "doc"]), Reply::Status("object"));
        assert_eq!(t.run(&["JSON.TYPE", "doc", "$.f"]), bulks(&["number"]));
        assert_eq!(t.run(&["JSON.TYPE", "doc", "$.n"]), bulks(&["null"]));
        assert_eq!(t.run(&["JSON.TYPE", "nope"]), Reply::Null);

        setup(
            &mut t,
            r#"{"obj":{"a":1,"b":2},"arr":[1,2,3],"str":"foo","bool":true,"int":42,"float":3.14}"#,
        );
        assert_eq!(t.run(&["JSON.CLEAR", "doc", "$.*"]), int(4));
        assert_eq!(
            t.run(&["JSON.GET", "doc"]),
            bulk(r#"{"obj":{},"arr":[],"str":"foo","bool":true,"int":0,"float":0}"#)
        );
        assert_eq!(t.run(&["JSON.CLEAR", "doc"]), int(1));
        assert_eq!(t.run(&["JSON.GET", "doc"]), bulk("{}"));
        assert_eq!(t.run(&["JSON.CLEAR", "nope"]), int(0));
    }

    #[test]
    fn toggle_strings_and_numbers() {
        let mut t = TestClient::new();
        setup(&mut t, r#"{"bool":true,"n":1}"#);
        assert_eq!(t.run(&["JSON.TOGGLE", "doc", "$.bool"]), ints(&[Some(0)]));
        assert_eq!(t.run(&["JSON.TOGGLE", "doc", "$.n"]), ints(&[None]));
        assert_eq!(t.run(&["JSON.TOGGLE", "doc", ".bool"]), bulk("true"));
        assert_eq!(
            err_of(&mut t, &["JSON.TOGGLE", "doc", ".n"]),
            "WRONGTYPE wrong type of path value - expected boolean but found integer"
        );
        assert!(err_of(&mut t, &["JSON.TOGGLE", "nope", "$"]).contains("doesn't exist"));

        setup(
            &mut t,
            r#"{"a":"foo","nested":{"a":"hello"},"nested2":{"a":31}}"#,
        );
        assert_eq!(
            t.run(&["JSON.STRLEN", "doc", "$..a"]),
            ints(&[Some(5), None, Some(3)])
        );
        assert_eq!(
            t.run(&["JSON.STRAPPEND", "doc", "$..a", "\"baz\""]),
            ints(&[Some(8), None, Some(6)])
        );
        assert_eq!(t.run(&["JSON.STRLEN", "doc", ".a"]), int(6));
        assert_eq!(t.run(&["JSON.STRAPPEND", "doc", ".a", "\"!\""]), int(7));
        assert!(err_of(&mut t, &["JSON.STRAPPEND", "doc", ".a", "1"]).starts_with("WRONGTYPE"));
        assert_eq!(t.run(&["JSON.STRLEN", "nope"]), Reply::Null);
        setup(&mut t, "\"abc\"");
        assert_eq!(t.run(&["JSON.STRAPPEND", "doc", "\"de\""]), int(5));
        assert_eq!(t.run(&["JSON.STRLEN", "doc"]), int(5));

        setup(&mut t, r#"{"a":"b","b":[{"a":2},{"a":5},{"a":"c"}]}"#);
        assert_eq!(
            t.run(&["JSON.NUMINCRBY", "doc", "$.a", "2"]),
            bulk("[null]")
        );
        assert_eq!(
            t.run(&["JSON.NUMINCRBY", "doc", "$..a", "2"]),
            bulk("[4,7,null,null]")
        );
        assert_eq!(
            t.run(&["JSON.NUMMULTBY", "doc", "$..a", "2"]),
            bulk("[8,14,null,null]")
        );
        assert_eq!(
            t.run(&["JSON.NUMINCRBY", "doc", ".b[0].a", "1.5"]),
            bulk("9.5")
        );
        assert_eq!(
            t.run(&["JSON.NUMMULTBY", "doc", ".b[1].a", "0.5"]),
            bulk("7.0")
        );
        assert_eq!(
            err_of(&mut t, &["JSON.NUMINCRBY", "doc", ".a", "1"]),
            "WRONGTYPE wrong type of path value - expected a number but found string"
        );
        assert!(err_of(&mut t, &["JSON.NUMINCRBY", "doc", ".b[0].a", "x"]).starts_with("ERR"));
        setup(&mut t, "1");
        assert_eq!(t.run(&["JSON.NUMINCRBY", "doc", "$", "2"]), bulk("[3]"));
        assert_eq!(t.run(&["JSON.NUMINCRBY", "doc", ".", "1.5"]), bulk("4.5"));
        setup(&mut t, "1e308");
        assert!(err_of(&mut t, &["JSON.NUMMULTBY", "doc", "$", "10"]).starts_with("ERR"));
        assert_eq!(t.run(&["JSON.GET", "doc"]), bulk("1e+308"));
    }

    #[test]
    fn arrays() {
        let mut t = TestClient::new();
        setup(
            &mut t,
            r#"{"colors":["black","silver"],"max_level":[80,90,100,120]}"#,
        );
        assert_eq!(
            t.run(&["JSON.ARRAPPEND", "doc", "$.colors", "\"blue\""]),
            ints(&[Some(3)])
        );
        assert_eq!(
            t.run(&[
                "JSON.ARRINSERT",
                "doc",
                "$.colors",
                "2",
                "\"yellow\"",
                "\"gold\""
            ]),
            ints(&[Some(5)])
        );
        assert_eq!(
            t.run(&["JSON.GET", "doc", "$.colors"]),
            bulk(r#"[["black","silver","yellow","gold","blue"]]"#)
        );
        assert_eq!(
            t.run(&["JSON.ARRINDEX", "doc", "$..colors", "\"silver\""]),
            ints(&[Some(1)])
        );
        assert_eq!(
            t.run(&["JSON.ARRINDEX", "doc", ".colors", "\"silver\"", "2"]),
            int(-1)
        );
        assert_eq!(
            t.run(&["JSON.ARRINDEX", "doc", ".colors", "\"blue\"", "0", "-1"]),
            int(-1)
        );
        assert_eq!(
            t.run(&["JSON.ARRINDEX", "doc", ".colors", "\"blue\"", "-1"]),
            int(4)
        );
        assert_eq!(
            t.run(&["JSON.ARRLEN", "doc", "$.max_level"]),
            ints(&[Some(4)])
        );
        assert_eq!(
            t.run(&["JSON.ARRLEN", "doc", "$.*"]),
            ints(&[Some(5), Some(4)])
        );
        assert_eq!(t.run(&["JSON.ARRLEN", "doc", ".max_level"]), int(4));
        assert_eq!(
            t.run(&["JSON.ARRPOP", "doc", "$.max_level", "0"]),
            Reply::Array(vec![bulk("80")])
        );
        assert_eq!(t.run(&["JSON.ARRPOP", "doc", ".max_level"]), bulk("120"));
        assert_eq!(
            t.run(&["JSON.ARRPOP", "doc", ".max_level", "99"]),
            bulk("100")
        );
        assert_eq!(t.run(&["JSON.GET", "doc", "$.max_level"]), bulk("[[90]]"));
        assert_eq!(
            err_of(&mut t, &["JSON.ARRINSERT", "doc", ".colors", "9", "1"]),
            "ERR index out of bounds"
        );
        assert_eq!(
            t.run(&["JSON.ARRINSERT", "doc", ".colors", "-1", "1"]),
            int(6)
        );
        assert_eq!(
            t.run(&["JSON.GET", "doc", ".colors"]),
            bulk(r#"["black","silver","yellow","gold",1,"blue"]"#)
        );
        assert_eq!(
            t.run(&["JSON.ARRTRIM", "doc", "$.colors", "1", "2"]),
            ints(&[Some(2)])
        );
        assert_eq!(
            t.run(&["JSON.GET", "doc", ".colors"]),
            bulk(r#"["silver","yellow"]"#)
        );
        assert_eq!(t.run(&["JSON.ARRTRIM", "doc", ".colors", "5", "9"]), int(0));
        assert_eq!(
            err_of(&mut t, &["JSON.ARRAPPEND", "doc", ".max_level[0]", "1"]),
            "WRONGTYPE wrong type of path value - expected array but found integer"
        );
        assert_eq!(t.run(&["JSON.ARRLEN", "nope"]), Reply::Null);
        assert_eq!(t.run(&["JSON.ARRPOP", "nope"]), Reply::Null);
        // ARRPOP on empty arrays and on non-arrays.
        setup(&mut t, r#"[[],["a"],["a","b"]]"#);
        assert_eq!(
            t.run(&["JSON.ARRPOP", "doc", "$[*]"]),
            Reply::Array(vec![Reply::Null, bulk("\"a\""), bulk("\"b\"")])
        );
        assert_eq!(t.run(&["JSON.ARRPOP", "doc"]), bulk(r#"["a"]"#));
        assert_eq!(t.run(&["JSON.ARRAPPEND", "doc", "[1,2]"]), int(3));
        setup(&mut t, r#"{"a":[1]}"#);
        assert_eq!(
            t.run(&["JSON.ARRAPPEND", "doc", "$.a", "2"]),
            ints(&[Some(2)])
        );
        assert_eq!(
            t.run(&["JSON.ARRTRIM", "doc", "$.a", "1", "1"]),
            ints(&[Some(1)])
        );
        assert_eq!(t.run(&["JSON.GET", "doc", "$.a"]), bulk("[[2]]"));
        setup(&mut t, "[1,2,3,4,5]");
        assert_eq!(t.run(&["JSON.GET", "doc", "$[?(@>2)]"]), bulk("[3,4,5]"));
        assert_eq!(t.run(&["JSON.DEL", "doc", "$[?(@>2)]"]), int(3));
        assert_eq!(t.run(&["JSON.GET", "doc"]), bulk("[1,2]"));
    }

    #[test]
    fn objects_and_resp() {
        let mut t = TestClient::new();
        setup(&mut t, r#"{"a":[3],"nested":{"a":{"b":2,"c":1}}}"#);
        assert_eq!(
            t.run(&["JSON.OBJKEYS", "doc", "$..a"]),
            Reply::Array(vec![bulks(&["b", "c"]), Reply::Null])
        );
        assert_eq!(
            t.run(&["JSON.OBJLEN", "doc", "$..a"]),
            ints(&[Some(2), None])
        );
        assert_eq!(t.run(&["JSON.OBJLEN", "doc"]), int(2));
        assert_eq!(t.run(&["JSON.OBJKEYS", "doc"]), bulks(&["a", "nested"]));
        assert!(err_of(&mut t, &["JSON.OBJLEN", "doc", ".a"]).starts_with("WRONGTYPE"));
        setup(
            &mut t,
            r#"{"s":"x","i":27,"f":1.5,"t":true,"n":null,"l":[1],"o":{"k":"v"}}"#,
        );
        assert_eq!(
            t.run(&["JSON.RESP", "doc"]),
            Reply::Array(vec![
                Reply::Status("{"),
                bulk("s"),
                bulk("x"),
                bulk("i"),
                int(27),
                bulk("f"),
                bulk("1.5"),
                bulk("t"),
                Reply::Status("true"),
                bulk("n"),
                Reply::Null,
                bulk("l"),
                Reply::Array(vec![Reply::Status("["), int(1)]),
                bulk("o"),
                Reply::Array(vec![Reply::Status("{"), bulk("k"), bulk("v")]),
            ])
        );
        assert_eq!(
            t.run(&["JSON.RESP", "doc", "$.l"]),
            Reply::Array(vec![Reply::Array(vec![Reply::Status("["), int(1)])])
        );
        assert_eq!(t.run(&["JSON.RESP", "nope"]), Reply::Null);
    }

    #[test]
    fn rewrite_reproduces_the_document_with_its_ttl_kept_on_update() {
        let mut t = TestClient::with_debug();
        let doc = r#"{"z":1,"a":[1.5,"x\"y",null,{"k":false}],"e":{}}"#;
        setup(&mut t, doc);
        t.run(&["PEXPIRE", "doc", "100000"]);
        assert_eq!(t.run(&["JSON.SET", "doc", "$.z", "2"]), ok());
        assert!(matches!(t.run(&["PTTL", "doc"]), Reply::Int(n) if n > 0));
        let cmds = {
            let mut ks = t.store.keyspace.lock_all();
            let e = ks.get(0, b"doc", crate::clock::now_ms()).expect("doc");
            assert!(matches!(e.value, Value::Json(_)));
            assert!(e.value.mem_usage() > 0);
            e.value
                .rewrite_commands(&bytes::Bytes::from_static(b"copy"))
        };
        assert_eq!(cmds.len(), 1);
        assert_eq!(&cmds[0][0][..], b"JSON.SET");
        t.run_bytes(cmds[0].clone());
        assert_eq!(t.run(&["JSON.GET", "copy"]), t.run(&["JSON.GET", "doc"]));
        assert_eq!(
            t.run(&["JSON.GET", "copy"]),
            bulk(r#"{"z":2,"a":[1.5,"x\"y",null,{"k":false}],"e":{}}"#)
        );
        // Generic key commands carry documents along; DUMP refuses them.
        assert_eq!(t.run(&["COPY", "doc", "doc2"]), int(1));
        assert_eq!(t.run(&["RENAME", "doc2", "doc3"]), ok());
        assert_eq!(t.run(&["JSON.GET", "doc3", "$.z"]), bulk("[2]"));
        assert!(err_of(&mut t, &["DUMP", "doc"]).starts_with("ERR"));
        assert!(matches!(
            t.run(&["DEBUG", "DIGEST-VALUE", "doc"]),
            Reply::Array(_)
        ));
    }

    #[test]
    fn deep_and_hostile_input_is_refused() {
        let mut t = TestClient::new();
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert!(err_of(&mut t, &["JSON.SET", "d", "$", &deep]).starts_with("ERR"));
        // Growing a document past the depth limit piecemeal is refused too.
        let nest = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(t.run(&["JSON.SET", "d", "$", &nest]), ok());
        let path = format!("${}", "[0]".repeat(99));
        assert!(err_of(&mut t, &["JSON.SET", "d", &path, &nest]).contains("depth"));
        assert!(err_of(&mut t, &["JSON.ARRAPPEND", "d", &path, &nest]).contains("depth"));
        assert!(err_of(&mut t, &["JSON.MERGE", "d", &path, &nest]).contains("depth"));
        let filter = format!("$[?{}@>1{}]", "(".repeat(500), ")".repeat(500));
        assert!(err_of(&mut t, &["JSON.GET", "d", &filter]).starts_with("ERR"));
        assert!(err_of(&mut t, &["JSON.GET", "d", "$.a[?(@.b =~ 'x')]"]).starts_with("ERR"));
        assert!(matches!(
            t.run(&["JSON.GET", "d", "$[0][0][0]"]),
            Reply::Bulk(_)
        ));
    }

    #[test]
    fn writes_are_logged_as_received_and_notified() {
        let mut t = TestClient::new();
        let log = std::sync::Arc::new(crate::testkit::LogRecorder::default());
        t.store.set_write_log(log.clone());
        setup(&mut t, r#"{"a":1,"l":[]}"#);
        assert_eq!(t.run(&["JSON.NUMINCRBY", "doc", "$.a", "1"]), bulk("[2]"));
        // Writes that change nothing are not logged.
        assert_eq!(t.run(&["JSON.NUMINCRBY", "doc", "$.nope", "1"]), bulk("[]"));
        assert_eq!(t.run(&["JSON.DEL", "doc", "$.nope"]), int(0));
        assert_eq!(
            t.run(&["JSON.ARRAPPEND", "doc", "$.l", "1"]),
            ints(&[Some(1)])
        );
        t.run(&["JSON.GET", "doc"]);
        assert_eq!(
            *log.0.lock(),
            vec![
                r#"JSON.SET doc $ {"a":1,"l":[]}"#.to_string(),
                "JSON.NUMINCRBY doc $.a 1".to_string(),
                "JSON.ARRAPPEND doc $.l 1".to_string(),
            ]
        );
        assert_eq!(
            crate::families::lists::tests::events_of(&[
                &["JSON.SET", "k", "$", "{\"a\":[1]}"],
                &["JSON.ARRPOP", "k", "$.a"],
                &["JSON.MERGE", "k", "$", "{\"b\":1}"],
                &["JSON.DEL", "k", "$.b"],
                &["JSON.DEL", "k"],
            ]),
            vec![
                "json.set k",
                "json.arrpop k",
                "json.merge k",
                "json.del k",
                "json.del k"
            ]
        );
    }
}
