//! GEO commands (Redis's `geo.c`): positions kept in a sorted set, each member's
//! score its 52-bit geohash (see `geohash.rs`). GEOADD, GEODIST, GEOHASH,
//! GEOPOS, GEOSEARCH and GEOSEARCHSTORE, and the deprecated GEORADIUS family.
//!
//! Replies, errors and the order in which arguments are checked follow Redis 7.2,
//! since clients and Redis's own tests compare them byte for byte. GEOADD is
//! logged as the ZADD it amounts to; a search that stores is logged as itself
//! (its result depends only on the data).

use std::cmp::Ordering;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, Keys};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::zsets::{self, zset_read};
use crate::geohash::{self, Extent, Shape};
use crate::num;
use crate::types::zset::ZSetValue;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let g = |c: CommandSpec| c.group("geo");
    let radius_keys = Keys::Custom(georadius_keys);
    vec![
        g(cmd("geoadd", -5, WRITE | DENYOOM, keys(1, 1, 1), geoadd).summary("Adds one or more members to a geospatial index. The key is created if it doesn't exist.")),
        g(cmd("geodist", -4, READONLY, keys(1, 1, 1), geodist).summary("Returns the distance between two members of a geospatial index.")),
        g(cmd("geohash", -2, READONLY, keys(1, 1, 1), geohash).summary("Returns members from a geospatial index as geohash strings.")),
        g(cmd("geopos", -2, READONLY, keys(1, 1, 1), geopos).summary("Returns the longitude and latitude of members from a geospatial index.")),
        g(cmd("georadius", -6, WRITE | DENYOOM, radius_keys, georadius).key_roles(KeyRoles::Each(&[kf::RO | kf::ACCESS, kf::OW | kf::UPDATE])).summary("Queries a geospatial index for members within a distance from a coordinate, optionally stores the result.")),
        g(cmd("georadius_ro", -6, READONLY, keys(1, 1, 1), georadius_ro).summary("Returns members from a geospatial index that are within a distance from a coordinate.")),
        g(cmd("georadiusbymember", -5, WRITE | DENYOOM, radius_keys, georadiusbymember).key_roles(KeyRoles::Each(&[kf::RO | kf::ACCESS, kf::OW | kf::UPDATE])).summary("Queries a geospatial index for members within a distance from a member, optionally stores the result.")),
        g(cmd("georadiusbymember_ro", -5, READONLY, keys(1, 1, 1), georadiusbymember_ro).summary("Returns members from a geospatial index that are within a distance from a member.")),
        g(cmd("geosearch", -7, READONLY, keys(1, 1, 1), geosearch).summary("Queries a geospatial index for members inside an area of a box or a circle.")),
        g(cmd("geosearchstore", -8, WRITE | DENYOOM, keys(1, 2, 1), geosearchstore).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Queries a geospatial index for members inside an area of a box or a circle, optionally stores the result.")),
    ]
}

