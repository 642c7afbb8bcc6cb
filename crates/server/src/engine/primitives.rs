//! Tidewire's native primitives (`CL.THROTTLE`, `TW.THROTTLE`, `TW.IDEM.*`,
//! `TW.LOCK.*`, `TW.FILL.*`) on a Redis engine, which has no such commands:
//! each runs as a Lua script on the master of its key's slot, atomic there as
//! the embedded command is in the store. The arguments are parsed by the
//! embedded commands' own parsers (so argument errors are byte for byte the
//! same) and what depends on the stored state is decided by the script, which
//! answers with the embedded command's replies and error texts.
//!
//! Scripts read the engine's clock (`TIME`; Redis 7 replicates a script's
//! effects, so that is allowed), so nodes whose clocks disagree agree on every
//! decision. They are sent with `EVALSHA`, and with `EVAL` once a master
//! answers `NOSCRIPT` (new, restarted or flushed): the body crosses the network
//! once per master rather than with every call. Inside MULTI they go as `EVAL`,
//! since a `NOSCRIPT` inside EXEC could not be retried.
//!
//! State the embedded store keeps in memory or per process lives in companion
//! keys in the same slot (see [`companion`]): a lock name's last fence (never
//! expires, so fences keep rising after the lock key is gone), a fill's lease,
//! and for `WAIT` the waiters (a sorted set scored by their deadlines) and a
//! wake-up list. A waiter does not poll: it `BLPOP`s the wake-up list on the
//! client's own engine connection, for no longer than its `WAIT` and the
//! holder's remaining TTL (an expiry wakes nobody), and tries again after each
//! wake-up. A release, `TW.FILL.SET` or `TW.FILL.ABORT` pushes one wake-up per
//! live waiter; whoever's script runs first wins, so waiters are not served
//! first come, first served across nodes.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire_engine::{key_slot, Cluster, DedicatedConnection, SLOT_COUNT};
use tidewire_resp::Reply;
use tidewire_store::args::Args;
use tidewire_store::families::{fill, idempotency, lock, records, throttle};
use tidewire_store::{CmdError, Command, PrimitiveStats, Protocol};

use super::session::engine_error;

/// One script and its SHA1 (computed once).
pub struct Script {
    body: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    const fn new(body: &'static str) -> Script {
        Script {
            body,
            sha: OnceLock::new(),
        }
    }

    fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| tidewire_store::scripting::sha1_hex(self.body.as_bytes()))
    }
}

