// node-redis v5's client-side caching (`clientSideCache`, RESP3 only): on connect
// it sends `CLIENT TRACKING ON`, serves repeated reads from memory and drops an
// entry when the server pushes an `invalidate` message for its key. A client
// that cannot turn tracking on never finishes connecting (with the default
// reconnect strategy it retries forever), hence the bounded connect below.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from 'redis';
import { startServer, waitFor } from '../../lib/server.mjs';

let server;
before(async () => {
  server = await startServer({ name: 'node-libs' });
});
after(async () => {
  await server?.close();
});

test('clientSideCache: hits from memory, invalidated by another client\'s write', async () => {
  const cached = createClient({
    url: server.url,
    RESP: 3,
    clientSideCache: { ttl: 0, maxEntries: 0 },
    socket: { reconnectStrategy: false, connectTimeout: 5000 },
  });
  const errors = [];
  cached.on('error', (err) => errors.push(err));
  const writer = createClient({ url: server.url });
  await writer.connect();
  try {
    await Promise.race([
      cached.connect(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('connect did not finish in 5 s')), 5000)),
    ]).catch((err) => {
      throw new Error(`client with clientSideCache could not connect: ${errors[0]?.message ?? err.message}`);
    });
    await writer.set('csc:k', 'v1');
    assert.equal(await cached.get('csc:k'), 'v1'); // miss: read from the server
    assert.equal(await cached.get('csc:k'), 'v1'); // hit: from memory
    const stats = cached.clientSideCache.stats();
    assert.equal(stats.missCount, 1);
    assert.equal(stats.hitCount, 1);
    assert.match(String(await cached.sendCommand(['CLIENT', 'INFO'])), /flags=\S*t/, 'tracking flag');

    // Another client's write makes the server push `invalidate` for the key.
    await writer.set('csc:k', 'v2');
    await waitFor(async () => (await cached.get('csc:k')) === 'v2', 5000, 'invalidation of csc:k');
    // A key the client never read is not tracked; FLUSHALL invalidates everything.
    await cached.get('csc:k');
    await writer.flushAll();
    await waitFor(async () => (await cached.get('csc:k')) === null, 5000, 'invalidation after FLUSHALL');
  } finally {
    if (cached.isOpen) await cached.quit();
    await writer.quit();
  }
});
