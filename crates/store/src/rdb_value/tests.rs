//! Round trips of every type and encoding, payloads made by redis-server, the
//! legacy encodings built by hand, and hostile payloads.

use super::*;
use crate::dump_payload::{put_string, seal};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn string(s: &[u8]) -> Value {
    Value::Str(StrValue::copy_from_slice(s))
}

fn list(items: impl IntoIterator<Item = Vec<u8>>, fill: i64) -> Value {
    let mut l = ListValue::from_items(items.into_iter().map(Bytes::from));
    l.update_encoding(fill);
    Value::List(Box::new(l))
}

fn set(members: &[&[u8]], limits: SetLimits) -> Value {
    Value::Set(SetValue::from_members(members.iter().copied(), limits))
}

fn hash(pairs: &[(&[u8], &[u8])], limits: HashLimits) -> Value {
    let mut h = HashValue::default();
    for (f, v) in pairs {
        h.set(f, v, limits);
    }
    Value::Hash(h)
}

fn zset(pairs: &[(&[u8], f64)], max_entries: usize) -> Value {
    let mut z = ZSetValue::new();
    for (m, s) in pairs {
        z.insert(m, *s);
    }
    z.update_encoding(max_entries, 64);
    Value::ZSet(Box::new(z))
}

/// DUMP then RESTORE with default limits: same content, same encoding, and the
/// type byte Redis would write.
fn round_trip(v: &Value, rdb_type: u8) {
    for compress in [false, true] {
        let payload = dump(v, &Limits::default(), compress);
        assert_eq!(payload[0], rdb_type, "{v:?}");
        let back = restore(&payload, &Limits::default()).expect("restores");
        assert_eq!(&back, v);
        assert_eq!(back.encoding(), v.encoding(), "{v:?}");
    }
}

#[test]
fn strings_round_trip() {
    for s in [
        &b"0"[..],
        b"-1",
        b"127",
        b"-32768",
        b"2147483647",
        b"-2147483648",
        b"2147483648",
        b"9223372036854775807",
        b"007",
        b"+1",
        b"",
        b"hello",
        b"\x00\xff binary",
    ] {
        round_trip(&string(s), STRING);
    }
    round_trip(&string(&b"abc".repeat(1000)), STRING);
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    round_trip(&string(&noise), STRING);
}

#[test]
fn string_encodings_are_redis_s() {
    let body = |s: &[u8], compress| encode(&string(s), -2, compress);
    assert_eq!(body(b"12", false), [0, 0xc0, 12]);
    assert_eq!(body(b"-300", false), [0, 0xc1, 0xd4, 0xfe]);
    assert_eq!(body(b"70000", false), [0, 0xc2, 0x70, 0x11, 0x01, 0x00]);
    // Beyond 32 bits and non-canonical forms stay text.
    assert_eq!(body(b"4294967296", false)[1], 10);
    assert_eq!(body(b"01", false), [0, 2, b'0', b'1']);
    // Compressed only when it pays and allowed.
    assert_eq!(body(&[b'a'; 60], true)[1], 0xc3);
    assert_eq!(body(&[b'a'; 60], false)[1], 60);
    assert_eq!(body(&[b'a'; 20], true)[1], 20);
}

#[test]
fn lists_round_trip() {
    let small = list((0..10).map(|i| format!("v{i}").into_bytes()), -2);
    assert_eq!(small.encoding(), "listpack");
    round_trip(&small, LIST_QUICKLIST_2);
    let ints = list(
        [
            "0",
            "-1",
            "4095",
            "-4097",
            "40000",
            "-9000000",
            "3000000000",
            "x",
        ]
        .map(|s| s.as_bytes().to_vec()),
        -2,
    );
    round_trip(&ints, LIST_QUICKLIST_2);
    let big = list((0..5000).map(|i| format!("element-{i}").into_bytes()), -2);
    assert_eq!(big.encoding(), "quicklist");
    round_trip(&big, LIST_QUICKLIST_2);
    let long_items = list((0..20).map(|i| vec![b'a' + i as u8; 10_000]), -2);
    round_trip(&long_items, LIST_QUICKLIST_2);
}

