// redlock v5 (beta; `latest` on npm is still 4.2.0) over ioredis: its three Lua
// scripts run with EVALSHA, falling back to EVAL on NOSCRIPT. Against one tidewire
// and against three, where a quorum (2 of 3) must agree.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import Redlock, { ExecutionError, ResourceLockedError } from 'redlock';
import { startServer } from '../../lib/server.mjs';
import { setTimeout as sleep } from 'node:timers/promises';

function connect(server) {
  const client = new Redis({
    port: server.resp,
    host: '127.0.0.1',
    // A stopped node must vote "against" at once instead of queueing.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => 50,
    lazyConnect: true,
  });
  client.on('error', () => {});
  return client;
}

const fast = { retryCount: 0, retryDelay: 50, retryJitter: 10 };

describe('one tidewire', () => {
  let server;
  let client;
  let redlock;
  let other;
  before(async () => {
    server = await startServer({ name: 'node-libs' });
    client = connect(server);
    await client.connect();
    redlock = new Redlock([client], { retryCount: 3, retryDelay: 50, retryJitter: 10 });
    other = new Redlock([client], fast);
  });
  after(async () => {
    client?.disconnect();
    await server?.close();
  });

  test('acquire sets the key with PX, a second acquirer fails, extend, release', async () => {
    const lock = await redlock.acquire(['lock:a'], 2000);
    assert.equal(await client.get('lock:a'), lock.value);
    const pttl = await client.pttl('lock:a');
    assert.ok(pttl > 1500 && pttl <= 2000, `pttl ${pttl}`);
    assert.ok(lock.expiration > Date.now() + 1500);

    await assert.rejects(other.acquire(['lock:a'], 2000), (err) => {
      assert.ok(err instanceof ExecutionError, String(err));
      return true;
    });
    // The failed attempt's cleanup (release script with its own value) left the lock alone.
    assert.equal(await client.get('lock:a'), lock.value);

    const extended = await lock.extend(10000);
    assert.equal(extended.value, lock.value);
    const pttl2 = await client.pttl('lock:a');
    assert.ok(pttl2 > 9000 && pttl2 <= 10000, `pttl after extend ${pttl2}`);
    // The replaced lock object can no longer be extended.
    await assert.rejects(lock.extend(1000), ExecutionError);

    await extended.release();
    assert.equal(await client.exists('lock:a'), 0);
    const again = await other.acquire(['lock:a'], 1000);
    await again.release();
  });

  test('the failing attempt reports ResourceLockedError votes', async () => {
    const lock = await redlock.acquire(['lock:votes'], 5000);
    try {
      await other.acquire(['lock:votes'], 5000);
      assert.fail('second acquire should fail');
    } catch (err) {
      assert.ok(err instanceof ExecutionError);
      assert.equal(err.attempts.length, 1);
      const stats = await err.attempts[0];
      assert.equal(stats.membershipSize, 1);
      assert.equal(stats.votesFor.size, 0);
      const [reason] = [...stats.votesAgainst.values()];
      assert.ok(reason instanceof ResourceLockedError, String(reason));
      assert.match(reason.message, /applied to: 0 of the 1/);
    }
    await lock.release();
  });

  test('several resources are locked all or nothing', async () => {
    const lock = await redlock.acquire(['multi:1', 'multi:2', 'multi:3'], 5000);
    assert.deepEqual(await client.mget('multi:1', 'multi:2', 'multi:3'), [lock.value, lock.value, lock.value]);
    // Overlapping on one resource is enough to fail, and sets nothing.
    await assert.rejects(other.acquire(['multi:3', 'multi:4'], 5000), ExecutionError);
    assert.equal(await client.exists('multi:4'), 0);
    await lock.release();
    assert.equal(await client.exists('multi:1', 'multi:2', 'multi:3'), 0);
  });

  test('release does not remove a lock that is now held by someone else', async () => {
    const lock = await redlock.acquire(['lock:expiring'], 200);
    await sleep(350);
    assert.equal(await client.exists('lock:expiring'), 0, 'PX expired the key');
    const newer = await other.acquire(['lock:expiring'], 5000);
    // The old holder's release matches no value: nothing removed.
    await assert.rejects(lock.release(), ExecutionError);
    assert.equal(await client.get('lock:expiring'), newer.value);
    await assert.rejects(lock.extend(1000), ExecutionError);
    await newer.release();
  });

  test('using() extends the lock automatically while the routine runs', async () => {
    const started = Date.now();
    const seen = [];
    const result = await redlock.using(['lock:using'], 1500, { automaticExtensionThreshold: 750 }, async (signal) => {
      for (let i = 0; i < 5; i++) {
        await sleep(700);
        seen.push(await client.pttl('lock:using'));
        // Nobody else gets it while the routine holds it.
        await assert.rejects(other.acquire(['lock:using'], 1000), ExecutionError);
        assert.equal(signal.aborted, false);
      }
      return 'done';
    });
    assert.equal(result, 'done');
    assert.ok(Date.now() - started >= 3500, 'routine ran well past the initial 1500 ms lock');
    assert.ok(seen.every((p) => p > 0), `pttl while held: ${seen}`);
    assert.equal(await client.exists('lock:using'), 0, 'released after the routine');
  });

  test('using() aborts the routine when the lock is lost', async () => {
    let aborted;
    await redlock
      .using(['lock:lost'], 600, { automaticExtensionThreshold: 300, retryCount: 0 }, async (signal) => {
        // Someone else takes the resource: the next extension fails.
        await client.set('lock:lost', 'stolen', 'PX', 5000);
        const end = Date.now() + 3000;
        while (!signal.aborted && Date.now() < end) await sleep(50);
        aborted = signal.aborted;
        assert.ok(signal.error instanceof ExecutionError, String(signal.error));
      })
      .catch((err) => assert.ok(err instanceof ExecutionError, String(err))); // release fails too
    assert.equal(aborted, true);
    assert.equal(await client.get('lock:lost'), 'stolen');
  });

  test('after SCRIPT FLUSH the scripts are sent again with EVAL', async () => {
    assert.equal(await client.script('FLUSH'), 'OK');
    const lock = await redlock.acquire(['lock:flush'], 2000);
    assert.equal(await client.get('lock:flush'), lock.value);
    await lock.release();
    assert.equal(await client.exists('lock:flush'), 0);
  });
});

