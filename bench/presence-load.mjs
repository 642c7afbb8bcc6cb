// Load program for bench/presence.sh: drives a running-on-demand tidewire binary with
// the official ably SDK (from compat/ably/node_modules) and prints
//   - presence enter and leave throughput (enterClient/leaveClient over K connections),
//   - time to SYNC MEMBERS members to a new subscriber (connect → presence.get()),
//   - resume replay time for MISSED messages published while a client's network was
//     cut (a TCP proxy), measured from the resumed CONNECTED to the last message.
//
//   node bench/presence-load.mjs <tidewire-binary>
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const Ably = createRequire(path.join(root, 'compat/ably/package.json'))('ably');

const MEMBERS = Number(process.env.MEMBERS ?? 10000);
const CLIENTS = Number(process.env.CLIENTS ?? 10);
const MISSED = Number(process.env.MISSED ?? 1000);
const KEY = 'bench.key:benchsecret';
const bin = process.argv[2];
if (!bin) {
  console.error('usage: presence-load.mjs <tidewire-binary>');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(cond, ms) {
  for (let i = 0; i < ms / 20 && !cond(); i++) await sleep(20);
  if (!cond()) throw new Error('timed out');
}

async function startServer() {
  const dir = mkdtempSync(path.join(tmpdir(), 'tidewire-presence-bench-'));
  const cfg = path.join(dir, 'tidewire.toml');
  writeFileSync(cfg, [
    '[realtime]',
    'max_inbound_rate = 1000000',
    `max_presence_members = ${Math.max(MEMBERS * 2, 20000)}`,
    'outbound_queue = 100000',
    '[[realtime.keys]]',
    `key = "${KEY}"`,
    '',
  ].join('\n'));
  const child = spawn(bin, ['--config', cfg, '--port', '0', '--http-port', '0', '--print-ports', '--data-dir', path.join(dir, 'data')], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TIDEWIRE_LOG_LEVEL: 'warn' },
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no LISTENING line')), 60_000);
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /LISTENING resp=\d+ http=(\d+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`exited ${code}`)); });
  });
  return {
    port,
    stop: () => new Promise((resolve) => {
      child.once('exit', () => { rmSync(dir, { recursive: true, force: true }); resolve(); });
      child.kill('SIGTERM');
    }),
  };
}

const opts = (port, extra = {}) => ({
  key: KEY, endpoint: 'localhost', port, tls: false, disableConnectivityCheck: true,
  transports: ['web_socket'], logLevel: 0, ...extra,
});

async function connect(port, extra) {
  const c = new Ably.Realtime(opts(port, extra));
  await c.connection.whenState('connected');
  return c;
}

/** A TCP proxy whose link can be cut and restored. */
async function proxy(target) {
  const sockets = new Set();
  let down = false;
  const srv = net.createServer((a) => {
    if (down) return a.destroy();
    const b = net.connect(target, '127.0.0.1');
    for (const s of [a, b]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); }
    a.pipe(b); b.pipe(a);
    a.on('close', () => b.destroy()); b.on('close', () => a.destroy());
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: srv.address().port,
    cut() { down = true; for (const s of sockets) s.destroy(); },
    restore() { down = false; },
    stop() { down = true; for (const s of sockets) s.destroy(); srv.close(); },
  };
}

const rate = (n, ms) => `${Math.round((n * 1000) / ms)}/s`;

const server = await startServer();
try {
  const channel = 'bench:presence';
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => connect(server.port)));
  await Promise.all(clients.map((c) => c.channels.get(channel).attach()));
  const per = Math.ceil(MEMBERS / CLIENTS);
  let t = performance.now();
  await Promise.all(clients.map((c, k) => {
    const p = c.channels.get(channel).presence;
    return Promise.all(Array.from({ length: per }, (_, i) => p.enterClient(`u${k}-${i}`, { i })));
  }));
  const enterMs = performance.now() - t;
  console.log(`enter: ${per * CLIENTS} members in ${enterMs.toFixed(0)} ms (${rate(per * CLIENTS, enterMs)})`);

  t = performance.now();
  const late = await connect(server.port);
  const members = await late.channels.get(channel).presence.get();
  const syncMs = performance.now() - t;
  if (members.length !== per * CLIENTS) throw new Error(`synced ${members.length} members`);
  console.log(`sync: ${members.length} members to a new subscriber in ${syncMs.toFixed(0)} ms (connect + attach + SYNC)`);
  late.close();

  t = performance.now();
  await Promise.all(clients.map((c, k) => {
    const p = c.channels.get(channel).presence;
    return Promise.all(Array.from({ length: per }, (_, i) => p.leaveClient(`u${k}-${i}`)));
  }));
  const leaveMs = performance.now() - t;
  console.log(`leave: ${per * CLIENTS} members in ${leaveMs.toFixed(0)} ms (${rate(per * CLIENTS, leaveMs)})`);
  for (const c of clients) c.close();

  // Resume replay: cut a subscriber's network, publish MISSED messages, restore.
  const px = await proxy(server.port);
  const sub = await connect(px.port, { disconnectedRetryTimeout: 200 });
  let got = 0;
  await sub.channels.get('bench:resume').subscribe(() => { got++; });
  const rest = new Ably.Rest(opts(server.port));
  px.cut();
  await waitFor(() => sub.connection.state !== 'connected', 30_000);
  const rch = rest.channels.get('bench:resume');
  for (let i = 0; i < MISSED; i += 100) {
    await rch.publish(Array.from({ length: Math.min(100, MISSED - i) }, (_, j) => ({ name: 'm', data: `m${i + j}` })));
  }
  let reconnectedAt = 0;
  sub.connection.once('connected', () => { reconnectedAt = performance.now(); });
  px.restore();
  await waitFor(() => got >= MISSED, 60_000);
  const replayMs = performance.now() - reconnectedAt;
  console.log(`resume: ${got} missed messages replayed in ${replayMs.toFixed(0)} ms after CONNECTED`);
  sub.close();
  px.stop();
} finally {
  await server.stop();
}
process.exit(0);
