// The official ably SDK against Tidewire, over msgpack (Node's default) and JSON.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startServer, realtime, rest, connected, nextMessage, close, makeJwt, sleep,
  FULL_KEY, SUB_KEY,
} from './helpers.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

for (const useBinaryProtocol of [true, false]) {
  const mode = useBinaryProtocol ? 'msgpack' : 'json';

  describe(`ably-js over ${mode}`, { timeout: 60_000 }, () => {
    it('connects with an API key', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        await connected(c);
        assert.ok(c.connection.id);
        assert.ok(c.connection.key);
      } finally { await close(c); }
    });

    it('connects with an authCallback returning a TokenRequest', async () => {
      const signer = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      let calls = 0;
      const c = realtime(server.port, useBinaryProtocol, {
        authCallback: (params, cb) => {
          calls += 1;
          signer.auth.createTokenRequest({ clientId: 'cb-user' }).then((tr) => cb(null, tr), (e) => cb(e));
        },
      });
      try {
        await connected(c);
        assert.equal(calls, 1);
        assert.equal(c.auth.clientId, 'cb-user');
      } finally { await close(c); }
    });

    it('connects with an authUrl', async () => {
      const signer = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      const authServer = http.createServer(async (req, res) => {
        const tr = await signer.auth.createTokenRequest({ clientId: 'url-user' });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(tr));
      });
      await new Promise((r) => authServer.listen(0, '127.0.0.1', r));
      const c = realtime(server.port, useBinaryProtocol, {
        authUrl: `http://127.0.0.1:${authServer.address().port}/auth`,
      });
      try {
        await connected(c);
        assert.equal(c.auth.clientId, 'url-user');
      } finally {
        await close(c);
        authServer.close();
      }
    });

    it('connects with an Ably JWT', async () => {
      const jwt = makeJwt(FULL_KEY, { clientId: 'jwt-user', capability: { 'jwt:*': ['*'] } });
      const c = realtime(server.port, useBinaryProtocol, { authCallback: (p, cb) => cb(null, jwt) });
      try {
        await connected(c);
        assert.equal(c.auth.clientId, 'jwt-user');
        await c.channels.get('jwt:room').attach();
        await assert.rejects(c.channels.get('elsewhere').attach(), (e) => e.code === 40160);
      } finally { await close(c); }
    });

    it('subscribes to one name and to all, with string, binary and JSON data', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const ch = c.channels.get(`sub-${mode}`);
        const named = [];
        const all = [];
        await ch.subscribe('wanted', (m) => named.push(m));
        await ch.subscribe((m) => all.push(m));
        await ch.publish('other', 'x');
        await ch.publish('wanted', { nested: [1, 2] });
        await ch.publish('bin', Buffer.from([0, 1, 2, 255]));
        for (let i = 0; i < 100 && all.length < 3; i++) await sleep(50);
        assert.deepEqual(named.map((m) => m.name), ['wanted']);
        assert.deepEqual(named[0].data, { nested: [1, 2] });
        assert.deepEqual(all.map((m) => m.name), ['other', 'wanted', 'bin']);
        assert.equal(all[0].data, 'x');
        assert.ok(Buffer.isBuffer(all[2].data) || all[2].data instanceof ArrayBuffer || ArrayBuffer.isView(all[2].data));
        assert.deepEqual([...new Uint8Array(all[2].data)], [0, 1, 2, 255]);
        assert.equal(all[0].connectionId, c.connection.id);
        assert.ok(all[0].id.startsWith(c.connection.id));
      } finally { await close(c); }
    });

    it('REST publish reaches a realtime subscriber', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const ch = c.channels.get(`rest-${mode}`);
        const got = nextMessage(ch, 'evt');
        await ch.attach();
        await r.channels.get(`rest-${mode}`).publish('evt', { from: 'rest' });
        const m = await got;
        assert.deepEqual(m.data, { from: 'rest' });
      } finally { await close(c); }
    });

    it('refuses a forbidden publish with 40160', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: SUB_KEY });
      try {
        const ch = c.channels.get('public:news');
        await ch.attach();
        await assert.rejects(ch.publish('x', 'y'), (e) => e.code === 40160);
        assert.equal(c.connection.state, 'connected');
      } finally { await close(c); }
    });

    it('fails to attach to a forbidden channel', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: SUB_KEY });
      try {
        const ch = c.channels.get('private');
        await assert.rejects(ch.attach(), (e) => e.code === 40160);
        assert.equal(ch.state, 'failed');
        await c.channels.get('chat').attach();
      } finally { await close(c); }
    });

    it('renews an expiring token and resumes the same connection', { timeout: 30_000 }, async () => {
      // As Ably: at expiry the server sends DISCONNECTED 40142 (it does not ask for a
      // token first); the SDK gets a new one from its authCallback and resumes.
      const signer = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      let calls = 0;
      const c = realtime(server.port, useBinaryProtocol, {
        authCallback: (params, cb) => {
          calls += 1;
          signer.auth.createTokenRequest({ ttl: 3000, clientId: 'renewer' }).then((tr) => cb(null, tr), (e) => cb(e));
        },
      });
      try {
        await connected(c);
        const id = c.connection.id;
        const ch = c.channels.get(`renew-${mode}`);
        await ch.attach();
        const reasons = [];
        c.connection.on('disconnected', (sc) => { reasons.push(sc.reason && sc.reason.code); });
        for (let i = 0; i < 100 && !(calls >= 3 && c.connection.state === 'connected'); i++) await sleep(100);
        assert.ok(calls >= 3, `authCallback calls: ${calls}`);
        assert.ok(reasons.every((r) => r === 40142), `disconnect reasons: ${reasons}`);
        assert.equal(c.connection.id, id, 'resumed the same connection');
        for (let i = 0; i < 50 && ch.state !== 'attached'; i++) await sleep(100);
        const got = nextMessage(ch, 'after');
        await ch.publish('after', 'renewal');
        assert.equal((await got).data, 'renewal');
      } finally { await close(c); }
    });

    it('enforces the token clientId', async () => {
      const signer = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      const c = realtime(server.port, useBinaryProtocol, {
        authCallback: (params, cb) => {
          signer.auth.createTokenRequest({ clientId: 'alice' }).then((tr) => cb(null, tr), (e) => cb(e));
        },
      });
      try {
        await connected(c);
        const ch = c.channels.get(`ids-${mode}`);
        await ch.attach();
        await assert.rejects(ch.publish({ name: 'x', data: 'y', clientId: 'bob' }), (e) => e.code === 40012);
        const got = nextMessage(ch, 'mine');
        await ch.publish('mine', 'ok');
        assert.equal((await got).clientId, 'alice');
      } finally { await close(c); }
    });

    it('pages through history', async () => {
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      const name = `history-${mode}`;
      const ch = r.channels.get(name);
      for (let i = 0; i < 25; i++) await ch.publish('h', `m${i}`);
      const seen = [];
      let page = await ch.history({ limit: 10 });
      for (let i = 0; i < 10; i++) {
        seen.push(...page.items.map((m) => m.data));
        if (!page.hasNext()) break;
        page = await page.next();
      }
      assert.deepEqual(seen, Array.from({ length: 25 }, (_, i) => `m${24 - i}`));
      const fwd = await ch.history({ direction: 'forwards', limit: 2 });
      assert.deepEqual(fwd.items.map((m) => m.data), ['m0', 'm1']);
      // Realtime channel history goes through the same REST route.
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const rt = await c.channels.get(name).history({ limit: 5 });
        assert.equal(rt.items.length, 5);
      } finally { await close(c); }
    });

    it('rejects messages over the size limit', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        await connected(c);
        assert.equal(c.connection.connectionManager.connectionDetails.maxMessageSize, 65536);
        const big = 'x'.repeat(70_000);
        await assert.rejects(c.channels.get('big').publish('big', big), (e) => e.code === 40009);
        await assert.rejects(r.channels.get('big').publish('big', big), (e) => e.code === 40009);
      } finally { await close(c); }
    });

    it('answers connection.ping()', async () => {
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        await connected(c);
        const rtt = await c.connection.ping();
        assert.equal(typeof rtt, 'number');
      } finally { await close(c); }
    });

    it('reports the server time', async () => {
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      const t = await r.time();
      assert.ok(Math.abs(t - Date.now()) < 60_000);
    });
  });
}
