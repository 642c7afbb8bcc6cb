// Starts a fresh tidewire for one compat test file, on free ports: the binary is
// `TIDEWIRE_BIN` (default `target/debug/tidewire` at the repo root), started with
// `--port 0 --http-port 0 --print-ports --data-dir <tmp>`; it prints
// `LISTENING resp=<port> http=<port>` once both listeners are bound. Node built-ins
// only, so every compat project (each with its own node_modules) can import it.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.TIDEWIRE_BIN || join(root, 'target/debug/tidewire');

function launch(dataDir, port, env, args) {
  const child = spawn(BIN, ['--port', String(port), '--http-port', '0', '--print-ports', '--data-dir', dataDir, ...args], {
    env: { ...process.env, TIDEWIRE_LOG_LEVEL: process.env.TIDEWIRE_LOG_LEVEL || 'warn', ...env },
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

// `name` names the data dir, `env` adds to the server's environment, `args` to its
// command line (e.g. Redis directives: `--tls-port 7000`). `stop()` stops
// the server and `restart()` starts it again on the same RESP port and data (for
// tests that take a node away and bring it back); `close()` stops it for good and
// removes its data.
export async function startServer({ name = 'compat', env = {}, args = [] } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), `tidewire-${name}-`));
  let { child, ports } = launch(dataDir, 0, env, args);
  const first = await ports;
  const server = {
    ...first,
    dataDir,
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
      ({ child, ports } = launch(dataDir, first.resp, env, args));
      // RESP comes back on its port; HTTP on a new free one.
      Object.assign(server, await ports);
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