/// Helpers every script starts with. Numbers go to `redis.call` through
/// `int()`: Lua would print a large one in exponent notation.
macro_rules! prelude {
    () => {
        r#"
local WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value'
local function int(x) return string.format('%d', x) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function read_string(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return false end
  if kind ~= 'string' then return nil, {err = WRONGTYPE} end
  return redis.call('GET', key)
end
local function enqueue(waiters, waiter, left, now)
  redis.call('ZADD', waiters, int(now + left), waiter)
  if redis.call('PTTL', waiters) < left then redis.call('PEXPIRE', waiters, int(left)) end
end
local function wake(waiters, list, now)
  redis.call('ZREMRANGEBYSCORE', waiters, '-inf', int(now))
  redis.call('DEL', list)
  local n = redis.call('ZCARD', waiters)
  if n > 0 then
    local last = redis.call('ZRANGE', waiters, -1, -1, 'WITHSCORES')
    for _ = 1, n do redis.call('RPUSH', list, '1') end
    redis.call('PEXPIRE', list, int(math.max(1, tonumber(last[2]) - now)))
  end
end
"#
    };
}

/// GCRA for `CL.THROTTLE` (ARGV: `cl`, quantity, then one tier) and
/// `TW.THROTTLE` (`tw`, quantity, then name, emission, tolerance, limit per
/// tier), as `throttle.rs` decides. Times are nanoseconds relative to now (in
/// whole milliseconds, as the store's clock), which keeps them exact in Lua's
/// doubles; the stored TAT is absolute nanoseconds as text, as embedded.
static THROTTLE: Script = Script::new(concat!(
    prelude!(),
    r#"
local key = KEYS[1]
local q = tonumber(ARGV[2])
local stored, e = read_string(key)
if e then return e end
local base = now_ms()
local function tdiv(a, b)
  local neg = a < 0
  if neg then a = -a end
  local d = math.floor(a / b)
  while d * b > a do d = d - 1 end
  while (d + 1) * b <= a do d = d + 1 end
  if neg then return -d end
  return d
end
local function trunc(x) if x < 0 then return math.ceil(x) end return math.floor(x) end
local function rel(s)
  if not string.find(s, '^%-?%d+$') or #s > 20 then return nil end
  local neg = string.sub(s, 1, 1) == '-'
  local digits = neg and string.sub(s, 2) or s
  local hi, lo = 0, tonumber(digits)
  if #digits > 6 then
    hi = tonumber(string.sub(digits, 1, -7))
    lo = tonumber(string.sub(digits, -6))
  end
  if neg then hi, lo = -hi, -lo end
  return (hi - base) * 1000000 + lo
end
local function abs(x)
  local ms = math.floor(x / 1000000)
  local ns = x - ms * 1000000
  if ns < 0 then ms, ns = ms - 1, ns + 1000000 elseif ns >= 1000000 then ms, ns = ms + 1, ns - 1000000 end
  return string.format('%d%06d', base + ms, ns)
end
local function decide(em, tol, tat, quantity)
  local inc = em * quantity
  tat = tat or 0
  local d = {new_tat = math.max(tat, 0) + inc}
  local diff = tol - d.new_tat
  if diff < 0 then
    d.limited, d.ttl = true, tat
    if inc <= tol then d.retry = -diff end
  else
    d.limited, d.ttl = false, d.new_tat
  end
  local nxt = tol - d.ttl
  d.remaining = 0
  if nxt > -em then
    local unit = 1
    if em >= 1000 then unit = 1000 end
    d.remaining = trunc(tdiv(nxt, unit) / tdiv(em, unit))
  end
  return d
end
local function round_up(ns, per)
  local whole = tdiv(ns, per)
  if ns - whole * per >= 1000000 then whole = whole + 1 end
  return whole
end
local function ceil_ms(ns) return tdiv(math.max(ns, 0) + 999999, 1000000) end
local function store_until(value, ttl)
  if ttl <= 0 then redis.call('DEL', key) return end
  redis.call('SET', key, value, 'PX', int(ceil_ms(ttl)))
end
if ARGV[1] == 'cl' then
  local em, tol, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local tat = nil
  if stored then
    tat = rel(stored)
    if not tat then return {err = 'ERR value is not an integer or out of range'} end
  end
  local d = decide(em, tol, tat, q)
  if not d.limited then store_until(abs(d.new_tat), d.ttl) end
  local retry = -1
  if d.limited and d.retry then retry = round_up(d.retry, 1000000000) end
  return {d.limited and 1 or 0, limit, d.remaining, retry, round_up(math.max(d.ttl, 0), 1000000000)}
end
local tats = {}
if stored then
  for line in string.gmatch(stored .. '\n', '([^\n]*)\n') do
    local at = string.find(line, '=', 1, true)
    if at then
      local name = string.sub(line, 1, at - 1)
      local t = rel(string.sub(line, at + 1))
      if t and tats[name] == nil then tats[name] = t end
    end
  end
end
local tiers, limited = {}, false
for i = 3, #ARGV, 4 do
  local t = {name = ARGV[i], em = tonumber(ARGV[i + 1]), tol = tonumber(ARGV[i + 2]), limit = tonumber(ARGV[i + 3])}
  t.d = decide(t.em, t.tol, tats[t.name], q)
  if t.d.limited then limited = true end
  tiers[#tiers + 1] = t
end
local retry = -1
if limited then
  local worst, never = 0, false
  for _, t in ipairs(tiers) do
    if t.d.limited then
      if t.d.retry then worst = math.max(worst, t.d.retry) else never = true end
    end
  end
  if not never then retry = ceil_ms(worst) end
else
  local lines, ttl = {}, 0
  for _, t in ipairs(tiers) do
    lines[#lines + 1] = t.name .. '=' .. abs(t.d.new_tat)
    ttl = math.max(ttl, t.d.ttl)
  end
  store_until(table.concat(lines, '\n'), ttl)
end
local out = {limited and 1 or 0, retry}
for _, t in ipairs(tiers) do
  local ttl, remaining = t.d.ttl, t.d.remaining
  if limited then
    local found = decide(t.em, t.tol, tats[t.name], 0)
    ttl, remaining = found.ttl, found.remaining
  end
  out[#out + 1] = {t.name, t.limit, remaining, ceil_ms(ttl)}
end
return out
"#
));

/// Reads an idempotency record as `idempotency.rs` lays it out.
macro_rules! idem_record {
    () => {
        r#"
local NOT_RECORD = {err = 'ERR the key does not hold an idempotency record'}
local function record(v)
  local state, token, started, fplen, rest = string.match(v, '^idem1|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not state or (state ~= 'inflight' and state ~= 'done') then return nil end
  if not string.find(started, '^%-?%d+$') or not string.find(fplen, '^%d+$') then return nil end
  local n = tonumber(fplen)
  if #rest < n then return nil end
  return {state = state, token = token, started = started, fplen = fplen,
          fp = string.sub(rest, 1, n), response = string.sub(rest, n + 1)}
end
"#
    };
}

/// `TW.IDEM.BEGIN` (ARGV: new token, ttl_ms, fingerprint or empty).
static IDEM_BEGIN: Script = Script::new(concat!(
    prelude!(),
    idem_record!(),
    r#"
local v, e = read_string(KEYS[1])
if e then return e end
local now = now_ms()
if v then
  local r = record(v)
  if not r then return NOT_RECORD end
  local fp = ARGV[3]
  if fp ~= '' and r.fp ~= '' and r.fp ~= fp then
    return {err = 'MISMATCH the idempotency key was used for a different request'}
  end
  if r.state == 'inflight' then return {'inflight', math.max(0, now - tonumber(r.started))} end
  return {'done', r.response}
end
redis.call('SET', KEYS[1], 'idem1|inflight|' .. ARGV[1] .. '|' .. int(now) .. '|' .. #ARGV[3] .. '|' .. ARGV[3], 'PX', ARGV[2])
return {'new', ARGV[1]}
"#
));

/// `TW.IDEM.COMPLETE` (ARGV: token, response, ttl_ms or empty: keep the TTL).
static IDEM_COMPLETE: Script = Script::new(concat!(
    prelude!(),
    idem_record!(),
    r#"
local v, e = read_string(KEYS[1])
if e then return e end
local r = nil
if v then
  r = record(v)
  if not r then return NOT_RECORD end
end
if not r or r.state ~= 'inflight' or r.token ~= ARGV[1] then
  return {err = 'NOTOWNER the token does not own this idempotency key (it expired, was aborted or completed)'}
end
local done = 'idem1|done|' .. r.token .. '|' .. r.started .. '|' .. r.fplen .. '|' .. r.fp .. ARGV[2]
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], done, 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], done, 'KEEPTTL')
end
return redis.status_reply('OK')
"#
));

/// `TW.IDEM.ABORT` (ARGV: token).
static IDEM_ABORT: Script = Script::new(concat!(
    prelude!(),
    idem_record!(),
    r#"
local v, e = read_string(KEYS[1])
if e then return e end
if not v then return 0 end
local r = record(v)
if not r then return NOT_RECORD end
if r.state ~= 'inflight' or r.token ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#
));

/// Reads a lock record (`lock1|<token>|<fence>`, as `lock.rs`).
macro_rules! lock_record {
    () => {
        r#"
local NOT_LOCK = {err = 'ERR the key does not hold a lock'}
local function held(key)
  local v, e = read_string(key)
  if e then return nil, e end
  if not v then return false end
  local token, fence = string.match(v, '^lock1|([^|]*)|(%-?%d+)$')
  if not token then return nil, NOT_LOCK end
  return {token = token, fence = fence}
end
"#
    };
}

/// `TW.LOCK.ACQUIRE` (KEYS: lock, last fence, waiters; ARGV: waiter or empty,
/// ms it has left, new token, ttl_ms). Busy: nil, or for a waiter the lock's
/// PTTL (and it is among the waiters).
static LOCK_ACQUIRE: Script = Script::new(concat!(
    prelude!(),
    lock_record!(),
    r#"
local h, e = held(KEYS[1])
if e then return e end
if h then
  if ARGV[1] == '' then return false end
  enqueue(KEYS[3], ARGV[1], tonumber(ARGV[2]), now_ms())
  return redis.call('PTTL', KEYS[1])
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local fence = math.max(now_us, last + 1)
redis.call('SET', KEYS[2], int(fence))
redis.call('SET', KEYS[1], 'lock1|' .. ARGV[3] .. '|' .. int(fence), 'PX', ARGV[4])
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[3], ARGV[1]) end
return {ARGV[3], fence}
"#
));

/// `TW.LOCK.RENEW` (ARGV: token, ttl_ms).
static LOCK_RENEW: Script = Script::new(concat!(
    prelude!(),
    lock_record!(),
    r#"
local h, e = held(KEYS[1])
if e then return e end
if not h or h.token ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#
));

/// `TW.LOCK.RELEASE` (KEYS: lock, waiters, wake-ups; ARGV: token).
static LOCK_RELEASE: Script = Script::new(concat!(
    prelude!(),
    lock_record!(),
    r#"
local h, e = held(KEYS[1])
if e then return e end
if not h or h.token ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
wake(KEYS[2], KEYS[3], now_ms())
return 1
"#
));

/// `TW.LOCK.INFO` (KEYS: lock, waiters): `[fence, ttl_ms, waiters]`, made a map
/// by [`info_map`].
static LOCK_INFO: Script = Script::new(concat!(
    prelude!(),
    lock_record!(),
    r#"
local h, e = held(KEYS[1])
if e then return e end
if not h then return false end
local waiting = redis.call('ZCOUNT', KEYS[2], '(' .. int(now_ms()), '+inf')
return {tonumber(h.fence), redis.call('PTTL', KEYS[1]), waiting}
"#
));

/// `TW.FILL.GET` (KEYS: value, lease, waiters; ARGV: waiter or empty, ms it
/// has left, new token, lease_ms). In flight: `timeout`, or for a waiter the
/// lease's PTTL (and it is among the waiters).
static FILL_GET: Script = Script::new(concat!(
    prelude!(),
    r#"
local v, e = read_string(KEYS[1])
if e then return e end
if v then return {'hit', v} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  if ARGV[1] ~= '' then redis.call('ZREM', KEYS[3], ARGV[1]) end
  return {'fill', ARGV[3]}
end
if ARGV[1] == '' then return {'timeout'} end
enqueue(KEYS[3], ARGV[1], tonumber(ARGV[2]), now_ms())
return redis.call('PTTL', KEYS[2])
"#
));

/// `TW.FILL.SET` (KEYS: value, lease, waiters, wake-ups; ARGV: token, value,
/// px or empty).
static FILL_SET: Script = Script::new(concat!(
    prelude!(),
    r#"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
if holder then redis.call('DEL', KEYS[2]) end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
wake(KEYS[3], KEYS[4], now_ms())
return 1
"#
));

/// `TW.FILL.ABORT` (KEYS as `TW.FILL.SET`; ARGV: token).
static FILL_ABORT: Script = Script::new(concat!(
    prelude!(),
    r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
wake(KEYS[3], KEYS[4], now_ms())
return 1
"#
));

/// Answers with the error text in ARGV[1]: an argument error inside MULTI is
/// EXEC's answer for that command, as embedded, not a refusal of the queue.
static ERROR: Script = Script::new("return redis.error_reply(ARGV[1])");

/// The longest `WAIT` honoured (about 30 years): keeps the deadline, the
/// waiters' scores and their set's expiry within what the clock and Redis take.
const MAX_WAIT_MS: u64 = 1_000_000_000_000;

/// Makes a script's reply the command's.
pub type Finish = fn(Reply) -> Reply;

/// Whether the caller may wait (`WAIT` over RESP, outside MULTI).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Allowed,
    Never,
}

/// A native command as a script call.
pub struct Call {
    script: &'static Script,
    keys: Vec<Bytes>,
    args: Vec<Bytes>,
    /// The script's reply made into the command's (most already are).
    pub finish: Finish,
    /// `WAIT`: the script's first two arguments are the waiter's id and the
    /// milliseconds it has left.
    wait: Option<Wait>,
}

struct Wait {
    ms: u64,
    /// The list a release or a fill's end pushes wake-ups to.
    wake: Bytes,
    /// The sorted set of waiters, by deadline.
    waiters: Bytes,
    /// What the command answers when `WAIT` passes.
    timeout: fn() -> Reply,
}

impl Call {
    fn new(script: &'static Script, keys: Vec<Bytes>, args: Vec<Bytes>) -> Call {
        Call {
            script,
            keys,
            args,
            finish: same,
            wait: None,
        }
    }

    /// `EVAL body|sha numkeys keys… args…`.
    fn argv(&self, by_sha: bool) -> Vec<Bytes> {
        let mut argv = Vec::with_capacity(3 + self.keys.len() + self.args.len());
        if by_sha {
            argv.push(Bytes::from_static(b"EVALSHA"));
            argv.push(Bytes::copy_from_slice(self.script.sha().as_bytes()));
        } else {
            argv.push(Bytes::from_static(b"EVAL"));
            argv.push(Bytes::from_static(self.script.body.as_bytes()));
        }
        argv.push(Bytes::from(self.keys.len().to_string()));
        argv.extend(self.keys.iter().cloned());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

fn same(reply: Reply) -> Reply {
    reply
}

fn text(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn number(n: impl ToString) -> Bytes {
    Bytes::from(n.to_string())
}

/// Translates a native command (arity already checked) into its script call;
/// an argument error is the embedded command's.
pub fn translate(cmd: &Command, argv: &[Bytes], waiting: Waiting) -> Result<Call, CmdError> {
    let mut args = Args::new(argv, 1);
    let name = cmd.full_name.as_str();
    let call = match name {
        "cl.throttle" => {
            let (key, limit, quantity) = throttle::parse_cl_throttle(&mut args)?;
            let mut a = vec![text("cl"), number(quantity)];
            push_tier(&mut a, Bytes::new(), &limit);
            Call::new(&THROTTLE, vec![key], a)
        }
        "tw.throttle" => {
            let (key, quantity, tiers) = throttle::parse_tw_throttle(&mut args)?;
            let mut a = vec![text("tw"), number(quantity)];
            for (name, limit) in tiers {
                push_tier(&mut a, name, &limit);
            }
            Call::new(&THROTTLE, vec![key], a)
        }
        "tw.idem.begin" => {
            let (key, ttl, fingerprint) = idempotency::parse_begin(&mut args)?;
            let token = Bytes::from(tidewire_store::random_hex(32));
            Call::new(
                &IDEM_BEGIN,
                vec![key],
                vec![token, number(ttl), fingerprint],
            )
        }
        "tw.idem.complete" => {
            let (key, token, response, ttl) = idempotency::parse_complete(&mut args)?;
            let ttl = ttl.map(number).unwrap_or_default();
            Call::new(&IDEM_COMPLETE, vec![key], vec![token, response, ttl])
        }
        "tw.idem.abort" => {
            let key = args.next_bytes()?.clone();
            let token = args.next_bytes()?.clone();
            Call::new(&IDEM_ABORT, vec![key], vec![token])
        }
        "tw.lock.acquire" => {
            let (key, ttl, wait) = lock::parse_acquire(&mut args)?;
            let keys = vec![
                companion(&key, "lock.fence"),
                companion(&key, "lock.waiters"),
            ];
            let token = Bytes::from(tidewire_store::random_hex(32));
            waitable(
                &LOCK_ACQUIRE,
                key,
                keys,
                vec![token, number(ttl)],
                wait.filter(|_| waiting == Waiting::Allowed),
                "lock.wake",
                || Reply::Null,
            )
        }
        "tw.lock.renew" => {
            let key = args.next_bytes()?.clone();
            let token = args.next_bytes()?.clone();
            let ttl = records::positive_ms(&mut args)?;
            Call::new(&LOCK_RENEW, vec![key], vec![token, number(ttl)])
        }
        "tw.lock.release" => {
            let key = args.next_bytes()?.clone();
            let token = args.next_bytes()?.clone();
            let keys = vec![
                companion(&key, "lock.waiters"),
                companion(&key, "lock.wake"),
                key,
            ];
            Call::new(&LOCK_RELEASE, rotate(keys), vec![token])
        }
        "tw.lock.info" => {
            let key = args.next_bytes()?.clone();
            let waiters = companion(&key, "lock.waiters");
            let mut call = Call::new(&LOCK_INFO, vec![key, waiters], Vec::new());
            call.finish = info_map;
            call
        }
        "tw.fill.get" => {
            let (key, lease, wait) = fill::parse_get(&mut args)?;
            let keys = vec![
                companion(&key, "fill.lease"),
                companion(&key, "fill.waiters"),
            ];
            let token = Bytes::from(tidewire_store::random_hex(32));
            waitable(
                &FILL_GET,
                key,
                keys,
                vec![token, number(lease)],
                wait.filter(|_| waiting == Waiting::Allowed),
                "fill.wake",
                || Reply::Array(vec![Reply::bulk_str("timeout")]),
            )
        }
        "tw.fill.set" => {
            let (key, token, value, expiry) = fill::parse_set(&mut args)?;
            let px = expiry.map(number).unwrap_or_default();
            Call::new(&FILL_SET, fill_keys(key), vec![token, value, px])
        }
        "tw.fill.abort" => {
            let key = args.next_bytes()?.clone();
            let token = args.next_bytes()?.clone();
            Call::new(&FILL_ABORT, fill_keys(key), vec![token])
        }
        _ => {
            return Err(CmdError::err(format!(
                "{} is not supported with --engine yet",
                name.to_ascii_uppercase()
            )))
        }
    };
    Ok(call)
}

/// `[key, rest…]` from `[rest…, key]`.
fn rotate(mut keys: Vec<Bytes>) -> Vec<Bytes> {
    keys.rotate_right(1);
    keys
}

/// A fill's value, lease, waiters and wake-up list.
fn fill_keys(key: Bytes) -> Vec<Bytes> {
    rotate(vec![
        companion(&key, "fill.lease"),
        companion(&key, "fill.waiters"),
        companion(&key, "fill.wake"),
        key,
    ])
}

/// A call that may wait: KEYS `[key, extra…]`, ARGV `[waiter, ms left, args…]`
/// (the waiter empty when it does not wait).
fn waitable(
    script: &'static Script,
    key: Bytes,
    extra: Vec<Bytes>,
    args: Vec<Bytes>,
    wait: Option<u64>,
    wake: &str,
    timeout: fn() -> Reply,
) -> Call {
    let waiter = match wait {
        Some(_) => Bytes::from(tidewire_store::random_hex(16)),
        None => Bytes::new(),
    };
    let mut all = vec![waiter, number(wait.unwrap_or(0))];
    all.extend(args);
    let waiters = extra.last().cloned().unwrap_or_default();
    let wake = companion(&key, wake);
    let mut keys = vec![key];
    keys.extend(extra);
    let mut call = Call::new(script, keys, all);
    call.wait = wait.map(|ms| Wait {
        ms,
        wake,
        waiters,
        timeout,
    });
    call
}

/// `TW.LOCK.INFO`'s map, from the script's `[fence, ttl_ms, waiters]`.
fn info_map(reply: Reply) -> Reply {
    match reply {
        Reply::Array(items) if items.len() == 3 => {
            let names = ["fence", "ttl_ms", "waiters"];
            Reply::Map(
                names
                    .iter()
                    .zip(items)
                    .map(|(name, value)| (Reply::bulk_str(name), value))
                    .collect(),
            )
        }
        other => other,
    }
}

fn push_tier(args: &mut Vec<Bytes>, name: Bytes, limit: &throttle::Limit) {
    args.push(name);
    args.push(number(limit.emission));
    args.push(number(limit.tolerance));
    args.push(number(limit.limit));
}

/// What a native command queued inside MULTI sends within the transaction (an
/// `EVAL`; nothing waits there), and what makes its part of EXEC's reply.
pub fn queued(cmd: &Command, argv: &[Bytes]) -> (Vec<Bytes>, Finish) {
    match translate(cmd, argv, Waiting::Never) {
        Ok(call) => (call.argv(false), call.finish),
        Err(e) => {
            let mut call = Call::new(&ERROR, Vec::new(), vec![Bytes::from(e.text())]);
            // The key, so the transaction stays on its slot.
            call.keys = argv.get(1).cloned().into_iter().collect();
            (call.argv(false), same)
        }
    }
}

/// Runs a call on the master of `slot`, waiting (on the client's own
/// connection `own`) if it asked to; also whether it waited.
pub async fn run(
    cluster: &Cluster,
    own: &mut DedicatedConnection,
    proto: Protocol,
    slot: u16,
    call: Call,
    retry_if_lost: bool,
) -> (Reply, bool) {
    let mut waited = false;
    let reply = run_waiting(cluster, own, proto, slot, call, retry_if_lost, &mut waited).await;
    (reply, waited)
}

async fn run_waiting(
    cluster: &Cluster,
    own: &mut DedicatedConnection,
    proto: Protocol,
    slot: u16,
    mut call: Call,
    retry_if_lost: bool,
    waited: &mut bool,
) -> Reply {
    let Some(wait) = call.wait.take() else {
        let reply = eval(cluster, proto, slot, &call, retry_if_lost).await;
        return (call.finish)(reply);
    };
    // (a WAIT of any size is accepted; past a few decades it is as good as forever)
    let wait_for = Duration::from_millis(wait.ms.min(MAX_WAIT_MS));
    let deadline = Instant::now() + wait_for;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(arg) = call.args.get_mut(1) {
            *arg = number(left.as_millis().max(1));
        }
        // An integer: the holder's remaining TTL (ms, -1 without one), and the
        // caller is among the waiters.
        let holder_ttl = match eval(cluster, proto, slot, &call, false).await {
            Reply::Int(ttl) => ttl,
            other => return (call.finish)(other),
        };
        *waited = true;
        if left.is_zero() {
            forget(cluster, proto, slot, &wait, &call).await;
            return (wait.timeout)();
        }
        let mut bound = left;
        if holder_ttl > 0 {
            bound = bound.min(Duration::from_millis(holder_ttl.unsigned_abs() + 1));
        }
        let blpop = vec![
            Bytes::from_static(b"BLPOP"),
            wait.wake.clone(),
            Bytes::from(format!("{:.3}", bound.as_secs_f64().max(0.001))),
        ];
        match cluster
            .run_dedicated(own, proto, Some(slot), &[blpop])
            .await
        {
            Ok(replies) => {
                if let Some(Reply::Error(e)) = replies.into_iter().next() {
                    forget(cluster, proto, slot, &wait, &call).await;
                    return Reply::Error(e);
                }
            }
            Err(e) => {
                forget(cluster, proto, slot, &wait, &call).await;
                return engine_error(&e);
            }
        }
    }
}

/// Counts a decision in INFO's `tw_*` statistics as the embedded command does:
/// a caller that found the lock held or the fill in flight counts once as
/// such, however long it then waited, and again for what it got in the end.
pub fn count(stats: &PrimitiveStats, cmd: &Command, reply: &Reply, waited: bool) {
    let bump = PrimitiveStats::bump;
    let first = match reply {
        Reply::Array(items) => items.first(),
        _ => None,
    };
    let word = match first {
        Some(Reply::Bulk(word)) => &word[..],
        _ => b"",
    };
    match cmd.full_name.as_str() {
        "cl.throttle" | "tw.throttle" => match first {
            Some(Reply::Int(0)) => bump(&stats.throttle_allowed),
            Some(Reply::Int(_)) => bump(&stats.throttle_limited),
            _ => {}
        },
        "tw.idem.begin" => match word {
            b"new" => bump(&stats.idem_new),
            b"inflight" => bump(&stats.idem_inflight),
            b"done" => bump(&stats.idem_replayed),
            _ => {}
        },
        "tw.lock.acquire" => match reply {
            Reply::Array(_) => {
                if waited {
                    bump(&stats.lock_busy);
                }
                bump(&stats.lock_acquired);
            }
            Reply::Null => bump(&stats.lock_busy),
            _ => {}
        },
        "tw.fill.get" => {
            if waited && word != b"timeout" {
                bump(&stats.fill_waited);
            }
            match word {
                b"hit" => bump(&stats.fill_hit),
                b"fill" => bump(&stats.fill_granted),
                b"timeout" => bump(&stats.fill_waited),
                _ => {}
            }
        }
        _ => {}
    }
}

/// Takes a waiter that stops waiting off the waiters (best effort: its entry
/// also lapses at its deadline).
async fn forget(cluster: &Cluster, proto: Protocol, slot: u16, wait: &Wait, call: &Call) {
    let Some(waiter) = call.args.first() else {
        return;
    };
    let zrem = vec![
        Bytes::from_static(b"ZREM"),
        wait.waiters.clone(),
        waiter.clone(),
    ];
    let _ = cluster.run(proto, Some(slot), &[zrem], true).await;
}

/// `EVALSHA`, then `EVAL` if the master does not have the script yet.
async fn eval(
    cluster: &Cluster,
    proto: Protocol,
    slot: u16,
    call: &Call,
    retry_if_lost: bool,
) -> Reply {
    let once = |by_sha: bool| async move {
        match cluster
            .run(proto, Some(slot), &[call.argv(by_sha)], retry_if_lost)
            .await
        {
            Ok(mut replies) => replies.pop().unwrap_or(Reply::Null),
            Err(e) => engine_error(&e),
        }
    };
    match once(true).await {
        Reply::Error(e) if e.starts_with("NOSCRIPT") => once(false).await,
        reply => reply,
    }
}

/// A key in the same slot as `key`, for the state the embedded store keeps
/// beside it (`what`: `lock.fence`, `fill.lease` …). A key with a hash tag
/// keeps its tag behind a prefix; one without is wrapped in braces as the tag;
/// the rare key that cannot be (empty, or with a `}` but no tag) gets a tag
/// known to hash to its slot.
pub fn companion(key: &[u8], what: &str) -> Bytes {
    let mut out = format!("tw:{what}:").into_bytes();
    if has_hash_tag(key) {
        out.extend_from_slice(key);
    } else if !key.is_empty() && !key.contains(&b'}') {
        out.push(b'{');
        out.extend_from_slice(key);
        out.push(b'}');
    } else {
        let tag = tag_for_slot(key_slot(key));
        out.extend_from_slice(format!("{{{tag}}}").as_bytes());
        out.extend_from_slice(key);
    }
    Bytes::from(out)
}

/// Whether Redis Cluster hashes `key` by a `{tag}` (a `{` followed later by a
/// `}`, with something between).
fn has_hash_tag(key: &[u8]) -> bool {
    let Some(open) = key.iter().position(|b| *b == b'{') else {
        return false;
    };
    key[open + 1..]
        .iter()
        .position(|b| *b == b'}')
        .is_some_and(|close| close > 0)
}

/// A short number whose hash is `slot` (a table built once: every slot is hit
/// within a few hundred thousand numbers).
fn tag_for_slot(slot: u16) -> u32 {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = vec![u32::MAX; SLOT_COUNT as usize];
        let mut missing = table.len();
        let mut n = 0u32;
        while missing > 0 && n < u32::MAX {
            let s = usize::from(key_slot(n.to_string().as_bytes()));
            if let Some(entry) = table.get_mut(s).filter(|e| **e == u32::MAX) {
                *entry = n;
                missing -= 1;
            }
            n += 1;
        }
        table
    });
    table.get(usize::from(slot)).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companions_share_their_key_s_slot() {
        for key in [
            &b"payout"[..],
            b"lock:{user}:1",
            b"a{b",
            b"a}b",
            b"{}x",
            b"",
            b"x{}y}",
            b"{{a}}",
        ] {
            let c = companion(key, "lock.fence");
            assert_eq!(
                key_slot(&c),
                key_slot(key),
                "{:?}",
                String::from_utf8_lossy(&c)
            );
        }
        assert_eq!(
            &companion(b"payout", "lock.fence")[..],
            b"tw:lock.fence:{payout}"
        );
    }
}
