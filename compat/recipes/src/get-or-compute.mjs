// A single-flight `getOrCompute` with TW.FILL: on a miss exactly one caller runs
// `compute` (a database query for a creator's profile, say); callers that miss
// meanwhile wait for its value instead of running the query too.

/**
 * Resolves to the cached value of `key` or computes it once for everyone. The
 * value is stored as JSON for `ttlSeconds`; `DEL key` invalidates it. A caller that
 * waited `waitMs` for a slow filler computes for itself rather than wait longer.
 * WAIT blocks the connection it runs on: concurrent callers need their own
 * connections (a pool). (Over the REST API nothing waits: a caller that finds a
 * fill in flight gets `timeout` at once and computes for itself.)
 */
export async function getOrCompute(send, key, compute, { ttlSeconds = 300, leaseMs = 10_000, waitMs = 5_000 } = {}) {
  const [kind, arg] = await send(['TW.FILL.GET', key, leaseMs, 'WAIT', waitMs]);
  if (kind === 'hit') return JSON.parse(arg);
  if (kind === 'timeout') return compute();
  // kind === 'fill': this caller computes; `arg` is its lease token.
  let value;
  try {
    value = await compute();
  } catch (e) {
    await send(['TW.FILL.ABORT', key, arg]);
    throw e;
  }
  await send(['TW.FILL.SET', key, arg, JSON.stringify(value), 'EX', ttlSeconds]);
  return value;
}
