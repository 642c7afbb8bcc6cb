use crate::testkit::*;
use tidewire_resp::{Protocol, Reply};

fn arr(items: Vec<Reply>) -> Reply {
    Reply::Array(items)
}

#[test]
fn zadd_options_and_errors() {
    let mut t = TestClient::new();
    assert_eq!(t.run(&["ZADD", "z", "1", "a", "2", "b"]), int(2));
    assert_eq!(
        t.run(&["ZADD", "z", "CH", "3", "a", "2", "b", "1", "c"]),
        int(2)
    );
    assert_eq!(t.run(&["ZADD", "z", "NX", "9", "a"]), int(0));
    assert_eq!(t.run(&["ZSCORE", "z", "a"]), Reply::Double(3.0));
    assert_eq!(t.run(&["ZADD", "z", "GT", "CH", "1", "a"]), int(0));
    assert_eq!(t.run(&["ZADD", "z", "LT", "CH", "1", "a"]), int(1));
    assert_eq!(t.run(&["ZADD", "z", "XX", "5", "new"]), int(0));
    assert_eq!(
        t.run(&["ZADD", "z", "INCR", "2.5", "a"]),
        Reply::Double(3.5)
    );
    assert_eq!(t.run(&["ZADD", "z", "INCR", "NX", "2.5", "a"]), Reply::Null);
    assert_eq!(
        t.run(&["ZADD", "z", "NX", "XX", "1", "a"]),
        err("ERR XX and NX options at the same time are not compatible")
    );
    assert_eq!(
        t.run(&["ZADD", "z", "GT", "LT", "1", "a"]),
        err("ERR GT, LT, and/or NX options at the same time are not compatible")
    );
    assert_eq!(
        t.run(&["ZADD", "z", "INCR", "1", "a", "2", "b"]),
        err("ERR INCR option supports a single increment-element pair")
    );
    assert_eq!(
        t.run(&["ZADD", "z", "1", "a", "2"]),
        err("ERR syntax error")
    );
    assert_eq!(
        t.run(&["ZADD", "z", "x", "a"]),
        err("ERR value is not a valid float")
    );
    assert_eq!(
        t.run(&["ZADD", "z", "nan", "a"]),
        err("ERR value is not a valid float")
    );
    t.run(&["ZADD", "inf", "+inf", "m"]);
    assert_eq!(
        t.run(&["ZINCRBY", "inf", "-inf", "m"]),
        err("ERR resulting score is not a number (NaN)")
    );
    assert_eq!(t.run(&["ZADD", "xx", "XX", "1", "a"]), int(0));
    assert_eq!(t.run(&["EXISTS", "xx"]), int(0));
    assert_eq!(t.run(&["ZINCRBY", "n", "1.5", "m"]), Reply::Double(1.5));
    assert_eq!(t.run(&["ZCARD", "z"]), int(3));
    assert_eq!(t.run(&["ZREM", "z", "a", "b", "c", "zz"]), int(3));
    assert_eq!(t.run(&["EXISTS", "z"]), int(0));
}

#[test]
fn double_formatting() {
    let mut t = TestClient::new();
    t.run(&[
        "ZADD",
        "z",
        "1.5",
        "a",
        "inf",
        "b",
        "-inf",
        "c",
        "0.30000000000000004",
        "d",
    ]);
    t.run(&["ZADD", "z", "1e20", "e", "3", "f"]);
    assert_eq!(t.resp(&["ZSCORE", "z", "a"]), "$3\r\n1.5\r\n");
    assert_eq!(t.resp(&["ZSCORE", "z", "b"]), "$3\r\ninf\r\n");
    assert_eq!(t.resp(&["ZSCORE", "z", "c"]), "$4\r\n-inf\r\n");
    assert_eq!(
        t.resp(&["ZSCORE", "z", "d"]),
        "$19\r\n0.30000000000000004\r\n"
    );
    assert_eq!(t.resp(&["ZSCORE", "z", "e"]), "$5\r\n1e+20\r\n");
    assert_eq!(t.resp(&["ZSCORE", "z", "f"]), "$1\r\n3\r\n");
    t.set_proto(Protocol::Resp3);
    assert_eq!(t.resp(&["ZSCORE", "z", "a"]), ",1.5\r\n");
    assert_eq!(t.resp(&["ZSCORE", "z", "b"]), ",inf\r\n");
    assert_eq!(t.resp(&["ZSCORE", "z", "nope"]), "_\r\n");
}

