"""Redis Functions through redis-py, unmodified, over RESP2 and RESP3."""
import pytest
import redis

COUNTERS = """#!lua name=counters
local function bump(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end
redis.register_function('bump', bump)
redis.register_function{
  function_name = 'peek',
  callback = function(keys, args) return redis.call('GET', keys[1]) end,
  flags = {'no-writes'},
  description = 'read a counter',
}
redis.register_function('tag_other', function(keys, args)
  -- Writes a key it was not given: the name is built from an argument.
  local name = 'tag:' .. args[1]
  redis.call('SET', name, args[2])
  return redis.call('GET', name)
end)
redis.register_function{
  function_name = 'shapes',
  flags = {'no-writes'},
  callback = function(keys, args)
    return {keys[1], args[1], #keys, #args, 3.7, true, false, {ok = 'fine'}}
  end,
}
"""

COUNTERS_V2 = """#!lua name=counters
redis.register_function('bump', function(keys, args)
  return redis.call('INCRBY', keys[1], tonumber(args[1]) * 10)
end)
"""

RESP3_LIB = """#!lua name=resp3lib
redis.register_function{function_name = 'hash_of', flags = {'no-writes'},
  callback = function(keys) redis.setresp(3); return redis.call('HGETALL', keys[1]) end}
redis.register_function{function_name = 'a_double', flags = {'no-writes'},
  callback = function() return {double = 3.5} end}
"""


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def fr(request, server):
    """A client speaking RESP2 or RESP3, with no keys and no libraries."""
    client = redis.Redis(
        host="127.0.0.1", port=server["resp"], decode_responses=True, protocol=request.param
    )
    client.flushall()
    assert client.function_flush() is True
    assert client.function_list() == []
    yield client
    client.close()


def _as_dict(value):
    """FUNCTION LIST maps: a dict over RESP3, a flat [k, v, ...] list over RESP2."""
    if isinstance(value, dict):
        return value
    assert isinstance(value, list) and len(value) % 2 == 0, value
    return dict(zip(value[::2], value[1::2]))


def _libraries(client, **kwargs):
    libs = []
    for raw in client.function_list(**kwargs):
        lib = _as_dict(raw)
        lib["functions"] = sorted((_as_dict(f) for f in lib["functions"]), key=lambda f: f["name"])
        libs.append(lib)
    return sorted(libs, key=lambda lib: lib["library_name"])


def test_load_fcall_and_replace(fr):
    assert fr.function_load(COUNTERS) == "counters"
    assert fr.fcall("bump", 1, "hits", 5) == 5
    assert fr.fcall("bump", 1, "hits", 2) == 7
    assert fr.fcall_ro("peek", 1, "hits") == "7"
    assert fr.fcall_ro("peek", 1, "missing") is None
    assert fr.fcall("BUMP", 1, "hits", 1) == 8  # names are case-insensitive
    assert fr.fcall_ro("shapes", 1, "k1", "a1", "a2") == ["k1", "a1", 1, 2, 3, 1, None, "fine"]

    with pytest.raises(redis.ResponseError, match="^Library 'counters' already exists$"):
        fr.function_load(COUNTERS)
    assert fr.function_load(COUNTERS_V2, replace=True) == "counters"
    assert fr.fcall("bump", 1, "hits", 1) == 18
    with pytest.raises(redis.ResponseError, match="^Function not found$"):
        fr.fcall_ro("peek", 1, "hits")
    with pytest.raises(redis.ResponseError, match="^Function not found$"):
        fr.fcall("nosuch", 0)
    with pytest.raises(redis.ResponseError, match="Number of keys can't be greater than number of args"):
        fr.fcall("bump", 3, "hits")


def test_function_list_and_delete(fr):
    assert fr.function_load(COUNTERS) == "counters"
    other = "#!lua name=other_lib\nredis.register_function('noop', function() return 0 end)"
    assert fr.function_load(other) == "other_lib"

    libs = _libraries(fr)
    assert [lib["library_name"] for lib in libs] == ["counters", "other_lib"]
    counters = libs[0]
    assert counters["engine"] == "LUA"
    assert "library_code" not in counters
    assert counters["functions"] == [
        {"name": "bump", "description": None, "flags": []},
        {"name": "peek", "description": "read a counter", "flags": ["no-writes"]},
        {"name": "shapes", "description": None, "flags": ["no-writes"]},
        {"name": "tag_other", "description": None, "flags": []},
    ]

    only = _libraries(fr, library="other*", withcode=True)
    assert [lib["library_name"] for lib in only] == ["other_lib"]
    assert only[0]["library_code"] == other
    assert only[0]["functions"] == [{"name": "noop", "description": None, "flags": []}]
    assert fr.function_list(library="nomatch*") == []

    assert fr.function_delete("other_lib") is True
    with pytest.raises(redis.ResponseError, match="^Library not found$"):
        fr.function_delete("other_lib")
    with pytest.raises(redis.ResponseError, match="^Function not found$"):
        fr.fcall("noop", 0)
    assert [lib["library_name"] for lib in _libraries(fr)] == ["counters"]

    stats = _as_dict(fr.function_stats())
    assert stats["running_script"] is None
    assert _as_dict(_as_dict(stats["engines"])["LUA"]) == {"libraries_count": 1, "functions_count": 4}


