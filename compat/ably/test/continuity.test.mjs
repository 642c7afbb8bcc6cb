// Continuity and state (issue 7): resume across a real network cut (a TCP proxy),
// recovery keys, rewind by time, idempotent ids, large presence sync, `*` clientId
// tokens entering for others, automatic presence leave after the grace period,
// occupancy, and history across a restart.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startServer, realtime, rest, connected, close, sleep, waitFor, tempDir, removeDir,
  makeJwt, FULL_KEY, CONFIG,
} from './helpers.mjs';

const TEST_CONFIG = {
  ...CONFIG,
  // Large presence sets are entered quickly; the default 1000 msg/s would throttle.
  max_inbound_rate: 100000,
  presence_leave_grace_ms: 1500,
  occupancy_debounce_ms: 200,
};

let server;
before(async () => { server = await startServer(TEST_CONFIG); });
after(async () => { await server?.stop(); });

/** A TCP proxy in front of the server whose link can be cut (all sockets destroyed,
 * new ones refused) and restored, to simulate a network drop the client only sees as
 * a dead socket. */
async function startProxy(target) {
  const sockets = new Set();
  let down = false;
  const srv = net.createServer((client) => {
    if (down) return client.destroy();
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: srv.address().port,
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
    },
    restore() { down = false; },
    stop() {
      down = true;
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => srv.close(() => resolve()));
    },
  };
}

// Reconnect quickly once the proxy is restored (the SDK's default is 15 s).
const FAST_RETRY = { disconnectedRetryTimeout: 300, realtimeRequestTimeout: 2000 };

