// @socket.io/redis-adapter's sharded flavour (createShardedAdapter: SPUBLISH,
// SSUBSCRIBE, PUBSUB SHARDNUMSUB) over node-redis on tidewire, across two
// Socket.IO servers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../lib/server.mjs';
import { startCluster, waitFor, within } from './helpers.mjs';

let tidewire;
let cluster;

before(async () => {
  tidewire = await startServer({ name: 'socketio' });
  cluster = await startCluster('sharded-redis', tidewire.resp);
});

after(async () => {
  try {
    await cluster?.close();
  } finally {
    await tidewire?.close();
  }
});

test('sharded: broadcasts and rooms reach clients on the other server', async () => {
  const { A, B } = cluster;
  const onA = await cluster.client(A);
  const onB = await cluster.client(B);
  const got = Promise.all([waitFor(onA, 'news'), waitFor(onB, 'news')]);
  A.io.emit('news', 'sharded hello');
  assert.deepEqual(await got, [['sharded hello'], ['sharded hello']]);
  await within(onB.emitWithAck('join', 'shard-room'), 'join ack');
  const inRoom = waitFor(onB, 'room-msg');
  A.io.to('shard-room').emit('room-msg', 'for the room');
  assert.deepEqual(await inRoom, ['for the room']);
  onA.disconnect();
  onB.disconnect();
});

test('sharded: fetchSockets() and serverSideEmit across servers', async () => {
  const { A, B } = cluster;
  const alice = await cluster.client(A, { auth: { user: 'alice' } });
  const bob = await cluster.client(B, { auth: { user: 'bob' } });
  const all = await within(A.io.fetchSockets(), 'fetchSockets');
  assert.deepEqual(all.map((s) => s.id).sort(), [alice.id, bob.id].sort());
  const sse = waitFor(B.io, 'ping-all');
  A.io.serverSideEmit('ping-all', 1);
  assert.deepEqual(await sse, [1]);
  alice.disconnect();
  bob.disconnect();
});
