//! SORT and SORT_RO (Redis's `sort.c`): sorts a list, set or sorted set, optionally
//! by external keys (`BY weight_*`, `BY obj_*->field`), projects with `GET`, and can
//! `STORE` the result as a list. BY/GET patterns name arbitrary keys, so both
//! commands hold every shard (`ALL_KEYS`).

use std::cmp::Ordering;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, Keys};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::num;
use crate::types::list::ListValue;
use crate::types::set::member_bytes;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let g = |c: CommandSpec| c.group("generic");
    vec![
        g(cmd(
            "sort",
            -2,
            WRITE | DENYOOM | ALL_KEYS,
            Keys::Custom(sort_keys),
            sort,
        )
        .key_roles(KeyRoles::Each(&[kf::RO | kf::ACCESS, kf::OW | kf::UPDATE]))
        .summary(
            "Sorts the elements in a list, a set, or a sorted set, optionally storing the result.",
        )),
        g(cmd(
            "sort_ro",
            -2,
            READONLY | ALL_KEYS | MOVABLE_KEYS,
            keys(1, 1, 1),
            sort_ro,
        )
        .summary("Returns the sorted elements of a list, a set, or a sorted set.")),
    ]
}

/// The sorted key and the (last) STORE destination, as Redis's `sortGetKeys`:
/// LIMIT skips two arguments, GET and BY one.
fn sort_keys(argv: &[Bytes]) -> Vec<usize> {
    let mut keys = vec![1];
    let mut store = None;
    let mut i = 2;
    while i < argv.len() {
        let a = &argv[i];
        if a.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argv.len() {
            store = Some(i + 1);
        }
        i += 1;
    }
    keys.extend(store);
    keys
}

fn sort(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    sort_generic(ctx, args, false)
}

fn sort_ro(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    sort_generic(ctx, args, true)
}

/// The elements to sort, in the value's own order. A list or sorted set read
/// without sorting is walked from its end when `reverse` (DESC with BY nosort), as
/// Redis does; a set has no order to reverse.
fn sort_input(v: &Value, reverse: bool) -> Result<Vec<Bytes>, CmdError> {
    let mut out: Vec<Bytes> = match v {
        Value::List(l) => l.iter().cloned().collect(),
        Value::Set(s) => return Ok(s.iter().map(member_bytes).collect()),
        Value::ZSet(z) => z.iter().map(|(m, _)| Bytes::copy_from_slice(m)).collect(),
        Value::Str(_) | Value::Hash(_) | Value::Stream(_) | Value::Json(_) => {
            return Err(CmdError::WrongType)
        }
    };
    if reverse {
        out.reverse();
    }
    Ok(out)
}

