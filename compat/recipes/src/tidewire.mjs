// How the recipes reach Tidewire: a `send(args)` function that runs one command
// (an array of strings and numbers) and resolves to its reply. Over RESP with
// ioredis in a long-running server; over the Upstash REST API with `fetch` in
// serverless code (no client library needed).

/** `send` over an ioredis connection. */
export function overRedis(redis) {
  return (args) => redis.call(...args);
}

/**
 * `send` over Tidewire's Upstash-compatible REST API: `url` and `token` default to
 * the variables @upstash/redis reads. A command error rejects with its message.
 */
export function overRest({
  url = process.env.UPSTASH_REDIS_REST_URL,
  token = process.env.UPSTASH_REDIS_REST_TOKEN,
} = {}) {
  return async (args) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      body: JSON.stringify(args.map(String)),
    });
    const body = await res.json();
    if (body.error) throw new Error(body.error);
    return body.result;
  };
}
