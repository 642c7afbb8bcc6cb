// Rate limits with TW.THROTTLE: every tier checked and charged in one atomic
// command, so a request refused by one tier costs the others nothing.

/** The seeds' dual-tier limit: a burst of 10 per second within 100 per minute. */
export const DUAL_TIER = [
  { name: 'burst', limit: 10, periodMs: 1_000 },
  { name: 'sustained', limit: 100, periodMs: 60_000 },
];

/** Per-route buckets: payments strict, ordinary writes moderate, reads generous. */
export const BUCKETS = {
  strict: [{ name: 'minute', limit: 5, periodMs: 60_000 }],
  moderate: [{ name: 'minute', limit: 30, periodMs: 60_000 }],
  generous: [{ name: 'minute', limit: 300, periodMs: 60_000 }],
};

/**
 * Runs one decision for `key` against `tiers`. A tier of `limit` per `periodMs`
 * admits up to `limit` requests at once (TW.THROTTLE's burst is `limit - 1`).
 * Resolves to `{ limited, retryAfterMs, tiers: [{ name, limit, remaining, resetMs }] }`.
 */
export async function throttle(send, key, tiers, quantity = 1) {
  const args = ['TW.THROTTLE', key, 'QUANTITY', quantity];
  for (const t of tiers) args.push('TIER', t.name, t.limit - 1, t.limit, t.periodMs);
  const [limited, retryAfterMs, ...states] = await send(args);
  return {
    limited: limited === 1,
    retryAfterMs,
    tiers: states.map(([name, limit, remaining, resetMs]) => ({ name, limit, remaining, resetMs })),
  };
}

/**
 * The response headers for a decision: `RateLimit-*` from the tier closest to its
 * limit, and `Retry-After` (seconds) when refused.
 */
export function rateLimitHeaders(decision) {
  const tightest = decision.tiers.reduce((a, b) => (b.remaining < a.remaining ? b : a));
  const headers = {
    'RateLimit-Limit': String(tightest.limit),
    'RateLimit-Remaining': String(tightest.remaining),
    'RateLimit-Reset': String(Math.ceil(tightest.resetMs / 1000)),
  };
  if (decision.limited) headers['Retry-After'] = String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000)));
  return headers;
}

/**
 * Express middleware: `identify(req)` names who is limited (user id, API key, IP),
 * `prefix` the route or environment (`rl:production:tips`). A refused request gets
 * 429 with the headers above; if Tidewire cannot be reached the request goes
 * through (fail open), as the seeds' limiter does.
 */
export function expressRateLimit({ send, tiers = DUAL_TIER, prefix = 'rl', identify = (req) => req.ip }) {
  return async (req, res, next) => {
    let decision;
    try {
      decision = await throttle(send, `${prefix}:${identify(req)}`, tiers);
    } catch {
      return next();
    }
    res.set(rateLimitHeaders(decision));
    if (decision.limited) return res.status(429).json({ error: 'rate limited' });
    return next();
  };
}
