// The recipes of docs/recipes/ against a fresh tidewire: Express apps with the
// rate-limit and Idempotency-Key middleware over ioredis, a payout under a fenced
// lock, a single-flight getOrCompute, and the Next.js route handler over REST.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import Redis from 'ioredis';
import { startServer } from '../../lib/server.mjs';
import { overRedis, overRest } from '../src/tidewire.mjs';
import { expressRateLimit, BUCKETS, throttle } from '../src/rate-limit.mjs';
import { idempotency } from '../src/idempotency.mjs';
import { Ledger, processPayout } from '../src/payout.mjs';
import { getOrCompute } from '../src/get-or-compute.mjs';
import { sendTip, tipLimits } from '../src/tips.mjs';
import { POST } from '../src/next-tips-route.mjs';

const TOKEN = 'recipes-token';
let server;
const conns = [];

async function connect() {
  const c = new Redis(server.url, { lazyConnect: true });
  await c.connect();
  conns.push(c);
  return c;
}

// An Express app on a free port; resolves to its base URL and a close function.
async function listen(app) {
  const http = await new Promise((ok) => {
    const s = app.listen(0, '127.0.0.1', () => ok(s));
  });
  return { base: `http://127.0.0.1:${http.address().port}`, close: () => new Promise((ok) => http.close(ok)) };
}

before(async () => {
  server = await startServer({ name: 'recipes', env: { TIDEWIRE_REST_TOKEN: TOKEN } });
});

after(async () => {
  for (const c of conns) c.disconnect();
  await server.close();
});

test('Express: dual-tier limit answers 429 with RateLimit and Retry-After headers', async () => {
  const send = overRedis(await connect());
  const app = express();
  // Per minute, so that a slow machine cannot refill the burst between requests.
  const tiers = [
    { name: 'burst', limit: 3, periodMs: 60_000 },
    { name: 'sustained', limit: 100, periodMs: 3_600_000 },
  ];
  app.use(expressRateLimit({ send, tiers, prefix: 'rl:test:tips', identify: (req) => req.get('x-user-id') }));
  app.post('/tips', (req, res) => res.status(201).json({ ok: true }));
  const { base, close } = await listen(app);
  const post = (user) => fetch(`${base}/tips`, { method: 'POST', headers: { 'x-user-id': user } });
  for (const remaining of ['2', '1', '0']) {
    const r = await post('u1');
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('ratelimit-limit'), '3');
    assert.equal(r.headers.get('ratelimit-remaining'), remaining);
  }
  const refused = await post('u1');
  assert.equal(refused.status, 429);
  assert.ok(Number(refused.headers.get('retry-after')) >= 1, 'Retry-After in seconds');
  assert.equal((await post('u2')).status, 201, 'another user has their own limit');
  // The refused request cost the sustained tier nothing: 97 of 100 left.
  const d = await throttle(send, 'rl:test:tips:u1', [tiers[1]], 0);
  assert.equal(d.tiers[0].remaining, 97);
  // Buckets: the strict one lets 5 a minute through.
  const strict = [];
  for (let i = 0; i < 6; i++) strict.push((await throttle(send, 'rl:test:pay:u1', BUCKETS.strict)).limited);
  assert.deepEqual(strict, [false, false, false, false, false, true]);
  await close();
});