#[test]
fn quicklist_nodes_follow_the_fill() {
    let l = list((0..100).map(|i| i.to_string().into_bytes()), 8);
    let body = encode(&l, 8, false);
    let mut r = Reader::new(&body);
    assert_eq!(r.byte(), Some(LIST_QUICKLIST_2));
    assert_eq!(r.len(), Some(13), "100 elements, 8 per node");
    let l = list((0..2000).map(|i| format!("{i:0>20}").into_bytes()), -1);
    let body = encode(&l, -1, false);
    let mut r = Reader::new(&body);
    r.byte();
    let nodes = r.len().unwrap() as usize;
    for _ in 0..nodes {
        assert_eq!(r.len(), Some(CONTAINER_PACKED));
        assert!(r.string().unwrap().len() <= 4096);
    }
    assert!(r.is_empty());
    // A listpack-encoded list is one node whatever its size.
    let one = list((0..100).map(|i| i.to_string().into_bytes()), 1000);
    let body = encode(&one, 8, false);
    assert_eq!(body[1], 1);
}

#[test]
fn sets_round_trip() {
    let d = SetLimits::default();
    round_trip(&set(&[b"1", b"2", b"-3"], d), SET_INTSET);
    round_trip(&set(&[b"1", b"70000"], d), SET_INTSET);
    round_trip(&set(&[b"1", b"-9223372036854775808"], d), SET_INTSET);
    let ls = set(&[b"a", b"1", b"bb"], d);
    assert_eq!(ls.encoding(), "listpack");
    round_trip(&ls, SET_LISTPACK);
    let many: Vec<Vec<u8>> = (0..1000).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = many.iter().map(|m| &m[..]).collect();
    let ht = set(&refs, d);
    assert_eq!(ht.encoding(), "hashtable");
    round_trip(&ht, SET);
    let many_ints: Vec<Vec<u8>> = (0..600).map(|i| i.to_string().into_bytes()).collect();
    let refs: Vec<&[u8]> = many_ints.iter().map(|m| &m[..]).collect();
    let ht = set(&refs, d);
    assert_eq!(ht.encoding(), "hashtable");
    round_trip(&ht, SET);
}

#[test]
fn hashes_round_trip() {
    let d = HashLimits::default();
    let small = hash(&[(b"f", b"v"), (b"n", b"12"), (b"", b"")], d);
    assert_eq!(small.encoding(), "listpack");
    round_trip(&small, HASH_LISTPACK);
    let long = hash(&[(b"f", &[b'x'; 100])], d);
    assert_eq!(long.encoding(), "hashtable");
    round_trip(&long, HASH);
    let fields: Vec<String> = (0..300).map(|i| format!("field{i}")).collect();
    let pairs: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|f| (f.as_bytes(), f.as_bytes()))
        .collect();
    round_trip(&hash(&pairs, d), HASH);
}

#[test]
fn zsets_round_trip() {
    let pairs: Vec<(&[u8], f64)> = vec![
        (b"a", 1.0),
        (b"b", 1.5),
        (b"c", -0.25),
        (b"d", f64::INFINITY),
        (b"e", f64::NEG_INFINITY),
        (b"f", 1e300),
        (b"g", 4611686018427387904.0),
        (b"h", -7.0),
        (b"12", 3.0),
    ];
    let lp = zset(&pairs, 128);
    assert_eq!(lp.encoding(), "listpack");
    round_trip(&lp, ZSET_LISTPACK);
    let sl = zset(&pairs, 2);
    assert_eq!(sl.encoding(), "skiplist");
    let payload = dump(&sl, &Limits::default(), false);
    assert_eq!(payload[0], ZSET_2);
    // Fewer members than the default limit: Redis's loader makes it a listpack.
    let back = restore(&payload, &Limits::default()).unwrap();
    assert_eq!(back, sl);
    assert_eq!(back.encoding(), "listpack");
    let big: Vec<(Vec<u8>, f64)> = (0..500)
        .map(|i| (format!("m{i}").into_bytes(), i as f64 / 3.0))
        .collect();
    let refs: Vec<(&[u8], f64)> = big.iter().map(|(m, s)| (&m[..], *s)).collect();
    round_trip(&zset(&refs, 128), ZSET_2);
}

