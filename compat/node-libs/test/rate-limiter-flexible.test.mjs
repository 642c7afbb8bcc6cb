// rate-limiter-flexible's RateLimiterRedis over ioredis (its `defineCommand` Lua
// script) and over node-redis v5 (`useRedisPackage`, EVAL with keys/arguments),
// plus the MULTI paths it uses for blocking, `set`, `get` and durations of 0.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { createClient } from 'redis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { startServer } from '../../lib/server.mjs';
import { setTimeout as sleep } from 'node:timers/promises';

let server;
before(async () => {
  server = await startServer({ name: 'node-libs' });
});
after(async () => {
  await server?.close();
});

const flavours = [
  [
    'ioredis',
    async () => {
      const c = new Redis({ port: server.resp, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
      await c.connect();
      return { storeClient: c, pttl: (k) => c.pttl(k), get: (k) => c.get(k), close: () => c.quit() };
    },
  ],
  ['node-redis v5', () => nodeRedis({})],
  ['node-redis v5 RESP3', () => nodeRedis({ RESP: 3 })],
];

async function nodeRedis(opts) {
  const c = createClient({ url: server.url, ...opts });
  await c.connect();
  return {
    storeClient: c,
    useRedisPackage: true,
    pttl: (k) => c.pTTL(k),
    get: (k) => c.get(k),
    close: () => c.quit(),
  };
}

for (const [name, connect] of flavours) {
  describe(name, () => {
    let h;
    let n = 0;
    before(async () => {
      h = await connect();
    });
    after(async () => {
      await h?.close();
    });
    const limiter = (opts) =>
      new RateLimiterRedis({
        storeClient: h.storeClient,
        useRedisPackage: h.useRedisPackage,
        keyPrefix: `rl-${name.replace(/\W+/g, '')}-${n++}`,
        ...opts,
      });

    test('consume until blocked; msBeforeNext follows the key TTL', async () => {
      const rl = limiter({ points: 3, duration: 60 });
      const results = [];
      for (let i = 0; i < 3; i++) results.push(await rl.consume('user'));
      assert.deepEqual(results.map((r) => r.remainingPoints), [2, 1, 0]);
      assert.deepEqual(results.map((r) => r.consumedPoints), [1, 2, 3]);
      assert.deepEqual(results.map((r) => r.isFirstInDuration), [true, false, false]);
      assert.ok(results[0].msBeforeNext > 59000 && results[0].msBeforeNext <= 60000, `${results[0].msBeforeNext}`);

      const denied = await rl.consume('user').then(
        () => assert.fail('4th consume should be rejected'),
        (res) => res,
      );
      assert.ok(denied instanceof RateLimiterRes, String(denied));
      assert.equal(denied.consumedPoints, 4);
      assert.equal(denied.remainingPoints, 0);
      assert.ok(denied.msBeforeNext > 58000 && denied.msBeforeNext <= 60000, `${denied.msBeforeNext}`);

      const key = rl.getKey('user');
      assert.equal(await h.get(key), '4');
      const pttl = await h.pttl(key);
      assert.ok(Math.abs(pttl - denied.msBeforeNext) < 2000, `pttl ${pttl} vs ${denied.msBeforeNext}`);

      // Several points at once; another key has its own budget.
      const two = await rl.consume('other', 2);
      assert.equal(two.remainingPoints, 1);
      await assert.rejects(rl.consume('other', 2), (res) => res.consumedPoints === 4);
    });

    test('penalty, reward, get and delete', async () => {
      const rl = limiter({ points: 5, duration: 60 });
      await rl.consume('k');
      const p = await rl.penalty('k', 2);
      assert.equal(p.consumedPoints, 3);
      assert.equal(p.remainingPoints, 2);
      const r = await rl.reward('k', 2);
      assert.equal(r.consumedPoints, 1);
      assert.equal(r.remainingPoints, 4);

      const got = await rl.get('k');
      assert.equal(got.consumedPoints, 1);
      assert.equal(got.remainingPoints, 4);
      assert.ok(got.msBeforeNext > 58000 && got.msBeforeNext <= 60000, `${got.msBeforeNext}`);
      assert.equal(await rl.get('never'), null);

      assert.equal(await rl.delete('k'), true);
      assert.equal(await rl.get('k'), null);
      assert.equal(await rl.delete('k'), false);
      const fresh = await rl.consume('k');
      assert.equal(fresh.consumedPoints, 1);
      assert.equal(fresh.isFirstInDuration, true);
    });

    test('blockDuration: exceeding blocks the key for blockDuration, not duration', async () => {
      const rl = limiter({ points: 2, duration: 1, blockDuration: 30 });
      await rl.consume('b');
      await rl.consume('b');
      const denied = await rl.consume('b').then(
        () => assert.fail('should be blocked'),
        (res) => res,
      );
      assert.ok(denied instanceof RateLimiterRes, String(denied));
      assert.equal(denied.msBeforeNext, 30000);
      // The library re-SETs the key with EX 30 inside MULTI, then reads PTTL.
      const pttl = await h.pttl(rl.getKey('b'));
      assert.ok(pttl > 28000 && pttl <= 30000, `pttl ${pttl}`);
      // Past the 1 s window it is still blocked.
      await sleep(1100);
      const still = await rl.consume('b').then(
        () => assert.fail('still blocked'),
        (res) => res,
      );
      assert.ok(still.msBeforeNext > 27000 && still.msBeforeNext <= 30000, `${still.msBeforeNext}`);
      // block() directly, and set().
      const blocked = await rl.block('c', 20);
      assert.ok(blocked.msBeforeNext > 19000 && blocked.msBeforeNext <= 20000, `${blocked.msBeforeNext}`);
      assert.equal(blocked.consumedPoints, 3); // points + 1
      await assert.rejects(rl.consume('c'));
      const set = await rl.set('d', 1, 10);
      assert.equal(set.consumedPoints, 1);
      assert.ok(set.msBeforeNext > 9000 && set.msBeforeNext <= 10000, `${set.msBeforeNext}`);
      assert.equal((await rl.consume('d')).remainingPoints, 0);
    });

    test('a short window expires and the budget comes back', async () => {
      const rl = limiter({ points: 1, duration: 1 });
      await rl.consume('w');
      await assert.rejects(rl.consume('w'));
      await sleep(1100);
      const again = await rl.consume('w');
      assert.equal(again.consumedPoints, 1);
      assert.equal(again.isFirstInDuration, true);
    });

    test('duration 0: the counter never expires (MULTI INCRBY + PTTL, -1)', async () => {
      const rl = limiter({ points: 2, duration: 0 });
      const a = await rl.consume('forever');
      assert.equal(a.consumedPoints, 1);
      assert.equal(a.msBeforeNext, -1);
      await rl.consume('forever');
      await assert.rejects(rl.consume('forever'), (res) => res.consumedPoints === 3 && res.msBeforeNext === -1);
      assert.equal(await h.pttl(rl.getKey('forever')), -1);
    });
  });
}
