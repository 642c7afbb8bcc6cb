// More of @upstash/ratelimit over Tidewire's Upstash REST API (ratelimit.test.mjs
// has the algorithms' basic limit / getRemaining / resetUsedTokens): the ephemeral
// cache, `rate` weights, blockUntilReady, dynamic limits on every algorithm,
// analytics (recorded with ZINCRBY, read back through the library's Lua scripts:
// cjson, ZUNION, booleans in replies), deny lists (`enableProtection`; the IP
// deny list's download from GitHub is replaced by a local answer, since no
// network is reachable here), and MultiRegionRatelimit over two tidewires.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { Ratelimit, MultiRegionRatelimit, Analytics, IpDenyList } from "@upstash/ratelimit";
import { ratelimiter, startServer } from "./helpers.mjs";
import { setTimeout as sleep } from "node:timers/promises";

async function waitFor(check, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}
const uniq = (s) => `${s}-${Math.random().toString(36).slice(2, 8)}`;

let srv;
let redis;
before(async () => {
  srv = await startServer();
  redis = srv.redis();
});
after(async () => {
  await srv?.stop();
});

const limiter = (algorithm, extra) => ratelimiter(redis, algorithm, extra);

const algorithms = [
  ["fixedWindow", (n) => Ratelimit.fixedWindow(n, "60 s")],
  ["slidingWindow", (n) => Ratelimit.slidingWindow(n, "60 s")],
  ["tokenBucket", (n) => Ratelimit.tokenBucket(1, "60 s", n)],
  ["cachedFixedWindow", (n) => Ratelimit.cachedFixedWindow(n, "60 s")],
];

describe("every algorithm", () => {
  for (const [name, make] of algorithms) {
    const cached = name === "cachedFixedWindow";
    if (cached) {
      test(`${name}: counts live in the ephemeral cache; Redis gets the allowed ones`, async () => {
        const cache = new Map();
        const rl = limiter(make(2), { ephemeralCache: cache });
        const r = [];
        for (let i = 0; i < 4; i++) r.push(await rl.limit("u"));
        await Promise.all(r.map((x) => x.pending));
        assert.deepEqual(r.map((x) => x.success), [true, true, false, false]);
        assert.deepEqual(r.map((x) => x.remaining), [1, 0, -1, -2]);
        // The first call went to Redis (INCRBY); the second was counted in the
        // cache and written behind (pending); denials are not written.
        const keys = await redis.keys(`${rl.prefix}:u:*`);
        assert.equal(keys.length, 1);
        assert.equal(await redis.get(keys[0]), 2);
        // No expiry, on redis-server 7.0.15 too: the library's cachedFixedWindow
        // script compares INCRBY's number with the ARGV string (`r == incrementBy`),
        // which Lua never finds equal, so its PEXPIRE never runs.
        assert.equal(await redis.pttl(keys[0]), -1);
        // A fresh instance (empty cache) reads the count from Redis.
        const other = new Ratelimit({ redis, limiter: make(2), prefix: rl.prefix, ephemeralCache: new Map(), analytics: false, enableTelemetry: false });
        assert.equal((await other.getRemaining("u")).remaining, 0);
        assert.equal((await other.limit("u")).success, false);
      });
    } else {
      test(`${name}: ephemeral cache answers a blocked identifier without Redis`, async () => {
        const cache = new Map();
        const rl = limiter(make(2), { ephemeralCache: cache });
        const r = [];
        for (let i = 0; i < 3; i++) r.push(await rl.limit("u"));
        assert.deepEqual(r.map((x) => x.success), [true, true, false]);
        await Promise.all(r.map((x) => x.pending));
        // Now blocked in the cache: the next answer does not come from Redis.
        const blocked = await rl.limit("u");
        assert.equal(blocked.success, false);
        assert.equal(blocked.reason, "cacheBlock");
        assert.ok(blocked.reset > Date.now(), `reset ${blocked.reset}`);
        assert.ok(cache.size >= 1);
        // resetUsedTokens clears Redis and the cache entry.
        await rl.resetUsedTokens("u");
        assert.equal((await rl.getRemaining("u")).remaining, 2);
        assert.equal((await rl.limit("u")).success, true);
      });
    }

    test(`${name}: rate weights, getRemaining and resetUsedTokens`, async () => {
      const cache = cached ? new Map() : false;
      const rl = limiter(make(5), { ephemeralCache: cache });
      const a = await rl.limit("w", { rate: 3 });
      await a.pending;
      assert.equal(a.success, true);
      assert.equal(a.remaining, 2);
      const b = await rl.limit("w", { rate: 3 });
      await b.pending;
      assert.equal(b.success, false);
      const rem = await rl.getRemaining("w");
      // The token bucket refuses without taking tokens; the window algorithms
      // count the refused request too (INCRBY before comparing, or for the
      // sliding window: admitted while under the limit, then over it).
      assert.equal(rem.remaining, name === "tokenBucket" ? 2 : 0);
      assert.equal(rem.limit, 5);
      assert.ok(rem.reset > Date.now() && rem.reset <= Date.now() + 61_000, `reset ${rem.reset}`);
      await rl.resetUsedTokens("w");
      assert.equal((await rl.getRemaining("w")).remaining, 5);
    });

    if (name !== "cachedFixedWindow") {
      test(`${name}: dynamic limits override the configured limit`, async () => {
        const rl = limiter(make(2), { dynamicLimits: true });
        assert.deepEqual(await rl.getDynamicLimit(), { dynamicLimit: null });
        await rl.setDynamicLimit({ limit: 4 });
        assert.deepEqual(await rl.getDynamicLimit(), { dynamicLimit: 4 });
        const r = [];
        for (let i = 0; i < 5; i++) r.push(await rl.limit("d"));
        assert.deepEqual(r.map((x) => x.success), [true, true, true, true, false]);
        assert.equal(r[0].limit, 4);
        assert.equal((await rl.getRemaining("d")).limit, 4);
        // Lowered below what is used: denied at once.
        await rl.setDynamicLimit({ limit: 1 });
        assert.equal((await rl.limit("d2")).success, true);
        assert.equal((await rl.limit("d2")).success, false);
        // Removed: back to the configured 2.
        await rl.setDynamicLimit({ limit: false });
        assert.deepEqual(await rl.getDynamicLimit(), { dynamicLimit: null });
        assert.equal((await rl.getRemaining("d3")).limit, 2);
      });
    }
  }
});

