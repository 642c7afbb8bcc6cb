// Spawns Tidewire's realtime test server and builds ably clients pointed at it.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createHmac } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import readline from 'node:readline';
import Ably from 'ably';
import { setTimeout as sleep } from 'node:timers/promises';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export const FULL_KEY = 'test.full:fullsecret';
export const SUB_KEY = 'test.sub:subsecret';

export const CONFIG = {
  keys: [
    { key: FULL_KEY },
    {
      key: SUB_KEY,
      capability: { 'public:*': ['subscribe', 'history'], chat: ['subscribe', 'publish'] },
    },
  ],
};

/** A JSON value as a TOML value (objects become inline tables with quoted keys). */
function tomlValue(v) {
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (v !== null && typeof v === 'object') {
    return `{ ${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)} = ${tomlValue(x)}`).join(', ')} }`;
  }
  return JSON.stringify(v);
}

/** Renders a realtime config object as the `[realtime]` table of a tidewire.toml. */
function realtimeToml(config) {
  const lines = ['[realtime]'];
  for (const [k, v] of Object.entries(config)) {
    if (k !== 'keys') lines.push(`${k} = ${tomlValue(v)}`);
  }
  for (const key of config.keys ?? []) {
    lines.push('[[realtime.keys]]', `key = ${JSON.stringify(key.key)}`);
    if (key.capability) lines.push(`capability = ${JSON.stringify(JSON.stringify(key.capability))}`);
  }
  return lines.join('\n') + '\n';
}

/** Starts the real `tidewire` binary (TIDEWIRE_BIN) with the config's keys. With
 * `dir` the data directory is that one and is kept on stop (restart tests). */
async function startTidewire(bin, config, { dir: keepDir } = {}) {
  const dir = keepDir ?? mkdtempSync(path.join(tmpdir(), 'tidewire-ably-'));
  const cfg = path.join(dir, 'tidewire.toml');
  writeFileSync(cfg, realtimeToml(config));
  const child = spawn(bin, ['--config', cfg, '--port', '0', '--http-port', '0', '--print-ports', '--data-dir', path.join(dir, 'data')], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TIDEWIRE_LOG_LEVEL: 'warn' },
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('tidewire did not print LISTENING in time')), 60_000);
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const m = /LISTENING resp=\d+ http=(\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tidewire exited early with ${code}`));
    });
  });
  return {
    port,
    stop: () => new Promise((resolve) => {
      const done = () => {
        if (!keepDir) rmSync(dir, { recursive: true, force: true });
        resolve();
      };
      if (child.exitCode !== null) return done();
      child.once('exit', done);
      child.kill('SIGTERM');
    }),
  };
}

/** Starts the server: the real `tidewire` binary when TIDEWIRE_BIN is set (as
 * ./test.sh does), otherwise the realtime crate's test server; resolves to
 * { port, stop }. */
export async function startServer(config = CONFIG, opts = {}) {
  if (process.env.TIDEWIRE_BIN) return startTidewire(process.env.TIDEWIRE_BIN, config, opts);
  const bin = process.env.TIDEWIRE_REALTIME_BIN;
  const arg = JSON.stringify(config);
  const [cmd, args] = bin
    ? [bin, [arg]]
    : ['cargo', ['run', '-q', '-p', 'tidewire-realtime', '--example', 'realtime_test_server', '--', arg]];
  const child = spawn(cmd, args, {
    cwd: repoRoot,
    env: { CARGO_TARGET_DIR: path.join(repoRoot, 'target-realtime'), ...process.env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not print LISTENING in time')), 300_000);
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const m = /^LISTENING (\d+)$/.exec(line.trim());
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited early with ${code}`));
    });
  });
  return {
    port,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

/** Connection options shared by every client. */
export function baseOptions(port, useBinaryProtocol, extra = {}) {
  return {
    endpoint: 'localhost',
    port,
    tls: false,
    disableConnectivityCheck: true,
    transports: ['web_socket'],
    useBinaryProtocol,
    logLevel: 0,
    ...extra,
  };
}

export function realtime(port, useBinaryProtocol, extra) {
  return new Ably.Realtime(baseOptions(port, useBinaryProtocol, extra));
}

export function rest(port, useBinaryProtocol, extra) {
  return new Ably.Rest(baseOptions(port, useBinaryProtocol, extra));
}

/** Resolves when the connection is connected; rejects on failed. */
export function connected(client, ms = 15_000) {
  return new Promise((resolve, reject) => {
    if (client.connection.state === 'connected') return resolve();
    const timer = setTimeout(() => reject(new Error(`not connected: ${client.connection.state}`)), ms);
    client.connection.once('connected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.connection.once('failed', (change) => {
      clearTimeout(timer);
      reject(change.reason);
    });
  });
}

/** Resolves with the next message delivered to `listener` registration. */
export function nextMessage(channel, name, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message ${name ?? '(any)'}`)), ms);
    const fn = (msg) => {
      clearTimeout(timer);
      channel.unsubscribe(fn);
      resolve(msg);
    };
    if (name) channel.subscribe(name, fn);
    else channel.subscribe(fn);
  });
}

export function close(client) {
  return new Promise((resolve) => {
    if (['closed', 'failed', 'initialized'].includes(client.connection.state)) {
      client.close();
      return resolve();
    }
    const timer = setTimeout(resolve, 5_000);
    client.connection.once('closed', () => {
      clearTimeout(timer);
      resolve();
    });
    client.close();
  });
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An Ably JWT signed with the given key. */
export function makeJwt(key, { ttlSeconds = 600, capability = { '*': ['*'] }, clientId } = {}) {
  const [keyName, secret] = key.split(':');
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'HS256', kid: keyName }));
  const claims = { iat: now, exp: now + ttlSeconds, 'x-ably-capability': JSON.stringify(capability) };
  if (clientId) claims['x-ably-clientId'] = clientId;
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  return `${header}.${body}.${sig}`;
}

export { sleep };

/** Makes a fresh directory for a server's data that outlives one server process. */
export function tempDir() {
  return mkdtempSync(path.join(tmpdir(), 'tidewire-ably-keep-'));
}

/** Removes a directory made by tempDir. */
export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/** Polls `cond` every 50 ms for at most `ms`; resolves with its last value. */
export async function waitFor(cond, ms = 10_000) {
  for (let i = 0; i < ms / 50 && !cond(); i++) await sleep(50);
  return cond();
}
