// Starts the tidewire binary on free ports with a fresh data dir and known tokens.
import { Ratelimit } from "@upstash/ratelimit";
import { Redis } from "@upstash/redis";
import { startServer as startTidewire } from "../../lib/server.mjs";

export { BIN } from "../../lib/server.mjs";
export const TOKEN = "compat-rw-token";
export const RO_TOKEN = "compat-ro-token";

export async function startServer() {
  const server = await startTidewire({
    name: "upstash",
    env: { TIDEWIRE_REST_TOKEN: TOKEN, TIDEWIRE_REST_READONLY_TOKEN: RO_TOKEN },
  });
  const ports = { resp: server.resp, http: server.http };
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
      await server.close();
    },
  };
}

// An @upstash/ratelimit limiter on `redis` under a prefix of its own, with the
// ephemeral cache, analytics and telemetry off unless `extra` turns them on.
export function ratelimiter(redis, limiter, extra = {}) {
  return new Ratelimit({
    redis,
    limiter,
    prefix: `rl-${Math.random().toString(36).slice(2, 8)}`,
    ephemeralCache: false,
    analytics: false,
    enableTelemetry: false,
    ...extra,
  });
}
