// connect-redis (RedisStore) behind express-session in a real Express app on an
// ephemeral port, with node-redis as connect-redis documents (v5 over RESP2 and
// RESP3, v6 with its RESP3 default). connect-redis 11 calls node-redis's own API
// (`set(key, val, { expiration })`, `del([key])`, `scanIterator`, `mGet`), so it
// takes no ioredis client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import express from 'express';
import session from 'express-session';
import { RedisStore } from 'connect-redis';
import { createClient as createClientV5 } from 'redis';
import { createClient as createClientV6 } from 'redis6';
import { startServer } from '../../lib/server.mjs';

let server;
before(async () => {
  server = await startServer({ name: 'node-libs' });
});
after(async () => {
  await server?.close();
});

const clients = [
  ['node-redis v5 RESP2', () => createClientV5({ url: server.url })],
  ['node-redis v5 RESP3', () => createClientV5({ url: server.url, RESP: 3 })],
  ['node-redis v6 (RESP3 default)', () => createClientV6({ url: server.url })],
];

async function startApp(store, maxAge) {
  const app = express();
  app.use(express.json());
  app.use(
    session({
      store,
      secret: 'compat secret',
      resave: false,
      saveUninitialized: false,
      cookie: { maxAge },
    }),
  );
  app.post('/login', (req, res) => {
    req.session.user = req.body.user;
    req.session.visits = 0;
    res.json({ ok: true, id: req.sessionID });
  });
  app.get('/me', (req, res) => {
    res.json({ user: req.session.user ?? null, id: req.sessionID });
  });
  app.post('/visit', (req, res) => {
    req.session.visits += 1;
    res.json({ visits: req.session.visits });
  });
  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => (err ? next(err) : res.json({ ok: true })));
  });
  const http = app.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const base = `http://127.0.0.1:${http.address().port}`;
  let cookie = '';
  async function call(method, path, body) {
    const res = await fetch(base + path, {
      method,
      headers: { 'content-type': 'application/json', ...(cookie ? { cookie } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(10000),
    });
    const set = res.headers.getSetCookie().find((c) => c.startsWith('connect.sid='));
    if (set) cookie = set.split(';')[0];
    assert.equal(res.status, 200, `${method} ${path}: ${res.status}`);
    return res.json();
  }
  return {
    call,
    get cookie() {
      return cookie;
    },
    close: () => new Promise((r) => http.close(r)),
  };
}

for (const [name, make] of clients) {
  test(`${name}: login, read back, TTL from cookie maxAge, touch, destroy`, async () => {
    const client = make();
    await client.connect();
    const prefix = `sess:${name.replace(/\W+/g, '-')}:`;
    const store = new RedisStore({ client, prefix });
    const app = await startApp(store, 60_000);
    try {
      // No session yet: saveUninitialized false stores nothing.
      assert.deepEqual((await app.call('GET', '/me')).user, null);
      assert.deepEqual(await client.keys(`${prefix}*`), []);

      const { id } = await app.call('POST', '/login', { user: 'alice' });
      assert.ok(app.cookie.startsWith('connect.sid='), 'session cookie set');
      const key = prefix + id;
      const stored = JSON.parse(await client.get(key));
      assert.equal(stored.user, 'alice');
      assert.equal(stored.cookie.originalMaxAge, 60_000);

      // TTL comes from the cookie's expiry (60 s), not the 1-day default.
      const ttl = await client.ttl(key);
      assert.ok(ttl > 55 && ttl <= 60, `ttl ${ttl}`);

      // A second request with the cookie reads the session from the store.
      const me = await app.call('GET', '/me');
      assert.equal(me.user, 'alice');
      assert.equal(me.id, id);

      // Modifying the session saves it again.
      assert.equal((await app.call('POST', '/visit')).visits, 1);
      assert.equal((await app.call('POST', '/visit')).visits, 2);
      assert.equal(JSON.parse(await client.get(key)).visits, 2);

      // An unmodified session is touched: EXPIRE puts the TTL back to maxAge.
      assert.equal(await client.expire(key, 5), 1);
      assert.ok((await client.ttl(key)) <= 5);
      assert.equal((await app.call('GET', '/me')).user, 'alice');
      const touched = await client.ttl(key);
      assert.ok(touched > 55 && touched <= 60, `ttl after touch ${touched}`);

      // Store-level API: length / ids / all (SCAN + MGET), get / set / touch.
      assert.equal(await store.length(), 1);
      assert.deepEqual(await store.ids(), [id]);
      const all = await store.all();
      assert.equal(all.length, 1);
      assert.equal(all[0].id, id);
      assert.equal(all[0].user, 'alice');

      // Destroy removes the key.
      await app.call('POST', '/logout');
      assert.equal(await client.exists(key), 0);
      assert.equal((await app.call('GET', '/me')).user, null);
    } finally {
      await app.close();
      await client.quit();
    }
  });

  test(`${name}: store set/get/touch/clear with ttl option and many sessions`, async () => {
    const client = make();
    await client.connect();
    const prefix = `bulk:${name.replace(/\W+/g, '-')}:`;
    const store = new RedisStore({ client, prefix, ttl: 120, scanCount: 7 });
    try {
      // A session without cookie.expires gets the `ttl` option.
      await store.set('plain', { cookie: {}, n: 0 });
      const ttl = await client.ttl(`${prefix}plain`);
      assert.ok(ttl > 115 && ttl <= 120, `ttl ${ttl}`);
      assert.deepEqual(await store.get('plain'), { cookie: {}, n: 0 });
      assert.equal(await store.get('missing'), null);

      // An already-expired cookie deletes instead of storing.
      await store.set('old', { cookie: { expires: new Date(Date.now() - 1000) } });
      assert.equal(await client.exists(`${prefix}old`), 0);

      // Enough sessions for SCAN to take several rounds with COUNT 7.
      for (let i = 0; i < 50; i++) {
        await store.set(`s${i}`, { cookie: { expires: new Date(Date.now() + 30_000) }, i });
      }
      await client.set('unrelated', 'x');
      assert.equal(await store.length(), 51);
      const ids = (await store.ids()).sort();
      assert.equal(ids.length, 51);
      assert.ok(ids.includes('s49') && ids.includes('plain'));

      await client.expire(`${prefix}s1`, 3);
      await store.touch('s1', { cookie: { expires: new Date(Date.now() + 30_000) } });
      const t = await client.ttl(`${prefix}s1`);
      assert.ok(t > 25 && t <= 30, `ttl after touch ${t}`);

      await store.clear();
      assert.equal(await store.length(), 0);
      assert.equal(await client.get('unrelated'), 'x');
      await client.del('unrelated');
    } finally {
      await client.quit();
    }
  });
}
