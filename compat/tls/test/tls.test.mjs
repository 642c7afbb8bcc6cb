import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import Redis from 'ioredis';
import { Redis as Upstash } from '@upstash/redis';
import * as Ably from 'ably';
import { startServer, waitFor } from '../../lib/server.mjs';

const dir = process.env.TLS_DIR;
const file = (name) => join(dir, name);
const TOKEN = 'compat-tls-token';

async function freePort() {
  const srv = net.createServer();
  await new Promise((ok) => srv.listen(0, '127.0.0.1', ok));
  const { port } = srv.address();
  await new Promise((ok) => srv.close(ok));
  return port;
}

let server;
let tlsPort;
let httpsPort;

before(async () => {
  assert.ok(dir, 'run through run.sh (it makes the certificates)');
  tlsPort = await freePort();
  httpsPort = await freePort();
  server = await startServer({
    name: 'tls',
    args: [
      '--tls-port', String(tlsPort), '--https-port', String(httpsPort),
      '--tls-cert-file', file('server.crt'), '--tls-key-file', file('server.key'),
      '--tls-ca-cert-file', file('ca.crt'), '--tls-auth-clients', 'optional',
      '--rest-token', TOKEN,
    ],
  });
});

after(async () => {
  await server.close();
});

test('redis-cli --tls with a client certificate', () => {
  const cli = (...args) =>
    execFileSync('redis-cli', ['--tls', '--cacert', file('ca.crt'), '--cert', file('client.crt'),
      '--key', file('client.key'), '-h', '127.0.0.1', '-p', String(tlsPort), ...args]).toString().trim();
  assert.equal(cli('PING'), 'PONG');
  assert.equal(cli('SET', 'tls:cli', 'yes'), 'OK');
  assert.equal(cli('GET', 'tls:cli'), 'yes');
});

test('ioredis over TLS', async () => {
  const redis = new Redis({
    host: 'localhost', port: tlsPort, lazyConnect: true, maxRetriesPerRequest: 1,
    tls: { ca: readFileSync(file('ca.crt')), cert: readFileSync(file('client.crt')), key: readFileSync(file('client.key')) },
  });
  await redis.connect();
  assert.equal(await redis.set('tls:ioredis', 'v'), 'OK');
  assert.equal(await redis.get('tls:cli'), 'yes');
  assert.equal(await redis.incr('tls:n'), 1);
  redis.disconnect();
});

test('@upstash/redis with an https:// URL', async () => {
  const upstash = new Upstash({ url: `https://localhost:${httpsPort}/redis`, token: TOKEN });
  assert.equal(await upstash.set('tls:upstash', 'u'), 'OK');
  assert.equal(await upstash.get('tls:ioredis'), 'v');
  const p = upstash.pipeline();
  p.incr('tls:n');
  p.get('tls:upstash');
  assert.deepEqual(await p.exec(), [2, 'u']);
});

test('the ably SDK with tls: true (wss and https)', async () => {
  const key = readFileSync(join(server.dataDir ?? '', 'realtime-root-key'), 'utf8').trim();
  const opts = { key, endpoint: 'localhost', tls: true, tlsPort: httpsPort, disableConnectivityCheck: true,
    transports: ['web_socket'], fallbackHosts: [] };
  const realtime = new Ably.Realtime(opts);
  try {
    await realtime.connection.once('connected');
    const channel = realtime.channels.get('tls:chat');
    const got = [];
    await channel.subscribe((m) => got.push(m.data));
    const rest = new Ably.Rest(opts);
    await rest.channels.get('tls:chat').publish('greeting', 'over https');
    await waitFor(() => got.length === 1, 10000, 'the message over wss');
    assert.deepEqual(got, ['over https']);
    const page = await rest.channels.get('tls:chat').history();
    assert.equal(page.items[0].data, 'over https');
  } finally {
    realtime.close();
  }
});