test('Express: Idempotency-Key replays, refuses a duplicate in flight and a reused key', async () => {
  const send = overRedis(await connect());
  const app = express();
  app.use(express.json());
  app.use(idempotency({ send }));
  let release;
  app.post('/tips', async (req, res) => {
    if (req.body.slow) await new Promise((r) => { release = r; });
    res.status(201).json(await sendTip(send, req.body));
  });
  const { base, close } = await listen(app);
  const post = (key, body) => fetch(`${base}/tips`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify(body),
  });
  const first = await post('k1', { creator: 'ada', amount: 5 });
  assert.equal(first.status, 201);
  assert.deepEqual(await first.json(), { creator: 'ada', amount: 5, balance: 5 });
  const retry = await post('k1', { creator: 'ada', amount: 5 });
  assert.equal(retry.status, 201);
  assert.equal(retry.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(await retry.json(), { creator: 'ada', amount: 5, balance: 5 });
  assert.equal(await send(['GET', 'balance:ada']), '5', 'charged once');
  assert.equal((await post('k1', { creator: 'ada', amount: 50 })).status, 422);
  // A duplicate while the first still runs.
  const slow = post('k2', { creator: 'ada', amount: 1, slow: true });
  for (let i = 0; i < 100 && !release; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal((await post('k2', { creator: 'ada', amount: 1, slow: true })).status, 409);
  release();
  assert.equal((await slow).status, 201);
  assert.equal(await send(['GET', 'balance:ada']), '6');
  await close();
});

test('payout: one worker at a time, and a stale holder cannot overwrite', async () => {
  const ledger = new Ledger();
  const a = overRedis(await connect());
  const b = overRedis(await connect());
  // Two workers on the same user: the second waits for the first, then runs.
  const order = [];
  const pay = (who, ms) => async () => {
    order.push(`${who}:start`);
    await new Promise((r) => setTimeout(r, ms));
    order.push(`${who}:end`);
  };
  const [ra, rb] = await Promise.all([
    processPayout(a, ledger, 'u1', { pay: pay('a', 100) }),
    (async () => {
      await new Promise((r) => setTimeout(r, 20));
      return processPayout(b, ledger, 'u1', { pay: pay('b', 10) });
    })(),
  ]);
  assert.deepEqual(order, ['a:start', 'a:end', 'b:start', 'b:end']);
  assert.ok(ra.written && rb.written && rb.fence > ra.fence);
  // A holder that pauses past its TTL: the next holder writes first, then the
  // paused one's write is refused by its lower fence.
  const stale = processPayout(a, ledger, 'u2', { ttlMs: 100, pay: () => new Promise((r) => setTimeout(r, 400)) });
  await new Promise((r) => setTimeout(r, 50));
  const next = await processPayout(b, ledger, 'u2', { waitMs: 5_000 });
  assert.equal(next.written, true);
  assert.equal((await stale).written, false);
  assert.equal(ledger.rows.get('u2').fence, next.fence);
});

test('getOrCompute: fifty concurrent misses run the query once', async () => {
  const sends = [];
  for (let i = 0; i < 50; i++) sends.push(overRedis(await connect()));
  let queries = 0;
  const loadProfile = async () => {
    queries += 1;
    await new Promise((r) => setTimeout(r, 100));
    return { id: 7, name: 'Ada' };
  };
  const values = await Promise.all(sends.map((send) => getOrCompute(send, 'cache:creator:7', loadProfile)));
  assert.equal(queries, 1);
  for (const v of values) assert.deepEqual(v, { id: 7, name: 'Ada' });
  assert.equal(await sends[0](['TTL', 'cache:creator:7']) > 0, true);
  // DEL invalidates: the next call queries again.
  await sends[0](['DEL', 'cache:creator:7']);
  await getOrCompute(sends[0], 'cache:creator:7', loadProfile);
  assert.equal(queries, 2);
  // A failing query gives the fill up: the next caller tries again at once.
  await assert.rejects(getOrCompute(sends[1], 'cache:creator:8', async () => { throw new Error('db down'); }), /db down/);
  assert.deepEqual(await getOrCompute(sends[2], 'cache:creator:8', async () => 'ok'), 'ok');
});

test('Next.js route handler over REST: rate limited per user, tips never sent twice', async () => {
  process.env.UPSTASH_REDIS_REST_URL = `http://127.0.0.1:${server.http}/redis`;
  process.env.UPSTASH_REDIS_REST_TOKEN = TOKEN;
  process.env.APP_ENV = 'test';
  // The seeds' tiers (10 a second, 100 a minute) at a pace a slow machine cannot
  // outrun: 10 a minute, 100 an hour.
  tipLimits.tiers = [
    { name: 'burst', limit: 10, periodMs: 60_000 },
    { name: 'sustained', limit: 100, periodMs: 3_600_000 },
  ];
  const tip = (key, body, user = 'u9') => POST(new Request('http://app.local/api/tips', {
    method: 'POST',
    headers: { 'x-user-id': user, 'idempotency-key': key, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }));
  const first = await tip('t1', { creator: 'bo', amount: 3 });
  assert.equal(first.status, 201);
  assert.equal((await first.json()).balance, 3);
  assert.equal(first.headers.get('ratelimit-limit'), '10');
  const replay = await tip('t1', { creator: 'bo', amount: 3 });
  assert.equal(replay.status, 201);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal((await replay.json()).balance, 3);
  assert.equal((await tip('t1', { creator: 'bo', amount: 30 })).status, 422);
  const rest = overRest();
  assert.equal(await rest(['GET', 'balance:bo']), '3');
  // The burst tier lets 10 a second through; three were used above.
  const statuses = [];
  for (let i = 0; i < 8; i++) statuses.push((await tip(`t-burst-${i}`, { creator: 'bo', amount: 1 })).status);
  assert.deepEqual(statuses, [201, 201, 201, 201, 201, 201, 201, 429]);
  assert.equal((await tip('t-other', { creator: 'bo', amount: 1 }, 'u10')).status, 201);
});
