// Redis Functions (FUNCTION LOAD/LIST/DUMP/RESTORE/..., FCALL, FCALL_RO) through
// ioredis, unmodified.
import { test, before, after, beforeEach } from 'node:test';
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

beforeEach(async () => {
  // Functions survive FLUSHALL (as in Redis), so each test starts from no library.
  assert.equal(await redis.call('FUNCTION', 'FLUSH'), 'OK');
  await redis.flushall();
});

const COUNTERS_V1 = `#!lua name=counters
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
  -- Writes a key that was not passed in keys: its name is built from an argument.
  local name = 'tag:' .. args[1]
  redis.call('SET', name, args[2])
  return redis.call('GET', name)
end)
`;

const COUNTERS_V2 = `#!lua name=counters
redis.register_function('bump', function(keys, args)
  return redis.call('INCRBY', keys[1], tonumber(args[1]) * 10)
end)
redis.register_function{function_name = 'version', callback = function() return 'v2' end, flags = {'no-writes'}}
`;

// FUNCTION LIST replies are flat [key, value, ...] arrays over RESP2.
function pairs(flat) {
  assert.ok(Array.isArray(flat), `expected an array, got ${JSON.stringify(flat)}`);
  assert.equal(flat.length % 2, 0, `odd-length map reply ${JSON.stringify(flat)}`);
  const obj = {};
  for (let i = 0; i < flat.length; i += 2) obj[flat[i]] = flat[i + 1];
  return obj;
}

function parseLibraries(reply) {
  return reply.map((rawLib) => {
    const lib = pairs(rawLib);
    return {
      ...lib,
      // Redis lists functions in hash order: compare them sorted by name.
      functions: lib.functions.map(pairs).sort((a, b) => a.name.localeCompare(b.name)),
    };
  });
}

test('ioredis has fcall / fcall_ro commands', () => {
  assert.equal(typeof redis.fcall, 'function');
  assert.equal(typeof redis.fcall_ro, 'function');
});

test('FUNCTION LOAD, FCALL, FCALL_RO and LOAD REPLACE', async () => {
  assert.equal(await redis.call('FUNCTION', 'LOAD', COUNTERS_V1), 'counters');
  assert.equal(await redis.fcall('bump', 1, 'hits', 5), 5);
  assert.equal(await redis.fcall('bump', 1, 'hits', '2'), 7);
  assert.equal(await redis.fcall_ro('peek', 1, 'hits'), '7');
  assert.equal(await redis.fcall_ro('peek', 1, 'nothing'), null);
  // Function names are case-insensitive, as in Redis.
  assert.equal(await redis.fcall('BUMP', 1, 'hits', 1), 8);

  await assert.rejects(
    redis.call('FUNCTION', 'LOAD', COUNTERS_V1),
    (err) => err.message === "ERR Library 'counters' already exists",
  );
  assert.equal(await redis.call('FUNCTION', 'LOAD', 'REPLACE', COUNTERS_V2), 'counters');
  assert.equal(await redis.fcall('bump', 1, 'hits', 1), 18);
  assert.equal(await redis.fcall_ro('version', 0), 'v2');
  // Functions that only the old version had are gone.
  await assert.rejects(redis.fcall_ro('peek', 1, 'hits'), (err) => err.message === 'ERR Function not found');
  await assert.rejects(redis.fcall('nosuch', 0), (err) => err.message === 'ERR Function not found');
});

