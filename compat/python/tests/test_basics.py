"""redis-py, unmodified, against Tidewire's RESP front door."""
import time

import pytest
import redis


def test_strings_and_ttl(r):
    assert r.set("k", "v") is True
    assert r.get("k") == "v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("tmp", "x", ex=100) is True
    assert 90 < r.ttl("tmp") <= 100
    assert r.incr("n") == 1
    assert r.incrby("n", 9) == 10
    assert r.mget("k", "nope", "n") == ["v", None, "10"]


def test_errors_are_redis_errors(r):
    r.set("s", "abc")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incr("s")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("NOSUCH")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        r.execute_command("GET")


def test_pipeline_transaction(r):
    with r.pipeline(transaction=True) as p:
        p.set("a", 1).incr("a").get("a")
        assert p.execute() == [True, 2, "2"]
    with r.pipeline(transaction=False) as p:
        for i in range(200):
            p.set(f"k{i}", i)
        assert all(p.execute())


def test_watch_conflict(r, server):
    other = redis.Redis(host="127.0.0.1", port=server["resp"], decode_responses=True)
    r.set("w", "1")
    with r.pipeline() as p:
        p.watch("w")
        other.set("w", "2")
        p.multi()
        p.set("w", "3")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("w") == "2"
    other.close()


def test_pubsub(r):
    ps = r.pubsub()
    ps.subscribe("chan")
    assert ps.get_message(timeout=2)["type"] == "subscribe"
    assert r.publish("chan", "hello") == 1
    msg = None
    deadline = time.time() + 5
    while msg is None and time.time() < deadline:
        msg = ps.get_message(timeout=1)
    assert msg["data"] == "hello"
    ps.close()


def test_expiry_is_invisible(r):
    r.set("short", "x", px=50)
    deadline = time.time() + 5
    while r.exists("short") and time.time() < deadline:
        time.sleep(0.05)
    assert r.get("short") is None
    assert r.ttl("short") == -2


def test_resp3_hello(r3):
    assert r3.ping() is True
    r3.set("k3", "v")
    assert r3.get("k3") == "v"
    info = r3.execute_command("HELLO", "3")
    assert info["proto"] == 3
    assert info["version"].startswith("7.2")


def test_client_name(r):
    r.client_setname("worker-1")
    assert r.client_getname() == "worker-1"


def test_register_script_and_script_errors(r):
    incr_by = r.register_script(
        "local v = redis.call('incrby', KEYS[1], ARGV[1]) "
        "redis.call('expire', KEYS[1], ARGV[2]) return v"
    )
    assert incr_by(keys=["hits"], args=[5, 100]) == 5
    r.script_flush()
    assert incr_by(keys=["hits"], args=[2, 100]) == 7  # NOSCRIPT, then loaded again
    assert 90 < r.ttl("hits") <= 100
    assert r.eval("return {1, 'two', {3}}", 0) == [1, "two", [3]]
    assert r.eval("return redis.status_reply('FINE')", 0) == "FINE"
    with pytest.raises(redis.ResponseError, match="my failure"):
        r.eval("return redis.error_reply('my failure')", 0)
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha("f" * 40, 0)
