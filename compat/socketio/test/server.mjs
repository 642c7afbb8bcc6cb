// Starts a fresh tidewire on free ports for one test file and stops it afterwards.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export async function startServer(extraArgs = []) {
  const bin = process.env.TIDEWIRE_BIN || join(root, 'target/debug/tidewire');
  const dataDir = mkdtempSync(join(tmpdir(), 'tidewire-socketio-'));
  const child = spawn(bin, ['--port', '0', '--http-port', '0', '--print-ports', '--data-dir', dataDir, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ports = await new Promise((resolvePorts, reject) => {
    const timer = setTimeout(() => reject(new Error('tidewire did not start within 20s')), 20000);
    let buf = '';
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      const m = buf.match(/LISTENING resp=(\d+) http=(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolvePorts({ resp: Number(m[1]), http: Number(m[2]) });
      }
    });
    child.on('exit', (code) => reject(new Error(`tidewire exited early with ${code}`)));
  });
  return {
    ...ports,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
