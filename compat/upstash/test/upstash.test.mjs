// The official @upstash/redis client, unmodified, against Tidewire's REST API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, TOKEN, RO_TOKEN } from "./helpers.mjs";

let srv;
let redis;
before(async () => {
  srv = await startServer();
  redis = srv.redis();
});
after(async () => {
  await srv?.stop();
});

test("strings", async () => {
  assert.equal(await redis.set("s:k", "v"), "OK");
  assert.equal(await redis.get("s:k"), "v");
  assert.equal(await redis.set("s:ex", "v", { ex: 100 }), "OK");
  const ttl = await redis.ttl("s:ex");
  assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
  assert.equal(await redis.set("s:ex", "w", { nx: true }), null);
  assert.equal(await redis.incr("s:n"), 1);
  assert.equal(await redis.incrby("s:n", 41), 42);
  assert.equal(await redis.get("s:n"), 42); // numbers come back deserialised
  assert.deepEqual(await redis.mget("s:k", "s:missing"), ["v", null]);
  assert.equal(await redis.del("s:k", "s:n"), 2);
  assert.equal(await redis.exists("s:k"), 0);
  assert.equal(await redis.set("s:uni", "héllo, wörld 😀 / ? & %"), "OK");
  assert.equal(await redis.get("s:uni"), "héllo, wörld 😀 / ? & %");
  assert.equal(await redis.ping(), "PONG");
});

test("JSON values are serialised by the client", async () => {
  const value = { name: "ada", tags: ["a", "b"], n: 3, nested: { ok: true } };
  await redis.set("j:obj", value);
  assert.deepEqual(await redis.get("j:obj"), value);
  await redis.set("j:arr", [1, "two", null]);
  assert.deepEqual(await redis.get("j:arr"), [1, "two", null]);
});

test("hashes", async () => {
  assert.equal(await redis.hset("h:1", { name: "ada", n: 1, obj: { x: 1 } }), 3);
  assert.equal(await redis.hget("h:1", "name"), "ada");
  assert.equal(await redis.hincrby("h:1", "n", 4), 5);
  assert.deepEqual(await redis.hgetall("h:1"), { name: "ada", n: 5, obj: { x: 1 } });
  assert.deepEqual(await redis.hmget("h:1", "name", "nope"), { name: "ada", nope: null });
  assert.equal(await redis.hdel("h:1", "name"), 1);
  assert.equal(await redis.hlen("h:1"), 2);
});

test("sorted sets", async () => {
  assert.equal(
    await redis.zadd("z:1", { score: 1, member: "a" }, { score: 2.5, member: "b" }),
    2,
  );
  assert.equal(await redis.zscore("z:1", "b"), 2.5);
  assert.equal(await redis.zincrby("z:1", 2, "a"), 3);
  assert.deepEqual(await redis.zrange("z:1", 0, -1), ["b", "a"]);
  assert.deepEqual(await redis.zrange("z:1", 0, -1, { withScores: true }), ["b", 2.5, "a", 3]);
  assert.equal(await redis.zcard("z:1"), 2);
  assert.equal(await redis.zrank("z:1", "a"), 1);
});

test("pipeline", async () => {
  const p = redis.pipeline();
  p.set("p:a", 1);
  p.incr("p:a");
  p.get("p:a");
  p.set("p:obj", { k: "v" });
  p.get("p:obj");
  assert.deepEqual(await p.exec(), ["OK", 2, 2, "OK", { k: "v" }]);
  // A failing command rejects the whole exec() in the client, as with Upstash.
  const bad = redis.pipeline();
  bad.set("p:s", "text");
  bad.incr("p:s");
  await assert.rejects(bad.exec(), /not an integer/);
  assert.equal(await redis.get("p:s"), "text");
});

test("auto-pipelining", async () => {
  const auto = srv.redis({ enableAutoPipelining: true });
  const n = 50;
  await Promise.all(Array.from({ length: n }, (_, i) => auto.set(`ap:${i}`, i)));
  const values = await Promise.all(Array.from({ length: n }, (_, i) => auto.get(`ap:${i}`)));
  assert.deepEqual(values, Array.from({ length: n }, (_, i) => i));
  assert.equal(await auto.incr("ap:0"), 1);
});

test("multi()", async () => {
  const tx = redis.multi();
  tx.set("m:a", "1");
  tx.incr("m:a");
  tx.get("m:a");
  assert.deepEqual(await tx.exec(), ["OK", 2, 2]);
});

test("base64 off (responseEncoding: false)", async () => {
  const plain = srv.redis({ responseEncoding: false });
  await plain.set("b:u", "plain ütf-8 ✓");
  assert.equal(await plain.get("b:u"), "plain ütf-8 ✓");
  assert.equal(await redis.get("b:u"), "plain ütf-8 ✓");
  await plain.set("b:ok", "OK");
  assert.equal(await redis.get("b:ok"), "OK");
  assert.deepEqual(await plain.mget("b:u", "b:none"), ["plain ütf-8 ✓", null]);
});

test("read-only token", async () => {
  await redis.set("ro:k", "v");
  const ro = srv.redis({ token: RO_TOKEN });
  assert.equal(await ro.get("ro:k"), "v");
  await assert.rejects(ro.set("ro:k", "w"), /NOPERM/);
  await assert.rejects(ro.del("ro:k"), /NOPERM/);
  await assert.rejects(ro.keys("*"), /NOPERM/);
  assert.equal(await redis.get("ro:k"), "v");
});

test("wrong token", async () => {
  const bad = srv.redis({ token: "not-the-token" });
  await assert.rejects(bad.get("x"), /Unauthorized/);
  assert.notEqual(TOKEN, "not-the-token");
});

test("subscribe over Server-Sent Events", async () => {
  const sub = redis.subscribe(["sse:chan"]);
  const got = new Promise((resolve) => sub.on("message", (m) => resolve(m)));
  // Wait until the subscription is live, then publish.
  const deadline = Date.now() + 5000;
  while ((await redis.publish("sse:chan", JSON.stringify({ hi: 1 }))) === 0) {
    assert.ok(Date.now() < deadline, "subscription never became live");
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = await got;
  assert.equal(m.channel, "sse:chan");
  assert.deepEqual(m.message, { hi: 1 });
  await sub.unsubscribe();
});
