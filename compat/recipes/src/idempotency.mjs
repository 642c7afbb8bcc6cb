// An `Idempotency-Key` middleware with TW.IDEM: the first request with a key runs;
// a retry gets the stored response (never a second charge); a duplicate that
// arrives while the first still runs gets 409; the same key on a different request
// gets 422, as Stripe answers.
import { createHash } from 'node:crypto';

/** What identifies "the same request": method, path and body. */
function fingerprint(req) {
  return createHash('sha256')
    .update(`${req.method} ${req.originalUrl}\n${JSON.stringify(req.body ?? null)}`)
    .digest('hex');
}

/**
 * Express middleware (after `express.json()`). Requests without the header pass
 * through unless `required`. Responses with a status below 500 are stored for
 * `ttlMs` (default 24 h) and replayed with `Idempotent-Replayed: true`; a 5xx (or a
 * handler that fails without a JSON response) gives the key up, so the client's
 * retry runs again.
 */
export function idempotency({ send, ttlMs = 86_400_000, prefix = 'idempotency', required = false }) {
  return async (req, res, next) => {
    const header = req.get('Idempotency-Key');
    if (!header) {
      return required ? res.status(400).json({ error: 'Idempotency-Key header required' }) : next();
    }
    const key = `${prefix}:${header}`;
    let state, arg;
    try {
      [state, arg] = await send(['TW.IDEM.BEGIN', key, ttlMs, 'FINGERPRINT', fingerprint(req)]);
    } catch (e) {
      if (/^MISMATCH/.test(e.message)) {
        return res.status(422).json({ error: 'Idempotency-Key reused for a different request' });
      }
      throw e;
    }
    if (state === 'inflight') {
      return res.status(409).json({ error: 'a request with this Idempotency-Key is in progress' });
    }
    if (state === 'done') {
      const stored = JSON.parse(arg);
      return res.status(stored.status).set('Idempotent-Replayed', 'true').json(stored.body);
    }
    // state === 'new': this request owns the key (token in `arg`). The response
    // goes out once its record is stored, so a client never sees a response that a
    // retry would not get back.
    const token = arg;
    let settled = false;
    const json = res.json.bind(res);
    res.json = (body) => {
      settled = true;
      const done = res.statusCode < 500
        ? send(['TW.IDEM.COMPLETE', key, token, JSON.stringify({ status: res.statusCode, body })])
        : send(['TW.IDEM.ABORT', key, token]);
      done.then(() => json(body), (e) => next(e));
      return res;
    };
    // A handler that failed without a JSON response (an error page, a dropped
    // connection) gives the key up.
    res.once('close', () => {
      if (!settled) send(['TW.IDEM.ABORT', key, token]).catch(() => {});
    });
    next();
  };
}
