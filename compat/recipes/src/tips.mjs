import { DUAL_TIER } from './rate-limit.mjs';

/** The tips route's rate limit (tunable per deployment; tests use a slower one). */
export const tipLimits = { tiers: DUAL_TIER };

// The recipes' stand-in for the seeds' tip transaction: the creator's balance goes
// up by the tip (a real app debits the tipper and credits the creator in its
// database). A tip that ran twice would show in the balance.

export async function sendTip(send, { creator, amount }) {
  if (!creator || !(amount > 0)) throw new Error('a tip needs a creator and a positive amount');
  const balance = await send(['INCRBY', `balance:${creator}`, amount]);
  return { creator, amount, balance: Number(balance) };
}
