// node-redis (`redis` package) v5 over RESP2 and RESP3, and v6 with its RESP3
// default: connect, commands, pub/sub on a duplicated client, defineScript with
// the EVALSHA -> EVAL fallback, streams (blocking reads on a duplicated client),
// MULTI/EXEC with WATCH, and sendCommand.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as v5 from 'redis';
import * as v6 from 'redis6';
import { startServer, waitFor } from '../../lib/server.mjs';
import { setTimeout as sleep } from 'node:timers/promises';

let server;
before(async () => {
  server = await startServer({ name: 'node-libs' });
});
after(async () => {
  await server?.close();
});

// XREAD/XREADGROUP come back as [{ name, messages: [{ id, message }] }] (RESP2,
// and v6's RESP3 compat transform) or as the raw RESP3 map (v5). Both become
// { stream: [[id, { field: value }]] } here.
function streams(reply) {
  if (reply === null) return null;
  const out = {};
  if (Array.isArray(reply)) {
    for (const { name, messages } of reply) {
      out[name] = messages.map((m) => [m.id, { ...m.message }]);
    }
    return out;
  }
  const entries = reply instanceof Map ? [...reply.entries()] : Object.entries(reply);
  for (const [name, messages] of entries) {
    out[name] = messages.map(([id, fields]) => {
      const obj = {};
      for (let i = 0; i < fields.length; i += 2) obj[fields[i]] = fields[i + 1];
      return [id, obj];
    });
  }
  return out;
}

const addScript = (lib) =>
  lib.defineScript({
    SCRIPT: 'return redis.call("INCRBY", KEYS[1], ARGV[1]) * 10',
    NUMBER_OF_KEYS: 1,
    FIRST_KEY_INDEX: 1,
    parseCommand(parser, key, n) {
      parser.pushKey(key);
      parser.push(String(n));
    },
    transformReply: undefined,
  });

const flavours = [
  ['v5 RESP2', v5, {}, 2],
  ['v5 RESP3', v5, { RESP: 3, unstableResp3: true }, 3],
  ['v6 (RESP3 default)', v6, {}, 3],
  ['v6 RESP2', v6, { RESP: 2 }, 2],
];

