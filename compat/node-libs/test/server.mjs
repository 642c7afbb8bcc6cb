// Starts a fresh tidewire on free ports (see compat/lib-server.md) and stops it.
// `restart()` starts it again on the same RESP port, for tests that take a node
// away and bring it back.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.TIDEWIRE_BIN || join(root, 'target/debug/tidewire');

function launch(dataDir, port) {
  const child = spawn(BIN, ['--port', String(port), '--http-port', '0', '--print-ports', '--data-dir', dataDir], {
    env: { ...process.env, TIDEWIRE_LOG_LEVEL: process.env.TIDEWIRE_LOG_LEVEL || 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ports = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('tidewire did not start within 20s')), 20000);
    let buf = '';
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      const m = buf.match(/LISTENING resp=(\d+) http=(\d+)/);
      if (m) {
        clearTimeout(timer);
        ok({ resp: Number(m[1]), http: Number(m[2]) });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`tidewire exited early with ${code}`));
    });
  });
  return { child, ports };
}

export async function startServer() {
  const dataDir = mkdtempSync(join(tmpdir(), 'tidewire-node-libs-'));
  let { child, ports } = launch(dataDir, 0);
  const first = await ports;
  const server = {
    ...first,
    url: `redis://127.0.0.1:${first.resp}`,
    running: true,
    async stop() {
      if (!server.running) return;
      server.running = false;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
    async restart() {
      await server.stop();
      ({ child, ports } = launch(dataDir, first.resp));
      await ports;
      server.running = true;
    },
    async close() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

// Polls `check` until it returns a truthy value or `ms` pass.
export async function waitFor(check, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