for (const useBinaryProtocol of [true, false]) {
  const mode = useBinaryProtocol ? 'msgpack' : 'json';

  describe(`continuity over ${mode}`, { timeout: 90_000 }, () => {
    it('resumes across a network cut: every message published in the gap arrives once, in order', async () => {
      const name = `cut-${mode}`;
      const proxy = await startProxy(server.port);
      const c = realtime(proxy.port, useBinaryProtocol, { key: FULL_KEY, ...FAST_RETRY });
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
        for (let i = 0; i < 5; i++) await pub.publish('n', `m${i}`);
        assert.ok(await waitFor(() => seen.length >= 5), `before cut: ${seen}`);
        proxy.cut();
        for (let i = 5; i < 55; i++) await pub.publish('n', `m${i}`);
        assert.ok(await waitFor(() => c.connection.state !== 'connected', 20_000), 'client noticed the cut');
        proxy.restore();
        for (let i = 55; i < 60; i++) await pub.publish('n', `m${i}`);
        assert.ok(await waitFor(() => seen.length >= 60, 30_000), `got ${seen.length}`);
        await sleep(300);
        assert.equal(c.connection.id, id, 'same connectionId after resume');
        assert.deepEqual(seen, Array.from({ length: 60 }, (_, i) => `m${i}`));
        assert.ok(updates.every((u) => u.resumed), 'channel continuity kept (RESUMED)');
      } finally {
        await close(c);
        await proxy.stop();
      }
    });

    it('recovers a connection in a new client from a recovery key', async () => {
      const name = `recover-${mode}`;
      const proxy = await startProxy(server.port);
      const first = realtime(proxy.port, useBinaryProtocol, { key: FULL_KEY, ...FAST_RETRY });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      let second;
      try {
        await connected(first);
        const seen1 = [];
        await first.channels.get(name).subscribe((m) => seen1.push(m.data));
        await r.channels.get(name).publish('n', 'a');
        assert.ok(await waitFor(() => seen1.length >= 1));
        const recoveryKey = first.connection.createRecoveryKey();
        assert.ok(recoveryKey, 'recovery key available');
        const id = first.connection.id;
        // The first client's network dies for good (no CLOSE reaches the server).
        proxy.cut();
        await r.channels.get(name).publish('n', 'b');
        await r.channels.get(name).publish('n', 'c');
        second = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, recover: recoveryKey });
        await connected(second);
        assert.equal(second.connection.id, id, 'recovered the same connectionId');
        const seen2 = [];
        await second.channels.get(name).subscribe((m) => seen2.push(m.data));
        assert.ok(await waitFor(() => seen2.length >= 2), `recovered: ${seen2}`);
        await r.channels.get(name).publish('n', 'd');
        assert.ok(await waitFor(() => seen2.length >= 3));
        await sleep(200);
        assert.deepEqual(seen2, ['b', 'c', 'd']);
      } finally {
        await close(first);
        if (second) await close(second);
        await proxy.stop();
      }
    });

    it('rewinds by time', async () => {
      const name = `rewind-time-${mode}`;
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      for (let i = 0; i < 3; i++) await r.channels.get(name).publish('r', `t${i}`);
      const c = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const ch = c.channels.get(name, { params: { rewind: '1m' } });
        const seen = [];
        await ch.subscribe((m) => seen.push(m.data));
        assert.ok(await waitFor(() => seen.length >= 3));
        await sleep(200);
        assert.deepEqual(seen, ['t0', 't1', 't2']);
      } finally { await close(c); }
    });

    it('delivers a message id once across realtime and REST publishes', async () => {
      const name = `dedupe-${mode}`;
      const pubc = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const sub = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const seen = [];
        await sub.channels.get(name).subscribe((m) => seen.push(`${m.id}=${m.data}`));
        const ch = pubc.channels.get(name);
        await ch.publish({ name: 'n', data: 'one', id: `dup-${mode}-1` });
        // Acknowledged, not delivered again.
        await ch.publish({ name: 'n', data: 'one again', id: `dup-${mode}-1` });
        await r.channels.get(name).publish({ name: 'n', data: 'one via rest', id: `dup-${mode}-1` });
        await ch.publish({ name: 'n', data: 'two', id: `dup-${mode}-2` });
        assert.ok(await waitFor(() => seen.length >= 2));
        await sleep(300);
        assert.deepEqual(seen, [`dup-${mode}-1=one`, `dup-${mode}-2=two`]);
        const hist = await r.channels.get(name).history({ direction: 'forwards' });
        assert.deepEqual(hist.items.map((m) => m.data), ['one', 'two']);
      } finally {
        await close(pubc);
        await close(sub);
      }
    });

    it('syncs a presence set of 1,200 members to a late joiner', async () => {
      const name = `big-presence-${mode}`;
      const enterers = [
        realtime(server.port, useBinaryProtocol, { key: FULL_KEY }),
        realtime(server.port, useBinaryProtocol, { key: FULL_KEY }),
      ];
      const late = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const perClient = 600;
        for (const [n, c] of enterers.entries()) {
          const p = c.channels.get(name).presence;
          const all = [];
          for (let i = 0; i < perClient; i++) all.push(p.enterClient(`m${n}-${i}`, { i }));
          await Promise.all(all);
        }
        const members = await late.channels.get(name).presence.get();
        assert.equal(members.length, 2 * perClient);
        const ids = new Set(members.map((m) => m.clientId));
        assert.equal(ids.size, 2 * perClient);
        assert.deepEqual(members.find((m) => m.clientId === 'm1-599').data, { i: 599 });
        const viaRest = await rest(server.port, useBinaryProtocol, { key: FULL_KEY })
          .channels.get(name).presence.get({ limit: 1000 });
        assert.equal(viaRest.items.length, 1000);
      } finally {
        for (const c of enterers) await close(c);
        await close(late);
      }
    });

    it('lets a wildcard (*) clientId token enter presence for other clients', async () => {
      const name = `wildcard-${mode}`;
      const agent = realtime(server.port, useBinaryProtocol, {
        authCallback: (_params, cb) => cb(null, makeJwt(FULL_KEY, { clientId: '*' })),
      });
      const watcher = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const events = [];
        await watcher.channels.get(name).presence.subscribe((m) => events.push(
          m.action === 'leave' ? `leave:${m.clientId}` : `${m.action}:${m.clientId}:${m.data}`,
        ));
        const p = agent.channels.get(name).presence;
        await p.enterClient('alice', 'a');
        await p.enterClient('bob', 'b');
        await p.updateClient('alice', 'a2');
        await p.leaveClient('bob');
        assert.ok(await waitFor(() => events.length >= 4), `events: ${events}`);
        assert.deepEqual(events, ['enter:alice:a', 'enter:bob:b', 'update:alice:a2', 'leave:bob']);
        const members = await watcher.channels.get(name).presence.get();
        assert.deepEqual(members.map((m) => `${m.clientId}:${m.data}`), ['alice:a2']);
      } finally {
        await close(agent);
        await close(watcher);
      }
    });

    it('removes a killed client from presence after the grace period, keeps one that resumes', async () => {
      const name = `grace-${mode}`;
      const proxyDead = await startProxy(server.port);
      const proxyBack = await startProxy(server.port);
      const dead = realtime(proxyDead.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'dead', ...FAST_RETRY });
      const back = realtime(proxyBack.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'back', ...FAST_RETRY });
      const watcher = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const events = [];
        await watcher.channels.get(name).presence.subscribe((m) => events.push(`${m.action}:${m.clientId}`));
        await dead.channels.get(name).presence.enter('d');
        await back.channels.get(name).presence.enter('b');
        assert.ok(await waitFor(() => events.length >= 2), `events: ${events}`);
        proxyDead.cut();
        proxyBack.cut();
        // Back within the 1.5 s grace period.
        await sleep(300);
        proxyBack.restore();
        assert.ok(await waitFor(() => events.includes('leave:dead'), 20_000), `events: ${events}`);
        assert.ok(await waitFor(() => back.connection.state === 'connected', 20_000));
        await sleep(2000);
        assert.ok(!events.includes('leave:back'), `events: ${events}`);
        const members = await watcher.channels.get(name).presence.get();
        assert.deepEqual(members.map((m) => m.clientId), ['back']);
        // Presence history records what happened.
        const hist = await rest(server.port, useBinaryProtocol, { key: FULL_KEY })
          .channels.get(name).presence.history({ direction: 'forwards' });
        const acts = hist.items.map((m) => `${m.action}:${m.clientId}`);
        assert.ok(acts.includes('enter:dead') && acts.includes('leave:dead'), `history: ${acts}`);
      } finally {
        await close(dead);
        await close(back);
        await close(watcher);
        await proxyDead.stop();
        await proxyBack.stop();
      }
    });

    it('reports occupancy over REST and as [meta]occupancy events', async () => {
      const name = `occupancy-${mode}`;
      const meta = realtime(server.port, useBinaryProtocol, { key: FULL_KEY });
      const member = realtime(server.port, useBinaryProtocol, { key: FULL_KEY, clientId: 'occ' });
      const r = rest(server.port, useBinaryProtocol, { key: FULL_KEY });
      try {
        const events = [];
        const mch = meta.channels.get(name, { params: { occupancy: 'metrics' } });
        await mch.subscribe('[meta]occupancy', (m) => events.push(m.data.metrics));
        await member.channels.get(name).presence.enter();
        const want = (m) => m.connections === 2 && m.presenceMembers === 1;
        assert.ok(await waitFor(() => events.some(want)), `events: ${JSON.stringify(events)}`);
        const m = events.find(want);
        assert.equal(m.publishers, 2);
        assert.equal(m.subscribers, 2);
        assert.equal(m.presenceConnections, 1);
        assert.equal(m.presenceSubscribers, 2);
        const st = await r.channels.get(name).status();
        assert.deepEqual(
          { ...st.status.occupancy.metrics },
          { ...m, objectPublishers: 0, objectSubscribers: 0 },
        );
        await close(member);
        assert.ok(await waitFor(() => events.at(-1)?.connections === 1), `events: ${JSON.stringify(events)}`);
        assert.equal(events.at(-1).presenceMembers, 0);
      } finally {
        await close(meta);
        await close(member);
      }
    });
  });
}