test('FUNCTION LIST with LIBRARYNAME and WITHCODE', async () => {
  assert.equal(await redis.call('FUNCTION', 'LOAD', COUNTERS_V1), 'counters');
  const other = "#!lua name=other_lib\nredis.register_function('noop', function() return 0 end)";
  assert.equal(await redis.call('FUNCTION', 'LOAD', other), 'other_lib');

  const all = parseLibraries(await redis.call('FUNCTION', 'LIST'));
  assert.deepEqual(all.map((l) => l.library_name).sort(), ['counters', 'other_lib']);

  const only = parseLibraries(await redis.call('FUNCTION', 'LIST', 'LIBRARYNAME', 'count*'));
  assert.equal(only.length, 1);
  assert.equal(only[0].library_name, 'counters');
  assert.equal(only[0].engine, 'LUA');
  assert.equal(only[0].library_code, undefined);
  assert.deepEqual(only[0].functions, [
    { name: 'bump', description: null, flags: [] },
    { name: 'peek', description: 'read a counter', flags: ['no-writes'] },
    { name: 'tag_other', description: null, flags: [] },
  ]);

  const withCode = parseLibraries(await redis.call('FUNCTION', 'LIST', 'LIBRARYNAME', 'other*', 'WITHCODE'));
  assert.equal(withCode.length, 1);
  assert.equal(withCode[0].library_name, 'other_lib');
  assert.equal(withCode[0].library_code, other);

  assert.deepEqual(await redis.call('FUNCTION', 'LIST', 'LIBRARYNAME', 'nomatch*'), []);

  assert.equal(await redis.call('FUNCTION', 'DELETE', 'other_lib'), 'OK');
  await assert.rejects(redis.call('FUNCTION', 'DELETE', 'other_lib'), (err) => err.message === 'ERR Library not found');
  await assert.rejects(redis.fcall('noop', 0), (err) => err.message === 'ERR Function not found');
  const left = parseLibraries(await redis.call('FUNCTION', 'LIST'));
  assert.deepEqual(left.map((l) => l.library_name), ['counters']);

  const stats = pairs(await redis.call('FUNCTION', 'STATS'));
  assert.equal(stats.running_script, null);
  assert.deepEqual(pairs(pairs(stats.engines).LUA), { libraries_count: 1, functions_count: 3 });
});

test('FCALL_RO of a function without no-writes is refused; no-writes functions cannot write', async () => {
  const lib = `#!lua name=ro_rules
redis.register_function('writer', function(keys, args) return redis.call('SET', keys[1], args[1]) end)
redis.register_function{function_name = 'sneaky', flags = {'no-writes'},
  callback = function(keys, args) return redis.call('SET', keys[1], args[1]) end}
`;
  assert.equal(await redis.call('FUNCTION', 'LOAD', lib), 'ro_rules');
  await assert.rejects(
    redis.fcall_ro('writer', 1, 'ro:k', 'v'),
    (err) => err.message === 'ERR Can not execute a script with write flag using *_ro command.',
  );
  assert.equal(await redis.exists('ro:k'), 0);
  await assert.rejects(redis.fcall('sneaky', 1, 'ro:k', 'v'), /Write commands are not allowed from read-only scripts/);
  await assert.rejects(redis.fcall_ro('sneaky', 1, 'ro:k', 'v'), /Write commands are not allowed from read-only scripts/);
  assert.equal(await redis.exists('ro:k'), 0);
  assert.equal(await redis.fcall('writer', 1, 'ro:k', 'v'), 'OK');
  assert.equal(await redis.get('ro:k'), 'v');
});

test('FUNCTION DUMP / FLUSH / RESTORE round trip with a binary payload', async () => {
  assert.equal(await redis.call('FUNCTION', 'LOAD', COUNTERS_V1), 'counters');
  const payload = await redis.callBuffer('FUNCTION', 'DUMP');
  assert.ok(Buffer.isBuffer(payload));
  // Redis's DUMP format: ... <2-byte RDB version> <8-byte CRC-64> at the end.
  assert.ok(payload.length > 10);
  assert.ok(payload.includes(Buffer.from('#!lua name=counters')), 'payload carries the library code');

  assert.equal(await redis.call('FUNCTION', 'FLUSH'), 'OK');
  assert.deepEqual(await redis.call('FUNCTION', 'LIST'), []);
  await assert.rejects(redis.fcall('bump', 1, 'c', 1), (err) => err.message === 'ERR Function not found');

  assert.equal(await redis.call('FUNCTION', 'RESTORE', payload), 'OK');
  assert.equal(await redis.fcall('bump', 1, 'c', 3), 3);
  assert.equal(await redis.fcall_ro('peek', 1, 'c'), '3');

  // The default policy (APPEND) refuses a library that exists; REPLACE and FLUSH do not.
  await assert.rejects(redis.call('FUNCTION', 'RESTORE', payload), /Library counters already exists/);
  assert.equal(await redis.call('FUNCTION', 'RESTORE', payload, 'REPLACE'), 'OK');
  assert.equal(await redis.call('FUNCTION', 'LOAD', "#!lua name=extra\nredis.register_function('x', function() return 1 end)"), 'extra');
  assert.equal(await redis.call('FUNCTION', 'RESTORE', payload, 'FLUSH'), 'OK');
  const libs = parseLibraries(await redis.call('FUNCTION', 'LIST'));
  assert.deepEqual(libs.map((l) => l.library_name), ['counters']);

  // A corrupted payload is refused and changes nothing.
  const corrupt = Buffer.from(payload);
  corrupt[corrupt.length - 1] ^= 0xff;
  await assert.rejects(redis.call('FUNCTION', 'RESTORE', corrupt, 'FLUSH'), /ERR DUMP payload version or checksum are wrong/);
  assert.equal(await redis.fcall('bump', 1, 'c', 1), 4);
});

