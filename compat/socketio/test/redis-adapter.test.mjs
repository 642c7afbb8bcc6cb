// The classic @socket.io/redis-adapter (pub/sub: PUBLISH, PSUBSCRIBE, SUBSCRIBE,
// PUBSUB NUMSUB) over ioredis on tidewire, across two Socket.IO servers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../lib/server.mjs';
import { startCluster, waitFor, within, record } from './helpers.mjs';

let tidewire;
let cluster;

before(async () => {
  tidewire = await startServer({ name: 'socketio' });
  cluster = await startCluster('pubsub-ioredis', tidewire.resp);
});

after(async () => {
  try {
    await cluster?.close();
  } finally {
    await tidewire?.close();
  }
});

test('a broadcast from server A reaches clients on A and B', async () => {
  const { A, B } = cluster;
  const onA = await cluster.client(A);
  const onB = await cluster.client(B);
  const got = Promise.all([waitFor(onA, 'news'), waitFor(onB, 'news')]);
  A.io.emit('news', { headline: 'hello' }, 42);
  assert.deepEqual(await got, [
    [{ headline: 'hello' }, 42],
    [{ headline: 'hello' }, 42],
  ]);
  const bin = waitFor(onA, 'blob');
  B.io.emit('blob', Buffer.from([0, 1, 254, 255]));
  assert.deepEqual(Buffer.from((await bin)[0]), Buffer.from([0, 1, 254, 255]));
  onA.disconnect();
  onB.disconnect();
});

test('rooms: a client joins on A, server B emits to the room', async () => {
  const { A, B } = cluster;
  const member = await cluster.client(A);
  const outsider = await cluster.client(A);
  const outsiderOnB = await cluster.client(B);
  await within(member.emitWithAck('join', 'room-1'), 'join ack');
  const outsiderGot = record(outsider, 'room-msg');
  const outsiderOnBGot = record(outsiderOnB, 'room-msg');
  const got = waitFor(member, 'room-msg');
  B.io.to('room-1').emit('room-msg', 'for room-1');
  assert.deepEqual(await got, ['for room-1']);
  // One channel, in order: the outsiders get the later broadcast without the room message.
  const later = Promise.all([waitFor(outsider, 'after'), waitFor(outsiderOnB, 'after')]);
  B.io.emit('after');
  await later;
  assert.deepEqual(outsiderGot, []);
  assert.deepEqual(outsiderOnBGot, []);
  for (const s of [member, outsider, outsiderOnB]) s.disconnect();
});

test('fetchSockets(), socketsJoin() and serverSideEmit across servers', async () => {
  const { A, B } = cluster;
  const alice = await cluster.client(A, { auth: { user: 'alice' } });
  const bob = await cluster.client(B, { auth: { user: 'bob' } });
  const all = await within(A.io.fetchSockets(), 'fetchSockets');
  assert.deepEqual(all.map((s) => s.id).sort(), [alice.id, bob.id].sort());
  assert.equal(all.find((s) => s.id === bob.id).data.user, 'bob');

  A.io.in(bob.id).socketsJoin('remote-room');
  const inRoom = await within(A.io.in('remote-room').fetchSockets(), 'fetchSockets in room');
  assert.deepEqual(inRoom.map((s) => s.id), [bob.id]);
  const viaRoom = waitFor(bob, 'via-room');
  A.io.to('remote-room').emit('via-room', 'ok');
  assert.deepEqual(await viaRoom, ['ok']);

  const sse = waitFor(B.io, 'config-changed');
  A.io.serverSideEmit('config-changed', { version: 7 });
  assert.deepEqual(await sse, [{ version: 7 }]);
  B.io.on('how-many', (n, cb) => cb(n * 2));
  assert.deepEqual(await within(A.io.serverSideEmitWithAck('how-many', 21), 'serverSideEmitWithAck'), [42]);
  alice.disconnect();
  bob.disconnect();
});