describe('history across a restart', { timeout: 120_000 }, () => {
  it('keeps channel history in the keyspace', async (t) => {
    if (!process.env.TIDEWIRE_BIN) {
      t.skip('needs the real tidewire binary with a data dir: set TIDEWIRE_BIN');
      return;
    }
    const dir = tempDir();
    const config = { ...TEST_CONFIG, history_retention: { 'keep:*': 3600 } };
    let srv = await startServer(config, { dir });
    try {
      const r = rest(srv.port, false, { key: FULL_KEY });
      for (let i = 0; i < 3; i++) await r.channels.get('keep:restart').publish('n', `h${i}`);
      await srv.stop();
      srv = await startServer(config, { dir });
      for (const useBinaryProtocol of [true, false]) {
        const r2 = rest(srv.port, useBinaryProtocol, { key: FULL_KEY });
        const page = await r2.channels.get('keep:restart').history({ direction: 'forwards' });
        assert.deepEqual(page.items.map((m) => m.data), ['h0', 'h1', 'h2']);
      }
      // The serial continues after the restart, so rewind and resume keep working.
      const c = realtime(srv.port, true, { key: FULL_KEY });
      try {
        const seen = [];
        await c.channels.get('keep:restart', { params: { rewind: '2' } }).subscribe((m) => seen.push(m.data));
        await rest(srv.port, true, { key: FULL_KEY }).channels.get('keep:restart').publish('n', 'h3');
        assert.ok(await waitFor(() => seen.length >= 3));
        assert.deepEqual(seen, ['h1', 'h2', 'h3']);
      } finally { await close(c); }
    } finally {
      await srv.stop();
      removeDir(dir);
    }
  });
});