/// Restored encodings follow this server's limits, as Redis's loader does.
#[test]
fn restored_encodings_follow_the_limits() {
    let tight = Limits {
        hash: HashLimits {
            max_entries: 2,
            max_value: 64,
        },
        set: SetLimits {
            max_intset: 2,
            max_listpack_entries: 2,
            max_listpack_value: 64,
        },
        zset_entries: 2,
        zset_value: 64,
        stream_nodes: Default::default(),
        list_fill: 2,
    };
    let d = Limits::default();
    let cases = [
        (
            hash(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], d.hash),
            "hashtable",
        ),
        (set(&[b"1", b"2", b"3"], d.set), "hashtable"),
        (set(&[b"a", b"b", b"c"], d.set), "hashtable"),
        (
            zset(&[(b"a", 1.0), (b"b", 2.0), (b"c", 3.0)], 128),
            "skiplist",
        ),
        (
            list([b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], -2),
            "quicklist",
        ),
    ];
    for (v, encoding) in cases {
        let back = restore(&dump(&v, &d, true), &tight).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.encoding(), encoding, "{v:?}");
    }
}

/// Payloads DUMPed by redis-server 7.0.15 (RDB version 10).
#[test]
fn payloads_made_by_redis() {
    let d = Limits::default();
    let get = |h: &str| restore(&hex(h), &d).expect("restores");
    assert_eq!(
        get("1016160000000400826631038276310382663203c12c02ff0a00f8152cbdbe4577b5"),
        hash(&[(b"f1", b"v1"), (b"f2", b"300")], d.hash)
    );
    let si = get("0b14040000000300000090eefeff01000000050000000a0027439a923575b197");
    assert_eq!(si, set(&[b"1", b"-70000", b"5"], d.set));
    assert_eq!(si.encoding(), "intset");
    // Redis 7.0 had no listpack sets: a small set of strings came as type 2.
    let sl = get("0203c003016201610a00a0b8f5002f6a7c9e");
    assert_eq!(sl, set(&[b"a", b"b", b"3"], d.set));
    assert_eq!(sl.encoding(), "listpack");
    let zl =
        get("111d1d0000000600816302842d696e660581610283312e35048162020201ff0a0017dce91ab8436c89");
    assert_eq!(
        zl,
        zset(&[(b"a", 1.5), (b"b", 2.0), (b"c", f64::NEG_INFINITY)], 128)
    );
    let zs = get("0502016200000000000000400161000000000000f83f0a00e77c0b139f4e671e");
    assert_eq!(zs, zset(&[(b"a", 1.5), (b"b", 2.0)], 128));
    assert_eq!(get("00c139300a009d94ea2793fc08b9"), string(b"12345"));
    assert_eq!(
        get("00c3093c017878e02f000178780a00136a4bd61cb507ae"),
        string(&[b'x'; 60])
    );
    // Three LZF-compressed listpack nodes (list-max-listpack-size 4).
    let lc = get("120302c331409715970000000400a26974656d2d6e756d6265722d312d61e00a000023e004230032e01a230033e01a230034e00c230123ff02c331409715970000000400a26974656d2d6e756d6265722d352d61e00a000023e004230036e01a230037e01a230038e00c230123ff02c338409a159a0000000400a26974656d2d6e756d6265722d392d61e00a000123a3e00323013130e00c240024e005240031e01b240032e00c240124ff0a001047488c90ca4f6a");
    assert_eq!(
        lc,
        list(
            (1..=12).map(|i| format!("item-number-{i}-aaaaaaaaaaaaaaaaaaaa").into_bytes()),
            -2
        )
    );
}

/// Seals a hand-made object: type byte, then `object`.
fn payload(rdb_type: u8, object: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut body = vec![rdb_type];
    object(&mut body);
    seal(body).to_vec()
}

