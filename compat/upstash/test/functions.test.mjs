// Redis Functions through the official @upstash/redis client (redis.functions.*),
// unmodified, over Tidewire's REST API: `/`, `/pipeline` and `/multi-exec`.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startServer, RO_TOKEN } from "./helpers.mjs";

let srv;
let redis;
before(async () => {
  srv = await startServer();
  redis = srv.redis();
});
after(async () => {
  await srv?.stop();
});
beforeEach(async () => {
  assert.equal(await redis.functions.flush(), "OK");
  assert.equal(await redis.flushall(), "OK");
});

const COUNTERS = `#!lua name=counters
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
  function_name = 'sneaky',
  flags = {'no-writes'},
  callback = function(keys, args) return redis.call('SET', keys[1], 'x') end,
}
`;

const COUNTERS_V2 = `#!lua name=counters
redis.register_function('bump', function(keys, args)
  return redis.call('INCRBY', keys[1], tonumber(args[1]) * 10)
end)
`;

const byName = (a, b) => a.name.localeCompare(b.name);

test("client has the functions API", () => {
  for (const m of ["load", "list", "delete", "flush", "stats", "call", "callRo"]) {
    assert.equal(typeof redis.functions[m], "function", m);
  }
});

test("functions.load, call, callRo and load with replace", async () => {
  assert.equal(await redis.functions.load({ code: COUNTERS }), "counters");
  assert.equal(await redis.functions.call("bump", ["hits"], ["5"]), 5);
  assert.equal(await redis.functions.call("bump", ["hits"], ["2"]), 7);
  assert.equal(await redis.functions.callRo("peek", ["hits"]), 7); // "7", deserialised
  assert.equal(await redis.functions.callRo("peek", ["missing"]), null);
  assert.equal(await redis.functions.call("tag_other", [], ["alpha", "hello world"]), "hello world");
  assert.equal(await redis.get("tag:alpha"), "hello world");

  await assert.rejects(redis.functions.load({ code: COUNTERS }), /Library 'counters' already exists/);
  assert.equal(await redis.functions.load({ code: COUNTERS_V2, replace: true }), "counters");
  assert.equal(await redis.functions.call("bump", ["hits"], ["1"]), 17);
  await assert.rejects(redis.functions.callRo("peek", ["hits"]), /ERR Function not found/);
  await assert.rejects(redis.functions.call("nosuch"), /ERR Function not found/);
});

test("functions.list, stats and delete", async () => {
  assert.equal(await redis.functions.load({ code: COUNTERS }), "counters");
  const other = "#!lua name=other_lib\nredis.register_function('noop', function() return 0 end)";
  assert.equal(await redis.functions.load({ code: other }), "other_lib");

  const all = await redis.functions.list();
  assert.deepEqual(all.map((l) => l.libraryName).sort(), ["counters", "other_lib"]);
  const counters = all.find((l) => l.libraryName === "counters");
  assert.equal(counters.engine, "LUA");
  assert.equal(counters.libraryCode, undefined);
  assert.deepEqual(counters.functions.sort(byName), [
    { name: "bump", description: undefined, flags: [] },
    { name: "peek", description: "read a counter", flags: ["no-writes"] },
    { name: "sneaky", description: undefined, flags: ["no-writes"] },
    { name: "tag_other", description: undefined, flags: [] },
  ]);

  const withCode = await redis.functions.list({ libraryName: "count*", withCode: true });
  assert.equal(withCode.length, 1);
  assert.equal(withCode[0].libraryName, "counters");
  assert.equal(withCode[0].libraryCode, COUNTERS);
  assert.deepEqual(await redis.functions.list({ libraryName: "nomatch*" }), []);

  assert.deepEqual(await redis.functions.stats(), {
    engines: { LUA: { librariesCount: 2, functionsCount: 5 } },
  });

  assert.equal(await redis.functions.delete("other_lib"), "OK");
  await assert.rejects(redis.functions.delete("other_lib"), /ERR Library not found/);
  assert.deepEqual((await redis.functions.list()).map((l) => l.libraryName), ["counters"]);
});

