"""Streams through redis-py's stream API, as an application would call it."""
import threading
import time

import pytest
import redis


def _later(delay, fn, *args, **kwargs):
    """Runs fn after delay seconds on another thread; join() it to collect errors."""
    box = {}

    def run():
        time.sleep(delay)
        try:
            box["result"] = fn(*args, **kwargs)
        except Exception as exc:  # surfaced by the test through box
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _other(server, **kw):
    return redis.Redis(host="127.0.0.1", port=server["resp"], decode_responses=True, **kw)


def test_xadd_ids_xlen_and_ranges(r):
    assert r.xadd("s", {"a": "1"}, id="1-1") == "1-1"
    assert r.xadd("s", {"b": "2", "c": "3"}, id="1-2") == "1-2"
    assert r.xadd("s", {"d": "4"}, id="5-*") == "5-0"
    assert r.xadd("s", {"e": "5"}, id="5-*") == "5-1"
    before = int(time.time() * 1000)
    auto = r.xadd("s", {"f": "6"})
    after = int(time.time() * 1000)
    ms, seq = (int(x) for x in auto.split("-"))
    assert before - 1000 <= ms <= after + 1000 and seq == 0
    assert r.xlen("s") == 5
    with pytest.raises(redis.ResponseError, match="equal or smaller than the target stream top item"):
        r.xadd("s", {"x": "y"}, id="1-5")
    with pytest.raises(redis.ResponseError, match="Invalid stream ID specified"):
        r.xadd("s", {"x": "y"}, id="nope")
    with pytest.raises(redis.ResponseError, match="The ID specified in XADD must be greater than 0-0"):
        r.xadd("empty", {"x": "y"}, id="0-0")
    assert r.xlen("missing") == 0
    # NOMKSTREAM does not create the key.
    assert r.xadd("nomk", {"x": "y"}, nomkstream=True) is None
    assert r.exists("nomk") == 0

    assert r.xrange("s") == [
        ("1-1", {"a": "1"}),
        ("1-2", {"b": "2", "c": "3"}),
        ("5-0", {"d": "4"}),
        ("5-1", {"e": "5"}),
        (auto, {"f": "6"}),
    ]
    assert r.xrange("s", count=2) == [("1-1", {"a": "1"}), ("1-2", {"b": "2", "c": "3"})]
    assert r.xrange("s", min="1-2", max="5") == [
        ("1-2", {"b": "2", "c": "3"}),
        ("5-0", {"d": "4"}),
        ("5-1", {"e": "5"}),
    ]
    assert r.xrange("s", min="(1-2", max="(5-1") == [("5-0", {"d": "4"})]
    assert r.xrange("s", min="6", max="7") == []
    assert r.xrevrange("s", count=2) == [(auto, {"f": "6"}), ("5-1", {"e": "5"})]
    assert r.xrevrange("s", max="5-0", min="-") == [
        ("5-0", {"d": "4"}),
        ("1-2", {"b": "2", "c": "3"}),
        ("1-1", {"a": "1"}),
    ]
    assert r.xrange("missing") == []
    r.set("str", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.xadd("str", {"a": "b"})
    assert r.type("s") == "stream"


def test_xadd_maxlen_exact_and_approximate(r):
    for i in range(1, 21):
        r.xadd("exact", {"i": str(i)}, id=f"{i}-0", maxlen=5, approximate=False)
    assert r.xlen("exact") == 5
    assert [e[0] for e in r.xrange("exact")] == ["16-0", "17-0", "18-0", "19-0", "20-0"]

    # `~` trims whole nodes only: never below the bound, and never more than a node above it
    # (Redis: 100 entries per node, so 200 adds with MAXLEN ~ 10 leave the second node's 100).
    for i in range(1, 201):
        r.xadd("approx", {"i": str(i)}, id=f"{i}-0", maxlen=10, approximate=True)
    n = r.xlen("approx")
    assert 10 <= n <= 110, n
    ids = [e[0] for e in r.xrange("approx")]
    assert ids[-1] == "200-0" and len(ids) == n
    assert ids == [f"{i}-0" for i in range(201 - n, 201)]

    # MINID through XADD.
    for i in range(1, 6):
        r.xadd("byid", {"i": str(i)}, id=f"{i}-0")
    r.xadd("byid", {"i": "6"}, id="6-0", minid="4", approximate=False)
    assert [e[0] for e in r.xrange("byid")] == ["4-0", "5-0", "6-0"]


def test_xtrim_and_xdel(r):
    for i in range(1, 11):
        r.xadd("t", {"i": str(i)}, id=f"{i}-0")
    assert r.xtrim("t", maxlen=8, approximate=False) == 2
    assert r.xrange("t", count=1) == [("3-0", {"i": "3"})]
    assert r.xtrim("t", minid="6", approximate=False) == 3
    assert r.xlen("t") == 5
    assert r.xtrim("t", maxlen=100, approximate=False) == 0
    # Approximate trimming of one small node removes nothing.
    assert r.xtrim("t", maxlen=1, approximate=True) == 0
    assert r.xdel("t", "6-0", "8-0", "99-0") == 2
    assert [e[0] for e in r.xrange("t")] == ["7-0", "9-0", "10-0"]
    assert r.xdel("t", "6-0") == 0
    assert r.xlen("t") == 3
    # Deleting every entry keeps the (empty) stream and its last id.
    assert r.xdel("t", "7-0", "9-0", "10-0") == 3
    assert r.exists("t") == 1 and r.xlen("t") == 0
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        r.xadd("t", {"i": "x"}, id="10-0")
    assert r.xadd("t", {"i": "x"}, id="10-1") == "10-1"
    assert r.xdel("missing", "1-0") == 0


def test_xread_non_blocking(r):
    r.xadd("a", {"k": "1"}, id="1-0")
    r.xadd("a", {"k": "2"}, id="2-0")
    r.xadd("b", {"k": "3"}, id="3-0")
    assert r.xread({"a": "0"}) == [["a", [("1-0", {"k": "1"}), ("2-0", {"k": "2"})]]]
    assert r.xread({"a": "0-0", "b": "0-0"}, count=1) == [
        ["a", [("1-0", {"k": "1"})]],
        ["b", [("3-0", {"k": "3"})]],
    ]
    assert r.xread({"a": "1-0", "b": "3-0"}) == [["a", [("2-0", {"k": "2"})]]]
    assert r.xread({"a": "2-0"}) == []
    assert r.xread({"missing": "0"}) == []


def test_xread_block_woken_by_xadd(r, server):
    r.xadd("live", {"old": "1"}, id="1-0")
    writer = _other(server)
    t, box = _later(0.3, writer.xadd, "live", {"new": "2"}, id="2-0")
    start = time.monotonic()
    got = r.xread({"live": "$"}, block=5000)
    elapsed = time.monotonic() - start
    t.join(5)
    assert "error" not in box, box
    assert got == [["live", [("2-0", {"new": "2"})]]]
    assert 0.2 <= elapsed < 4, elapsed

    # A stream that does not exist yet: woken when XADD creates it.
    t, box = _later(0.2, writer.xadd, "fresh", {"f": "v"}, id="7-7")
    got = r.xread({"fresh": "0-0"}, block=5000)
    t.join(5)
    assert got == [["fresh", [("7-7", {"f": "v"})]]]

    # Timeout: nothing arrives, nil after ~the block time.
    start = time.monotonic()
    assert r.xread({"live": "$"}, block=200) == []
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < 3, elapsed
    writer.close()


def test_xread_dollar_sees_only_new_entries(r, server):
    r.xadd("d", {"n": "1"}, id="1-0")
    r.xadd("d", {"n": "2"}, id="2-0")
    writer = _other(server)
    # Without BLOCK, `$` means "after the last entry": nothing.
    assert r.xread({"d": "$"}) == []
    # Several entries arrive together (in one MULTI) while blocked: all are returned.
    def burst():
        with writer.pipeline(transaction=True) as p:
            p.xadd("d", {"n": "3"}, id="3-0")
            p.xadd("d", {"n": "4"}, id="4-0")
            return p.execute()

    t, box = _later(0.2, burst)
    got = r.xread({"d": "$"}, block=5000, count=10)
    t.join(5)
    assert box.get("result") == ["3-0", "4-0"]
    assert got == [["d", [("3-0", {"n": "3"}), ("4-0", {"n": "4"})]]]
    writer.close()


def test_consumer_group_lifecycle(r, server):
    assert r.xgroup_create("jobs", "workers", id="0", mkstream=True) is True
    assert r.exists("jobs") == 1 and r.xlen("jobs") == 0
    with pytest.raises(redis.ResponseError, match="BUSYGROUP Consumer Group name already exists"):
        r.xgroup_create("jobs", "workers", id="0")
    with pytest.raises(redis.ResponseError, match="requires the key to exist"):
        r.xgroup_create("nokey", "g", id="$")
    for i in range(1, 5):
        r.xadd("jobs", {"job": str(i)}, id=f"{i}-0")

    # '>' hands out new entries.
    assert r.xreadgroup("workers", "alice", {"jobs": ">"}, count=2) == [
        ["jobs", [("1-0", {"job": "1"}), ("2-0", {"job": "2"})]]
    ]
    assert r.xreadgroup("workers", "bob", {"jobs": ">"}, count=1) == [["jobs", [("3-0", {"job": "3"})]]]
    # History ('0') replays only this consumer's pending entries.
    assert r.xreadgroup("workers", "alice", {"jobs": "0"}) == [
        ["jobs", [("1-0", {"job": "1"}), ("2-0", {"job": "2"})]]
    ]
    assert r.xreadgroup("workers", "carol", {"jobs": "0"}) == [["jobs", []]]

    summary = r.xpending("jobs", "workers")
    assert summary == {
        "pending": 3,
        "min": "1-0",
        "max": "3-0",
        "consumers": [{"name": "alice", "pending": 2}, {"name": "bob", "pending": 1}],
    }
    detail = r.xpending_range("jobs", "workers", min="-", max="+", count=10)
    assert [(d["message_id"], d["consumer"]) for d in detail] == [
        ("1-0", "alice"),
        ("2-0", "alice"),
        ("3-0", "bob"),
    ]
    # alice read 1-0 and 2-0 twice ('>' then history), bob once.
    assert [d["times_delivered"] for d in detail] == [2, 2, 1]
    assert all(isinstance(d["time_since_delivered"], int) and d["time_since_delivered"] >= 0 for d in detail)
    only_bob = r.xpending_range("jobs", "workers", "-", "+", 10, consumername="bob")
    assert [d["message_id"] for d in only_bob] == ["3-0"]
    time.sleep(0.12)
    idle = r.xpending_range("jobs", "workers", "-", "+", 10, idle=100)
    assert [d["message_id"] for d in idle] == ["1-0", "2-0", "3-0"]
    assert r.xpending_range("jobs", "workers", "-", "+", 10, idle=100000) == []

    assert r.xack("jobs", "workers", "1-0", "3-0", "99-0") == 2
    assert r.xack("jobs", "workers", "1-0") == 0
    assert r.xreadgroup("workers", "alice", {"jobs": "0"}) == [["jobs", [("2-0", {"job": "2"})]]]
    assert r.xpending("jobs", "workers")["pending"] == 1
    assert r.xpending("jobs", "workers")["consumers"] == [{"name": "alice", "pending": 1}]

    # NOACK: delivered but not pending.
    assert r.xreadgroup("workers", "bob", {"jobs": ">"}, noack=True) == [["jobs", [("4-0", {"job": "4"})]]]
    assert r.xpending("jobs", "workers")["pending"] == 1
    # Nothing new.
    assert r.xreadgroup("workers", "bob", {"jobs": ">"}) == []

    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        r.xreadgroup("nogroup", "x", {"jobs": ">"})

    # SETID rewinds the group; DELCONSUMER drops pending entries; DESTROY removes it.
    assert r.xgroup_setid("jobs", "workers", id="0") is True
    assert r.xreadgroup("workers", "dave", {"jobs": ">"}, count=1) == [["jobs", [("1-0", {"job": "1"})]]]
    assert r.xgroup_createconsumer("jobs", "workers", "erin") == 1
    assert r.xgroup_createconsumer("jobs", "workers", "erin") == 0
    assert r.xgroup_delconsumer("jobs", "workers", "dave") == 1
    assert r.xgroup_delconsumer("jobs", "workers", "erin") == 0
    assert r.xgroup_destroy("jobs", "workers") == 1
    assert r.xgroup_destroy("jobs", "workers") == 0


def test_xreadgroup_block_woken_by_xadd(r, server):
    r.xgroup_create("q", "g", id="$", mkstream=True)
    writer = _other(server)
    t, box = _later(0.3, writer.xadd, "q", {"task": "x"}, id="10-0")
    start = time.monotonic()
    got = r.xreadgroup("g", "c", {"q": ">"}, block=5000, count=5)
    elapsed = time.monotonic() - start
    t.join(5)
    assert got == [["q", [("10-0", {"task": "x"})]]]
    assert 0.2 <= elapsed < 4
    assert r.xpending("q", "g")["pending"] == 1
    start = time.monotonic()
    assert r.xreadgroup("g", "c", {"q": ">"}, block=150) == []
    assert time.monotonic() - start >= 0.1
    writer.close()


def test_xclaim_and_xautoclaim(r):
    r.xgroup_create("w", "g", id="0", mkstream=True)
    for i in range(1, 6):
        r.xadd("w", {"n": str(i)}, id=f"{i}-0")
    r.xreadgroup("g", "crashed", {"w": ">"})
    time.sleep(0.05)

    # Not idle long enough: nothing claimed.
    assert r.xclaim("w", "g", "rescuer", min_idle_time=60000, message_ids=["1-0"]) == []
    assert r.xclaim("w", "g", "rescuer", min_idle_time=10, message_ids=["1-0", "2-0"]) == [
        ("1-0", {"n": "1"}),
        ("2-0", {"n": "2"}),
    ]
    # JUSTID returns ids and does not count a delivery.
    assert r.xclaim("w", "g", "rescuer", min_idle_time=0, message_ids=["3-0"], justid=True) == ["3-0"]
    detail = {d["message_id"]: d for d in r.xpending_range("w", "g", "-", "+", 10)}
    assert {k: (v["consumer"], v["times_delivered"]) for k, v in detail.items()} == {
        "1-0": ("rescuer", 2),
        "2-0": ("rescuer", 2),
        "3-0": ("rescuer", 1),
        "4-0": ("crashed", 1),
        "5-0": ("crashed", 1),
    }
    # IDLE/RETRYCOUNT options.
    r.xclaim("w", "g", "rescuer", min_idle_time=0, message_ids=["1-0"], idle=5000, retrycount=7, justid=True)
    one = r.xpending_range("w", "g", "1-0", "1-0", 1)[0]
    assert one["times_delivered"] == 7 and one["time_since_delivered"] >= 5000

    # XAUTOCLAIM scans the PEL from start_id: [next cursor, claimed entries, deleted ids].
    got = r.xautoclaim("w", "g", "auto", min_idle_time=0, start_id="0-0", count=2)
    assert got == ["3-0", [("1-0", {"n": "1"}), ("2-0", {"n": "2"})], []]
    got = r.xautoclaim("w", "g", "auto", min_idle_time=0, start_id="3-0", count=10)
    assert got == ["0-0", [("3-0", {"n": "3"}), ("4-0", {"n": "4"}), ("5-0", {"n": "5"})], []]
    assert r.xautoclaim("w", "g", "auto2", min_idle_time=0, start_id="0-0", justid=True) == [
        "1-0", "2-0", "3-0", "4-0", "5-0",
    ]
    assert r.xpending("w", "g")["consumers"] == [{"name": "auto2", "pending": 5}]
    # An entry deleted while pending: XAUTOCLAIM reports and drops it, XCLAIM skips it.
    r.xdel("w", "2-0")
    got = r.xautoclaim("w", "g", "auto3", min_idle_time=0, start_id="0-0")
    assert got == ["0-0", [("1-0", {"n": "1"}), ("3-0", {"n": "3"}), ("4-0", {"n": "4"}), ("5-0", {"n": "5"})], ["2-0"]]
    assert r.xpending("w", "g")["pending"] == 4


def test_xinfo(r):
    for i in range(1, 4):
        r.xadd("info", {"f": str(i)}, id=f"{i}-0")
    r.xgroup_create("info", "g1", id="0")
    r.xgroup_create("info", "g2", id="$")
    r.xreadgroup("g1", "c1", {"info": ">"}, count=2)
    r.xreadgroup("g1", "c2", {"info": ">"}, count=5)
    r.xack("info", "g1", "3-0")

    s = r.xinfo_stream("info")
    assert s["length"] == 3
    assert s["last-generated-id"] == "3-0"
    assert s["max-deleted-entry-id"] == "0-0"
    assert s["entries-added"] == 3
    assert s["recorded-first-entry-id"] == "1-0"
    assert s["groups"] == 2
    assert s["first-entry"] == ("1-0", {"f": "1"})
    assert s["last-entry"] == ("3-0", {"f": "3"})
    assert s["radix-tree-keys"] >= 1 and s["radix-tree-nodes"] >= 1

    groups = r.xinfo_groups("info")
    assert groups == [
        {"name": "g1", "consumers": 2, "pending": 2, "last-delivered-id": "3-0", "entries-read": 3, "lag": 0},
        # Created at `$` without ENTRIESREAD: its read counter is unknown, its lag 0.
        {"name": "g2", "consumers": 0, "pending": 0, "last-delivered-id": "3-0", "entries-read": None, "lag": 0},
    ]
    consumers = r.xinfo_consumers("info", "g1")
    assert [(c["name"], c["pending"]) for c in consumers] == [("c1", 2), ("c2", 0)]
    assert all(isinstance(c["idle"], int) and c["idle"] >= 0 for c in consumers)

    r.xdel("info", "2-0")
    s = r.xinfo_stream("info")
    assert s["length"] == 2 and s["max-deleted-entry-id"] == "2-0" and s["entries-added"] == 3
    # A deletion before g1's position leaves its lag computable.
    r.xadd("info", {"f": "4"}, id="4-0")
    g = {x["name"]: x for x in r.xinfo_groups("info")}
    assert g["g1"]["lag"] == 1 and g["g1"]["entries-read"] == 3

    full = r.xinfo_stream("info", full=True)
    assert full["length"] == 3
    assert full["entries"] == {"1-0": {"f": "1"}, "3-0": {"f": "3"}, "4-0": {"f": "4"}}
    fg = {x["name"]: x for x in full["groups"]}
    assert fg["g1"]["pel-count"] == 2
    assert [p[0] for p in fg["g1"]["pending"]] == ["1-0", "2-0"]
    assert [c["name"] for c in fg["g1"]["consumers"]] == ["c1", "c2"]

    with pytest.raises(redis.ResponseError, match="no such key"):
        r.xinfo_stream("missing")
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        r.xinfo_consumers("info", "nope")


def test_xsetid(r):
    r.xadd("sid", {"a": "1"}, id="5-0")
    assert r.execute_command("XSETID", "sid", "10-0") == "OK"
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        r.xadd("sid", {"a": "2"}, id="9-0")
    assert r.xadd("sid", {"a": "2"}, id="10-*") == "10-1"
    with pytest.raises(redis.ResponseError, match="smaller than the target stream top item"):
        r.execute_command("XSETID", "sid", "1-0")


def test_streams_in_pipeline_and_transaction(r):
    with r.pipeline(transaction=True) as p:
        p.xadd("tx", {"a": "1"}, id="1-0").xadd("tx", {"b": "2"}, id="2-0").xlen("tx").xrange("tx")
        assert p.execute() == ["1-0", "2-0", 2, [("1-0", {"a": "1"}), ("2-0", {"b": "2"})]]


def test_resp3_xread_and_xreadgroup(r, r3):
    r.xadd("r3", {"a": "1"}, id="1-0")
    r.xadd("r3", {"b": "2"}, id="2-0")
    r.xadd("r3b", {"c": "3"}, id="3-0")
    # RESP3: XREAD answers a map keyed by stream name.
    assert r3.xread({"r3": "0", "r3b": "0"}) == {
        "r3": [[("1-0", {"a": "1"}), ("2-0", {"b": "2"})]],
        "r3b": [[("3-0", {"c": "3"})]],
    }
    assert r3.xread({"r3": "2-0"}) == {}
    assert r3.xread({"r3": "$"}, block=100) == {}
    assert r3.xrange("r3", count=1) == [("1-0", {"a": "1"})]
    r3.xgroup_create("r3", "g", id="0")
    assert r3.xreadgroup("g", "c", {"r3": ">"}, count=1) == {"r3": [[("1-0", {"a": "1"})]]}
    s = r3.xinfo_stream("r3")
    assert s["length"] == 2 and s["first-entry"] == ("1-0", {"a": "1"}) and s["groups"] == 1
    assert r3.xinfo_groups("r3")[0]["name"] == "g"
    assert r3.xpending("r3", "g")["pending"] == 1