def test_fcall_ro_refuses_write_functions(fr):
    assert fr.function_load(COUNTERS) == "counters"
    with pytest.raises(
        redis.ResponseError, match=r"^Can not execute a script with write flag using \*_ro command\.$"
    ):
        fr.fcall_ro("bump", 1, "hits", 1)
    assert fr.exists("hits") == 0
    sneaky = (
        "#!lua name=sneaky\nredis.register_function{function_name = 'sneaky', flags = {'no-writes'},\n"
        "  callback = function(keys) return redis.call('SET', keys[1], 'x') end}"
    )
    assert fr.function_load(sneaky) == "sneaky"
    with pytest.raises(redis.ResponseError, match="Write commands are not allowed from read-only scripts"):
        fr.fcall("sneaky", 1, "hits")
    assert fr.exists("hits") == 0


def test_dump_flush_restore(fr):
    assert fr.function_load(COUNTERS) == "counters"
    payload = fr.function_dump()
    assert isinstance(payload, bytes)  # never decoded, even with decode_responses
    assert b"#!lua name=counters" in payload

    assert fr.function_flush() is True
    assert fr.function_list() == []
    with pytest.raises(redis.ResponseError, match="^Function not found$"):
        fr.fcall("bump", 1, "c", 1)

    assert fr.function_restore(payload) is True
    assert fr.fcall("bump", 1, "c", 3) == 3
    assert fr.fcall_ro("peek", 1, "c") == "3"

    with pytest.raises(redis.ResponseError, match="Library counters already exists"):
        fr.function_restore(payload)  # APPEND is the default policy
    assert fr.function_restore(payload, "REPLACE") is True
    assert fr.function_load("#!lua name=extra\nredis.register_function('x', function() return 1 end)") == "extra"
    assert fr.function_restore(payload, "FLUSH") is True
    assert [lib["library_name"] for lib in _libraries(fr)] == ["counters"]

    corrupt = payload[:-1] + bytes([payload[-1] ^ 0xFF])
    with pytest.raises(redis.ResponseError, match="DUMP payload version or checksum are wrong"):
        fr.function_restore(corrupt, "FLUSH")
    with pytest.raises(redis.ResponseError, match="Wrong restore policy given"):
        fr.function_restore(payload, "MERGE")
    assert fr.fcall("bump", 1, "c", 1) == 4


def test_fcall_in_transaction_and_pipeline(fr):
    assert fr.function_load(COUNTERS) == "counters"
    with fr.pipeline(transaction=True) as p:
        p.fcall("bump", 1, "tx", 2).fcall_ro("peek", 1, "tx").set("after", 1)
        assert p.execute() == [2, "2", True]
    with fr.pipeline(transaction=True) as p:
        p.fcall_ro("bump", 1, "tx", 1).fcall("bump", 1, "tx", 1)
        res = p.execute(raise_on_error=False)
    assert isinstance(res[0], redis.ResponseError)
    assert "Can not execute a script with write flag using *_ro command" in str(res[0])
    assert res[1] == 3
    with fr.pipeline(transaction=False) as p:
        for i in range(50):
            p.fcall("bump", 1, "piped", 1)
        assert p.execute() == list(range(1, 51))


def test_function_touches_key_built_from_argument(fr):
    assert fr.function_load(COUNTERS) == "counters"
    assert fr.fcall("tag_other", 0, "alpha", "first") == "first"
    assert fr.get("tag:alpha") == "first"
    assert fr.fcall("tag_other", 0, "alpha", "second") == "second"
    assert fr.get("tag:alpha") == "second"


def test_resp3_replies_from_functions(fr):
    assert fr.function_load(RESP3_LIB) == "resp3lib"
    fr.hset("h", mapping={"f1": "v1", "f2": "v2"})
    hashed = fr.fcall_ro("hash_of", 1, "h")
    value = fr.fcall_ro("a_double", 0)
    if fr.get_connection_kwargs()["protocol"] == 3:
        assert hashed == {"f1": "v1", "f2": "v2"}
        assert value == 3.5
    else:
        assert isinstance(hashed, list) and len(hashed) == 4
        assert _as_dict(hashed) == {"f1": "v1", "f2": "v2"}
        assert value == "3.5"
