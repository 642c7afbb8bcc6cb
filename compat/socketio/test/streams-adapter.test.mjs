// @socket.io/redis-streams-adapter on tidewire: two Socket.IO servers share one stream
// (XADD ... MAXLEN ~, XREAD BLOCK ... $, XRANGE for session recovery) and pub/sub
// channels (fetchSockets, serverSideEmit, broadcasts with acks). Run once with the
// node-redis client and once with ioredis, the two clients the adapter supports.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../lib/server.mjs';
import { startCluster, waitFor, until, within, record, sleep } from './helpers.mjs';

const OFFSET = /^\d+-\d+$/;
let tidewire;

before(async () => {
  tidewire = await startServer({ name: 'socketio' });
});

after(async () => {
  await tidewire?.close();
});

for (const lib of ['redis', 'ioredis']) {
  describe(`redis-streams-adapter over ${lib}`, () => {
    let cluster;

    before(async () => {
      cluster = await startCluster(`streams-${lib}`, tidewire.resp, {
        connectionStateRecovery: { maxDisconnectionDuration: 60_000, skipMiddlewares: true },
      });
    });

    after(async () => {
      await cluster?.close();
    });

    test('a broadcast from server A reaches clients on A and B, through the stream', async () => {
      const { A, B, admin } = cluster;
      const onA = await cluster.client(A);
      const onB = await cluster.client(B);
      const before = await admin.xlen('socket.io');
      const gotA = waitFor(onA, 'news');
      const gotB = waitFor(onB, 'news');
      A.io.emit('news', { headline: 'hello' }, 42);
      const [[a1, a2, offA], [b1, b2, offB]] = await Promise.all([gotA, gotB]);
      assert.deepEqual([a1, a2, b1, b2], [{ headline: 'hello' }, 42, { headline: 'hello' }, 42]);
      // With connection state recovery on, each packet carries its stream entry id.
      assert.match(offB, OFFSET);
      assert.equal(offA, offB);
      assert.equal(await admin.xlen('socket.io'), before + 1);
      const [[id, fields]] = await admin.xrevrange('socket.io', '+', '-', 'COUNT', 1);
      assert.equal(id, offB);
      const entry = Object.fromEntries(fields.reduce((acc, v, i) => (i % 2 ? acc : [...acc, [v, fields[i + 1]]]), []));
      assert.equal(entry.nsp, '/');
      assert.equal(entry.type, '3');
      assert.deepEqual(JSON.parse(entry.data).packet.data, ['news', { headline: 'hello' }, 42]);

      // Binary payloads travel msgpack-encoded in the stream.
      const bin = waitFor(onB, 'blob');
      B.io.emit('blob', Buffer.from([1, 2, 3, 255]));
      const [payload] = await bin;
      assert.deepEqual(Buffer.from(payload), Buffer.from([1, 2, 3, 255]));
      onA.disconnect();
      onB.disconnect();
    });

    test('rooms: a client joins on A, server B emits to the room', async () => {
      const { A, B } = cluster;
      const member = await cluster.client(A);
      const outsider = await cluster.client(A);
      const outsiderOnB = await cluster.client(B);
      assert.equal(await within(member.emitWithAck('join', 'room-1'), 'join ack'), 'joined');
      const outsiderGot = record(outsider, 'room-msg');
      const outsiderOnBGot = record(outsiderOnB, 'room-msg');
      const got = waitFor(member, 'room-msg');
      B.io.to('room-1').emit('room-msg', 'for room-1');
      const [msg, offset] = await got;
      assert.equal(msg, 'for room-1');
      assert.match(offset, OFFSET);
      // Stream order: a later broadcast to everyone reaches the outsiders after the room
      // message would have, so not having it by then means it was never sent to them.
      const later = Promise.all([waitFor(outsider, 'after'), waitFor(outsiderOnB, 'after')]);
      B.io.emit('after', 1);
      await later;
      assert.deepEqual(outsiderGot, []);
      assert.deepEqual(outsiderOnBGot, []);

      // except(): everyone on both servers but the room.
      const exceptGot = Promise.all([waitFor(outsider, 'not-room'), waitFor(outsiderOnB, 'not-room')]);
      const memberGot = record(member, 'not-room');
      A.io.except('room-1').emit('not-room', 'x');
      await exceptGot;
      const fence = waitFor(member, 'fence');
      A.io.emit('fence');
      await fence;
      assert.deepEqual(memberGot, []);
      for (const s of [member, outsider, outsiderOnB]) s.disconnect();
    });

    test('fetchSockets() and remote socket operations across servers', async () => {
      const { A, B } = cluster;
      const alice = await cluster.client(A, { auth: { user: 'alice' } });
      const bob = await cluster.client(B, { auth: { user: 'bob' } });
      await bob.emitWithAck('join', 'team');

      const all = await within(A.io.fetchSockets(), 'fetchSockets on A');
      assert.deepEqual(all.map((s) => s.id).sort(), [alice.id, bob.id].sort());
      const remoteBob = all.find((s) => s.id === bob.id);
      assert.equal(remoteBob.data.user, 'bob');
      assert.deepEqual([...remoteBob.rooms].sort(), [bob.id, 'team'].sort());
      assert.equal(remoteBob.handshake.auth.user, 'bob');

      const inTeam = await within(A.io.in('team').fetchSockets(), 'fetchSockets in room');
      assert.deepEqual(inTeam.map((s) => s.id), [bob.id]);

      // Emit to a remote socket, make it join a room, then reach it through the room.
      const direct = waitFor(bob, 'direct');
      remoteBob.emit('direct', 'hi bob');
      assert.equal((await direct)[0], 'hi bob');
      A.io.in(bob.id).socketsJoin('joined-remotely');
      await until(async () => (await B.io.in('joined-remotely').fetchSockets()).length === 1, 'remote socketsJoin');
      const viaRoom = waitFor(bob, 'via-room');
      A.io.to('joined-remotely').emit('via-room', 'ok');
      assert.equal((await viaRoom)[0], 'ok');

      // disconnectSockets() from the other server.
      const gone = waitFor(bob, 'disconnect');
      A.io.in('team').disconnectSockets();
      assert.equal((await gone)[0], 'io server disconnect');
      const left = await within(B.io.fetchSockets(), 'fetchSockets on B');
      assert.deepEqual(left.map((s) => s.id), [alice.id]);
      alice.disconnect();
    });

    test('serverSideEmit, with and without acknowledgements', async () => {
      const { A, B } = cluster;
      const got = waitFor(B.io, 'config-changed');
      A.io.serverSideEmit('config-changed', { version: 7 }, 'x');
      assert.deepEqual(await got, [{ version: 7 }, 'x']);

      B.io.on('how-many', (n, cb) => cb(n * 2));
      const replies = await within(A.io.serverSideEmitWithAck('how-many', 21), 'serverSideEmitWithAck');
      assert.deepEqual(replies, [42]);
      B.io.removeAllListeners('how-many');
    });

    test('broadcast with acknowledgements collects answers from clients on both servers', async () => {
      const { A, B } = cluster;
      const onA = await cluster.client(A);
      const onB = await cluster.client(B);
      onA.on('question', (n, cb) => cb(`A:${n}`));
      onB.on('question', (n, cb) => cb(`B:${n}`));
      const answers = await within(A.io.timeout(3000).emitWithAck('question', 1), 'emitWithAck');
      assert.deepEqual(answers.sort(), ['A:1', 'B:1']);
      onA.disconnect();
      onB.disconnect();
    });

    test('connection state recovery: missed packets replayed from the stream after a reconnect', async () => {
      const { A, B, admin } = cluster;
      const client = await cluster.client(B);
      assert.equal(client.recovered, false);
      await client.emitWithAck('join', 'vip');
      // A first broadcast gives the client its stream offset.
      const tick = waitFor(client, 'tick');
      A.io.emit('tick', 1);
      const [, offset] = await tick;
      assert.match(offset, OFFSET);
      const serverSide = (await B.io.fetchSockets()).find((s) => s.id === client.id);
      assert.ok(serverSide, 'socket on B');

      // Cut the transport (no clean disconnect): the server keeps the session in tidewire.
      const oldId = client.id;
      const clientDown = waitFor(client, 'disconnect');
      const serverDown = waitFor(B.io.sockets.sockets.get(oldId), 'disconnect');
      client.io.engine.close();
      assert.equal((await clientDown)[0], 'forced close');
      assert.equal((await serverDown)[0], 'transport close');
      const sessionKey = await until(async () => {
        const keys = await admin.keys('sio:session:*');
        return keys.length === 1 && keys[0];
      }, 'session persisted');
      const ttl = await admin.pttl(sessionKey);
      assert.ok(ttl > 50_000 && ttl <= 60_000, `session PTTL ${ttl}`);

      // Emitted while the client is away, from the other server.
      const missed = record(client, 'missed');
      const vip = record(client, 'vip-only');
      const other = record(client, 'other-room');
      const before = await admin.xlen('socket.io');
      A.io.emit('missed', 'while away', 1);
      A.io.to('vip').emit('vip-only', 'v');
      A.io.to('elsewhere').emit('other-room', 'o');
      A.io.emit('missed', 'while away', 2);
      await until(async () => (await admin.xlen('socket.io')) === before + 4, 'four entries in the stream');

      client.connect();
      await waitFor(client, 'connect');
      assert.equal(client.recovered, true);
      assert.equal(client.id, oldId);
      await until(() => missed.length === 2 && vip.length === 1, 'missed packets');
      assert.deepEqual(missed.map((m) => m.slice(0, 2)), [['while away', 1], ['while away', 2]]);
      assert.match(missed[1][2], OFFSET);
      assert.equal(vip[0][0], 'v');
      // Session consumed (GETDEL via MULTI), rooms restored on B.
      assert.deepEqual(await admin.keys('sio:session:*'), []);
      const restored = B.io.sockets.sockets.get(client.id);
      assert.ok(restored && restored.recovered, 'recovered socket on B');
      assert.ok(restored.rooms.has('vip'));
      const fence = waitFor(client, 'fence');
      A.io.emit('fence');
      await fence;
      assert.deepEqual(other, []);
      assert.equal(missed.length, 2);

      // A fresh client with an unknown session is not recovered.
      const fresh = await cluster.client(B);
      assert.equal(fresh.recovered, false);
      fresh.disconnect();
      client.disconnect();
      await sleep(50);
    });
  });
}
