// Starts the tidewire binary on free ports with a fresh data dir and known tokens.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "@upstash/redis";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.TIDEWIRE_BIN ?? resolve(here, "../../../target/debug/tidewire");
export const TOKEN = "compat-rw-token";
export const RO_TOKEN = "compat-ro-token";

export async function startServer() {
  const dataDir = mkdtempSync(join(tmpdir(), "tidewire-upstash-"));
  const child = spawn(
    BIN,
    ["--port", "0", "--http-port", "0", "--print-ports", "--data-dir", dataDir],
    {
      env: {
        ...process.env,
        TIDEWIRE_REST_TOKEN: TOKEN,
        TIDEWIRE_REST_READONLY_TOKEN: RO_TOKEN,
        TIDEWIRE_LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const ports = await new Promise((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error(`no LISTENING line: ${out}`)), 20000);
    child.on("exit", (code) => fail(new Error(`tidewire exited with ${code}`)));
    child.stdout.on("data", (d) => {
      out += d;
      const m = /LISTENING resp=(\d+) http=(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok({ resp: Number(m[1]), http: Number(m[2]) });
      }
    });
  });
  const url = `http://127.0.0.1:${ports.http}/redis`;
  return {
    url,
    ports,
    redis(opts = {}) {
      // One HTTP request per command unless a test asks for auto-pipelining (the
      // client default since 1.35).
      return new Redis({ url, token: TOKEN, retry: false, enableAutoPipelining: false, ...opts });
    },
    async stop() {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