describe('three tidewires', () => {
  let servers;
  let clients;
  let redlock;
  let other;
  before(async () => {
    servers = [];
    for (let i = 0; i < 3; i++) servers.push(await startServer({ name: 'node-libs' }));
    clients = servers.map(connect);
    await Promise.all(clients.map((c) => c.connect()));
    redlock = new Redlock(clients, { retryCount: 2, retryDelay: 50, retryJitter: 10 });
    other = new Redlock(clients, fast);
    // Redlock answers as soon as a quorum has voted; a node still on its
    // EVALSHA -> NOSCRIPT -> EVAL round trip would race the checks below, which
    // read each node on the same connection. With the scripts loaded, each
    // node's commands run in the order they were sent.
    for (const c of clients) {
      for (const { value } of Object.values(redlock.scripts)) await c.script('LOAD', value);
    }
  });
  after(async () => {
    for (const c of clients ?? []) c.disconnect();
    for (const s of servers ?? []) await s.close();
  });

  const values = (key) => Promise.all(clients.map((c) => (c.status === 'ready' ? c.get(key) : 'down')));

  test('acquire locks every node; extend and release reach every node', async () => {
    const lock = await redlock.acquire(['q:a'], 3000);
    const stats = await lock.attempts[0]; // resolves once every node has voted
    assert.deepEqual(await values('q:a'), [lock.value, lock.value, lock.value]);
    assert.equal(stats.quorumSize, 2);
    await assert.rejects(other.acquire(['q:a'], 3000), ExecutionError);
    const ext = await lock.extend(8000);
    for (const c of clients) {
      const p = await c.pttl('q:a');
      assert.ok(p > 7000, `pttl ${p}`);
    }
    await ext.release();
    assert.deepEqual(await values('q:a'), [null, null, null]);
  });

  test('a lock held on 2 of 3 nodes wins the quorum; 1 of 3 does not', async () => {
    // Someone holds q:b on two nodes: no quorum for us.
    await clients[0].set('q:b', 'someone', 'PX', 5000);
    await clients[1].set('q:b', 'someone', 'PX', 5000);
    await assert.rejects(other.acquire(['q:b'], 3000), ExecutionError);
    // The failed attempt cleaned up its own value from node 3 only.
    assert.deepEqual(await values('q:b'), ['someone', 'someone', null]);

    // Held on one node only: 2 of 3 still agree.
    await clients[1].del('q:b');
    const lock = await other.acquire(['q:b'], 3000);
    assert.deepEqual(await values('q:b'), ['someone', lock.value, lock.value]);
    await lock.release();
    assert.deepEqual(await values('q:b'), ['someone', null, null]);
    await clients[0].del('q:b');
  });

  test('with one node stopped the quorum (2 of 3) still locks; with two stopped it fails', async () => {
    await servers[2].stop();
    await assert.rejects(clients[2].ping());

    const lock = await redlock.acquire(['q:c'], 5000);
    const stats = await lock.attempts[0];
    assert.equal(stats.votesFor.size, 2);
    assert.equal(stats.votesAgainst.size, 1);
    assert.equal(await clients[0].get('q:c'), lock.value);
    assert.equal(await clients[1].get('q:c'), lock.value);
    // Held on the two live nodes: nobody else gets a quorum.
    await assert.rejects(other.acquire(['q:c'], 5000), ExecutionError);
    const ext = await lock.extend(6000);
    await ext.release();
    assert.equal(await clients[0].exists('q:c'), 0);

    await servers[1].stop();
    await assert.rejects(other.acquire(['q:d'], 5000), ExecutionError);
    // The failed attempt released what it had set on the one live node.
    assert.equal(await clients[0].exists('q:d'), 0);

    // Bring both back (empty: no persistence of the lock keys is needed).
    await servers[1].restart();
    await servers[2].restart();
    const deadline = Date.now() + 10000;
    while (!clients.every((c) => c.status === 'ready') && Date.now() < deadline) await sleep(50);
    assert.ok(clients.every((c) => c.status === 'ready'), 'clients reconnected');
    const back = await other.acquire(['q:d'], 2000);
    assert.equal((await back.attempts[0]).votesFor.size >= 2, true);
    assert.deepEqual(await values('q:d'), [back.value, back.value, back.value]);
    await back.release();
  });
});
