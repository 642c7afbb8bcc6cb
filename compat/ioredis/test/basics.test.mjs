import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { startServer } from '../../lib/server.mjs';

let server;
let redis;

before(async () => {
  server = await startServer({ name: 'ioredis' });
  redis = new Redis({ port: server.resp, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
});

after(async () => {
  redis.disconnect();
  await server.close();
});

test('strings, TTLs and counters', async () => {
  assert.equal(await redis.set('greeting', 'hello'), 'OK');
  assert.equal(await redis.get('greeting'), 'hello');
  assert.equal(await redis.set('session:1', 'data', 'EX', 100), 'OK');
  const ttl = await redis.ttl('session:1');
  assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
  assert.equal(await redis.incr('views'), 1);
  assert.equal(await redis.incrby('views', 41), 42);
  assert.equal(await redis.get('missing'), null);
  assert.equal(await redis.del('greeting', 'missing'), 1);
});

test('binary-safe values round trip', async () => {
  const value = Buffer.from([0, 1, 2, 13, 10, 255, 254]);
  await redis.set('bin', value);
  assert.deepEqual(await redis.getBuffer('bin'), value);
});

test('lock pattern: SET NX PX and compare-and-delete', async () => {
  assert.equal(await redis.set('lock:job', 'token-a', 'NX', 'PX', 30000), 'OK');
  assert.equal(await redis.set('lock:job', 'token-b', 'NX', 'PX', 30000), null);
  const ttl = await redis.pttl('lock:job');
  assert.ok(ttl > 0);
});

test('pipelines keep order', async () => {
  const p = redis.pipeline();
  for (let i = 0; i < 500; i++) p.set(`p:${i}`, String(i));
  for (let i = 0; i < 500; i++) p.get(`p:${i}`);
  const results = await p.exec();
  assert.equal(results.length, 1000);
  for (let i = 0; i < 500; i++) assert.deepEqual(results[500 + i], [null, String(i)]);
});

test('MULTI/EXEC and errors', async () => {
  const res = await redis.multi().set('tx', '1').incr('tx').exec();
  assert.deepEqual(res, [[null, 'OK'], [null, 2]]);
  await assert.rejects(redis.call('nosuchcommand'), /ERR unknown command 'nosuchcommand'/);
  await redis.set('str', 'x');
  await assert.rejects(redis.incr('str'), /ERR value is not an integer or out of range/);
});

test('WATCH aborts on a concurrent change', async () => {
  const other = redis.duplicate();
  await redis.set('watched', '1');
  await redis.watch('watched');
  await other.set('watched', '2');
  const res = await redis.multi().set('watched', '3').exec();
  assert.equal(res, null);
  assert.equal(await redis.get('watched'), '2');
  other.disconnect();
});

test('pub/sub between two connections', async () => {
  const sub = redis.duplicate();
  const got = new Promise((resolve) => sub.on('message', (ch, msg) => resolve([ch, msg])));
  await sub.subscribe('news');
  assert.equal(await redis.publish('news', 'hi'), 1);
  assert.deepEqual(await got, ['news', 'hi']);
  const pgot = new Promise((resolve) => sub.on('pmessage', (p, ch, msg) => resolve([p, ch, msg])));
  await sub.psubscribe('user:*');
  await redis.publish('user:42', 'tip');
  assert.deepEqual(await pgot, ['user:*', 'user:42', 'tip']);
  sub.disconnect();
});

test('INFO is parsed by ioredis (server version, loading flag)', async () => {
  const info = await redis.info('server');
  assert.match(info, /redis_version:7\.2\.\d+/);
  assert.equal(redis.serverInfo?.loading ?? '0', '0');
});

test('SELECT and databases', async () => {
  const db3 = new Redis({ port: server.resp, host: '127.0.0.1', db: 3 });
  await db3.set('only-in-3', 'x');
  assert.equal(await redis.get('only-in-3'), null);
  assert.equal(await db3.get('only-in-3'), 'x');
  db3.disconnect();
});

test('SCAN returns every key', async () => {
  const keys = [];
  for (let i = 0; i < 300; i++) keys.push(`scan:${i}`);
  await redis.mset(...keys.flatMap((k) => [k, '1']));
  const seen = new Set();
  const stream = redis.scanStream({ match: 'scan:*', count: 50 });
  for await (const batch of stream) for (const k of batch) seen.add(k);
  assert.equal(seen.size, 300);
});

test('defineCommand: a lock released only by its owner (EVALSHA, EVAL on NOSCRIPT)', async () => {
  redis.defineCommand('releaseLock', {
    numberOfKeys: 1,
    lua: "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
  });
  assert.equal(await redis.set('lock:payout', 'owner-a', 'NX', 'PX', 30000), 'OK');
  assert.equal(await redis.releaseLock('lock:payout', 'owner-b'), 0);
  assert.equal(await redis.get('lock:payout'), 'owner-a');
  await redis.script('FLUSH');
  assert.equal(await redis.releaseLock('lock:payout', 'owner-a'), 1);
  assert.equal(await redis.exists('lock:payout'), 0);
  // Scripts inside MULTI, as classic Bull sends them.
  const res = await redis.multi().releaseLock('lock:none', 'x').set('after', '1').exec();
  assert.deepEqual(res, [[null, 0], [null, 'OK']]);
  await assert.rejects(redis.eval('return redis.call("nosuch")', 0), /Unknown Redis command called from script/);
});
