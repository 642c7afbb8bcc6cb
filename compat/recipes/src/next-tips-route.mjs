// A Next.js App Router route handler (app/api/tips/route.js): POST /api/tips from
// serverless code, over Tidewire's REST API (UPSTASH_REDIS_REST_URL and
// UPSTASH_REDIS_REST_TOKEN). A tip is rate limited per user (dual tier) and needs an
// Idempotency-Key: a retried tip replays the first answer and is never sent twice.
import { createHash } from 'node:crypto';
import { overRest } from './tidewire.mjs';
import { throttle, rateLimitHeaders } from './rate-limit.mjs';
import { sendTip, tipLimits } from './tips.mjs';

export async function POST(request) {
  const send = overRest();
  const user = request.headers.get('x-user-id') ?? 'anonymous';
  const env = process.env.APP_ENV ?? 'production';
  let headers = {};
  try {
    const decision = await throttle(send, `rl:${env}:tips:${user}`, tipLimits.tiers);
    headers = rateLimitHeaders(decision);
    if (decision.limited) return Response.json({ error: 'rate limited' }, { status: 429, headers });
  } catch {
    // Tidewire unreachable: let the tip through (fail open), as the seeds do.
  }
  const idemKey = request.headers.get('idempotency-key');
  if (!idemKey) return Response.json({ error: 'Idempotency-Key header required' }, { status: 400, headers });
  const body = await request.text();
  const key = `idempotency:tip:${idemKey}`;
  const fingerprint = createHash('sha256').update(body).digest('hex');
  let state, arg;
  try {
    [state, arg] = await send(['TW.IDEM.BEGIN', key, 86_400_000, 'FINGERPRINT', fingerprint]);
  } catch (e) {
    if (/^MISMATCH/.test(e.message)) {
      return Response.json({ error: 'Idempotency-Key reused for a different tip' }, { status: 422, headers });
    }
    throw e;
  }
  if (state === 'inflight') return Response.json({ error: 'tip in progress' }, { status: 409, headers });
  if (state === 'done') {
    return Response.json(JSON.parse(arg), { status: 201, headers: { ...headers, 'Idempotent-Replayed': 'true' } });
  }
  let result;
  try {
    result = await sendTip(send, JSON.parse(body));
  } catch (e) {
    await send(['TW.IDEM.ABORT', key, arg]);
    return Response.json({ error: e.message }, { status: 500, headers });
  }
  await send(['TW.IDEM.COMPLETE', key, arg, JSON.stringify(result)]);
  return Response.json(result, { status: 201, headers });
}