test("blockUntilReady waits for the next window", async () => {
  const rl = limiter(Ratelimit.fixedWindow(1, "1 s"));
  assert.equal((await rl.limit("b")).success, true);
  const started = Date.now();
  const res = await rl.blockUntilReady("b", 5000);
  assert.equal(res.success, true);
  assert.ok(Date.now() - started < 3000, `waited ${Date.now() - started} ms`);
  // A deadline shorter than the window gives up.
  const rl2 = limiter(Ratelimit.fixedWindow(1, "60 s"));
  await rl2.limit("c");
  const gaveUp = await rl2.blockUntilReady("c", 300);
  assert.equal(gaveUp.success, false);
});

test("analytics: events are recorded per hour bucket and read back", async () => {
  const prefix = uniq("rla");
  const rl = new Ratelimit({
    redis,
    limiter: Ratelimit.fixedWindow(2, "60 s"),
    prefix,
    analytics: true,
    ephemeralCache: false,
    enableTelemetry: false,
  });
  const results = [];
  for (const id of ["alice", "alice", "alice", "bob"]) results.push(await rl.limit(id, { geo: { country: "NL" } }));
  await Promise.all(results.map((r) => r.pending));
  assert.deepEqual(results.map((r) => r.success), [true, true, false, true]);

  // Stored as a sorted set of JSON events per hour bucket.
  const keys = await redis.keys(`${prefix}:events:*`);
  assert.equal(keys.length, 1, `keys ${keys}`);
  const raw = await redis.zrange(keys[0], 0, -1, { withScores: true });
  const events = [];
  for (let i = 0; i < raw.length; i += 2) events.push([raw[i], Number(raw[i + 1])]);
  const byKey = Object.fromEntries(events.map(([e, s]) => [`${e.identifier}/${e.success}`, [s, e.country]]));
  assert.deepEqual(byKey, { "alice/true": [2, "NL"], "alice/false": [1, "NL"], "bob/true": [1, "NL"] });

  const analytics = new Analytics({ redis, prefix });
  // ZUNION over the last hours' buckets, in Lua.
  assert.deepEqual(await analytics.getUsage(Date.now() - 24 * 3600 * 1000), {
    alice: { success: 2, blocked: 1 },
    bob: { success: 1, blocked: 0 },
  });
  // cjson.decode each event and count by a field, in Lua; a Lua `false` table key comes back as nil.
  const bySuccess = await analytics.getUsageOverTime(2, "success");
  assert.equal(bySuccess.length, 2);
  assert.deepEqual(bySuccess[0].success, { true: 3, false: 1 });
  assert.deepEqual(bySuccess[1], { time: bySuccess[0].time - 3600 * 1000 });
  const byId = await analytics.getUsageOverTime(1, "identifier");
  assert.deepEqual(byId[0].identifier, { alice: 3, bob: 1 });
  const top = await analytics.getMostAllowedBlocked(24);
  assert.deepEqual(top.allowed.sort((a, b) => b.count - a.count), [
    { identifier: "alice", count: 2 },
    { identifier: "bob", count: 1 },
  ]);
  assert.deepEqual(top.ratelimited, [{ identifier: "alice", count: 1 }]);
  assert.deepEqual(top.denied, []);
});