/// Redis's `lookupKeyByPattern`: `#` is the element itself; otherwise the first `*`
/// is replaced by the element, and a `->field` suffix after it reads a hash field.
/// Missing keys, wrong types and patterns without `*` give `None`.
fn lookup_pattern(ctx: &mut Ctx<'_>, pattern: &[u8], ele: &Bytes) -> Option<Bytes> {
    if pattern == b"#" {
        return Some(ele.clone());
    }
    let star = pattern.iter().position(|c| *c == b'*')?;
    let after = &pattern[star + 1..];
    let (postfix, field) = match after.windows(2).position(|w| w == b"->") {
        Some(p) if p + 2 < after.len() => (&after[..p], Some(&after[p + 2..])),
        _ => (after, None),
    };
    let mut key = Vec::with_capacity(pattern.len() + ele.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(ele);
    key.extend_from_slice(postfix);
    let db = ctx.db();
    let e = ctx.ks.get(db, &key, ctx.now)?;
    match (field, &e.value) {
        (None, Value::Str(s)) => Some(s.to_bytes()),
        (Some(f), Value::Hash(h)) => h.get(f).map(Bytes::copy_from_slice),
        _ => None,
    }
}

/// A score as Redis reads one with `strtod`: leading spaces allowed, nothing may
/// follow the number, NaN and overflow are errors; the empty string is 0.
fn parse_score(s: &[u8]) -> Option<f64> {
    if s.is_empty() {
        return Some(0.0);
    }
    let start = s.iter().position(|c| !c.is_ascii_whitespace())?;
    let t = &s[start..];
    let v = num::parse_f64(t)?;
    if v.is_infinite() && !t.to_ascii_lowercase().ends_with(b"inf") {
        return None;
    }
    Some(v)
}

struct Item {
    ele: Bytes,
    score: f64,
    cmp: Option<Bytes>,
}

fn sort_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, readonly: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    if let Some(e) = ctx.ks.lookup_read(db, key, now) {
        if matches!(e.value, Value::Str(_) | Value::Hash(_)) {
            return Err(CmdError::WrongType);
        }
    }
    let (mut desc, mut alpha) = (false, false);
    let (mut limit_start, mut limit_count) = (0i64, -1i64);
    let mut store: Option<&Bytes> = None;
    let mut by: Option<&Bytes> = None;
    let mut dontsort = false;
    let mut gets: Vec<&Bytes> = Vec::new();
    // BY and GET patterns read keys nobody declared: a user may use them only if
    // it may read every key, as Redis rules.
    let reads_every_key = !ctx.store.acl.restricted()
        || ctx
            .store
            .acl_user(ctx.client)
            .is_some_and(|u| u.reads_every_key(ctx.cmd, ctx.argv));
    let denied = |option: &str| {
        CmdError::err(format!(
            "{option} option of SORT denied due to insufficient ACL permissions."
        ))
    };
    while let Some(opt) = args.peek() {
        let left = args.remaining() - 1;
        args.next_bytes()?;
        match opt.to_ascii_uppercase().as_slice() {
            b"ASC" => desc = false,
            b"DESC" => desc = true,
            b"ALPHA" => alpha = true,
            b"LIMIT" if left >= 2 => {
                limit_start = args.next_i64()?;
                limit_count = args.next_i64()?;
            }
            b"STORE" if left >= 1 && !readonly => store = Some(args.next_bytes()?),
            b"BY" if left >= 1 => {
                let p = args.next_bytes()?;
                // A pattern without '*' names no per-element key: don't sort at all.
                if !p.contains(&b'*') {
                    dontsort = true;
                } else if !reads_every_key {
                    return Err(denied("BY"));
                }
                by = Some(p);
            }
            b"GET" if left >= 1 => {
                if !reads_every_key {
                    return Err(denied("GET"));
                }
                gets.push(args.next_bytes()?)
            }
            _ => return Err(CmdError::Syntax),
        }
    }
    let kind = ctx.ks.get(db, key, now).map(|e| match e.value {
        Value::Set(_) => 's',
        Value::ZSet(_) => 'z',
        _ => 'l',
    });
    // An unsorted set would come out in an arbitrary order: when storing, or when a
    // script asks (its result must not depend on the set's layout), sort it, as
    // Redis does. A script holds every shard, so a running script is the caller.
    let in_script = ctx.store.scripts.running.is_running();
    if dontsort && kind == Some('s') && (store.is_some() || in_script) {
        dontsort = false;
        alpha = true;
        by = None;
    }
    let elements = match ctx.ks.get(db, key, now) {
        Some(e) => sort_input(&e.value, dontsort && desc)?,
        None => Vec::new(),
    };
    let len = elements.len() as i64;
    let mut start = limit_start.max(0);
    let mut end = if limit_count < 0 {
        len - 1
    } else {
        start.saturating_add(limit_count) - 1
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    if end >= len {
        end = len - 1;
    }

    let mut items: Vec<Item> = elements
        .into_iter()
        .map(|ele| Item {
            ele,
            score: 0.0,
            cmp: None,
        })
        .collect();
    if !dontsort {
        let mut bad_score = false;
        for it in items.iter_mut() {
            let byval = match by {
                Some(p) => match lookup_pattern(ctx, p, &it.ele) {
                    Some(v) => Some(v),
                    None => continue,
                },
                None => None,
            };
            if alpha {
                it.cmp = byval;
            } else {
                let src = byval.as_ref().unwrap_or(&it.ele);
                match parse_score(src) {
                    Some(s) => it.score = s,
                    None => bad_score = true,
                }
            }
        }
        if bad_score {
            return Err(CmdError::err(
                "One or more scores can't be converted into double",
            ));
        }
        let by_pattern = by.is_some();
        items.sort_by(|a, b| {
            let c = if !alpha {
                a.score
                    .partial_cmp(&b.score)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| a.ele.cmp(&b.ele))
            } else if by_pattern {
                match (&a.cmp, &b.cmp) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (None, None) => Ordering::Equal,
                    (None, _) => Ordering::Less,
                    (_, None) => Ordering::Greater,
                }
            } else {
                a.ele.cmp(&b.ele)
            };
            if desc {
                c.reverse()
            } else {
                c
            }
        });
    }

    let selected: Vec<Bytes> = if end >= start && start >= 0 {
        items
            .into_iter()
            .skip(start as usize)
            .take((end - start + 1) as usize)
            .map(|i| i.ele)
            .collect()
    } else {
        Vec::new()
    };
    let mut out: Vec<Option<Bytes>> = Vec::with_capacity(selected.len() * gets.len().max(1));
    for ele in selected {
        if gets.is_empty() {
            out.push(Some(ele));
        } else {
            for g in &gets {
                out.push(lookup_pattern(ctx, g, &ele));
            }
        }
    }

    let Some(dest) = store else {
        return Ok(Reply::Array(
            out.into_iter()
                .map(|v| v.map_or(Reply::Null, Reply::Bulk))
                .collect(),
        ));
    };
    // Only the destination changes: watchers of the source are left alone.
    ctx.own_touches();
    let n = out.len();
    if n > 0 {
        let mut list = ListValue::default();
        for v in out {
            list.push_back(v.unwrap_or_default());
        }
        ctx.ks.insert(
            db,
            Bytes::copy_from_slice(dest),
            Entry::new(Value::List(Box::new(list))),
        );
        ctx.dirty(n as u64);
        ctx.touch(db, dest);
        ctx.notify(notify::LIST, "sortstore", dest);
        // A client blocked on the destination list can be served now.
        ctx.signal_ready(dest);
    } else if ctx.ks.get(db, dest, now).is_some() {
        ctx.ks.remove(db, dest);
        ctx.dirty(1);
        ctx.touch(db, dest);
        ctx.notify(notify::GENERIC, "del", dest);
    }
    Ok(Reply::Int(n as i64))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn sort_sets_numeric_alpha_limit() {
        let mut t = TestClient::new();
        t.run(&["SADD", "s", "3", "1", "10", "2"]);
        assert_eq!(t.run(&["SORT", "s"]), bulks(&["1", "2", "3", "10"]));
        assert_eq!(t.run(&["SORT", "s", "DESC"]), bulks(&["10", "3", "2", "1"]));
        assert_eq!(
            t.run(&["SORT", "s", "ALPHA"]),
            bulks(&["1", "10", "2", "3"])
        );
        assert_eq!(t.run(&["SORT", "s", "LIMIT", "1", "2"]), bulks(&["2", "3"]));
        assert_eq!(t.run(&["SORT", "s", "LIMIT", "10", "2"]), bulks(&[]));
        assert_eq!(
            t.run(&["SORT", "s", "LIMIT", "-5", "2"]),
            bulks(&["1", "2"])
        );
        assert_eq!(t.run(&["SORT", "nokey"]), bulks(&[]));
        t.run(&["SADD", "w", "a", "b"]);
        assert_eq!(
            t.run(&["SORT", "w"]),
            err("ERR One or more scores can't be converted into double")
        );
        t.run(&["SET", "str", "x"]);
        assert_eq!(
            t.run(&["SORT", "str"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        assert_eq!(t.run(&["SORT", "s", "FOO"]), err("ERR syntax error"));
        assert_eq!(t.run(&["SORT", "s", "LIMIT", "1"]), err("ERR syntax error"));
        assert_eq!(
            t.run(&["SORT_RO", "s", "STORE", "d"]),
            err("ERR syntax error")
        );
    }

    #[test]
    fn sort_by_and_get() {
        let mut t = TestClient::new();
        t.run(&["SADD", "ids", "1", "2", "3"]);
        t.run(&["MSET", "w_1", "30", "w_2", "10", "w_3", "20"]);
        t.run(&["HSET", "o_1", "name", "one", "rank", "3"]);
        t.run(&["HSET", "o_2", "name", "two", "rank", "1"]);
        t.run(&["HSET", "o_3", "name", "three", "rank", "2"]);
        assert_eq!(
            t.run(&["SORT", "ids", "BY", "w_*"]),
            bulks(&["2", "3", "1"])
        );
        assert_eq!(
            t.run(&["SORT", "ids", "BY", "o_*->rank", "DESC"]),
            bulks(&["1", "3", "2"])
        );
        assert_eq!(
            t.run(&[
                "SORT",
                "ids",
                "BY",
                "w_*",
                "GET",
                "#",
                "GET",
                "o_*->name",
                "GET",
                "nope_*"
            ]),
            Reply::Array(vec![
                bulk("2"),
                bulk("two"),
                Reply::Null,
                bulk("3"),
                bulk("three"),
                Reply::Null,
                bulk("1"),
                bulk("one"),
                Reply::Null,
            ])
        );
        assert_eq!(
            t.run(&["SORT", "ids", "BY", "o_*->name", "ALPHA", "GET", "w_*"]),
            bulks(&["30", "20", "10"])
        );
        // GET of a constant names no key.
        assert_eq!(
            t.run(&["SORT", "ids", "GET", "const"]),
            Reply::Array(vec![Reply::Null, Reply::Null, Reply::Null])
        );
        // A trailing "->" is part of the key name, not a field reference.
        t.run(&["SET", "x_1->", "v"]);
        assert_eq!(
            t.run(&["SORT", "ids", "GET", "x_*->", "LIMIT", "0", "1"]),
            bulks(&["v"])
        );
    }

    #[test]
    fn sort_key_positions() {
        let argv = |s: &str| -> Vec<bytes::Bytes> {
            s.split(' ')
                .map(|a| bytes::Bytes::from(a.to_string()))
                .collect()
        };
        assert_eq!(super::sort_keys(&argv("sort abc store def")), vec![1, 3]);
        assert_eq!(
            super::sort_keys(&argv("sort abc store invalid store stillbad store def")),
            vec![1, 7]
        );
        assert_eq!(
            super::sort_keys(&argv("sort abc get store limit store 1 by x")),
            vec![1]
        );
        assert_eq!(super::sort_keys(&argv("sort abc")), vec![1]);
    }

    #[test]
    fn sort_store() {
        let mut t = TestClient::new();
        t.run(&["SADD", "s", "b", "a", "c"]);
        // BY a constant with STORE still sorts a set (alphabetically).
        assert_eq!(t.run(&["SORT", "s", "BY", "nosort", "STORE", "d"]), int(3));
        assert_eq!(t.run(&["TYPE", "d"]), Reply::Status("list"));
        assert_eq!(
            t.run(&["SORT", "d", "BY", "nosort"]),
            bulks(&["a", "b", "c"])
        );
        assert_eq!(t.run(&["SORT", "nokey", "STORE", "d"]), int(0));
        assert_eq!(t.run(&["EXISTS", "d"]), int(0));
        t.run(&["SADD", "n", "2", "1"]);
        assert_eq!(
            t.run(&["SORT", "n", "GET", "#", "GET", "k_*", "STORE", "d"]),
            int(4)
        );
        assert_eq!(
            t.run(&["SORT", "d", "BY", "nosort"]),
            bulks(&["1", "", "2", ""])
        );
    }
}