test("callRo of a write function, and writes from a no-writes function, are refused", async () => {
  assert.equal(await redis.functions.load({ code: COUNTERS }), "counters");
  await assert.rejects(
    redis.functions.callRo("bump", ["hits"], ["1"]),
    // Upstash runs it read-only and refuses the write (Redis refuses the call).
    /Write commands are not allowed from read-only scripts/,
  );
  await assert.rejects(
    redis.functions.call("sneaky", ["hits"]),
    /Write commands are not allowed from read-only scripts/,
  );
  assert.equal(await redis.exists("hits"), 0);
});

test("functions in a pipeline and in multi()", async () => {
  assert.equal(await redis.functions.load({ code: COUNTERS }), "counters");
  const p = redis.pipeline();
  p.functions.call("bump", ["p"], ["1"]);
  p.functions.call("bump", ["p"], ["2"]);
  p.functions.callRo("peek", ["p"]);
  p.functions.list({ libraryName: "counters" });
  const [a, b, c, list] = await p.exec();
  assert.deepEqual([a, b, c], [1, 3, 3]);
  assert.equal(list[0].libraryName, "counters");
  assert.equal(list[0].functions.length, 4);

  const tx = redis.multi();
  tx.functions.call("bump", ["m"], ["5"]);
  tx.functions.callRo("peek", ["m"]);
  tx.functions.call("tag_other", [], ["tx", "in-multi"]);
  tx.get("tag:tx");
  assert.deepEqual(await tx.exec(), [5, 5, "in-multi", "in-multi"]);

  // Loading inside a transaction, then calling what it loaded.
  const load = redis.multi();
  load.functions.load({ code: COUNTERS_V2, replace: true });
  load.functions.call("bump", ["m"], ["1"]);
  assert.deepEqual(await load.exec(), ["counters", 15]);
});

test("read-only token: FCALL_RO runs, FCALL and FUNCTION writes are NOPERM", async () => {
  assert.equal(await redis.functions.load({ code: COUNTERS }), "counters");
  assert.equal(await redis.functions.call("bump", ["ro:n"], ["4"]), 4);
  const ro = srv.redis({ token: RO_TOKEN });

  assert.equal(await ro.functions.callRo("peek", ["ro:n"]), 4);
  const p = ro.pipeline();
  p.functions.callRo("peek", ["ro:n"]);
  p.get("ro:n");
  assert.deepEqual(await p.exec(), [4, 4]);

  await assert.rejects(ro.functions.call("bump", ["ro:n"], ["1"]), /NOPERM.*'fcall'/);
  await assert.rejects(ro.functions.call("peek", ["ro:n"]), /NOPERM.*'fcall'/); // even a no-writes one
  await assert.rejects(ro.functions.call("tag_other", [], ["ro", "x"]), /NOPERM/);
  await assert.rejects(ro.functions.load({ code: COUNTERS_V2, replace: true }), /NOPERM/);
  await assert.rejects(ro.functions.delete("counters"), /NOPERM/);
  await assert.rejects(ro.functions.flush(), /NOPERM/);
  const bad = ro.pipeline();
  bad.functions.callRo("peek", ["ro:n"]);
  bad.functions.call("bump", ["ro:n"], ["1"]);
  await assert.rejects(bad.exec(), /NOPERM/);

  // A read-only token cannot write through FCALL_RO either.
  await assert.rejects(ro.functions.callRo("bump", ["ro:n"], ["1"]), /Write commands are not allowed from read-only scripts/);
  await assert.rejects(ro.functions.callRo("sneaky", ["ro:n"]), /Write commands are not allowed from read-only scripts/);

  // Nothing changed.
  assert.equal(await redis.get("ro:n"), 4);
  assert.equal(await redis.exists("tag:ro"), 0);
  assert.deepEqual((await redis.functions.list()).map((l) => l.libraryName), ["counters"]);
  assert.equal(await redis.functions.call("bump", ["ro:n"], ["1"]), 5);
});