describe("deny lists (enableProtection)", () => {
  const realFetch = globalThis.fetch;
  const ipListRequests = [];
  before(() => {
    // The IP deny list comes from raw.githubusercontent.com/stamparm/ipsum; answer
    // locally instead of reaching out. Everything else (the REST calls to
    // tidewire) goes through.
    globalThis.fetch = async (input, init) => {
      const url = typeof input === "string" ? input : input.url ?? String(input);
      if (url.startsWith("https://raw.githubusercontent.com/stamparm/ipsum/")) {
        ipListRequests.push(url);
        return new Response("203.0.113.7\n203.0.113.8\n198.51.100.1\n", { status: 200 });
      }
      return realFetch(input, init);
    };
  });
  after(() => {
    globalThis.fetch = realFetch;
  });

  test("a denied identifier, IP, user agent or country is refused; others pass", async () => {
    const prefix = uniq("rld");
    const rl = new Ratelimit({
      redis,
      limiter: Ratelimit.slidingWindow(10, "60 s"),
      prefix,
      enableProtection: true,
      analytics: true,
      ephemeralCache: false,
      enableTelemetry: false,
    });
    // The IP deny list is off: no download.
    await IpDenyList.disableIpDenyList(redis, prefix);
    assert.equal(await redis.get(`${prefix}:ipDenyListStatus`), "disabled");

    const badUser = uniq("bad-user");
    const badAgent = uniq("evil-agent");
    // What the Upstash console writes: members of `<prefix>:denyList:all`.
    await redis.sadd(`${prefix}:denyList:all`, badUser, badAgent, "XX");

    const ok = await rl.limit(uniq("good"), { ip: "192.0.2.1", userAgent: "curl", country: "NL" });
    await ok.pending;
    assert.equal(ok.success, true);
    assert.equal(ok.reason, undefined);

    const byId = await rl.limit(badUser);
    await byId.pending;
    assert.equal(byId.success, false);
    assert.equal(byId.reason, "denyList");
    assert.equal(byId.deniedValue, badUser);

    const byAgent = await rl.limit(uniq("someone"), { userAgent: badAgent });
    await byAgent.pending;
    assert.equal(byAgent.reason, "denyList");
    assert.equal(byAgent.deniedValue, badAgent);
    const byCountry = await rl.limit(uniq("someone"), { country: "XX" });
    await byCountry.pending;
    assert.equal(byCountry.deniedValue, "XX");

    // Denied values are cached in memory for a minute: no Redis round trip.
    const again = await rl.limit(badUser);
    assert.equal(again.reason, "denyList");
    assert.equal(again.limit, 0);

    // Analytics records denials as success: "denied".
    const top = await new Analytics({ redis, prefix }).getMostAllowedBlocked(1);
    assert.deepEqual(top.denied.map((d) => d.identifier).sort(), [badUser, badAgent, "XX"].sort());
    assert.equal(ipListRequests.length, 0);
  });

  test("the IP deny list is loaded when its status key has expired, and applies", async () => {
    const prefix = uniq("rlip");
    const rl = new Ratelimit({
      redis,
      limiter: Ratelimit.fixedWindow(10, "60 s"),
      prefix,
      enableProtection: true,
      denyListThreshold: 3,
      ephemeralCache: false,
      enableTelemetry: false,
    });
    await redis.sadd(`${prefix}:denyList:all`, "own-entry");
    // No status key (TTL -2): the check script sets it to "pending" for 30 s and
    // the library downloads the list and stores it in a MULTI.
    const first = await rl.limit(uniq("client"), { ip: "192.0.2.50" });
    assert.equal(first.success, true);
    await first.pending;
    assert.equal(ipListRequests.length, 1);
    assert.match(ipListRequests[0], /\/levels\/3\.txt$/);
    assert.deepEqual((await redis.smembers(`${prefix}:denyList:ipDenyList`)).sort(), ["198.51.100.1", "203.0.113.7", "203.0.113.8"]);
    assert.deepEqual(
      (await redis.smembers(`${prefix}:denyList:all`)).sort(),
      ["198.51.100.1", "203.0.113.7", "203.0.113.8", "own-entry"],
    );
    assert.equal(await redis.get(`${prefix}:ipDenyListStatus`), "valid");
    const ttl = await redis.pttl(`${prefix}:ipDenyListStatus`);
    assert.ok(ttl > 0 && ttl <= 24 * 3600 * 1000, `status pttl ${ttl}`);

    const denied = await rl.limit(uniq("client"), { ip: "203.0.113.8" });
    assert.equal(denied.success, false);
    assert.equal(denied.deniedValue, "203.0.113.8");
    assert.equal((await rl.limit(uniq("client"), { ip: "192.0.2.51" })).success, true);

    // Disabling removes the IPs but keeps the user's own entries.
    await IpDenyList.disableIpDenyList(redis, prefix);
    assert.deepEqual(await redis.smembers(`${prefix}:denyList:all`), ["own-entry"]);
    assert.equal(await redis.exists(`${prefix}:denyList:ipDenyList`), 0);
    assert.equal(await redis.ttl(`${prefix}:ipDenyListStatus`), -1);
    await assert.rejects(IpDenyList.updateIpDenyList(redis, prefix, 9), IpDenyList.ThresholdError);
  });
});

