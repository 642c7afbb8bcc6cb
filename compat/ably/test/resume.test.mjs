// Connection resume: after a transport drop the SDK resumes the same connection and
// its channels continue without losing or repeating messages.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, realtime, rest, connected, close, sleep, FULL_KEY } from './helpers.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

for (const useBinaryProtocol of [true, false]) {
  const mode = useBinaryProtocol ? 'msgpack' : 'json';

  describe(`resume over ${mode}`, { timeout: 60_000 }, () => {
    it('resumes after a transport drop without losing or repeating messages', async () => {
      const name = `resume-${mode}`;
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        await connected(c);
        const id = c.connection.id;
        const ch = c.channels.get(name);
        const seen = [];
        const updates = [];
        ch.on('update', (change) => updates.push(change));
        await ch.subscribe((m) => seen.push(m.data));
        const pub = r.channels.get(name);
        for (let i = 0; i < 5; i++) await pub.publish('n', String(i));
        // Drop the transport under the SDK's feet, keep publishing meanwhile.
        c.connection.connectionManager.disconnectAllTransports();
        for (let i = 5; i < 15; i++) await pub.publish('n', String(i));
        for (let i = 0; i < 100 && !(c.connection.state === 'connected' && seen.length >= 15); i++) await sleep(100);
        await sleep(300);
        assert.equal(c.connection.id, id, 'same connection after resume');
        assert.deepEqual(seen, Array.from({ length: 15 }, (_, i) => String(i)));
        assert.ok(updates.every((u) => u.resumed), 'channel continuity kept');
      } finally { await close(c); }
    });

    it('does not republish a message re-sent after resume', async () => {
      const name = `resend-${mode}`;
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const watcher = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const seen = [];
        await watcher.channels.get(name).subscribe((m) => seen.push(m.data));
        const ch = c.channels.get(name);
        await ch.attach();
        const p = ch.publish('n', 'once');
        c.connection.connectionManager.disconnectAllTransports();
        await p;
        await ch.publish('n', 'twice');
        for (let i = 0; i < 50 && seen.length < 2; i++) await sleep(100);
        await sleep(300);
        assert.deepEqual(seen, ['once', 'twice']);
      } finally {
        await close(c);
        await close(watcher);
      }
    });
  });
}