for (const [name, lib, opts, resp] of flavours) {
  describe(`node-redis ${name}`, () => {
    let client;
    let ns;
    before(async () => {
      client = lib.createClient({
        url: server.url,
        ...opts,
        scripts: { addTen: addScript(lib) },
      });
      client.on('error', () => {});
      await client.connect();
      ns = `${name.replace(/\W+/g, '')}:`;
    });
    after(async () => {
      await client?.quit();
    });

    test('connects with the expected protocol; strings, hashes, sets, sorted sets', async () => {
      const info = await client.sendCommand(['CLIENT', 'INFO']);
      assert.match(String(info), new RegExp(`resp=${resp}`));
      assert.equal(await client.ping(), 'PONG');
      const k = (s) => ns + s;
      assert.equal(await client.set(k('s'), 'v', { EX: 100 }), 'OK');
      assert.equal(await client.set(k('s'), 'w', { NX: true }), null);
      assert.equal(await client.set(k('s2'), 'x', { expiration: { type: 'PX', value: 5000 } }), 'OK');
      assert.equal(await client.get(k('s')), 'v');
      const ttl = await client.ttl(k('s'));
      assert.ok(ttl > 95 && ttl <= 100, `ttl ${ttl}`);
      assert.ok((await client.pTTL(k('s2'))) > 4000);
      assert.deepEqual(await client.mGet([k('s'), k('missing'), k('s2')]), ['v', null, 'x']);
      assert.equal(await client.incrBy(k('n'), 5), 5);
      assert.equal(await client.incrByFloat(k('f'), 1.5), '1.5');
      assert.equal(await client.exists([k('s'), k('s2'), k('missing')]), 2);
      assert.equal(await client.del([k('s'), k('s2')]), 2);

      assert.equal(await client.hSet(k('h'), { a: '1', b: '2' }), 2);
      assert.deepEqual({ ...(await client.hGetAll(k('h'))) }, { a: '1', b: '2' });
      assert.equal(await client.hGet(k('h'), 'b'), '2');
      assert.deepEqual(await client.hmGet(k('h'), ['a', 'zz']), ['1', null]);
      assert.equal(await client.hIncrBy(k('h'), 'a', 9), 10);

      assert.equal(await client.sAdd(k('set'), ['x', 'y', 'z', 'x']), 3);
      assert.deepEqual((await client.sMembers(k('set'))).sort(), ['x', 'y', 'z']);
      assert.equal(await client.sIsMember(k('set'), 'y'), 1);

      assert.equal(await client.zAdd(k('z'), [{ score: 2.5, value: 'b' }, { score: 1, value: 'a' }]), 2);
      assert.deepEqual(await client.zRangeWithScores(k('z'), 0, -1), [
        { value: 'a', score: 1 },
        { value: 'b', score: 2.5 },
      ]);
      assert.equal(await client.zScore(k('z'), 'b'), 2.5);
      assert.equal(await client.zScore(k('z'), 'nope'), null);
      assert.equal(await client.zIncrBy(k('z'), 0.5, 'a'), 1.5);

      assert.equal(await client.rPush(k('l'), ['1', '2', '3']), 3);
      assert.deepEqual(await client.lRange(k('l'), 0, -1), ['1', '2', '3']);
      assert.equal(await client.lPop(k('l')), '1');

      // scanIterator yields batches of keys.
      const seen = [];
      for await (const keys of client.scanIterator({ MATCH: `${ns}*`, COUNT: 2 })) seen.push(...keys);
      assert.deepEqual([...new Set(seen)].sort(), [k('f'), k('h'), k('l'), k('n'), k('set'), k('z')]);
      const hseen = [];
      for await (const entries of client.hScanIterator(k('h'))) hseen.push(...entries);
      assert.deepEqual(hseen.map((e) => e.field).sort(), ['a', 'b']);
    });

    test('errors come back as ErrorReply', async () => {
      await client.set(`${ns}str`, 'x');
      await assert.rejects(client.incr(`${ns}str`), (err) => {
        assert.ok(err instanceof lib.ErrorReply, String(err));
        assert.match(err.message, /ERR value is not an integer or out of range/);
        return true;
      });
      await assert.rejects(client.lPush(`${ns}str`, 'y'), /WRONGTYPE/);
      await assert.rejects(client.sendCommand(['NOSUCHCOMMAND']), /ERR unknown command 'NOSUCHCOMMAND'/);
    });

    test('pub/sub: subscribe, pSubscribe and sSubscribe on a duplicated client', async () => {
      const sub = client.duplicate();
      sub.on('error', () => {});
      await sub.connect();
      try {
        const got = [];
        await sub.subscribe(`${ns}chan`, (message, channel) => got.push(['sub', channel, message]));
        await sub.pSubscribe(`${ns}news.*`, (message, channel) => got.push(['psub', channel, message]));
        await sub.sSubscribe(`${ns}shard`, (message, channel) => got.push(['ssub', channel, message]));
        assert.equal(await client.publish(`${ns}chan`, 'hello'), 1);
        assert.equal(await client.publish(`${ns}news.sport`, 'goal'), 1);
        assert.equal(await client.sPublish(`${ns}shard`, 'sharded'), 1);
        assert.equal(await client.publish(`${ns}nobody`, 'x'), 0);
        await waitFor(() => got.length === 3, 5000, 'three messages');
        assert.deepEqual(got.sort(), [
          ['psub', `${ns}news.sport`, 'goal'],
          ['ssub', `${ns}shard`, 'sharded'],
          ['sub', `${ns}chan`, 'hello'],
        ]);
        const numsub = await client.pubSubNumSub([`${ns}chan`, `${ns}other`]);
        assert.deepEqual({ ...numsub }, { [`${ns}chan`]: 1, [`${ns}other`]: 0 });
        assert.equal(await client.pubSubNumPat(), 1);
        assert.deepEqual(await client.pubSubShardChannels(`${ns}*`), [`${ns}shard`]);

        // Buffers as messages (the `true` bufferMode flag).
        const bufs = [];
        await sub.subscribe(`${ns}bin`, (message) => bufs.push(message), true);
        await client.publish(`${ns}bin`, Buffer.from([0, 255, 10]));
        await waitFor(() => bufs.length === 1, 5000, 'binary message');
        assert.deepEqual(bufs[0], Buffer.from([0, 255, 10]));

        await sub.unsubscribe(`${ns}chan`);
        await sub.pUnsubscribe(`${ns}news.*`);
        await sub.sUnsubscribe(`${ns}shard`);
        assert.equal(await client.publish(`${ns}chan`, 'late'), 0);
        assert.equal(await client.publish(`${ns}news.sport`, 'late'), 0);
        assert.equal(await client.sPublish(`${ns}shard`, 'late'), 0);
        // Still a subscriber on `bin`; after unsubscribing everything the connection is usable.
        await sub.unsubscribe();
        // (v5 over RESP2 hands this PONG back as a Buffer, on Redis too.)
        assert.equal(String(await sub.ping()), 'PONG');
      } finally {
        await sub.quit();
      }
    });

    test('defineScript runs with EVALSHA and falls back to EVAL on NOSCRIPT', async () => {
      assert.equal(await client.scriptFlush(), 'OK');
      const sha = addScript(lib).SHA1;
      assert.deepEqual(await client.scriptExists([sha]), [0]);
      // First call: EVALSHA -> NOSCRIPT -> EVAL (which caches the script).
      assert.equal(await client.addTen(`${ns}cnt`, 2), 20);
      assert.deepEqual(await client.scriptExists([sha]), [1]);
      // Second call: EVALSHA hits.
      assert.equal(await client.addTen(`${ns}cnt`, 3), 50);
      // In a MULTI the script goes as EVALSHA too; loaded, it works.
      const res = await client.multi().addTen(`${ns}cnt`, 1).get(`${ns}cnt`).exec();
      assert.deepEqual(res, [60, '6']);
      assert.equal(await client.scriptLoad('return 1'), 'e0e1f9fabfc9d4800c877a703b823ac0578ff8db');
      assert.equal(await client.evalSha('e0e1f9fabfc9d4800c877a703b823ac0578ff8db'), 1);
      assert.deepEqual(
        await client.eval('return {KEYS[1], ARGV[1], 3}', { keys: ['k1'], arguments: ['a1'] }),
        ['k1', 'a1', 3],
      );
    });

    test('streams: xAdd, blocking xRead on a duplicated client, xReadGroup, xAck', async () => {
      const s = `${ns}stream`;
      const id1 = await client.xAdd(s, '*', { a: '1' });
      assert.match(id1, /^\d+-\d+$/);
      const id2 = await client.xAdd(s, '*', { b: '2', c: '3' });
      assert.equal(await client.xLen(s), 2);
      const range = await client.xRange(s, '-', '+');
      assert.deepEqual(range.map((e) => [e.id, { ...e.message }]), [
        [id1, { a: '1' }],
        [id2, { b: '2', c: '3' }],
      ]);
      assert.deepEqual(streams(await client.xRead({ key: s, id: '0-0' }, { COUNT: 1 })), {
        [s]: [[id1, { a: '1' }]],
      });
      assert.equal(await client.xRead({ key: s, id: id2 }), null);

      // BLOCK on its own connection, woken by an XADD from the main client.
      const blocker = client.duplicate();
      blocker.on('error', () => {});
      await blocker.connect();
      try {
        const started = Date.now();
        const pending = blocker.xRead({ key: s, id: '$' }, { BLOCK: 10000 });
        await sleep(200);
        const id3 = await client.xAdd(s, '*', { woke: 'up' });
        const woke = streams(await pending);
        assert.deepEqual(woke, { [s]: [[id3, { woke: 'up' }]] });
        assert.ok(Date.now() - started < 5000, 'woken by XADD, not by the timeout');

        // BLOCK with a timeout and nothing arriving returns null.
        assert.equal(await blocker.xRead({ key: s, id: '$' }, { BLOCK: 100 }), null);

        // Consumer groups.
        assert.equal(await client.xGroupCreate(s, 'g', '0'), 'OK');
        await assert.rejects(client.xGroupCreate(s, 'g', '0'), /BUSYGROUP/);
        const first = streams(await client.xReadGroup('g', 'alice', { key: s, id: '>' }, { COUNT: 2 }));
        assert.deepEqual(first, { [s]: [[id1, { a: '1' }], [id2, { b: '2', c: '3' }]] });
        const pend = await client.xPending(s, 'g');
        assert.equal(pend.pending, 2);
        assert.equal(pend.firstId, id1);
        assert.deepEqual(pend.consumers, [{ name: 'alice', deliveriesCounter: 2 }]);
        assert.equal(await client.xAck(s, 'g', [id1, id2]), 2);
        assert.equal((await client.xPending(s, 'g')).pending, 0);

        // XREADGROUP BLOCK on the duplicated client, woken by XADD.
        const groupWait = blocker.xReadGroup('g', 'bob', { key: s, id: '>' }, { COUNT: 10, BLOCK: 10000 });
        // id3 was not delivered to the group yet: it comes back at once.
        assert.deepEqual(streams(await groupWait), { [s]: [[id3, { woke: 'up' }]] });
        const groupWait2 = blocker.xReadGroup('g', 'bob', { key: s, id: '>' }, { BLOCK: 10000 });
        await sleep(200);
        const id4 = await client.xAdd(s, '*', { late: 'entry' });
        assert.deepEqual(streams(await groupWait2), { [s]: [[id4, { late: 'entry' }]] });
        // Bob's history (id 0) lists what he has not acked.
        const history = streams(await client.xReadGroup('g', 'bob', { key: s, id: '0' }));
        assert.deepEqual(Object.values(history)[0].map((e) => e[0]), [id3, id4]);
        assert.equal(await client.xAck(s, 'g', id3), 1);
        const info = await client.xInfoGroups(s);
        assert.equal(info.length, 1);
        assert.equal(info[0].name, 'g');
        assert.equal(info[0].pending, 1);
        assert.equal(info[0]['last-delivered-id'], id4);
      } finally {
        await blocker.quit();
      }
    });

    test('MULTI/EXEC, WATCH conflict and execAsPipeline', async () => {
      const k = `${ns}tx`;
      assert.deepEqual(await client.multi().set(k, '1').incr(k).get(k).exec(), ['OK', 2, '2']);

      // WATCH on a connection of its own; another client changes the key.
      const watcher = client.duplicate();
      watcher.on('error', () => {});
      await watcher.connect();
      try {
        assert.equal(await watcher.watch(k), 'OK');
        await client.set(k, 'changed');
        await assert.rejects(watcher.multi().set(k, 'mine').exec(), (err) => {
          assert.ok(err instanceof lib.WatchError, String(err));
          return true;
        });
        assert.equal(await client.get(k), 'changed');
        // Without interference the watched transaction commits.
        await watcher.watch(k);
        assert.deepEqual(await watcher.multi().set(k, 'mine').exec(), ['OK']);
        assert.equal(await client.get(k), 'mine');
      } finally {
        await watcher.quit();
      }

      // A command failing inside EXEC: the others still ran.
      await assert.rejects(client.multi().set(k, 'x').incr(k).get(k).exec(), (err) => {
        assert.ok(err instanceof lib.MultiErrorReply, String(err));
        assert.deepEqual(err.errorIndexes, [1]);
        assert.equal(err.replies[2], 'x');
        return true;
      });
      // A queueing error aborts the whole transaction.
      await assert.rejects(
        client.multi().set(k, 'y').addCommand(['SET']).exec(),
        /EXECABORT|wrong number of arguments/,
      );
      assert.equal(await client.get(k), 'x');
      assert.deepEqual(await client.multi().set(`${ns}p`, '1').incr(`${ns}p`).execAsPipeline(), ['OK', 2]);
    });

    test('sendCommand: raw commands and replies', async () => {
      assert.equal(await client.sendCommand(['SET', `${ns}raw`, 'v']), 'OK');
      assert.equal(await client.sendCommand(['GET', `${ns}raw`]), 'v');
      assert.equal(await client.sendCommand(['CLIENT', 'SETNAME', 'compat-client']), 'OK');
      assert.equal(await client.sendCommand(['CLIENT', 'GETNAME']), 'compat-client');
      await client.sendCommand(['HSET', `${ns}rh`, 'f', 'v']);
      const raw = await client.sendCommand(['HGETALL', `${ns}rh`]);
      // RESP2: flat array; RESP3: a map (a plain object by default).
      if (resp === 2) assert.deepEqual(raw, ['f', 'v']);
      else assert.deepEqual({ ...raw }, { f: 'v' });
      const hello = await client.sendCommand(['HELLO']);
      const helloObj = Array.isArray(hello) ? Object.fromEntries(hello.reduce((a, v, i) => (i % 2 ? a : [...a, [v, hello[i + 1]]]), [])) : hello;
      assert.equal(helloObj.proto, resp);
      assert.equal(helloObj.server, 'redis');
      // Buffers in and out.
      const bin = Buffer.from([1, 0, 255]);
      await client.sendCommand(['SET', `${ns}bin`, bin]);
      const back = await client.withTypeMapping({ [lib.RESP_TYPES.BLOB_STRING]: Buffer }).get(`${ns}bin`);
      assert.deepEqual(back, bin);
      assert.equal(await client.sendCommand(['DBSIZE']) > 0, true);
    });
  });
}
