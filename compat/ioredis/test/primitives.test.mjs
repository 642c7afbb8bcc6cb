import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { startServer } from '../../lib/server.mjs';

// Tidewire's native primitives from an unmodified ioredis (redis.call), as
// docs/primitives.md shows them.
let server;
let redis;
let other;

before(async () => {
  server = await startServer({ name: 'ioredis-primitives' });
  redis = new Redis({ port: server.resp, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  other = new Redis({ port: server.resp, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  await other.connect();
});

after(async () => {
  redis.disconnect();
  other.disconnect();
  await server.close();
});

test('CL.THROTTLE answers as redis-cell', async () => {
  assert.deepEqual(await redis.call('CL.THROTTLE', 'user123', 15, 30, 60), [0, 16, 15, -1, 2]);
});

test('TW.THROTTLE refuses without charging the other tier', async () => {
  const args = ['TW.THROTTLE', 'api:1', 'TIER', 'burst', 0, 1, 1000, 'TIER', 'day', 99, 100, 86_400_000];
  const first = await redis.call(...args);
  assert.equal(first[0], 0);
  const second = await redis.call(...args);
  assert.equal(second[0], 1);
  assert.ok(second[1] > 0 && second[1] <= 1000, `retry_after_ms ${second[1]}`);
  assert.equal(second[3][2], 99, 'the day tier kept what the refused request would have cost');
});

test('TW.IDEM: one owner, then the stored response', async () => {
  const [state, token] = await redis.call('TW.IDEM.BEGIN', 'idem:order:1', 60_000, 'FINGERPRINT', 'sha-1');
  assert.equal(state, 'new');
  assert.deepEqual((await other.call('TW.IDEM.BEGIN', 'idem:order:1', 60_000))[0], 'inflight');
  await assert.rejects(other.call('TW.IDEM.BEGIN', 'idem:order:1', 60_000, 'FINGERPRINT', 'sha-2'), /^ReplyError: MISMATCH/);
  assert.equal(await redis.call('TW.IDEM.COMPLETE', 'idem:order:1', token, '{"ok":true}'), 'OK');
  assert.deepEqual(await other.call('TW.IDEM.BEGIN', 'idem:order:1', 60_000), ['done', '{"ok":true}']);
});

test('TW.LOCK: a waiter is handed the lock on release, with a higher fence', async () => {
  const [token, fence] = await redis.call('TW.LOCK.ACQUIRE', 'lock:payout', 10_000);
  const waiting = other.call('TW.LOCK.ACQUIRE', 'lock:payout', 10_000, 'WAIT', 5_000);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(await redis.call('TW.LOCK.RELEASE', 'lock:payout', token), 1);
  const [, next] = await waiting;
  assert.ok(next > fence, `${next} > ${fence}`);
});

test('TW.FILL: one caller fills, a waiting caller gets its value', async () => {
  const [kind, token] = await redis.call('TW.FILL.GET', 'cache:profile:1', 5_000);
  assert.equal(kind, 'fill');
  const waiting = other.call('TW.FILL.GET', 'cache:profile:1', 5_000, 'WAIT', 5_000);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(await redis.get('cache:profile:1'), null, 'no trace while the fill is in flight');
  assert.equal(await redis.call('TW.FILL.SET', 'cache:profile:1', token, '{"name":"ada"}', 'EX', 60), 1);
  assert.deepEqual(await waiting, ['hit', '{"name":"ada"}']);
  assert.equal(await redis.get('cache:profile:1'), '{"name":"ada"}');
});