describe("MultiRegionRatelimit over two tidewires", () => {
  let srv2;
  let regionA;
  let regionB;
  before(async () => {
    srv2 = await startServer();
    regionA = redis;
    regionB = srv2.redis();
  });
  after(async () => {
    await srv2?.stop();
  });

  const multi = (lim, extra = {}) =>
    new MultiRegionRatelimit({
      redis: [regionA, regionB],
      limiter: lim,
      prefix: uniq("mr"),
      ephemeralCache: false,
      analytics: false,
      enableTelemetry: false,
      ...extra,
    });

  for (const [name, make] of [
    ["fixedWindow", (n) => MultiRegionRatelimit.fixedWindow(n, "60 s")],
    ["slidingWindow", (n) => MultiRegionRatelimit.slidingWindow(n, "60 s")],
  ]) {
    test(`${name}: both regions count every request; limit, getRemaining, resetUsedTokens`, async () => {
      const rl = multi(make(3));
      const results = [];
      for (let i = 0; i < 4; i++) {
        const r = await rl.limit("m");
        await r.pending; // the background sync between regions
        results.push(r);
      }
      assert.deepEqual(results.map((r) => r.success), [true, true, true, false]);
      assert.deepEqual(results.slice(0, 3).map((r) => r.remaining), [2, 1, 0]);
      const keysA = await regionA.keys(`${rl.prefix}:m:*`);
      const keysB = await regionB.keys(`${rl.prefix}:m:*`);
      assert.ok(keysA.length >= 1, `region A keys ${keysA}`);
      assert.deepEqual(keysA.sort(), keysB.sort());
      const current = keysA.sort().at(-1);
      // Each region holds the same request ids (a hash of id -> tokens).
      assert.deepEqual(Object.keys(await regionA.hgetall(current)).sort(), Object.keys(await regionB.hgetall(current)).sort());
      // The fixed window's script records every request, refused ones too.
      assert.equal(await regionA.hlen(current), name === "fixedWindow" ? 4 : 3);

      assert.equal((await rl.getRemaining("m")).remaining, 0);
      await rl.resetUsedTokens("m");
      // MultiRegionRatelimit's resetTokens does not wait for its per-region
      // scripts (the map callback returns nothing), so poll for the result.
      await waitFor(async () => (await regionA.keys(`${rl.prefix}:m:*`)).length === 0, "region A reset");
      await waitFor(async () => (await regionB.keys(`${rl.prefix}:m:*`)).length === 0, "region B reset");
      assert.equal((await rl.getRemaining("m")).remaining, 3);
      assert.equal((await rl.limit("m")).success, true);
    });
  }

  test("fixedWindow: requests seen only by one region are copied to the other by the sync", async () => {
    const rl = multi(MultiRegionRatelimit.fixedWindow(3, "60 s"));
    const bucket = Math.floor(Date.now() / 60_000);
    const key = `${rl.prefix}:p:${bucket}`;
    // Two requests that only region B saw (another app instance near B).
    await regionB.hset(key, { "req-b1": 1, "req-b2": 1 });
    await regionB.pexpire(key, 60_000);
    const r = await rl.limit("p");
    await r.pending;
    assert.equal(r.success, true);
    // After the sync region A has B's two and the new one.
    assert.equal(await regionA.hlen(key), 3);
    assert.equal(await regionB.hlen(key), 3);
    const denied = await rl.limit("p");
    await denied.pending;
    assert.equal(denied.success, false);
  });

  test("ephemeral cache blocks the identifier after a denial", async () => {
    const rl = multi(MultiRegionRatelimit.fixedWindow(1, "60 s"), { ephemeralCache: new Map() });
    const a = await rl.limit("c");
    await a.pending;
    const b = await rl.limit("c");
    await b.pending;
    assert.equal(b.success, false);
    const c = await rl.limit("c");
    assert.equal(c.reason, "cacheBlock");
  });
});