fn blob(b: &[u8]) -> impl FnOnce(&mut Vec<u8>) + '_ {
    move |out| put_string(out, b)
}

/// The encodings Redis before 7.0 wrote, which Redis 7.x still reads.
#[test]
fn legacy_encodings() {
    let d = Limits::default();
    let get = |p: Vec<u8>| restore(&p, &d);
    let abc = list([b"a".to_vec(), b"2".to_vec(), b"ccc".to_vec()], -2);
    let zl = ziplist::build(&[b"a", b"2", b"ccc"]);
    let from_ziplist = get(payload(LIST_ZIPLIST, blob(&zl))).unwrap();
    assert_eq!(from_ziplist, abc);
    // Redis 7.2 leaves a type-10 list a quicklist, whatever its size.
    assert_eq!(from_ziplist.encoding(), "quicklist");
    // A quicklist of ziplists, an empty node skipped.
    let first = ziplist::build(&[b"a", b"2"]);
    let second = ziplist::build(&[b"ccc"]);
    let empty = ziplist::build(&[]);
    let p = payload(LIST_QUICKLIST, |out| {
        put_len(out, 3);
        put_string(out, &first);
        put_string(out, &empty);
        put_string(out, &second);
    });
    let from_quicklist = get(p).unwrap();
    assert_eq!(from_quicklist, abc);
    assert_eq!(
        from_quicklist.encoding(),
        "quicklist",
        "two non-empty nodes"
    );
    // The original list type: plain strings, one integer-encoded.
    let p = payload(LIST, |out| {
        put_len(out, 3);
        put_string(out, b"a");
        out.extend_from_slice(&[0xc0, 2]);
        put_string(out, b"ccc");
    });
    assert_eq!(get(p), Ok(abc));
    // Hash and zset ziplists.
    let zl = ziplist::build(&[b"f", b"v", b"n", b"7"]);
    assert_eq!(
        get(payload(HASH_ZIPLIST, blob(&zl))),
        Ok(hash(&[(b"f", b"v"), (b"n", b"7")], d.hash))
    );
    let zl = ziplist::build(&[b"a", b"1", b"b", b"2.5", b"c", b"-inf"]);
    assert_eq!(
        get(payload(ZSET_ZIPLIST, blob(&zl))),
        Ok(zset(
            &[(b"a", 1.0), (b"b", 2.5), (b"c", f64::NEG_INFINITY)],
            128
        ))
    );
    // Zipmap hash.
    let zm = b"\x02\x03foo\x03\x01barX\x05hello\x05\x00world\xff";
    assert_eq!(
        get(payload(HASH_ZIPMAP, blob(zm))),
        Ok(hash(&[(b"foo", b"bar"), (b"hello", b"world")], d.hash))
    );
    // Zset with scores as text (253 = NaN is refused, 254/255 = ±inf).
    let p = payload(ZSET, |out| {
        put_len(out, 3);
        put_string(out, b"a");
        out.extend_from_slice(b"\x031.5");
        put_string(out, b"b");
        out.push(254);
        put_string(out, b"c");
        out.extend_from_slice(b"\x02-3");
    });
    let z = zset(&[(b"a", 1.5), (b"b", f64::INFINITY), (b"c", -3.0)], 128);
    assert_eq!(get(p), Ok(z));
    let nan = payload(ZSET, |out| {
        put_len(out, 1);
        put_string(out, b"a");
        out.push(253);
    });
    assert_eq!(get(nan), Err(RestoreError::BadData));
}

fn bad(p: Vec<u8>) {
    assert_eq!(
        restore(&p, &Limits::default()),
        Err(RestoreError::BadData),
        "{p:?}"
    );
}

