// Shared by the QStash compat tests: a tidewire on free ports, the SDK's Client and
// Receiver pointed at it, and local HTTP receivers (node:http on 127.0.0.1, port 0)
// that record every delivery Tidewire makes to them.
import http from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Client, Receiver } from "@upstash/qstash";
import { startServer as startTidewire, waitFor } from "../../lib/server.mjs";

export { waitFor };

/// The REST read-write token the first test file configures (and so the QStash one).
export const TOKEN = "compat-qstash-token";

/// Starts a fresh tidewire. With `token`, it is configured as the REST (and so the
/// QStash) token; without, the server generates one into `<data-dir>/rest-token`.
export async function startServer({ name = "qstash", token } = {}) {
  const env = token ? { TIDEWIRE_REST_TOKEN: token } : {};
  return startTidewire({ name, env });
}

/// The token a server generated on its first start.
export function generatedToken(server) {
  return readFileSync(join(server.dataDir, "rest-token"), "utf8").trim();
}

/// The signing keys a server generated into its data dir (current, next).
export function signingKeysFile(server) {
  const [current, next] = readFileSync(join(server.dataDir, "qstash-signing-keys"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return { current, next };
}

/// The official client, unmodified, on the server's HTTP port. `devMode: false`
/// so a QSTASH_DEV in the environment cannot redirect it to a local dev server.
export function qstashClient(httpPort, token, extra = {}) {
  return new Client({ baseUrl: `http://127.0.0.1:${httpPort}`, token, devMode: false, ...extra });
}

export function receiverFor(keys) {
  return new Receiver({ currentSigningKey: keys.current, nextSigningKey: keys.next, devMode: false });
}

/// A local HTTP endpoint. `respond(request, index)` chooses each answer
/// (`{status, body, headers}`; default 200 "ok"). Every request is kept in
/// `requests` as `{at, method, path, headers, body}` (body as text).
export async function startEndpoint(respond = () => ({})) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const entry = {
        at: Date.now(),
        method: req.method,
        path: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      };
      requests.push(entry);
      let answer = {};
      try {
        answer = (await respond(entry, requests.length - 1)) ?? {};
      } catch (e) {
        answer = { status: 599, body: String(e) };
      }
      res.writeHead(answer.status ?? 200, { "content-type": "text/plain", ...(answer.headers ?? {}) });
      res.end(answer.body ?? "ok");
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    requests,
    url: (path = "/") => base + path,
    /// Requests to `path` (exact, with its query).
    at: (path) => requests.filter((r) => r.path === path),
    /// Waits until `path` got `n` requests (bounded), and returns them.
    async got(path, n = 1, ms = 10000) {
      return waitFor(
        () => {
          const hits = requests.filter((r) => r.path === path);
          return hits.length >= n && hits;
        },
        ms,
        `${n} request(s) to ${base}${path}`,
      );
    },
    close() {
      server.closeAllConnections();
      return new Promise((ok) => server.close(ok));
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// `uniq("x")`: a path or id no other test uses.
export const uniq = (s) => `${s}-${Math.random().toString(36).slice(2, 10)}`;