/// The source key and the last `STORE`/`STOREDIST` destination, found as Redis's
/// `georadiusGetKeys` does (from the fifth argument on, skipping each
/// destination). The handler reads its options the same way, so the key it
/// writes is always one locked here.
fn georadius_keys(argv: &[Bytes]) -> Vec<usize> {
    let mut store = None;
    let mut i = 5;
    while i < argv.len() {
        let a = &argv[i];
        if (a.eq_ignore_ascii_case(b"store") || a.eq_ignore_ascii_case(b"storedist"))
            && i + 1 < argv.len()
        {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    std::iter::once(1).chain(store).collect()
}

/// A float as Redis's `string2d` takes it: like `num::parse_f64`, but a number
/// out of `strtod`'s range (overflowing to infinity, or underflowing to zero) is
/// refused.
fn parse_float(arg: &[u8]) -> Option<f64> {
    let v = num::parse_f64(arg)?;
    let mantissa = arg
        .split(|c| matches!(c, b'e' | b'E'))
        .next()
        .unwrap_or(arg);
    let out_of_range = (v.is_infinite() && arg.iter().any(u8::is_ascii_digit))
        || (v == 0.0 && mantissa.iter().any(|c| matches!(c, b'1'..=b'9')));
    (!out_of_range).then_some(v)
}

fn float_or(arg: &[u8], msg: &str) -> Result<f64, CmdError> {
    parse_float(arg).ok_or_else(|| CmdError::err(msg))
}

/// A `longitude latitude` pair within the GEO ranges.
fn lon_lat(lon: &[u8], lat: &[u8]) -> Result<(f64, f64), CmdError> {
    let lon = parse_float(lon).ok_or(CmdError::NotFloat)?;
    let lat = parse_float(lat).ok_or(CmdError::NotFloat)?;
    if !(geohash::LON_MIN..=geohash::LON_MAX).contains(&lon)
        || !(geohash::LAT_MIN..=geohash::LAT_MAX).contains(&lat)
    {
        return Err(CmdError::err(format!(
            "invalid longitude,latitude pair {lon:.6},{lat:.6}"
        )));
    }
    Ok((lon, lat))
}

/// Meters per unit.
fn unit(arg: &[u8]) -> Result<f64, CmdError> {
    let u = arg.to_ascii_lowercase();
    Ok(match &u[..] {
        b"m" => 1.0,
        b"km" => 1000.0,
        b"ft" => 0.3048,
        b"mi" => 1609.34,
        _ => {
            return Err(CmdError::err(
                "unsupported unit provided. please use M, KM, FT, MI",
            ))
        }
    })
}

/// `radius unit` → (extent, meters per unit).
fn radius(r: &[u8], u: &[u8]) -> Result<(Extent, f64), CmdError> {
    let r = float_or(r, "need numeric radius")?;
    if r < 0.0 {
        return Err(CmdError::err("radius cannot be negative"));
    }
    Ok((Extent::Radius(r), unit(u)?))
}

/// `width height unit` → (extent, meters per unit).
fn box_extent(w: &[u8], h: &[u8], u: &[u8]) -> Result<(Extent, f64), CmdError> {
    let width = float_or(w, "need numeric width")?;
    let height = float_or(h, "need numeric height")?;
    if height < 0.0 || width < 0.0 {
        return Err(CmdError::err("height or width cannot be negative"));
    }
    Ok((Extent::Box { width, height }, unit(u)?))
}

fn member_position(z: &ZSetValue, member: &[u8]) -> Result<(f64, f64), CmdError> {
    z.score(member)
        .map(geohash::position_of)
        .ok_or_else(|| CmdError::err("could not decode requested zset member"))
}

/// A coordinate: Redis's "human" long double text, a double in RESP3.
fn coord(ctx: &Ctx<'_>, v: f64) -> Reply {
    if ctx.resp3() {
        Reply::Double(v)
    } else {
        Reply::Bulk(Bytes::from(geohash::format_coord(v)))
    }
}

fn distance_reply(d: f64) -> Reply {
    Reply::Bulk(Bytes::from(geohash::format_distance(d)))
}

// ---------------------------------------------------------------- GEOADD

fn geoadd(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let (mut nx, mut xx) = (false, false);
    let mut opts = Vec::new();
    while let Some(opt) = args.peek() {
        if opt.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if !opt.eq_ignore_ascii_case(b"ch") {
            break;
        }
        opts.push(args.next_bytes()?.clone());
    }
    let ch = opts.iter().any(|o| o.eq_ignore_ascii_case(b"ch"));
    let triples = args.rest();
    if !triples.len().is_multiple_of(3) || (nx && xx) {
        return Err(CmdError::Syntax);
    }
    let mut points = Vec::with_capacity(triples.len() / 3);
    for t in triples.chunks(3) {
        let (lon, lat) = lon_lat(&t[0], &t[1])?;
        let hash = geohash::hash_of(lon, lat).ok_or(CmdError::Syntax)?;
        points.push((hash, &t[2]));
    }
    // As the ZADD Redis turns it into: no pairs is a syntax error.
    if points.is_empty() {
        return Err(CmdError::Syntax);
    }
    let (db, now) = (ctx.db(), ctx.now);
    let exists = match ctx.ks.get_mut(db, key, now) {
        None => false,
        Some(Entry {
            value: Value::ZSet(_),
            ..
        }) => true,
        Some(_) => return Err(CmdError::WrongType),
    };
    if !exists && xx {
        return Ok(Reply::Int(0));
    }
    if !exists {
        ctx.ks.insert(
            db,
            Bytes::copy_from_slice(key),
            Entry::new(Value::ZSet(Box::default())),
        );
    }
    let (max_entries, max_value) = zsets::limits(ctx);
    let Some(Entry {
        value: Value::ZSet(z),
        ..
    }) = ctx.ks.get_mut(db, key, now)
    else {
        return Err(CmdError::WrongType);
    };
    let (mut added, mut updated) = (0i64, 0i64);
    for (hash, member) in &points {
        let score = *hash as f64;
        match z.score(member) {
            Some(_) if nx => {}
            Some(cur) => {
                if cur != score {
                    z.insert(&member[..], score);
                    updated += 1;
                }
            }
            None if xx => {}
            None => {
                z.insert(&member[..], score);
                added += 1;
            }
        }
    }
    z.update_encoding(max_entries, max_value);
    let empty = z.is_empty();
    if empty {
        // Created above and left empty: it never existed.
        ctx.ks.remove(db, key);
    }
    if added + updated > 0 {
        ctx.dirty((added + updated) as u64);
        ctx.notify(notify::ZSET, "zadd", key);
        ctx.signal_ready(key);
        let mut zadd = Vec::with_capacity(2 + opts.len() + points.len() * 2);
        zadd.push(Bytes::from_static(b"zadd"));
        zadd.push(key.clone());
        zadd.extend(opts);
        for (hash, member) in points {
            zadd.push(num::i64_to_bytes(hash as i64));
            zadd.push(member.clone());
        }
        ctx.propagate(zadd);
    }
    Ok(Reply::Int(if ch { added + updated } else { added }))
}

// ---------------------------------------------------------------- point reads

fn geodist(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let m1 = args.next_bytes()?;
    let m2 = args.next_bytes()?;
    let to_meters = match args.remaining() {
        0 => 1.0,
        1 => unit(args.next_bytes()?)?,
        _ => return Err(CmdError::Syntax),
    };
    let Some(z) = zset_read(ctx, key)? else {
        return Ok(Reply::Null);
    };
    let (Some(s1), Some(s2)) = (z.score(m1), z.score(m2)) else {
        return Ok(Reply::Null);
    };
    let (lon1, lat1) = geohash::position_of(s1);
    let (lon2, lat2) = geohash::position_of(s2);
    Ok(distance_reply(
        geohash::distance(lon1, lat1, lon2, lat2) / to_meters,
    ))
}

fn geohash(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let members = args.rest();
    let z = zset_read(ctx, key)?;
    Ok(Reply::Array(
        members
            .iter()
            .map(|m| match z.and_then(|z| z.score(m)) {
                Some(s) => Reply::Bulk(Bytes::from(geohash::geohash_string(s))),
                None => Reply::Null,
            })
            .collect(),
    ))
}

fn geopos(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let members = args.rest();
    let scores: Vec<Option<f64>> = match zset_read(ctx, key)? {
        Some(z) => members.iter().map(|m| z.score(m)).collect(),
        None => vec![None; members.len()],
    };
    Ok(Reply::Array(
        scores
            .into_iter()
            .map(|s| match s {
                Some(s) => {
                    let (lon, lat) = geohash::position_of(s);
                    Reply::Array(vec![coord(ctx, lon), coord(ctx, lat)])
                }
                None => Reply::NullArray,
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------- searches

#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// GEORADIUS / GEORADIUS_RO: centre and radius are positional.
    Radius { store_ok: bool },
    /// GEORADIUSBYMEMBER / _RO.
    ByMember { store_ok: bool },
    /// GEOSEARCH: FROM… and BY… options.
    Search,
    /// GEOSEARCHSTORE: as GEOSEARCH, the destination first.
    SearchStore,
}

fn georadius(ctx: &mut Ctx<'_>, _: &mut Args<'_>) -> CmdResult {
    search(ctx, Form::Radius { store_ok: true })
}

fn georadius_ro(ctx: &mut Ctx<'_>, _: &mut Args<'_>) -> CmdResult {
    search(ctx, Form::Radius { store_ok: false })
}

fn georadiusbymember(ctx: &mut Ctx<'_>, _: &mut Args<'_>) -> CmdResult {
    search(ctx, Form::ByMember { store_ok: true })
}

fn georadiusbymember_ro(ctx: &mut Ctx<'_>, _: &mut Args<'_>) -> CmdResult {
    search(ctx, Form::ByMember { store_ok: false })
}

fn geosearch(ctx: &mut Ctx<'_>, _: &mut Args<'_>) -> CmdResult {
    search(ctx, Form::Search)
}

fn geosearchstore(ctx: &mut Ctx<'_>, _: &mut Args<'_>) -> CmdResult {
    search(ctx, Form::SearchStore)
}

/// A member found by a search.
struct Found {
    member: Bytes,
    lon: f64,
    lat: f64,
    /// Meters from the centre.
    dist: f64,
    score: f64,
}

#[derive(Default)]
struct Options {
    withdist: bool,
    withhash: bool,
    withcoord: bool,
    /// `Some(true)` for DESC.
    desc: Option<bool>,
    any: bool,
    /// 0: no limit.
    count: i64,
    store: Option<Bytes>,
    storedist: bool,
}

/// Members within `shape`, scanning its cells in Redis's order; with a `limit`
/// (COUNT … ANY) it stops once that many are found.
fn find(z: &ZSetValue, shape: &Shape, limit: usize) -> Vec<Found> {
    let mut out = Vec::new();
    let full = |out: &Vec<Found>| limit > 0 && out.len() >= limit;
    for (min, max) in shape.score_ranges() {
        if full(&out) {
            break;
        }
        let start = z.count_prefix(|s, _| s < min);
        for (member, score) in z.iter_from(start, false) {
            if score >= max {
                break;
            }
            let (lon, lat) = geohash::position_of(score);
            if let Some(dist) = shape.contains(lon, lat) {
                out.push(Found {
                    member: Bytes::copy_from_slice(member),
                    lon,
                    lat,
                    dist,
                    score,
                });
            }
            if full(&out) {
                break;
            }
        }
    }
    out
}

/// The GEORADIUS family and GEOSEARCH[STORE], as Redis's `georadiusGeneric`:
/// arguments are checked in the order Redis checks them, and a missing source
/// key still gets its options parsed so that the right reply shape is chosen.
fn search(ctx: &mut Ctx<'_>, kind: Form) -> CmdResult {
    let argv = ctx.argv;
    let (src, base) = match kind {
        Form::Radius { .. } => (1, 6),
        Form::ByMember { .. } => (1, 5),
        Form::Search => (1, 2),
        Form::SearchStore => (2, 3),
    };
    let geosearch = matches!(kind, Form::Search | Form::SearchStore);
    let store_ok = matches!(
        kind,
        Form::Radius { store_ok: true } | Form::ByMember { store_ok: true }
    );
    let mut o = Options::default();
    if kind == Form::SearchStore {
        o.store = Some(argv[1].clone());
    }
    let z = zset_read(ctx, &argv[src])?;
    let mut centre = None;
    let mut extent = None;
    match kind {
        Form::Radius { .. } => {
            centre = Some(lon_lat(&argv[2], &argv[3])?);
            extent = Some(radius(&argv[4], &argv[5])?);
        }
        Form::ByMember { .. } => {
            // Without the key there is nothing to measure from: the radius is
            // not even looked at.
            if let Some(z) = z {
                centre = Some(member_position(z, &argv[2])?);
                extent = Some(radius(&argv[3], &argv[4])?);
            }
        }
        Form::Search | Form::SearchStore => {}
    }
    let (mut frommember, mut fromlonlat, mut byradius, mut bybox) = (false, false, false, false);
    let rest = argv.get(base..).unwrap_or(&[]);
    let mut i = 0;
    while i < rest.len() {
        let arg = &rest[i];
        let left = rest.len() - i - 1;
        let is = |w: &str| arg.eq_ignore_ascii_case(w.as_bytes());
        if is("withdist") {
            o.withdist = true;
        } else if is("withhash") {
            o.withhash = true;
        } else if is("withcoord") {
            o.withcoord = true;
        } else if is("any") {
            o.any = true;
        } else if is("asc") {
            o.desc = Some(false);
        } else if is("desc") {
            o.desc = Some(true);
        } else if is("count") && left >= 1 {
            o.count = num::parse_i64(&rest[i + 1]).ok_or(CmdError::NotInteger)?;
            if o.count <= 0 {
                return Err(CmdError::err("COUNT must be > 0"));
            }
            i += 1;
        } else if (is("store") || is("storedist")) && left >= 1 && store_ok {
            o.store = Some(rest[i + 1].clone());
            o.storedist = is("storedist");
            i += 1;
        } else if is("storedist") && kind == Form::SearchStore {
            o.storedist = true;
        } else if is("frommember") && left >= 1 && geosearch && !fromlonlat {
            if let Some(z) = z {
                centre = Some(member_position(z, &rest[i + 1])?);
            }
            frommember = true;
            i += 1;
        } else if is("fromlonlat") && left >= 2 && geosearch && !frommember {
            centre = Some(lon_lat(&rest[i + 1], &rest[i + 2])?);
            fromlonlat = true;
            i += 2;
        } else if is("byradius") && left >= 2 && geosearch && !bybox {
            extent = Some(radius(&rest[i + 1], &rest[i + 2])?);
            byradius = true;
            i += 2;
        } else if is("bybox") && left >= 3 && geosearch && !byradius {
            extent = Some(box_extent(&rest[i + 1], &rest[i + 2], &rest[i + 3])?);
            bybox = true;
            i += 3;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    if o.store.is_some() && (o.withdist || o.withhash || o.withcoord) {
        let what = if kind == Form::SearchStore {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        return Err(CmdError::err(format!(
            "{what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        )));
    }
    let name = || String::from_utf8_lossy(&argv[0]).into_owned();
    if geosearch && !(frommember || fromlonlat) {
        return Err(CmdError::err(format!(
            "exactly one of FROMMEMBER or FROMLONLAT can be specified for {}",
            name()
        )));
    }
    if geosearch && !(byradius || bybox) {
        return Err(CmdError::err(format!(
            "exactly one of BYRADIUS and BYBOX can be specified for {}",
            name()
        )));
    }
    if o.any && o.count == 0 {
        return Err(CmdError::err("the ANY argument requires COUNT argument"));
    }
    let found = match (z, centre, extent) {
        (Some(z), Some((lon, lat)), Some((extent, to_meters))) => {
            let shape = Shape {
                lon,
                lat,
                to_meters,
                extent,
            };
            let limit = if o.any { o.count as usize } else { 0 };
            Some((find(z, &shape, limit), to_meters))
        }
        _ => None,
    };
    let Some((mut found, to_meters)) = found else {
        return Ok(match o.store {
            Some(dst) => {
                let db = ctx.db();
                if ctx.ks.remove(db, &dst).is_some() {
                    ctx.dirty(1);
                    ctx.notify(notify::GENERIC, "del", &dst);
                }
                Reply::Int(0)
            }
            None => Reply::Array(Vec::new()),
        });
    };
    // The nearest N need an order: COUNT sorts ascending unless ANY.
    let desc = o.desc.or((o.count != 0 && !o.any).then_some(false));
    let returned = if o.count > 0 {
        found.len().min(o.count as usize)
    } else {
        found.len()
    };
    if let Some(desc) = desc {
        sort_found(&mut found, desc, returned);
    }
    found.truncate(returned);
    for f in &mut found {
        f.dist /= to_meters;
    }
    match o.store.take() {
        None => Ok(Reply::Array(
            found.into_iter().map(|f| found_reply(ctx, &o, f)).collect(),
        )),
        Some(dst) => store(ctx, &dst, found, o.storedist, geosearch),
    }
}

/// Redis's comparison of two distances (a NaN compares below anything).
fn cmp_dist(a: f64, b: f64) -> Ordering {
    if a > b {
        Ordering::Greater
    } else if a == b {
        Ordering::Equal
    } else {
        Ordering::Less
    }
}

/// Orders the results as Redis does, because the order of equal distances
/// (members at the same position) shows in replies: a stable merge sort (glibc's
/// `qsort`) when all are returned, else a partial quicksort that only orders the
/// first `returned` (Redis's `pqsort`).
fn sort_found(found: &mut Vec<Found>, desc: bool, returned: usize) {
    let cmp = |a: &Found, b: &Found| {
        let o = cmp_dist(a.dist, b.dist);
        if desc {
            o.reverse()
        } else {
            o
        }
    };
    if returned >= found.len() {
        let mut order: Vec<usize> = (0..found.len()).collect();
        let mut tmp = Vec::with_capacity(found.len());
        merge_sort(&mut order, &mut tmp, &|i, j| cmp(&found[i], &found[j]));
        let mut slots: Vec<Option<Found>> = found.drain(..).map(Some).collect();
        found.extend(order.into_iter().filter_map(|i| slots[i].take()));
    } else if returned > 0 {
        let n = found.len();
        partial_quicksort(found, 0, n, returned - 1, &cmp);
    }
}

/// Top-down merge sort, taking from the left run on ties.
fn merge_sort(v: &mut [usize], tmp: &mut Vec<usize>, cmp: &impl Fn(usize, usize) -> Ordering) {
    if v.len() <= 1 {
        return;
    }
    let mid = v.len() / 2;
    merge_sort(&mut v[..mid], tmp, cmp);
    merge_sort(&mut v[mid..], tmp, cmp);
    tmp.clear();
    let (mut i, mut j) = (0, mid);
    while i < mid && j < v.len() {
        if cmp(v[i], v[j]) != Ordering::Greater {
            tmp.push(v[i]);
            i += 1;
        } else {
            tmp.push(v[j]);
            j += 1;
        }
    }
    tmp.extend_from_slice(&v[i..mid]);
    tmp.extend_from_slice(&v[j..]);
    v.copy_from_slice(tmp);
}

fn median3<T>(v: &[T], a: usize, b: usize, c: usize, cmp: &impl Fn(&T, &T) -> Ordering) -> usize {
    use Ordering::*;
    if cmp(&v[a], &v[b]) == Less {
        if cmp(&v[b], &v[c]) == Less {
            b
        } else if cmp(&v[a], &v[c]) == Less {
            c
        } else {
            a
        }
    } else if cmp(&v[b], &v[c]) == Greater {
        b
    } else if cmp(&v[a], &v[c]) == Less {
        a
    } else {
        c
    }
}

/// Bentley–McIlroy quicksort of `v[start..start + n]` that leaves unsorted the
/// partitions lying wholly after position `last`.
fn partial_quicksort<T>(
    v: &mut [T],
    mut start: usize,
    mut n: usize,
    last: usize,
    cmp: &impl Fn(&T, &T) -> Ordering,
) {
    use Ordering::*;
    loop {
        let a = start;
        if n < 7 {
            for m in a + 1..a + n {
                let mut l = m;
                while l > a && cmp(&v[l - 1], &v[l]) == Greater {
                    v.swap(l, l - 1);
                    l -= 1;
                }
            }
            return;
        }
        let mut m = a + n / 2;
        if n > 7 {
            let (mut l, mut h) = (a, a + n - 1);
            if n > 40 {
                let d = n / 8;
                l = median3(v, l, l + d, l + 2 * d, cmp);
                m = median3(v, m - d, m, m + d, cmp);
                h = median3(v, h - 2 * d, h - d, h, cmp);
            }
            m = median3(v, l, m, h, cmp);
        }
        v.swap(a, m);
        // [a+1, pa) and (pd, end) equal the pivot, [pa, pb) are below it and
        // (pc, pd] above.
        let (mut pa, mut pb) = (a + 1, a + 1);
        let (mut pc, mut pd) = (a + n - 1, a + n - 1);
        loop {
            while pb <= pc {
                let c = cmp(&v[pb], &v[a]);
                if c == Greater {
                    break;
                }
                if c == Equal {
                    v.swap(pa, pb);
                    pa += 1;
                }
                pb += 1;
            }
            while pb <= pc {
                let c = cmp(&v[pc], &v[a]);
                if c == Less {
                    break;
                }
                if c == Equal {
                    v.swap(pc, pd);
                    pd -= 1;
                }
                pc -= 1;
            }
            if pb > pc {
                break;
            }
            v.swap(pb, pc);
            pb += 1;
            pc -= 1;
        }
        let end = a + n;
        // Move the pivot-equal runs from the ends to the middle.
        let r = (pa - a).min(pb - pa);
        for i in 0..r {
            v.swap(a + i, pb - r + i);
        }
        let r = (pd - pc).min(end - pd - 1);
        for i in 0..r {
            v.swap(pb + i, end - r + i);
        }
        // The first `last + 1` positions are all that must be in order.
        let below = pb - pa;
        if below > 1 && a <= last {
            partial_quicksort(v, a, below, last, cmp);
        }
        let above = pd - pc;
        if above > 1 && end - above <= last {
            start = end - above;
            n = above;
            continue;
        }
        return;
    }
}

fn found_reply(ctx: &Ctx<'_>, o: &Options, f: Found) -> Reply {
    if !(o.withdist || o.withhash || o.withcoord) {
        return Reply::Bulk(f.member);
    }
    let mut item = vec![Reply::Bulk(f.member)];
    if o.withdist {
        item.push(distance_reply(f.dist));
    }
    if o.withhash {
        item.push(Reply::Int(f.score as i64));
    }
    if o.withcoord {
        item.push(Reply::Array(vec![coord(ctx, f.lon), coord(ctx, f.lat)]));
    }
    Reply::Array(item)
}

/// Replaces `dst` with the found members (scored by geohash, or by distance
/// with STOREDIST), or deletes it when nothing was found.
fn store(
    ctx: &mut Ctx<'_>,
    dst: &Bytes,
    found: Vec<Found>,
    by_dist: bool,
    geosearch: bool,
) -> CmdResult {
    let n = found.len();
    let db = ctx.db();
    if n == 0 {
        if ctx.ks.remove(db, dst).is_some() {
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "del", dst);
        }
        return Ok(Reply::Int(0));
    }
    let (max_entries, max_value) = zsets::limits(ctx);
    let mut z = ZSetValue::new();
    for f in found {
        z.insert(&f.member[..], if by_dist { f.dist } else { f.score });
    }
    z.reset_encoding(max_entries, max_value);
    ctx.ks.insert(
        db,
        Bytes::copy_from_slice(dst),
        Entry::new(Value::ZSet(Box::new(z))),
    );
    ctx.dirty(n as u64);
    let event = if geosearch {
        "geosearchstore"
    } else {
        "georadiusstore"
    };
    ctx.notify(notify::ZSET, event, dst);
    ctx.signal_ready(dst);
    Ok(Reply::Int(n as i64))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testkit::{LogRecorder, TestClient};

    /// Runs `(command, RESP2 reply)` pairs, space-separated arguments; every reply
    /// was taken from redis-server (7.0.15, whose GEO code equals 7.2's).
    fn check(t: &mut TestClient, rows: &[(&str, &str)]) {
        for (line, want) in rows {
            let argv: Vec<&str> = line.split(' ').collect();
            assert_eq!(t.resp(&argv), *want, "{line}");
        }
    }

    const SICILY: &[(&str, &str)] = &[
        ("geoadd Sicily 13.361389 38.115556 Palermo 15.087269 37.502669 Catania", ":2\r\n"),
        ("geodist Sicily Palermo Catania", "$11\r\n166274.1516\r\n"),
        ("geodist Sicily Palermo Catania km", "$8\r\n166.2742\r\n"),
        ("geodist Sicily Palermo Catania ft", "$11\r\n545518.8700\r\n"),
        ("geodist Sicily Palermo nope", "$-1\r\n"),
        ("geodist Sicily Palermo Catania km extra", "-ERR syntax error\r\n"),
        ("geodist nokey a b", "$-1\r\n"),
        ("geohash Sicily Palermo Catania nope", "*3\r\n$11\r\nsqc8b49rny0\r\n$11\r\nsqdtr74hyu0\r\n$-1\r\n"),
        ("geopos Sicily Palermo nope", "*2\r\n*2\r\n$20\r\n13.36138933897018433\r\n$20\r\n38.11555639549629859\r\n*-1\r\n"),
        ("geosearch Sicily fromlonlat 15 37 byradius 200 km asc withcoord withdist withhash", "*2\r\n*4\r\n$7\r\nCatania\r\n$7\r\n56.4413\r\n:3479447370796909\r\n*2\r\n$20\r\n15.08726745843887329\r\n$20\r\n37.50266842333162032\r\n*4\r\n$7\r\nPalermo\r\n$8\r\n190.4424\r\n:3479099956230698\r\n*2\r\n$20\r\n13.36138933897018433\r\n$20\r\n38.11555639549629859\r\n"),
        ("geosearch Sicily frommember Palermo bybox 400 400 km desc withdist", "*2\r\n*2\r\n$7\r\nCatania\r\n$8\r\n166.2742\r\n*2\r\n$7\r\nPalermo\r\n$6\r\n0.0000\r\n"),
        ("georadius Sicily 15 37 200 km withdist", "*2\r\n*2\r\n$7\r\nPalermo\r\n$8\r\n190.4424\r\n*2\r\n$7\r\nCatania\r\n$7\r\n56.4413\r\n"),
        ("georadius Sicily 15 37 100 km", "*1\r\n$7\r\nCatania\r\n"),
        ("georadiusbymember Sicily Palermo 200 km withdist count 1", "*1\r\n*2\r\n$7\r\nPalermo\r\n$6\r\n0.0000\r\n"),
        ("georadius Sicily 15 37 200 km count 0", "-ERR COUNT must be > 0\r\n"),
        ("georadius Sicily 15 37 200 km count -1", "-ERR COUNT must be > 0\r\n"),
        ("georadius Sicily 15 37 200 km count x", "-ERR value is not an integer or out of range\r\n"),
        ("georadius Sicily 15 37 -1 km", "-ERR radius cannot be negative\r\n"),
        ("georadius Sicily 15 37 x km", "-ERR need numeric radius\r\n"),
        ("georadius Sicily 15 37 1 parsec", "-ERR unsupported unit provided. please use M, KM, FT, MI\r\n"),
        ("georadius Sicily 15 37 200 km store", "-ERR syntax error\r\n"),
        ("georadius Sicily 15 37 200 km store d withdist", "-ERR STORE option in GEORADIUS is not compatible with WITHDIST, WITHHASH and WITHCOORD options\r\n"),
        ("georadius_ro Sicily 15 37 200 km store d", "-ERR syntax error\r\n"),
        ("georadiusbymember Sicily nope 200 km", "-ERR could not decode requested zset member\r\n"),
        ("georadiusbymember nokey nope x y", "*0\r\n"),
        ("georadiusbymember nokey nope x y store d", ":0\r\n"),
        ("geosearch Sicily fromlonlat 15 37 frommember Palermo byradius 1 km", "-ERR syntax error\r\n"),
        ("geosearch Sicily frommember Palermo fromlonlat 15 37 byradius 1 km", "-ERR syntax error\r\n"),
        ("geosearch Sicily byradius 1 km", "-ERR wrong number of arguments for 'geosearch' command\r\n"),
        ("geosearch Sicily fromlonlat 15 37 count 1", "-ERR exactly one of BYRADIUS and BYBOX can be specified for geosearch\r\n"),
        ("geosearch Sicily fromlonlat 15 37 byradius 1 km bybox 1 1 km", "-ERR syntax error\r\n"),
        ("geosearch Sicily fromlonlat 15 37 bybox 1 -1 km", "-ERR height or width cannot be negative\r\n"),
        ("geosearch Sicily fromlonlat 15 37 bybox x 1 km", "-ERR need numeric width\r\n"),
        ("geosearch Sicily fromlonlat 15 37 bybox 1 x km", "-ERR need numeric height\r\n"),
        ("geosearch Sicily fromlonlat 15 37 byradius 1 km any", "-ERR the ANY argument requires COUNT argument\r\n"),
        ("geosearch Sicily fromlonlat 15 37 byradius 1 km storedist", "-ERR syntax error\r\n"),
        ("geosearch Sicily fromlonlat 200 37 byradius 1 km", "-ERR invalid longitude,latitude pair 200.000000,37.000000\r\n"),
        ("geosearch Sicily frommember nope byradius 1 km", "-ERR could not decode requested zset member\r\n"),
        ("geosearchstore d Sicily fromlonlat 15 37 byradius 200 km withdist", "-ERR GEOSEARCHSTORE is not compatible with WITHDIST, WITHHASH and WITHCOORD options\r\n"),
        ("geosearchstore d Sicily fromlonlat 15 37 byradius 200 km storedist", ":2\r\n"),
        ("zrange d 0 -1 withscores", "*4\r\n$7\r\nCatania\r\n$16\r\n56.4412578701582\r\n$7\r\nPalermo\r\n$18\r\n190.44242984775784\r\n"),
        ("geosearchstore d Sicily fromlonlat 15 37 byradius 200 km count 1 desc", ":1\r\n"),
        ("zrange d 0 -1 withscores", "*2\r\n$7\r\nPalermo\r\n$16\r\n3479099956230698\r\n"),
        ("geosearchstore d Sicily fromlonlat 15 37 byradius 1 km", ":0\r\n"),
        ("exists d", ":0\r\n"),
        ("geosearchstore d nokey fromlonlat 15 37 byradius 1 km", ":0\r\n"),
        ("georadius Sicily 15 37 200 km storedist d2 asc", ":2\r\n"),
        ("zrange d2 0 -1 withscores", "*4\r\n$7\r\nCatania\r\n$16\r\n56.4412578701582\r\n$7\r\nPalermo\r\n$18\r\n190.44242984775784\r\n"),
        ("georadius Sicily 15 37 200 km store d3", ":2\r\n"),
        ("zrange d3 0 -1 withscores", "*4\r\n$7\r\nPalermo\r\n$16\r\n3479099956230698\r\n$7\r\nCatania\r\n$16\r\n3479447370796909\r\n"),
        ("set str x", "+OK\r\n"),
        ("geoadd str 1 1 a", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
        ("geoadd str 1 1000 a", "-ERR invalid longitude,latitude pair 1.000000,1000.000000\r\n"),
        ("geopos str a", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
        ("geosearch str frommember a byradius 1 km", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
        ("geoadd k xx 1 1 a", ":0\r\n"),
        ("exists k", ":0\r\n"),
        ("geoadd k ch nx 1 1 a 2 2 b", ":2\r\n"),
        ("geoadd k ch xx 1 1 a 3 3 b 4 4 c", ":1\r\n"),
        ("geoadd k nx xx 1 1 a", "-ERR syntax error\r\n"),
        ("geoadd k ch ch ch", "-ERR syntax error\r\n"),
        ("geoadd k gt 1 1 a", "-ERR syntax error\r\n"),
        ("geoadd k 1 1", "-ERR wrong number of arguments for 'geoadd' command\r\n"),
        ("georadius Sicily 15 37 200 km count 1 any", "*1\r\n$7\r\nPalermo\r\n"),
        ("georadius Sicily 15 37 200 km any", "-ERR the ANY argument requires COUNT argument\r\n"),
        ("GEOSEARCH Sicily bybox 1 1 km", "-ERR wrong number of arguments for 'geosearch' command\r\n"),
        ("geosearch Sicily fromlonlat 15 37 byradius 200 km withhash", "*2\r\n*2\r\n$7\r\nPalermo\r\n:3479099956230698\r\n*2\r\n$7\r\nCatania\r\n:3479447370796909\r\n"),
        ("geosearch Sicily fromlonlat 15 37 byradius 200 km withcoord", "*2\r\n*2\r\n$7\r\nPalermo\r\n*2\r\n$20\r\n13.36138933897018433\r\n$20\r\n38.11555639549629859\r\n*2\r\n$7\r\nCatania\r\n*2\r\n$20\r\n15.08726745843887329\r\n$20\r\n37.50266842333162032\r\n"),
        ("geosearch Sicily fromlonlat 15 37 bybox 0 0 km", "*0\r\n"),
        ("geosearch Sicily frommember Palermo byradius 0 km withdist", "*1\r\n*2\r\n$7\r\nPalermo\r\n$6\r\n0.0000\r\n"),
    ];

    const TIES_AND_EDGES: &[(&str, &str)] = &[
        ("geoadd t 10 10 a1 10 10 a2 10 10 a3 10 10 a4 10 10 a5 10 10 a6 10 10 a7 10 10 a8 10.001 10 b1 10.001 10 b2 10.001 10 b3 9.999 10 c1 9.999 10 c2 10 10.001 d1 10 10.001 d2", ":15\r\n"),
        ("georadius t 10 10 1 km count 3", "*3\r\n$2\r\na6\r\n$2\r\na8\r\n$2\r\na1\r\n"),
        ("georadius t 10 10 1 km count 9 desc", "*9\r\n$2\r\nd2\r\n$2\r\nd1\r\n$2\r\nc1\r\n$2\r\nc2\r\n$2\r\nb3\r\n$2\r\nb1\r\n$2\r\nb2\r\n$2\r\na6\r\n$2\r\na7\r\n"),
        ("georadius t 10 10 1 km asc", "*15\r\n$2\r\na1\r\n$2\r\na2\r\n$2\r\na3\r\n$2\r\na4\r\n$2\r\na5\r\n$2\r\na6\r\n$2\r\na7\r\n$2\r\na8\r\n$2\r\nb1\r\n$2\r\nb2\r\n$2\r\nb3\r\n$2\r\nc1\r\n$2\r\nc2\r\n$2\r\nd1\r\n$2\r\nd2\r\n"),
        ("georadius t 10 10 1 km count 20 desc", "*15\r\n$2\r\nd1\r\n$2\r\nd2\r\n$2\r\nc1\r\n$2\r\nc2\r\n$2\r\nb1\r\n$2\r\nb2\r\n$2\r\nb3\r\n$2\r\na1\r\n$2\r\na2\r\n$2\r\na3\r\n$2\r\na4\r\n$2\r\na5\r\n$2\r\na6\r\n$2\r\na7\r\n$2\r\na8\r\n"),
        ("georadius t 10 10 1 km", "*15\r\n$2\r\nc1\r\n$2\r\nc2\r\n$2\r\na1\r\n$2\r\na2\r\n$2\r\na3\r\n$2\r\na4\r\n$2\r\na5\r\n$2\r\na6\r\n$2\r\na7\r\n$2\r\na8\r\n$2\r\nb1\r\n$2\r\nb2\r\n$2\r\nb3\r\n$2\r\nd1\r\n$2\r\nd2\r\n"),
        ("georadius t 10 10 1 km count 4 any", "*4\r\n$2\r\nc1\r\n$2\r\nc2\r\n$2\r\na1\r\n$2\r\na2\r\n"),
        ("zadd w -1 neg 1e300 big 5 five", ":3\r\n"),
        ("geopos w neg big five", "*3\r\n*2\r\n$3\r\n180\r\n$19\r\n85.0511287799999991\r\n*2\r\n$22\r\n-179.99999731779098511\r\n$21\r\n-85.05112751263942528\r\n*2\r\n$22\r\n-179.99999731779098511\r\n$21\r\n-85.05111990847595393\r\n"),
        ("geohash w neg big five", "*3\r\n$11\r\nbp05b5048p0\r\n$11\r\n00bh0hbj200\r\n$11\r\n00bh0hbj240\r\n"),
        ("geodist w neg five", "$13\r\n18919843.7433\r\n"),
        ("geoadd e 180 85.05112878 top -180 -85.05112878 bottom 180 0 east", ":3\r\n"),
        ("zrange e 0 -1 withscores", "*6\r\n$6\r\nbottom\r\n$1\r\n0\r\n$4\r\neast\r\n$17\r\n10133099161583616\r\n$3\r\ntop\r\n$17\r\n13510798882111488\r\n"),
        ("geopos e top bottom east", "*3\r\n*2\r\n$3\r\n180\r\n$19\r\n85.0511287799999991\r\n*2\r\n$22\r\n-179.99999731779098511\r\n$21\r\n-85.05112751263942528\r\n*2\r\n$3\r\n180\r\n$19\r\n0.00000126736058093\r\n"),
        ("geohash e top bottom east", "*3\r\n$11\r\nbp05b5048p0\r\n$11\r\n00bh0hbj200\r\n$11\r\n80000000000\r\n"),
        ("geosearch e fromlonlat 0 0 byradius 30000 km asc withdist", "*1\r\n*2\r\n$6\r\nbottom\r\n$10\r\n10560.8118\r\n"),
        ("georadius e 0 0 20037 km withdist", "*1\r\n*2\r\n$6\r\nbottom\r\n$10\r\n10560.8118\r\n"),
    ];

    #[test]
    fn sicily_replies_and_errors_match_redis() {
        check(&mut TestClient::new(), SICILY);
    }

    #[test]
    fn ties_foreign_scores_and_range_edges_match_redis() {
        // Equal distances come out in Redis's order (stable sort, or its partial
        // quicksort under COUNT); scores not set by GEOADD decode as Redis's C
        // conversion does; positions at the range limits.
        check(&mut TestClient::new(), TIES_AND_EDGES);
    }

    #[test]
    fn out_of_range_numbers_are_refused_as_redis_does() {
        let mut t = TestClient::new();
        check(
            &mut t,
            &[
                ("geoadd k 1e400 1 m", "-ERR value is not a valid float\r\n"),
                ("geoadd k 1 1e-400 m", "-ERR value is not a valid float\r\n"),
                ("geoadd k 4e-320 0 m", ":1\r\n"),
                (
                    "geosearch k fromlonlat 0 0 byradius 1e400 m",
                    "-ERR need numeric radius\r\n",
                ),
                (
                    "geosearch k fromlonlat 0 0 byradius inf m",
                    "*1\r\n$1\r\nm\r\n",
                ),
            ],
        );
    }

    #[test]
    fn resp3_coordinates_are_doubles() {
        let mut t = TestClient::new();
        t.set_proto(tidewire_resp::Protocol::Resp3);
        t.run(&["GEOADD", "Sicily", "13.361389", "38.115556", "Palermo"]);
        assert_eq!(
            t.resp(&["GEOPOS", "Sicily", "Palermo", "x"]),
            "*2\r\n*2\r\n,13.361389338970184\r\n,38.1155563954963\r\n_\r\n"
        );
        assert_eq!(t.resp(&["GEODIST", "Sicily", "Palermo", "x"]), "_\r\n");
    }

    #[test]
    fn geoadd_logs_the_zadd_it_amounts_to() {
        let mut t = TestClient::new();
        let log = Arc::new(LogRecorder::default());
        t.store.set_write_log(log.clone());
        t.run(&["GEOADD", "k", "ch", "13.361389", "38.115556", "Palermo"]);
        // Nothing changed: nothing logged.
        t.run(&["GEOADD", "k", "13.361389", "38.115556", "Palermo"]);
        t.run(&["GEOADD", "k", "XX", "15.087269", "37.502669", "Catania"]);
        t.run(&[
            "GEOSEARCHSTORE",
            "d",
            "k",
            "FROMMEMBER",
            "Palermo",
            "BYRADIUS",
            "1",
            "km",
        ]);
        t.run(&[
            "GEOSEARCH",
            "k",
            "FROMMEMBER",
            "Palermo",
            "BYRADIUS",
            "1",
            "km",
        ]);
        assert_eq!(
            log.0.lock().clone(),
            vec![
                "zadd k ch 3479099956230698 Palermo".to_string(),
                "GEOSEARCHSTORE d k FROMMEMBER Palermo BYRADIUS 1 km".to_string(),
            ]
        );
    }

    #[test]
    fn store_replaces_or_deletes_the_destination() {
        let mut t = TestClient::new();
        t.run(&[
            "GEOADD",
            "src",
            "13.361389",
            "38.115556",
            "Palermo",
            "15.087269",
            "37.502669",
            "Catania",
        ]);
        t.run(&["SET", "dst", "x", "EX", "100"]);
        assert_eq!(
            t.run(&["GEORADIUS", "src", "15", "37", "100", "km", "STORE", "dst"]),
            Reply::Int(1)
        );
        assert_eq!(t.resp(&["TYPE", "dst"]), "+zset\r\n");
        assert_eq!(t.run(&["TTL", "dst"]), Reply::Int(-1));
        assert_eq!(
            t.resp(&["ZSCORE", "dst", "Catania"]),
            "$16\r\n3479447370796909\r\n"
        );
        assert_eq!(
            t.run(&[
                "GEORADIUSBYMEMBER",
                "src",
                "Palermo",
                "1",
                "km",
                "STOREDIST",
                "dst"
            ]),
            Reply::Int(1)
        );
        assert_eq!(t.resp(&["ZSCORE", "dst", "Palermo"]), "$1\r\n0\r\n");
        assert_eq!(
            t.run(&[
                "GEORADIUS",
                "nosrc",
                "15",
                "37",
                "100",
                "km",
                "STORE",
                "dst"
            ]),
            Reply::Int(0)
        );
        assert_eq!(t.run(&["EXISTS", "dst"]), Reply::Int(0));
    }

    #[test]
    fn store_keys_are_declared() {
        let argv = |s: &str| {
            s.split(' ')
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect::<Vec<_>>()
        };
        assert_eq!(georadius_keys(&argv("georadius k 1 2 3 km")), vec![1]);
        assert_eq!(
            georadius_keys(&argv("georadius k 1 2 3 km store a storedist b")),
            vec![1, 9]
        );
        assert_eq!(
            georadius_keys(&argv("georadiusbymember k m 3 km STORE store asc")),
            vec![1, 6]
        );
        assert_eq!(georadius_keys(&argv("georadius k 1 2 3 km store")), vec![1]);
    }
}