#[test]
fn inconsistent_objects_are_refused() {
    // Types Tidewire does not hold: streams, modules, unknown.
    for t in [
        STREAM_LISTPACKS,
        STREAM_LISTPACKS_2,
        STREAM_LISTPACKS_3,
        6,
        7,
        8,
        22,
        200,
    ] {
        bad(payload(t, |out| put_string(out, b"x")));
    }
    // Trailing bytes after a complete object.
    bad(payload(STRING, |out| {
        put_string(out, b"x");
        out.push(0);
    }));
    // Empty collections.
    bad(payload(SET, |out| put_len(out, 0)));
    bad(payload(
        HASH_LISTPACK,
        blob(&listpack::Writer::new().finish()),
    ));
    bad(payload(LIST_ZIPLIST, blob(&ziplist::build(&[]))));
    bad(payload(LIST_QUICKLIST_2, |out| {
        put_len(out, 1);
        put_len(out, CONTAINER_PACKED);
        put_string(out, &listpack::Writer::new().finish());
    }));
    // Duplicates.
    bad(payload(SET, |out| {
        put_len(out, 2);
        put_string(out, b"x");
        put_string(out, b"x");
    }));
    let mut w = listpack::Writer::new();
    for s in ["f", "1", "f", "2"] {
        w.push(s.as_bytes());
    }
    let dup_pairs = w.finish();
    bad(payload(HASH_LISTPACK, blob(&dup_pairs)));
    bad(payload(ZSET_LISTPACK, blob(&dup_pairs)));
    bad(payload(
        HASH_ZIPLIST,
        blob(&ziplist::build(&[b"f", b"1", b"f", b"2"])),
    ));
    bad(payload(HASH, |out| {
        put_len(out, 2);
        for s in ["f", "1", "f", "2"] {
            put_string(out, s.as_bytes());
        }
    }));
    let mut w = listpack::Writer::new();
    w.push(b"a");
    w.push(b"a");
    bad(payload(SET_LISTPACK, blob(&w.finish())));
    bad(payload(SET_INTSET, blob(&intset::build(&[3, 3]))));
    // An odd number of entries in a paired listpack, a score that is no number.
    let mut w = listpack::Writer::new();
    w.push(b"a");
    bad(payload(HASH_LISTPACK, blob(&w.finish())));
    let mut w = listpack::Writer::new();
    w.push(b"a");
    w.push(b"nan");
    bad(payload(ZSET_LISTPACK, blob(&w.finish())));
    // An unknown quicklist container; an empty plain node.
    bad(payload(LIST_QUICKLIST_2, |out| {
        put_len(out, 1);
        put_len(out, 3);
        put_string(out, b"x");
    }));
    bad(payload(LIST_QUICKLIST_2, |out| {
        put_len(out, 1);
        put_len(out, CONTAINER_PLAIN);
        put_string(out, b"");
    }));
}

/// Declared lengths and counts never become allocations: 2^60 elements, a 4 GB
/// string, a listpack or intset claiming more than it holds.
#[test]
fn huge_declared_sizes_are_refused() {
    for t in [LIST, SET, HASH, ZSET_2, LIST_QUICKLIST_2] {
        bad(payload(t, |out| {
            put_len(out, 1 << 60);
            put_string(out, b"x");
        }));
    }
    bad(payload(STRING, |out| {
        put_len(out, u32::MAX as u64);
        out.extend_from_slice(b"abc");
    }));
    bad(payload(STRING, |out| {
        out.push(0xc3);
        put_len(out, 3);
        put_len(out, 1 << 40);
        out.extend_from_slice(&[0, b'a', 0xe0]);
    }));
    // A listpack header claiming 4 GB / 65534 entries.
    bad(payload(
        HASH_LISTPACK,
        blob(&[0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff]),
    ));
    bad(payload(SET_LISTPACK, blob(&[7, 0, 0, 0, 0xfe, 0xff, 0xff])));
    let mut intset = intset::build(&[1, 2]);
    intset[4..8].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    bad(payload(SET_INTSET, blob(&intset)));
}