#[test]
fn ranges() {
    let mut t = TestClient::new();
    t.run(&[
        "ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
    ]);
    assert_eq!(t.run(&["ZRANGE", "z", "1", "2"]), bulks(&["b", "c"]));
    assert_eq!(t.run(&["ZRANGE", "z", "0", "1", "REV"]), bulks(&["e", "d"]));
    assert_eq!(t.run(&["ZREVRANGE", "z", "-2", "-1"]), bulks(&["b", "a"]));
    assert_eq!(
        t.resp(&["ZRANGE", "z", "0", "1", "WITHSCORES"]),
        "*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
    );
    assert_eq!(
        t.run(&[
            "ZREVRANGEBYSCORE",
            "z",
            "+inf",
            "-inf",
            "WITHSCORES",
            "LIMIT",
            "1",
            "1"
        ]),
        bulks(&["d", "4"])
    );
    assert_eq!(
        t.run(&["ZRANGEBYSCORE", "z", "(1", "3"]),
        bulks(&["b", "c"])
    );
    assert_eq!(
        t.run(&["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "1", "2"]),
        bulks(&["b", "c"])
    );
    assert_eq!(
        t.run(&["ZREVRANGEBYSCORE", "z", "4", "(2", "LIMIT", "1", "-1"]),
        bulks(&["c"])
    );
    assert_eq!(
        t.run(&["ZRANGE", "z", "(4", "+inf", "BYSCORE"]),
        bulks(&["e"])
    );
    assert_eq!(
        t.run(&["ZRANGE", "z", "5", "3", "BYSCORE", "REV", "LIMIT", "0", "2"]),
        bulks(&["e", "d"])
    );
    assert_eq!(
        t.run(&["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "-1", "2"]),
        bulks(&[])
    );
    assert_eq!(t.run(&["ZCOUNT", "z", "(1", "(5"]), int(3));
    assert_eq!(
        t.run(&["ZCOUNT", "z", "x", "5"]),
        err("ERR min or max is not a float")
    );
    assert_eq!(
        t.run(&["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"]),
        err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
        )
    );
    assert_eq!(
        t.run(&["ZRANGEBYLEX", "z", "-", "+", "WITHSCORES"]),
        err("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
    );
    assert_eq!(
        t.run(&["ZRANGEBYSCORE", "z", "0", "1", "REV"]),
        err("ERR syntax error")
    );
    assert_eq!(t.run(&["ZRANK", "z", "c"]), int(2));
    assert_eq!(
        t.run(&["ZREVRANK", "z", "c", "WITHSCORE"]),
        arr(vec![int(2), Reply::Double(3.0)])
    );
    assert_eq!(t.run(&["ZRANK", "z", "zz", "WITHSCORE"]), Reply::NullArray);
    assert_eq!(t.run(&["ZRANK", "z", "c", "FOO"]), err("ERR syntax error"));
    assert_eq!(
        t.run(&["ZMSCORE", "z", "a", "zz"]),
        arr(vec![Reply::Double(1.0), Reply::Null])
    );
    t.set_proto(Protocol::Resp3);
    assert_eq!(
        t.resp(&["ZRANGE", "z", "0", "0", "WITHSCORES"]),
        "*1\r\n*2\r\n$1\r\na\r\n,1\r\n"
    );
}

#[test]
fn lex() {
    let mut t = TestClient::new();
    t.run(&["ZADD", "z", "0", "a", "0", "b", "0", "c", "0", "d"]);
    assert_eq!(t.run(&["ZRANGEBYLEX", "z", "[b", "(d"]), bulks(&["b", "c"]));
    assert_eq!(
        t.run(&["ZREVRANGEBYLEX", "z", "+", "(b"]),
        bulks(&["d", "c"])
    );
    assert_eq!(
        t.run(&["ZRANGE", "z", "-", "+", "BYLEX", "LIMIT", "1", "1"]),
        bulks(&["b"])
    );
    assert_eq!(t.run(&["ZLEXCOUNT", "z", "-", "[c"]), int(3));
    assert_eq!(t.run(&["ZLEXCOUNT", "z", "+", "-"]), int(0));
    assert_eq!(
        t.run(&["ZLEXCOUNT", "z", "a", "[c"]),
        err("ERR min or max not valid string range item")
    );
    assert_eq!(t.run(&["ZREMRANGEBYLEX", "z", "(a", "[c"]), int(2));
    assert_eq!(t.run(&["ZRANGE", "z", "0", "-1"]), bulks(&["a", "d"]));
}

#[test]
fn remrange_and_store() {
    let mut t = TestClient::new();
    t.run(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"]);
    assert_eq!(t.run(&["ZRANGESTORE", "dst", "z", "1", "-1"]), int(3));
    assert_eq!(
        t.run(&["ZRANGE", "dst", "0", "-1"]),
        bulks(&["b", "c", "d"])
    );
    assert_eq!(
        t.run(&["ZRANGESTORE", "dst", "z", "5", "9", "BYSCORE"]),
        int(0)
    );
    assert_eq!(t.run(&["EXISTS", "dst"]), int(0));
    assert_eq!(
        t.run(&["ZRANGESTORE", "dst", "z", "0", "1", "WITHSCORES"]),
        err("ERR syntax error")
    );
    assert_eq!(t.run(&["ZREMRANGEBYRANK", "z", "0", "0"]), int(1));
    assert_eq!(t.run(&["ZREMRANGEBYSCORE", "z", "(2", "+inf"]), int(2));
    assert_eq!(t.run(&["ZREMRANGEBYSCORE", "z", "-inf", "+inf"]), int(1));
    assert_eq!(t.run(&["EXISTS", "z"]), int(0));
}

#[test]
fn pops_resp2_resp3() {
    let mut t = TestClient::new();
    t.run(&["ZADD", "z", "0", "a", "1", "b", "2", "c", "3", "d"]);
    assert_eq!(
        t.run(&["ZPOPMIN", "z"]),
        arr(vec![bulk("a"), Reply::Double(0.0)])
    );
    assert_eq!(
        t.run(&["ZPOPMAX", "z", "2"]),
        arr(vec![
            bulk("d"),
            Reply::Double(3.0),
            bulk("c"),
            Reply::Double(2.0)
        ])
    );
    assert_eq!(t.run(&["ZPOPMIN", "nope"]), arr(vec![]));
    assert_eq!(
        t.run(&["ZPOPMIN", "z", "-1"]),
        err("ERR value is out of range, must be positive")
    );
    t.run(&["ZADD", "z", "5", "e"]);
    t.set_proto(Protocol::Resp3);
    assert_eq!(
        t.resp(&["ZPOPMIN", "z", "1"]),
        "*1\r\n*2\r\n$1\r\nb\r\n,1\r\n"
    );
    assert_eq!(t.resp(&["ZPOPMIN", "z"]), "*2\r\n$1\r\ne\r\n,5\r\n");
    t.set_proto(Protocol::Resp2);
    t.run(&["ZADD", "z", "1", "a", "2", "b"]);
    assert_eq!(
        t.run(&["ZMPOP", "2", "nope", "z", "MAX", "COUNT", "5"]),
        arr(vec![
            bulk("z"),
            arr(vec![
                arr(vec![bulk("b"), Reply::Double(2.0)]),
                arr(vec![bulk("a"), Reply::Double(1.0)])
            ])
        ])
    );
    assert_eq!(t.run(&["ZMPOP", "1", "z", "MIN"]), Reply::NullArray);
    assert_eq!(
        t.run(&["ZMPOP", "0", "z", "MIN"]),
        err("ERR numkeys should be greater than 0")
    );
    assert_eq!(
        t.run(&["ZMPOP", "a", "z", "MIN"]),
        err("ERR numkeys should be greater than 0")
    );
    assert_eq!(
        t.run(&["ZMPOP", "1", "z", "MIDDLE"]),
        err("ERR syntax error")
    );
    t.run(&["ZADD", "z", "1", "a"]);
    assert_eq!(
        t.run(&["BZPOPMIN", "nope", "z", "0"]),
        arr(vec![bulk("z"), bulk("a"), Reply::Double(1.0)])
    );
    assert_eq!(t.run(&["BZPOPMIN", "z", "0"]), Reply::Status("BLOCKED"));
    assert_eq!(
        t.run(&["BZMPOP", "0.5", "1", "z", "MIN"]),
        Reply::Status("BLOCKED")
    );
    assert_eq!(
        t.run(&["BZPOPMAX", "z", "-1"]),
        err("ERR timeout is negative")
    );
}

#[test]
fn algebra() {
    let mut t = TestClient::new();
    t.run(&["ZADD", "a", "1", "x", "2", "y"]);
    t.run(&["ZADD", "b", "10", "y", "20", "z"]);
    assert_eq!(t.run(&["ZUNION", "2", "a", "b"]), bulks(&["x", "y", "z"]));
    assert_eq!(
        t.run(&["ZUNION", "2", "a", "b", "WEIGHTS", "1", "0.5", "WITHSCORES"]),
        arr(vec![
            bulk("x"),
            Reply::Double(1.0),
            bulk("y"),
            Reply::Double(7.0),
            bulk("z"),
            Reply::Double(10.0)
        ])
    );
    assert_eq!(
        t.run(&["ZINTER", "2", "a", "b", "AGGREGATE", "MAX", "WITHSCORES"]),
        arr(vec![bulk("y"), Reply::Double(10.0)])
    );
    assert_eq!(t.run(&["ZDIFF", "2", "a", "b"]), bulks(&["x"]));
    assert_eq!(
        t.run(&["ZDIFF", "2", "a", "b", "WEIGHTS", "1", "1"]),
        err("ERR syntax error")
    );
    assert_eq!(t.run(&["ZUNIONSTORE", "d", "2", "a", "b"]), int(3));
    assert_eq!(t.run(&["ZSCORE", "d", "y"]), Reply::Double(12.0));
    assert_eq!(t.run(&["ZINTERSTORE", "d", "2", "a", "nope"]), int(0));
    assert_eq!(t.run(&["EXISTS", "d"]), int(0));
    assert_eq!(t.run(&["ZDIFFSTORE", "d", "1", "a"]), int(2));
    assert_eq!(t.run(&["ZINTERCARD", "2", "a", "b"]), int(1));
    assert_eq!(
        t.run(&["ZINTERCARD", "2", "a", "b", "LIMIT", "-1"]),
        err("ERR LIMIT can't be negative")
    );
    assert_eq!(
        t.run(&["ZUNION", "0", "a"]),
        err("ERR at least 1 input key is needed for 'zunion' command")
    );
    assert_eq!(t.run(&["ZUNION", "3", "a", "b"]), err("ERR syntax error"));
    assert_eq!(
        t.run(&["ZUNION", "2", "a", "b", "WEIGHTS", "1", "x"]),
        err("ERR weight value is not a float")
    );
    t.run(&["SET", "s", "v"]);
    assert_eq!(
        t.run(&["ZUNION", "2", "a", "s"]),
        err("WRONGTYPE Operation against a key holding the wrong kind of value")
    );
}

#[test]
fn randmember_scan_encoding() {
    let mut t = TestClient::new();
    t.run(&["CONFIG", "SET", "zset-max-listpack-entries", "3"]);
    t.run(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]);
    assert_eq!(encoding_of(&t, "z"), "listpack");
    t.run(&["ZADD", "z", "4", "d"]);
    assert_eq!(encoding_of(&t, "z"), "skiplist");
    assert_eq!(t.run(&["TYPE", "z"]), Reply::Status("zset"));
    match t.run(&["ZRANDMEMBER", "z", "-10"]) {
        Reply::Array(v) => assert_eq!(v.len(), 10),
        r => panic!("{r:?}"),
    }
    match t.run(&["ZRANDMEMBER", "z", "3", "WITHSCORES"]) {
        Reply::Array(v) => assert_eq!(v.len(), 6),
        r => panic!("{r:?}"),
    }
    assert_eq!(t.run(&["ZRANDMEMBER", "nope"]), Reply::Null);
    assert_eq!(t.run(&["ZRANDMEMBER", "z", "0"]), arr(vec![]));
    assert_eq!(
        t.run(&["ZSCAN", "z", "0", "MATCH", "[ab]"]),
        // skiplist-encoded: walked by position (last inserted first).
        arr(vec![bulk("0"), bulks(&["b", "2", "a", "1"])])
    );
    assert_eq!(t.run(&["ZSCAN", "z", "x"]), err("ERR invalid cursor"));
    assert!(matches!(t.run(&["ZSCAN", "z", ""]), Reply::Array(_)));
    assert!(matches!(t.run(&["ZSCAN", "z", "-1"]), Reply::Array(_)));
    // Past the listpack limit: paged by COUNT, every member exactly once here.
    for i in 0..50 {
        t.run(&["ZADD", "big", &i.to_string(), &format!("m{i}")]);
    }
    let mut cursor = "0".to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        let Reply::Array(parts) = t.run(&["ZSCAN", "big", &cursor, "COUNT", "7"]) else {
            panic!()
        };
        let (Reply::Bulk(c), Reply::Array(items)) = (&parts[0], &parts[1]) else {
            panic!()
        };
        assert!(items.len() <= 14);
        for pair in items.chunks(2) {
            if let Reply::Bulk(m) = &pair[0] {
                seen.insert(m.clone());
            }
        }
        cursor = String::from_utf8(c.to_vec()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0");
    assert_eq!(seen.len(), 50);
}

#[test]
fn keyspace_events() {
    assert_eq!(
        crate::families::lists::tests::events_of(&[
            &["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"],
            &["ZADD", "z", "1", "a"],
            &["ZINCRBY", "z", "1", "a"],
            &["ZREM", "z", "a", "nope"],
            &["ZREMRANGEBYSCORE", "z", "2", "2"],
            &["ZPOPMIN", "z"],
            &["ZUNIONSTORE", "u", "1", "z"],
            &["BZPOPMAX", "z", "0"],
        ]),
        vec![
            "zadd z",
            "zincr z",
            "zrem z",
            "zremrangebyscore z",
            "zpopmin z",
            "zunionstore u",
            "zpopmax z",
            "del z",
        ]
    );
}
