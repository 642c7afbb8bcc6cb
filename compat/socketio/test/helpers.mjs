// Two Socket.IO servers on ephemeral ports sharing one tidewire through an official
// Redis adapter, Socket.IO clients, and bounded waits.
import { createServer } from 'node:http';
import { once } from 'node:events';
import { Server } from 'socket.io';
import { io as ioc } from 'socket.io-client';
import { createClient } from 'redis';
import Redis from 'ioredis';
import { createAdapter as createStreamsAdapter } from '@socket.io/redis-streams-adapter';
import { createAdapter as createPubSubAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

// Resolves with the event's arguments, rejects if it does not come within ms.
export function waitFor(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`no '${event}' within ${ms} ms`));
    }, ms);
    function handler(...args) {
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args);
    }
    emitter.on(event, handler);
  });
}

// Polls fn until it returns a truthy value; rejects after ms.
export async function until(fn, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

// Rejects if the promise has not settled within ms.
export function within(promise, what, ms = 5000) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
    }),
  ]);
}

// Collects every event of that name a client receives, to check what did NOT arrive.
export function record(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push(args));
  return got;
}

export function adminClient(port) {
  return new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
}

export async function blockedClients(admin) {
  const info = await admin.info('clients');
  return Number(/blocked_clients:(\d+)/.exec(info)[1]);
}

// kind: 'streams-redis' | 'streams-ioredis' | 'pubsub-ioredis'
export async function startCluster(kind, respPort, serverOpts = {}) {
  const admin = adminClient(respPort);
  await admin.flushall();
  const redisClients = [];
  const nodes = [];
  for (const name of ['A', 'B']) {
    let adapter;
    if (kind === 'streams-redis') {
      const client = createClient({ url: `redis://127.0.0.1:${respPort}` });
      client.on('error', () => {});
      await client.connect();
      redisClients.push(client);
      adapter = createStreamsAdapter(client);
    } else if (kind === 'streams-ioredis') {
      const client = new Redis({ port: respPort, host: '127.0.0.1' });
      redisClients.push(client);
      adapter = createStreamsAdapter(client);
    } else if (kind === 'sharded-redis') {
      // Sharded pub/sub (SPUBLISH / SSUBSCRIBE), node-redis clients.
      const pub = createClient({ url: `redis://127.0.0.1:${respPort}` });
      pub.on('error', () => {});
      await pub.connect();
      const sub = pub.duplicate();
      sub.on('error', () => {});
      await sub.connect();
      redisClients.push(pub, sub);
      adapter = createShardedAdapter(pub, sub);
    } else {
      const pub = new Redis({ port: respPort, host: '127.0.0.1' });
      const sub = pub.duplicate();
      redisClients.push(pub, sub);
      adapter = createPubSubAdapter(pub, sub);
    }
    const httpServer = createServer();
    const io = new Server(httpServer, { adapter, ...serverOpts });
    io.on('connection', (socket) => {
      socket.data.user = socket.handshake.auth?.user ?? null;
      socket.on('join', (room, ack) => {
        socket.join(room);
        ack?.('joined');
      });
    });
    httpServer.listen(0, '127.0.0.1');
    await once(httpServer, 'listening');
    nodes.push({ name, io, httpServer, url: `http://127.0.0.1:${httpServer.address().port}` });
  }
  const sockets = [];
  const cluster = {
    admin,
    A: nodes[0],
    B: nodes[1],
    async client(node, opts = {}) {
      const socket = ioc(node.url, { transports: ['websocket'], reconnection: false, forceNew: true, ...opts });
      sockets.push(socket);
      await waitFor(socket, 'connect');
      return socket;
    },
    async close() {
      for (const s of sockets) s.disconnect();
      for (const n of nodes) {
        await new Promise((r) => n.io.close(() => r()));
      }
      if (kind.startsWith('streams')) {
        // The readers stop after their current XREAD BLOCK: an entry without a
        // namespace (ignored by the adapter) wakes them now.
        await admin.xadd('socket.io', '*', 'wake', '1');
        await until(async () => (await blockedClients(admin)) === 0, 'stream readers to stop');
      }
      for (const c of redisClients) {
        if (c instanceof Redis) await c.quit().catch(() => {});
        else await c.close().catch(() => {});
      }
      admin.disconnect();
    },
  };
  try {
    if (kind.startsWith('streams')) {
      // Every node listens on the namespace's public channel, and its reader sits in
      // XREAD BLOCK on the stream.
      await until(async () => Number((await admin.pubsub('NUMSUB', 'socket.io#/#'))[1]) === 2, 'both servers subscribed');
      await until(async () => (await blockedClients(admin)) >= 2, 'both stream readers blocked in XREAD');
    } else if (kind === 'sharded-redis') {
      // SSUBSCRIBE to the namespace's channel, per node.
      await until(async () => Number((await admin.pubsub('SHARDNUMSUB', 'socket.io#/#'))[1]) === 2, 'both servers subscribed');
    } else {
      // PSUBSCRIBE socket.io#/#* and SUBSCRIBE to the request channel, per node.
      await until(async () => Number((await admin.pubsub('NUMSUB', 'socket.io-request#/#'))[1]) === 2, 'both servers subscribed');
      // (NUMPAT counts distinct patterns, so count the clients with one.)
      await until(async () => ((await admin.client('LIST')).match(/ psub=1 /g) ?? []).length === 2, 'both servers pattern-subscribed');
    }
  } catch (e) {
    await cluster.close().catch(() => {});
    throw e;
  }
  return cluster;
}