/// Every prefix of every kind of payload, and every single-byte change, is
/// refused or decodes: never a panic.
#[test]
fn truncations_and_corruptions_never_panic() {
    let d = Limits::default();
    let values = [
        string(b"hello world"),
        string(&[b'z'; 100]),
        list((0..20).map(|i| i.to_string().into_bytes()), -2),
        set(&[b"1", b"2"], d.set),
        set(&[b"a", b"2"], d.set),
        hash(&[(b"f", b"v")], d.hash),
        hash(&[(b"f", &[b'v'; 80])], d.hash),
        zset(&[(b"a", 1.5), (b"b", 2.0)], 128),
        zset(&[(b"a", 1.5), (b"b", 2.0)], 1),
    ];
    for v in &values {
        let body = encode(v, -2, true);
        for cut in 0..body.len() {
            assert_eq!(decode(&body[..cut], &d), None, "{v:?} cut at {cut}");
        }
        for i in 0..body.len() {
            for x in [0x00u8, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xc3, 0xfe, 0xff] {
                let mut m = body.clone();
                m[i] = x;
                let _ = decode(&m, &d);
            }
        }
    }
}

#[test]
fn footer_errors() {
    let p = dump(&string(b"v"), &Limits::default(), false);
    let mut wrong_crc = p.to_vec();
    *wrong_crc.last_mut().unwrap() ^= 1;
    assert_eq!(
        restore(&wrong_crc, &Limits::default()),
        Err(RestoreError::Footer)
    );
    // Version 13 is newer than anything read; 12 (Redis 7.4) is read.
    let mut body = p[..p.len() - 10].to_vec();
    let newer = {
        let mut b = body.clone();
        b.extend_from_slice(&13u16.to_le_bytes());
        let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    };
    assert_eq!(
        restore(&newer, &Limits::default()),
        Err(RestoreError::Footer)
    );
    body.extend_from_slice(&12u16.to_le_bytes());
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(restore(&body, &Limits::default()), Ok(string(b"v")));
    assert_eq!(
        restore(b"short", &Limits::default()),
        Err(RestoreError::Footer)
    );
}

#[test]
fn streams_round_trip_with_groups() {
    use crate::types::stream::{Consumer, Group, NodeLimits, StreamId, StreamValue};
    let limits = Limits::default();
    let mut s = StreamValue::default();
    let nodes = NodeLimits {
        max_entries: 4,
        max_bytes: 0,
    };
    for i in 1..=10u64 {
        let fields: Vec<Bytes> = if i % 4 == 0 {
            vec![Bytes::from_static(b"other"), Bytes::from(i.to_string())]
        } else {
            vec![
                Bytes::from_static(b"n"),
                Bytes::from(i.to_string()),
                Bytes::from_static(b"s"),
                Bytes::from_static(b"text"),
            ]
        };
        s.append(StreamId::new(100 + i, i), &fields, nodes);
    }
    assert!(s.delete(StreamId::new(101, 1)));
    assert!(s.delete(StreamId::new(105, 5)));
    let mut g = Group::new(StreamId::new(103, 3), 3);
    g.consumers
        .insert(Bytes::from_static(b"alice"), Consumer::new(5));
    g.consumers
        .insert(Bytes::from_static(b""), Consumer::new(6));
    for (id, who) in [(102, &b"alice"[..]), (103, b"")] {
        let who = Bytes::copy_from_slice(who);
        let n = g.assign(StreamId::new(id, id - 100), &who, 7);
        n.delivery_count = 2;
    }
    assert!(s.create_group(Bytes::from_static(b"g"), g));
    assert!(s.create_group(Bytes::from_static(b"empty"), Group::new(StreamId::MIN, -1)));
    let v = Value::Stream(Box::new(s));
    let body = encode(&v, -2, true);
    assert_eq!(body[0], rdb_type::STREAM_LISTPACKS_3);
    assert_eq!(decode(&body, &limits), Some(v.clone()));
    // Every strict prefix is refused, never a panic.
    for cut in 0..body.len() {
        assert_eq!(decode(&body[..cut], &limits), None, "{cut}");
    }
    // An empty stream (no entries, a last id) keeps its counters.
    let mut e = StreamValue::default();
    e.last_id = StreamId::new(9, 9);
    e.entries_added = 4;
    let e = Value::Stream(Box::new(e));
    assert_eq!(decode(&encode(&e, -2, true), &limits), Some(e));
}
