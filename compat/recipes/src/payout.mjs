// A payout job under a fenced lock (TW.LOCK): one worker at a time per user, and a
// worker that lost its lock without knowing it (paused past the TTL) cannot
// overwrite the next holder's work, because the ledger refuses a lower fence.

/**
 * Runs `work(fence)` holding the lock `name`, waiting up to `waitMs` for it.
 * Resolves to `work`'s result, or `{ busy: true }` if the lock stayed taken.
 * WAIT blocks the connection it runs on: give each worker its own connection.
 */
export async function withFencedLock(send, name, { ttlMs = 60_000, waitMs = 5_000 } = {}, work) {
  const held = await send(['TW.LOCK.ACQUIRE', name, ttlMs, 'WAIT', waitMs]);
  if (!held) return { busy: true };
  const [token, fence] = held;
  try {
    return await work(fence);
  } finally {
    await send(['TW.LOCK.RELEASE', name, token]);
  }
}

/**
 * A stand-in for the storage a payout writes to (a SQL row in the seeds:
 * `UPDATE payouts SET state = $1, fence = $2 WHERE id = $3 AND fence < $2`): it
 * keeps the highest fence it has seen per payout and refuses writes below it.
 */
export class Ledger {
  constructor() {
    this.rows = new Map();
  }

  write(id, state, fence) {
    const row = this.rows.get(id);
    if (row && row.fence >= fence) return false;
    this.rows.set(id, { state, fence });
    return true;
  }
}

/** The seeds' payout: mark the user's payout sent, under `lock:payout:<user>`. */
export function processPayout(send, ledger, userId, { ttlMs, waitMs, pay = async () => {} } = {}) {
  return withFencedLock(send, `lock:payout:${userId}`, { ttlMs, waitMs }, async (fence) => {
    await pay(userId);
    return { written: ledger.write(userId, 'sent', fence), fence };
  });
}
