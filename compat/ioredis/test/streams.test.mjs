// Streams through ioredis: the core producer / consumer-group flow, blocking reads woken
// from another connection, and pipelines.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { startServer } from '../../lib/server.mjs';
import { setTimeout as sleep } from 'node:timers/promises';

let server;
let redis;
const extra = [];

function connect() {
  const c = new Redis({ port: server.resp, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  extra.push(c);
  return c;
}

// Rejects if the promise has not settled within ms.
function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

before(async () => {
  server = await startServer({ name: 'ioredis' });
  redis = connect();
  await redis.connect();
});

after(async () => {
  for (const c of extra) c.disconnect();
  await server.close();
});

test('XADD ids, XLEN, XRANGE / XREVRANGE with COUNT', async () => {
  await redis.flushall();
  assert.equal(await redis.xadd('s', '1-1', 'a', '1'), '1-1');
  assert.equal(await redis.xadd('s', '1-2', 'b', '2', 'c', '3'), '1-2');
  assert.equal(await redis.xadd('s', '5-*', 'd', '4'), '5-0');
  const auto = await redis.xadd('s', '*', 'e', '5');
  const [ms, seq] = auto.split('-').map(Number);
  assert.ok(Math.abs(ms - Date.now()) < 5000 && seq === 0, auto);
  assert.equal(await redis.xlen('s'), 4);
  await assert.rejects(redis.xadd('s', '1-0', 'x', 'y'), /equal or smaller than the target stream top item/);
  assert.equal(await redis.xadd('nomk', 'NOMKSTREAM', '*', 'x', 'y'), null);
  assert.equal(await redis.exists('nomk'), 0);

  assert.deepEqual(await redis.xrange('s', '-', '+'), [
    ['1-1', ['a', '1']],
    ['1-2', ['b', '2', 'c', '3']],
    ['5-0', ['d', '4']],
    [auto, ['e', '5']],
  ]);
  assert.deepEqual(await redis.xrange('s', '-', '+', 'COUNT', 2), [
    ['1-1', ['a', '1']],
    ['1-2', ['b', '2', 'c', '3']],
  ]);
  assert.deepEqual(await redis.xrange('s', '(1-1', '5'), [
    ['1-2', ['b', '2', 'c', '3']],
    ['5-0', ['d', '4']],
  ]);
  assert.deepEqual(await redis.xrevrange('s', '+', '-', 'COUNT', 2), [
    [auto, ['e', '5']],
    ['5-0', ['d', '4']],
  ]);
  assert.deepEqual(await redis.xrevrange('s', '1-2', '-'), [
    ['1-2', ['b', '2', 'c', '3']],
    ['1-1', ['a', '1']],
  ]);
  // Buffers in and out.
  const bin = Buffer.from([0, 255, 13, 10, 1]);
  const id = await redis.xadd('bin', '*', 'payload', bin);
  const [[gotId, [field, value]]] = await redis.xrangeBuffer('bin', '-', '+');
  assert.equal(gotId.toString(), id);
  assert.equal(field.toString(), 'payload');
  assert.deepEqual(value, bin);
});

test('MAXLEN / MINID trimming, XTRIM and XDEL', async () => {
  await redis.flushall();
  for (let i = 1; i <= 20; i++) await redis.xadd('t', 'MAXLEN', '5', `${i}-0`, 'i', String(i));
  assert.equal(await redis.xlen('t'), 5);
  assert.deepEqual((await redis.xrange('t', '-', '+')).map((e) => e[0]), ['16-0', '17-0', '18-0', '19-0', '20-0']);
  const p = redis.pipeline();
  for (let i = 1; i <= 300; i++) p.xadd('approx', 'MAXLEN', '~', '50', `${i}-0`, 'i', String(i));
  await p.exec();
  const n = await redis.xlen('approx');
  assert.ok(n >= 50 && n <= 150, `approximate MAXLEN left ${n}`);
  assert.equal(await redis.xtrim('t', 'MAXLEN', 3), 2);
  assert.equal(await redis.xtrim('t', 'MINID', '19'), 1);
  assert.deepEqual((await redis.xrange('t', '-', '+')).map((e) => e[0]), ['19-0', '20-0']);
  assert.equal(await redis.xdel('t', '19-0', '42-0'), 1);
  assert.equal(await redis.xlen('t'), 1);
});

test('XREAD, and XREAD BLOCK on a dedicated connection woken by an XADD from another', async () => {
  await redis.flushall();
  await redis.xadd('feed', '1-0', 'n', '1');
  assert.deepEqual(await redis.xread('COUNT', 10, 'STREAMS', 'feed', '0'), [['feed', [['1-0', ['n', '1']]]]]);
  assert.equal(await redis.xread('STREAMS', 'feed', '$'), null);

  const reader = connect();
  await reader.connect();
  const started = Date.now();
  const pending = reader.xread('BLOCK', 5000, 'STREAMS', 'feed', '$');
  await sleep(200);
  assert.equal(await redis.xadd('feed', '2-0', 'n', '2'), '2-0');
  const got = await within(4000, pending, 'XREAD BLOCK');
  assert.deepEqual(got, [['feed', [['2-0', ['n', '2']]]]]);
  assert.ok(Date.now() - started >= 150);

  // Two streams, data arrives on the second one.
  const two = reader.xread('BLOCK', 5000, 'STREAMS', 'feed', 'other', '$', '$');
  await sleep(100);
  await redis.xadd('other', '9-0', 'k', 'v');
  assert.deepEqual(await within(4000, two, 'XREAD BLOCK two streams'), [['other', [['9-0', ['k', 'v']]]]]);

  // Timeout gives null.
  const t0 = Date.now();
  assert.equal(await reader.xread('BLOCK', 150, 'STREAMS', 'feed', '$'), null);
  assert.ok(Date.now() - t0 >= 100);
});

test('consumer groups: XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, XINFO', async () => {
  await redis.flushall();
  assert.equal(await redis.xgroup('CREATE', 'jobs', 'workers', '0', 'MKSTREAM'), 'OK');
  await assert.rejects(redis.xgroup('CREATE', 'jobs', 'workers', '0'), /BUSYGROUP/);
  for (let i = 1; i <= 4; i++) await redis.xadd('jobs', `${i}-0`, 'job', String(i));

  assert.deepEqual(await redis.xreadgroup('GROUP', 'workers', 'alice', 'COUNT', 2, 'STREAMS', 'jobs', '>'), [
    ['jobs', [['1-0', ['job', '1']], ['2-0', ['job', '2']]]],
  ]);
  assert.deepEqual(await redis.xreadgroup('GROUP', 'workers', 'bob', 'COUNT', 1, 'STREAMS', 'jobs', '>'), [
    ['jobs', [['3-0', ['job', '3']]]],
  ]);
  assert.deepEqual(await redis.xreadgroup('GROUP', 'workers', 'alice', 'STREAMS', 'jobs', '0'), [
    ['jobs', [['1-0', ['job', '1']], ['2-0', ['job', '2']]]],
  ]);
  assert.deepEqual(await redis.xpending('jobs', 'workers'), [3, '1-0', '3-0', [['alice', '2'], ['bob', '1']]]);
  const detail = await redis.xpending('jobs', 'workers', '-', '+', 10);
  assert.deepEqual(detail.map(([id, c, , n]) => [id, c, n]), [
    ['1-0', 'alice', 2],
    ['2-0', 'alice', 2],
    ['3-0', 'bob', 1],
  ]);
  assert.equal(await redis.xack('jobs', 'workers', '1-0', '3-0'), 2);

  await sleep(30);
  assert.deepEqual(await redis.xclaim('jobs', 'workers', 'carol', 10, '2-0'), [['2-0', ['job', '2']]]);
  assert.deepEqual(await redis.xclaim('jobs', 'workers', 'carol', 0, '2-0', 'JUSTID'), ['2-0']);
  assert.deepEqual(await redis.xreadgroup('GROUP', 'workers', 'bob', 'STREAMS', 'jobs', '>'), [
    ['jobs', [['4-0', ['job', '4']]]],
  ]);
  assert.deepEqual(await redis.xautoclaim('jobs', 'workers', 'dave', 0, '0-0', 'COUNT', 10), [
    '0-0',
    [['2-0', ['job', '2']], ['4-0', ['job', '4']]],
    [],
  ]);
  assert.deepEqual(await redis.xpending('jobs', 'workers'), [2, '2-0', '4-0', [['dave', '2']]]);

  const info = await redis.xinfo('STREAM', 'jobs');
  const s = Object.fromEntries(Array.from({ length: info.length / 2 }, (_, i) => [info[2 * i], info[2 * i + 1]]));
  assert.equal(s.length, 4);
  assert.equal(s['last-generated-id'], '4-0');
  assert.equal(s['entries-added'], 4);
  assert.equal(s.groups, 1);
  assert.deepEqual(s['first-entry'], ['1-0', ['job', '1']]);
  assert.deepEqual(s['last-entry'], ['4-0', ['job', '4']]);
  const groups = await redis.xinfo('GROUPS', 'jobs');
  assert.equal(groups.length, 1);
  const g = Object.fromEntries(Array.from({ length: groups[0].length / 2 }, (_, i) => [groups[0][2 * i], groups[0][2 * i + 1]]));
  assert.deepEqual(
    { name: g.name, consumers: g.consumers, pending: g.pending, last: g['last-delivered-id'], read: g['entries-read'], lag: g.lag },
    { name: 'workers', consumers: 4, pending: 2, last: '4-0', read: 4, lag: 0 },
  );
  const consumers = await redis.xinfo('CONSUMERS', 'jobs', 'workers');
  assert.deepEqual(consumers.map((c) => [c[1], c[3]]), [['alice', 0], ['bob', 0], ['carol', 0], ['dave', 2]]);
  assert.equal(await redis.xgroup('DELCONSUMER', 'jobs', 'workers', 'dave'), 2);
  assert.equal(await redis.xgroup('DESTROY', 'jobs', 'workers'), 1);
  await assert.rejects(
    redis.xreadgroup('GROUP', 'workers', 'x', 'STREAMS', 'jobs', '>'),
    /NOGROUP No such key 'jobs' or consumer group 'workers'/,
  );
});

test('XREADGROUP BLOCK is woken by an XADD from another connection', async () => {
  await redis.flushall();
  await redis.xgroup('CREATE', 'q', 'g', '$', 'MKSTREAM');
  const c1 = connect();
  const c2 = connect();
  await c1.connect();
  await c2.connect();
  const started = Date.now();
  const first = c1.xreadgroup('GROUP', 'g', 'c1', 'COUNT', 1, 'BLOCK', 5000, 'STREAMS', 'q', '>');
  const second = c2.xreadgroup('GROUP', 'g', 'c2', 'COUNT', 1, 'BLOCK', 5000, 'STREAMS', 'q', '>');
  await sleep(200);
  // One entry per blocked consumer: each gets a different one.
  await redis.xadd('q', '1-0', 'task', 'a');
  await redis.xadd('q', '2-0', 'task', 'b');
  const [r1, r2] = await within(4000, Promise.all([first, second]), 'XREADGROUP BLOCK');
  assert.ok(Date.now() - started >= 150);
  const got = [r1[0][1][0], r2[0][1][0]].sort((a, b) => a[0].localeCompare(b[0]));
  assert.deepEqual(got, [['1-0', ['task', 'a']], ['2-0', ['task', 'b']]]);
  assert.deepEqual(r1[0][0], 'q');
  assert.equal((await redis.xpending('q', 'g'))[0], 2);

  // A consumer blocked on a group whose stream is deleted gets an error.
  const orphan = c1.xreadgroup('GROUP', 'g', 'c1', 'BLOCK', 5000, 'STREAMS', 'q', '>').then(
    (reply) => ({ reply }),
    (error) => ({ error }),
  );
  await sleep(100);
  assert.equal(await redis.del('q'), 1);
  const { error } = await within(4000, orphan, 'XREADGROUP after DEL');
  // Redis 7.2 on (7.0 answered "UNBLOCKED the stream key no longer exists").
  assert.match(String(error), /NOGROUP No such key 'q' or consumer group 'g' in XREADGROUP with GROUP option/);
});

test('streams in MULTI and pipelines', async () => {
  await redis.flushall();
  const res = await redis.multi().xadd('m', '1-0', 'a', '1').xadd('m', '2-0', 'b', '2').xlen('m').xrange('m', '-', '+', 'COUNT', 1).exec();
  assert.deepEqual(res, [[null, '1-0'], [null, '2-0'], [null, 2], [null, [['1-0', ['a', '1']]]]]);
  const p = redis.pipeline();
  for (let i = 3; i <= 102; i++) p.xadd('m', `${i}-0`, 'n', String(i));
  p.xlen('m');
  const out = await p.exec();
  assert.deepEqual(out.at(-1), [null, 102]);
});