test('FCALL inside MULTI/EXEC and in a pipeline', async () => {
  assert.equal(await redis.call('FUNCTION', 'LOAD', COUNTERS_V1), 'counters');
  const res = await redis.multi().fcall('bump', 1, 'tx', 2).fcall_ro('peek', 1, 'tx').set('after', '1').exec();
  assert.deepEqual(res, [[null, 2], [null, '2'], [null, 'OK']]);

  // An error raised by a function inside EXEC is that command's error only.
  const mixed = await redis.multi().fcall_ro('bump', 1, 'tx', 1).fcall('bump', 1, 'tx', 1).exec();
  assert.equal(mixed.length, 2);
  assert.match(mixed[0][0].message, /Can not execute a script with write flag using \*_ro command/);
  assert.deepEqual(mixed[1], [null, 3]);

  const piped = await redis.pipeline().fcall('bump', 1, 'p', 1).fcall('bump', 1, 'p', 1).fcall_ro('peek', 1, 'p').exec();
  assert.deepEqual(piped, [[null, 1], [null, 2], [null, '2']]);
});

test('a function may touch keys built from its arguments', async () => {
  assert.equal(await redis.call('FUNCTION', 'LOAD', COUNTERS_V1), 'counters');
  assert.equal(await redis.fcall('tag_other', 0, 'alpha', 'first'), 'first');
  assert.equal(await redis.get('tag:alpha'), 'first');
  // Concurrent callers from other connections all land.
  const clients = Array.from({ length: 4 }, () => redis.duplicate());
  try {
    await Promise.all(
      clients.flatMap((c, i) => Array.from({ length: 25 }, (_, j) => c.fcall('tag_other', 0, `c${i}:${j}`, `${i}-${j}`))),
    );
    for (let i = 0; i < 4; i++) {
      assert.equal(await redis.get(`tag:c${i}:24`), `${i}-24`);
    }
    const keys = await redis.keys('tag:c*');
    assert.equal(keys.length, 100);
  } finally {
    for (const c of clients) c.disconnect();
  }
});

test('FUNCTION LOAD errors have Redis texts', async () => {
  await assert.rejects(redis.call('FUNCTION', 'LOAD', 'return 1'), (err) => err.message === 'ERR Missing library metadata');
  await assert.rejects(
    redis.call('FUNCTION', 'LOAD', '#!lua name=empty\nlocal x = 1'),
    (err) => err.message === 'ERR No functions registered',
  );
  assert.equal(await redis.call('FUNCTION', 'LOAD', COUNTERS_V1), 'counters');
  await assert.rejects(
    redis.call('FUNCTION', 'LOAD', "#!lua name=dup\nredis.register_function('bump', function() return 1 end)"),
    (err) => err.message === 'ERR Function bump already exists',
  );
  await assert.rejects(redis.fcall('bump', 2, 'only-one-key'), /ERR Number of keys can't be greater than number of args/);
  assert.deepEqual(
    parseLibraries(await redis.call('FUNCTION', 'LIST')).map((l) => l.library_name),
    ['counters'],
  );
});
