// Further SDK features: echo suppression, rewind, channel status, batch publish,
// REST with token auth, publish results.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, realtime, rest, connected, nextMessage, close, sleep, FULL_KEY,
} from './helpers.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

for (const useBinaryProtocol of [true, false]) {
  const mode = useBinaryProtocol ? 'msgpack' : 'json';

  describe(`ably-js features over ${mode}`, { timeout: 60_000 }, () => {
    it('honours echoMessages: false', async () => {
      const quiet = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, echoMessages: false });
      const loud = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const name = `echo-${mode}`;
        const seen = [];
        const qch = quiet.channels.get(name);
        await qch.subscribe((m) => seen.push(m.data));
        const lch = loud.channels.get(name);
        await lch.attach();
        await qch.publish('x', 'mine');
        await lch.publish('x', 'theirs');
        for (let i = 0; i < 100 && seen.length < 1; i++) await sleep(50);
        await sleep(200);
        assert.deepEqual(seen, ['theirs']);
      } finally {
        await close(quiet);
        await close(loud);
      }
    });

    it('rewinds on attach with the rewind channel param', async () => {
      const name = `rewind-${mode}`;
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      for (let i = 0; i < 5; i++) await r.channels.get(name).publish('r', `m${i}`);
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const ch = c.channels.get(name, { params: { rewind: '2' } });
        const seen = [];
        await ch.subscribe((m) => seen.push(m.data));
        for (let i = 0; i < 100 && seen.length < 2; i++) await sleep(50);
        assert.deepEqual(seen, ['m3', 'm4']);
      } finally { await close(c); }
    });

    it('reads history until attach', async () => {
      const name = `until-attach-${mode}`;
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        for (let i = 0; i < 3; i++) await r.channels.get(name).publish('n', `before${i}`);
        const ch = c.channels.get(name);
        const live = [];
        await ch.subscribe((m) => live.push(m.data));
        for (let i = 0; i < 2; i++) await r.channels.get(name).publish('n', `after${i}`);
        for (let i = 0; i < 100 && live.length < 2; i++) await sleep(50);
        const page = await ch.history({ untilAttach: true });
        assert.deepEqual(page.items.map((m) => m.data), ['before2', 'before1', 'before0']);
      } finally { await close(c); }
    });

    it('reports channel status with occupancy', async () => {
      const name = `status-${mode}`;
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        await c.channels.get(name).attach();
        const st = await r.channels.get(name).status();
        assert.equal(st.channelId, name);
        assert.equal(st.status.isActive, true);
        assert.equal(st.status.occupancy.metrics.connections, 1);
      } finally { await close(c); }
    });

    it('batch publishes to several channels', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const a = c.channels.get(`batch-a-${mode}`);
        const b = c.channels.get(`batch-b-${mode}`);
        const gotA = nextMessage(a, 'bp');
        const gotB = nextMessage(b, 'bp');
        await a.attach();
        await b.attach();
        const result = await r.batchPublish({
          channels: [`batch-a-${mode}`, `batch-b-${mode}`],
          messages: [{ name: 'bp', data: { n: 1 } }],
        });
        assert.equal(result.successCount, 2);
        assert.deepEqual((await gotA).data, { n: 1 });
        assert.deepEqual((await gotB).data, { n: 1 });
      } finally { await close(c); }
    });

    it('uses token auth on REST via authCallback and returns publish serials', async () => {
      const signer = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      const capability = { chat: ['publish', 'history'] };
      const r = rest(server.port, useBinaryProtocol, {
        authCallback: (p, cb) => signer.auth.createTokenRequest({ clientId: 'rest-user', capability }).then((t) => cb(null, t), cb),
      });
      const res = await r.channels.get('chat').publish('n', 'by token');
      assert.ok(Array.isArray(res.serials) && res.serials.length === 1);
      const page = await r.channels.get('chat').history({ limit: 1 });
      assert.equal(page.items[0].data, 'by token');
      assert.equal(page.items[0].clientId, 'rest-user');
      await assert.rejects(r.channels.get('private').publish('n', 'x'), (e) => e.code === 40160);
    });

    it('resumes the connection after a token-expiry disconnect', { timeout: 30_000 }, async () => {
      // A token that expires without being renewed in-band (authCallback fails once)
      // makes the server send DISCONNECTED 40142; the SDK renews and resumes.
      const signer = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      let calls = 0;
      const c = realtime(server.port, useBinaryProtocol, {
        authCallback: (p, cb) => {
          calls += 1;
          if (calls === 2) return cb('temporarily unavailable', null);
          signer.auth.createTokenRequest({ ttl: calls === 1 ? 2000 : 60_000 }).then((t) => cb(null, t), cb);
        },
      });
      try {
        await connected(c);
        const firstId = c.connection.id;
        const ch = c.channels.get(`reconnect-${mode}`);
        await ch.attach();
        let disconnected = 0;
        c.connection.on('disconnected', () => { disconnected += 1; });
        for (let i = 0; i < 150 && !(calls >= 3 && disconnected > 0 && c.connection.state === 'connected'); i++) {
          await sleep(100);
        }
        assert.ok(disconnected > 0, 'the server disconnected the expired token');
        assert.equal(c.connection.id, firstId, 'resumed the same connection');
        for (let i = 0; i < 50 && ch.state !== 'attached'; i++) await sleep(100);
        assert.equal(ch.state, 'attached');
        const got = nextMessage(ch, 'again');
        await signer.channels.get(`reconnect-${mode}`).publish('again', 'after reconnect');
        assert.equal((await got).data, 'after reconnect');
      } finally { await close(c); }
    });
  });
}
