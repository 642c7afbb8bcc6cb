// Presence through the official SDK: enter, get, subscribe, leave on close,
// REST presence, and presence kept across a resume.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, realtime, rest, connected, close, sleep, FULL_KEY, CONFIG } from './helpers.mjs';

let server;
before(async () => { server = await startServer({ ...CONFIG, presence_leave_grace_ms: 1000 }); });
after(async () => { await server?.stop(); });

const waitFor = async (cond, ms = 10_000) => {
  for (let i = 0; i < ms / 50 && !cond(); i++) await sleep(50);
  return cond();
};

for (const useBinaryProtocol of [true, false]) {
  const mode = useBinaryProtocol ? 'msgpack' : 'json';

  describe(`presence over ${mode}`, { timeout: 60_000 }, () => {
    it('enters, lists, updates and leaves', async () => {
      const name = `presence-${mode}`;
      const watcher = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'watcher' });
      const alice = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'alice' });
      const bob = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'bob' });
      try {
        const events = [];
        await watcher.channels.get(name).presence.subscribe((m) => events.push(`${m.action}:${m.clientId}`));
        await alice.channels.get(name).presence.enter({ avatar: 'a.png' });
        await bob.channels.get(name).presence.enter('bob-data');
        assert.ok(await waitFor(() => events.length >= 2), `events: ${events}`);
        const members = await watcher.channels.get(name).presence.get();
        assert.deepEqual(members.map((m) => m.clientId).sort(), ['alice', 'bob']);
        const a = members.find((m) => m.clientId === 'alice');
        assert.deepEqual(a.data, { avatar: 'a.png' });
        await alice.channels.get(name).presence.update({ avatar: 'b.png' });
        assert.ok(await waitFor(() => events.includes('update:alice')));
        // A late attacher gets the set via SYNC.
        const late = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
        try {
          const seen = await late.channels.get(name).presence.get();
          assert.deepEqual(seen.map((m) => m.clientId).sort(), ['alice', 'bob']);
          assert.deepEqual(seen.find((m) => m.clientId === 'alice').data, { avatar: 'b.png' });
        } finally { await close(late); }
        await bob.channels.get(name).presence.leave();
        assert.ok(await waitFor(() => events.includes('leave:bob')));
        // Closing a connection makes its members leave.
        await close(alice);
        assert.ok(await waitFor(() => events.includes('leave:alice')), `events: ${events}`);
        assert.deepEqual(await watcher.channels.get(name).presence.get(), []);
      } finally {
        await close(watcher);
        await close(alice);
        await close(bob);
      }
    });

    it('serves presence over REST', async () => {
      const name = `rest-presence-${mode}`;
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'restee' });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        await c.channels.get(name).presence.enter('here');
        const page = await r.channels.get(name).presence.get();
        assert.deepEqual(page.items.map((m) => [m.clientId, m.data]), [['restee', 'here']]);
        const status = await r.channels.get(name).status();
        assert.equal(status.status.occupancy.metrics.presenceMembers, 1);
      } finally { await close(c); }
    });

    it('keeps presence across a transport drop and resume', async () => {
      const name = `presence-resume-${mode}`;
      const watcher = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'steady' });
      try {
        const events = [];
        await watcher.channels.get(name).presence.subscribe((m) => events.push(`${m.action}:${m.clientId}`));
        await c.channels.get(name).presence.enter('x');
        assert.ok(await waitFor(() => events.includes('enter:steady')));
        await connected(c);
        const id = c.connection.id;
        c.connection.connectionManager.disconnectAllTransports();
        assert.ok(await waitFor(() => c.connection.state === 'connected' && c.connection.id === id));
        await sleep(1500); // past the leave grace
        const members = await watcher.channels.get(name).presence.get();
        assert.deepEqual(members.map((m) => m.clientId), ['steady']);
        assert.ok(!events.includes('leave:steady'), `events: ${events}`);
      } finally {
        await close(c);
        await close(watcher);
      }
    });
  });
}
