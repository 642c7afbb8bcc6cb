// The official @upstash/ratelimit, unmodified, over Tidewire's Upstash REST API:
// its Lua scripts (each starting `#!lua flags=allow-key-locking`) run through
// EVALSHA, falling back to EVAL on NOSCRIPT.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Ratelimit } from "@upstash/ratelimit";
import { ratelimiter, startServer } from "./helpers.mjs";

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

async function drain(rl, id, n) {
  const results = [];
  for (let i = 0; i < n; i++) results.push(await rl.limit(id));
  return results;
}

for (const [name, make] of [
  ["fixedWindow", () => Ratelimit.fixedWindow(3, "60 s")],
  ["slidingWindow", () => Ratelimit.slidingWindow(3, "60 s")],
  ["tokenBucket", () => Ratelimit.tokenBucket(1, "60 s", 3)],
]) {
  test(`${name}: allows the limit, then denies; getRemaining and resetUsedTokens`, async () => {
    const rl = limiter(make());
    const results = await drain(rl, "user-1", 4);
    assert.deepEqual(results.map((r) => r.success), [true, true, true, false]);
    assert.equal(results[0].limit, 3);
    assert.deepEqual(results.map((r) => r.remaining), [2, 1, 0, 0]);
    assert.ok(results[3].reset > Date.now() - 1000, `reset ${results[3].reset}`);
    // Another identifier has its own budget.
    assert.equal((await rl.limit("user-2")).success, true);
    assert.equal((await rl.getRemaining("user-1")).remaining, 0);
    await rl.resetUsedTokens("user-1");
    assert.equal((await rl.getRemaining("user-1")).remaining, 3);
    assert.equal((await rl.limit("user-1")).success, true);
  });
}

test("cachedFixedWindow", async () => {
  const rl = limiter(Ratelimit.cachedFixedWindow(2, "60 s"), { ephemeralCache: new Map() });
  const results = await drain(rl, "u", 3);
  assert.deepEqual(results.map((r) => r.success), [true, true, false]);
});

test("dynamic limits", async () => {
  const rl = limiter(Ratelimit.fixedWindow(1, "60 s"), { dynamicLimits: true });
  await rl.setDynamicLimit({ limit: 3 });
  const results = await drain(rl, "u", 4);
  assert.deepEqual(results.map((r) => r.success), [true, true, true, false]);
  await rl.setDynamicLimit({ limit: false });
});

test("after SCRIPT FLUSH the library gets NOSCRIPT, reloads its script and goes on", async () => {
  const rl = limiter(Ratelimit.slidingWindow(2, "60 s"));
  assert.equal((await rl.limit("x")).success, true);
  assert.equal(await redis.scriptFlush(), "OK");
  assert.equal((await rl.limit("x")).success, true);
  assert.equal((await rl.limit("x")).success, false);
});
