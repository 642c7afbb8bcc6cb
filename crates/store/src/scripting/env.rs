//! The sandboxed Lua state: Redis 7.2's globals, the `redis.*` API, read-only
//! library tables, protected globals, and script compilation / execution.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use parking_lot::Mutex;

use super::convert::{self, error_table, lua_number_string};
use super::{bit, cjson, cmsgpack, parse_shebang, structlib, Protocol, Reply, ScriptHost};

/// The host's `interrupt` is polled every this many VM instructions (Redis: 100k).
pub const HOOK_INSTRUCTIONS: u32 = 100_000;
/// A collection cycle runs every this many script runs (Redis steps its collector
/// every 50 calls): each run leaves a little garbage (its KEYS/ARGV tables and
/// strings, ~145 bytes for a one-command script), which the incremental collector
/// alone lets grow to twice the heap. A cycle walks the whole ~75 KB environment
/// (~300k instructions), so the period is as long as Redis's test bound allows: at
/// 150 runs a one-command script's heap peaks at ~97,300 bytes of the 102,400
/// (100 KiB) it allows (`scripting_runs_do_not_grow_the_heap`); a cycle then
/// costs ~3 % of a short script's run (~5 % at 100 runs).
const GC_PERIOD: u32 = 150;
/// Default bound on the Lua heap (Redis has none of its own; see [`LuaEnv::set_memory_limit`]).
pub const DEFAULT_MEMORY_LIMIT: usize = 256 << 20;
/// Redis version the environment reports (`redis.REDIS_VERSION`).
pub const REDIS_VERSION: &str = "7.2.4";
pub const REDIS_VERSION_NUM: u32 = 0x0007_0204;

/// Chunk name of the environment's own Lua code: frames from it are skipped when an
/// error is given its `@user_script` position.
const INTERNAL: &str = "=tidewire";

/// A library function's failure: a message raised as a Lua error at the caller's
/// position, a value raised as is (Redis error tables), or an mlua error.
pub(crate) enum LibErr {
    Msg(String),
    Raise(Value),
    Lua(mlua::Error),
}

impl From<mlua::Error> for LibErr {
    fn from(e: mlua::Error) -> Self {
        LibErr::Lua(e)
    }
}

/// Wraps a Rust library function in the `ok, ...` convention that the Lua prelude
/// turns into ordinary returns or a raised error (see `wrap` in `PRELUDE`).
///
/// The function runs with the Lua heap limit lifted, as the host's conversions do
/// (see [`lift_limit`]): under a limit, each table and string it makes goes through
/// a protected call of the binding's own, which made `cmsgpack.unpack` and
/// `cjson.decode` of a job's options ~4× slower than Redis's. What it makes is
/// bounded by its input (a decoder's tables and strings by the bytes it reads), and
/// the limit is back before the script's code runs again.
pub(crate) fn raw_fn<F>(lua: &Lua, f: F) -> mlua::Result<Function>
where
    F: Fn(&Lua, MultiValue) -> Result<MultiValue, LibErr> + Send + 'static,
{
    lua.create_function(move |lua, args: MultiValue| {
        let lifted = LimitLifted::new(lua);
        let r = f(lua, args);
        drop(lifted);
        finish(lua, r)
    })
}

/// The Lua heap limit, lifted for as long as this lives (put back when it is
/// dropped, also if the library function panics and mlua turns that into an error).
struct LimitLifted<'a> {
    lua: &'a Lua,
    limit: usize,
}

impl<'a> LimitLifted<'a> {
    fn new(lua: &'a Lua) -> Self {
        let limit = lua.set_memory_limit(0).unwrap_or(0);
        LimitLifted { lua, limit }
    }
}

impl Drop for LimitLifted<'_> {
    fn drop(&mut self) {
        let _ = self.lua.set_memory_limit(self.limit);
    }
}

fn finish(lua: &Lua, r: Result<MultiValue, LibErr>) -> mlua::Result<MultiValue> {
    match r {
        Ok(mut v) => {
            v.push_front(Value::Boolean(true));
            Ok(v)
        }
        Err(LibErr::Msg(m)) => Ok(MultiValue::from_vec(vec![
            Value::Boolean(false),
            Value::String(lua.create_string(m)?),
        ])),
        Err(LibErr::Raise(v)) => Ok(MultiValue::from_vec(vec![Value::Boolean(false), v])),
        Err(LibErr::Lua(e)) => Err(e),
    }
}

pub(crate) fn arg_type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_) | Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(_) => "userdata",
    }
}

/// Lua 5.1's string -> number coercion (decimal via strtod, or hex).
pub(crate) fn str_to_num(s: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(s).ok()?.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(|v| v as f64);
    }
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

pub(crate) fn to_num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        Value::Integer(n) => Some(*n as f64),
        Value::String(s) => str_to_num(&s.as_bytes()),
        _ => None,
    }
}

/// `luaL_checknumber` for argument `i` (1-based).
pub(crate) fn check_num(a: &MultiValue, i: usize, fname: &str) -> Result<f64, LibErr> {
    let v = a.get(i - 1);
    v.and_then(to_num).ok_or_else(|| {
        LibErr::Msg(format!(
            "bad argument #{i} to '{fname}' (number expected, got {})",
            arg_type_name(v)
        ))
    })
}

/// `luaL_checklstring` for argument `i` (numbers are converted).
pub(crate) fn check_bytes(a: &MultiValue, i: usize, fname: &str) -> Result<Vec<u8>, LibErr> {
    let v = a.get(i - 1);
    match v {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(Value::Number(n)) => Ok(lua_number_string(*n).into_bytes()),
        Some(Value::Integer(n)) => Ok(n.to_string().into_bytes()),
        _ => Err(LibErr::Msg(format!(
            "bad argument #{i} to '{fname}' (string expected, got {})",
            arg_type_name(v)
        ))),
    }
}

/// Appends a Lua number as a command argument: integers in decimal, others in the
/// shortest round-trip form.
fn push_number_arg(buf: &mut BytesMut, n: f64) {
    if n.fract() == 0.0 && n.abs() < 9.2e18 {
        buf.extend_from_slice(itoa::Buffer::new().format(n as i64).as_bytes());
    } else {
        buf.extend_from_slice(fractional_arg(n).as_bytes());
    }
}

/// [`push_number_arg`] of a number that is not a 64-bit integer.
fn fractional_arg(n: f64) -> String {
    if n.is_nan() {
        return "nan".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = n.abs();
    if (1e-5..1e21).contains(&a) {
        format!("{n}")
    } else {
        let s = format!("{n:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    }
}

/// Room for a script command's arguments, per argument, before the buffer grows.
const ARG_ROOM: usize = 24;
/// A buffer that grew past this for one command's arguments is not kept for the next.
const ARG_KEEP: usize = 64 << 10;

/// A state's buffers for the arguments of its scripts' commands (redis.call, pcall,
/// acl_check_cmd), kept from call to call and run to run: the arguments are slices
/// of `buf`, as a client's are of its read buffer (what the store keeps, it
/// copies), and once a command's arguments are dropped the next command's reuse
/// the same memory, so a call allocates nothing for them.
#[derive(Default)]
struct ArgScratch {
    buf: BytesMut,
    argv: Vec<Bytes>,
}

impl ArgScratch {
    /// Fills `argv` with a call's arguments, or answers Redis's error line.
    fn fill(&mut self, args: &MultiValue) -> Result<&[Bytes], &'static str> {
        if args.is_empty() {
            return Err("ERR Please specify at least one argument for this redis lib call");
        }
        self.argv.clear();
        // The previous command's arguments are gone: this takes the buffer back.
        self.buf.reserve(args.len() * ARG_ROOM);
        for v in args.iter() {
            match v {
                Value::String(s) => self.buf.extend_from_slice(&s.as_bytes()),
                Value::Number(n) => push_number_arg(&mut self.buf, *n),
                Value::Integer(n) => self
                    .buf
                    .extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
                _ => return Err("ERR Lua redis lib command arguments must be strings or integers"),
            }
            self.argv.push(self.buf.split().freeze());
        }
        Ok(&self.argv)
    }

    /// Drops the arguments after their command ran, and a buffer grown large.
    fn release(&mut self) {
        let large = self.argv.iter().map(Bytes::len).sum::<usize>() > ARG_KEEP;
        self.argv.clear();
        if large {
            self.buf = BytesMut::new();
        }
    }
}

fn raise_err(lua: &Lua, line: &str) -> LibErr {
    match error_table(lua, line) {
        Ok(t) => LibErr::Raise(Value::Table(t)),
        Err(e) => LibErr::Lua(e),
    }
}

/// Redis's PRNG for math.random (`redisLrand48`), shared across runs of one state.
struct Rand48(u64);

impl Rand48 {
    fn next(&mut self) -> u32 {
        self.0 = (self.0.wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB)) & ((1u64 << 48) - 1);
        (self.0 >> 17) as u32
    }
    fn seed(&mut self, s: i32) {
        self.0 = (((s as u32 as u64) << 16) | 0x330E) & ((1u64 << 48) - 1);
    }
}

fn build_redis_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "sha1hex",
        raw_fn(lua, |lua, a| {
            if a.len() != 1 {
                return Err(raise_err(lua, "ERR wrong number of arguments"));
            }
            let s = check_bytes(&a, 1, "sha1hex").unwrap_or_default();
            Ok(MultiValue::from_vec(vec![Value::String(
                lua.create_string(super::sha1_hex(&s))?,
            )]))
        })?,
    )?;
    t.set(
        "error_reply",
        raw_fn(lua, |lua, a| {
            let t = match (a.len(), a.front()) {
                (1, Some(Value::String(s))) => {
                    let s = s.to_string_lossy();
                    let line = s.strip_prefix('-').unwrap_or(&s);
                    error_table(lua, line)?
                }
                _ => error_table(lua, "ERR wrong number or type of arguments")?,
            };
            Ok(MultiValue::from_vec(vec![Value::Table(t)]))
        })?,
    )?;
    t.set(
        "status_reply",
        raw_fn(lua, |lua, a| {
            let t = match (a.len(), a.front()) {
                (1, Some(Value::String(s))) => {
                    let t = lua.create_table()?;
                    t.raw_set("ok", s.clone())?;
                    t
                }
                _ => error_table(lua, "ERR wrong number or type of arguments")?,
            };
            Ok(MultiValue::from_vec(vec![Value::Table(t)]))
        })?,
    )?;
    t.set(
        "log",
        raw_fn(lua, |lua, a| {
            if a.len() < 2 {
                return Err(raise_err(
                    lua,
                    "ERR redis.log() requires two arguments or more.",
                ));
            }
            let Some(level) = a.front().and_then(to_num) else {
                return Err(raise_err(
                    lua,
                    "ERR First argument must be a number (log level).",
                ));
            };
            let level = level as i64;
            if !(0..=3).contains(&level) {
                return Err(raise_err(lua, "ERR Invalid debug level."));
            }
            let mut msg = String::new();
            for (j, v) in a.iter().enumerate().skip(1) {
                let s = match v {
                    Value::String(s) => s.to_string_lossy(),
                    Value::Number(n) => lua_number_string(*n),
                    Value::Integer(n) => n.to_string(),
                    _ => continue,
                };
                if j != 1 {
                    msg.push(' ');
                }
                msg.push_str(&s);
            }
            match level {
                0 | 1 => tracing::debug!(target: "lua", "{msg}"),
                2 => tracing::info!(target: "lua", "{msg}"),
                _ => tracing::warn!(target: "lua", "{msg}"),
            }
            Ok(MultiValue::new())
        })?,
    )?;
    t.set(
        "replicate_commands",
        raw_fn(lua, |_, _| {
            Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
        })?,
    )?;
    t.set(
        "breakpoint",
        raw_fn(lua, |_, _| {
            Ok(MultiValue::from_vec(vec![Value::Boolean(false)]))
        })?,
    )?;
    t.set("debug", raw_fn(lua, |_, _| Ok(MultiValue::new()))?)?;
    for (k, v) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
    ] {
        t.set(k, v)?;
    }
    for (k, v) in [
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
    ] {
        t.set(k, v)?;
    }
    t.set("REDIS_VERSION", REDIS_VERSION)?;
    t.set("REDIS_VERSION_NUM", REDIS_VERSION_NUM)?;
    Ok(t)
}

fn build_math_random(lua: &Lua) -> mlua::Result<(Function, Function)> {
    let state = Arc::new(Mutex::new(Rand48(0x1234_ABCD_330E)));
    let s = state.clone();
    let random = raw_fn(lua, move |_, a| {
        const MAX: u32 = i32::MAX as u32;
        let r = (s.lock().next() % MAX) as f64 / MAX as f64;
        let v = match a.len() {
            0 => r,
            1 => {
                let u = check_num(&a, 1, "random")? as i32;
                if u < 1 {
                    return Err(LibErr::Msg(
                        "bad argument #1 to 'random' (interval is empty)".into(),
                    ));
                }
                (r * u as f64).floor() + 1.0
            }
            2 => {
                let l = check_num(&a, 1, "random")? as i32;
                let u = check_num(&a, 2, "random")? as i32;
                if l > u {
                    return Err(LibErr::Msg(
                        "bad argument #2 to 'random' (interval is empty)".into(),
                    ));
                }
                (r * (u as f64 - l as f64 + 1.0)).floor() + l as f64
            }
            _ => return Err(LibErr::Msg("wrong number of arguments".into())),
        };
        Ok(MultiValue::from_vec(vec![Value::Number(v)]))
    })?;
    let randomseed = raw_fn(lua, move |_, a| {
        let seed = check_num(&a, 1, "randomseed")? as i32;
        state.lock().seed(seed);
        Ok(MultiValue::new())
    })?;
    Ok((random, randomseed))
}

/// The environment's Lua side, run once per state with the state's globals as its
/// environment. Everything it needs is captured in locals first, so no function it
/// creates can reach the real tables through `getfenv`.
const PRELUDE: &str = r#"
local G, api, functions_mode = ...
local rawnext, rawget, rawset, rawequal, type, error, select, unpack, tostring =
      next, rawget, rawset, rawequal, type, error, select, unpack, tostring
local lower, find = string.lower, string.find
local rawsetmt, rawgetmt, rawpcall, rawxpcall, rawloadstring =
      setmetatable, getmetatable, pcall, xpcall, loadstring
local co_resume, co_wrap = coroutine.resume, coroutine.wrap
local killed = api.killed
local RO = 'Attempt to modify a readonly table'

-- ok, ... convention of the Rust functions -> returns or a raised error (level 3:
-- the script's line). One value, the common case, passes through without a table.
local function fin(ok, ...)
  if not ok then error((...), 3) end
  local n = select('#', ...)
  if n == 1 then return 1, (...) end
  return n, {...}
end
local function wrap(raw)
  return function(...)
    local n, r = fin(raw(...))
    if n == 1 then return r end
    return unpack(r, 1, n)
  end
end
local function wraplib(t)
  local out = {}
  for k, v in rawnext, t do
    if type(v) == 'function' then out[k] = wrap(v) else out[k] = v end
  end
  return out
end

-- After SCRIPT KILL (or shutdown) nothing may catch the error for good.
local function check_killed()
  local k = killed()
  if k then error(k, 0) end
end

-- read-only proxies: proxy -> real table
local targets = rawsetmt({}, {__mode = 'k'})
local proxies = rawsetmt({}, {__mode = 'k'})
local metas = {}
local function ro_newindex() error(RO, 2) end
local function protect(t)
  if targets[t] then return t end
  local p = proxies[t]
  if p then return p end
  p = {}
  proxies[t] = p
  targets[p] = t
  for k, v in rawnext, t do
    if type(v) == 'table' then rawset(t, k, protect(v)) end
  end
  rawsetmt(p, {__index = t, __newindex = ro_newindex, __metatable = false})
  return p
end

local function typecheck(v, n, fname)
  if type(v) ~= 'table' then
    local got = (select('#', v) == 0) and 'no value' or type(v)
    error("bad argument #" .. n .. " to '" .. fname .. "' (table expected, got " .. type(v) .. ")", 3)
  end
end

local H = {}
for k, v in rawnext, G do H[k] = v end
for k in rawnext, H do rawset(G, k, nil) end
for _, name in rawnext, {'dofile', 'loadfile', 'print', 'require', 'module', 'package', 'io', 'os', 'debug'} do
  H[name] = nil
end

local function tnext(t, k)
  typecheck(t, 1, 'next')
  local r = targets[t]
  if r then return rawnext(r, k) end
  return rawnext(t, k)
end
H.next = tnext
H.pairs = function(t)
  typecheck(t, 1, 'pairs')
  return tnext, t, nil
end
H.rawget = function(t, k)
  typecheck(t, 1, 'rawget')
  local r = targets[t]
  if r then return rawget(r, k) end
  return rawget(t, k)
end
H.rawset = function(t, k, v)
  typecheck(t, 1, 'rawset')
  if targets[t] then error(RO, 0) end
  return rawset(t, k, v)
end
H.setmetatable = function(t, mt)
  typecheck(t, 1, 'setmetatable')
  if targets[t] then error(RO, 0) end
  return rawsetmt(t, mt)
end
H.getmetatable = function(v)
  if targets[v] then return metas[v] end
  return rawgetmt(v)
end
-- redis.call raises its error from Rust, as a userdata that `unwrap` turns into
-- Redis's error table; everything that catches an error sees the table.
local unwrap = api.unwrap
local function caught(e)
  if type(e) == 'userdata' then return unwrap(e) end
  return e
end
-- Redis 7: an error table raised by redis.call reaches pcall's caller as its text.
local function pcall_fin(ok, ...)
  check_killed()
  if ok then return true, ... end
  local e = caught((...))
  if type(e) == 'table' then
    local m = rawget(e, 'err')
    if type(m) == 'string' or type(m) == 'number' then e = m end
  end
  return false, e
end
H.pcall = function(...) return pcall_fin(rawpcall(...)) end
local function xpcall_fin(...) check_killed() return ... end
H.xpcall = function(f, h)
  if type(h) == 'function' then
    local user = h
    h = function(e) return user(caught(e)) end
  end
  return xpcall_fin(rawxpcall(f, h))
end
local function binary(s) return type(s) == 'string' and s:byte(1) == 27 end
H.loadstring = function(s, name)
  if binary(s) then return nil, 'binary chunks are not allowed' end
  return rawloadstring(s, name)
end
H.load = function(f, name)
  if type(f) ~= 'function' then return H.loadstring(f, name) end
  local parts = {}
  while true do
    local p = f()
    if p == nil or p == '' then break end
    if type(p) ~= 'string' then return nil, 'reader function must return a string' end
    parts[#parts + 1] = p
  end
  return H.loadstring(table.concat(parts), name or '=(load)')
end
local co = {}
for k, v in rawnext, H.coroutine do co[k] = v end
co.resume = function(...)
  local r = {co_resume(...)}
  check_killed()
  if r[1] == false then r[2] = caught(r[2]) end
  return unpack(r)
end
H.coroutine = co

local math = {}
for k, v in rawnext, H.math do math[k] = v end
math.random = wrap(api.random)
math.randomseed = wrap(api.randomseed)
H.math = math

H.cjson = wraplib(api.cjson)
H.cmsgpack = wraplib(api.cmsgpack)
H.bit = wraplib(api.bit)
H.struct = wraplib(api.struct)

local R = wraplib(api.redis)
-- redis.call and redis.pcall are the host's Rust functions themselves: no Lua
-- frame of ours between the script and the command (a tail call
-- `return redis.call(...)` keeps the script's frame, so errors get its line).
-- The others return `ok, value`, raised here.
local function returning(h)
  return function(...)
    local ok, v = h(...)
    if not ok then error(v, 2) end
    return v
  end
end
local function silent(h)
  return function(...)
    local ok, v = h(...)
    if not ok then error(v, 2) end
  end
end
R.call = api.host.call
R.pcall = api.host.pcall
R.acl_check_cmd = returning(api.host.acl)
R.setresp = silent(api.host.setresp)
R.set_repl = silent(api.host.setrepl)
H.redis = R

-- FUNCTION LOAD: a library's top-level code sees only this API (Redis 7.2's
-- "library API"): redis.register_function, redis.log, the log levels and the version.
local registering
local FLAG_NAMES = {'no-writes', 'allow-oom', 'allow-stale', 'no-cluster', 'allow-cross-slot-keys'}
local function reg_fail(msg) error({err = 'ERR ' .. msg}) end
local function isstr(v) local t = type(v) return t == 'string' or t == 'number' end
local function register(...)
  local regs = registering
  if not regs then reg_fail('redis.register_function can only be called on FUNCTION LOAD command') end
  local n = select('#', ...)
  if n < 1 or n > 2 then reg_fail('wrong number of arguments to redis.register_function') end
  local name, desc, cb, flags = nil, nil, nil, {}
  if n == 1 then
    local t = ...
    if type(t) ~= 'table' then
      reg_fail('calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).')
    end
    for k, v in rawnext, t do
      if not isstr(k) then reg_fail('named argument key given to redis.register_function is not a string') end
      local key = lower(tostring(k))
      if key == 'function_name' then
        if not isstr(v) then reg_fail('function_name argument given to redis.register_function must be a string') end
        name = tostring(v)
      elseif key == 'description' then
        if not isstr(v) then reg_fail('description argument given to redis.register_function must be a string') end
        desc = tostring(v)
      elseif key == 'callback' then
        if type(v) ~= 'function' then reg_fail('callback argument given to redis.register_function must be a function') end
        cb = v
      elseif key == 'flags' then
        if type(v) ~= 'table' then
          reg_fail('flags argument to redis.register_function must be a table representing function flags')
        end
        local j = 1
        while true do
          local f = v[j]
          if f == nil then break end
          if not isstr(f) then reg_fail('unknown flag given') end
          local lf, known = lower(tostring(f)), false
          for _, name in rawnext, FLAG_NAMES do
            if name == lf then known = true end
          end
          if not known then reg_fail('unknown flag given') end
          flags[#flags + 1] = lf
          j = j + 1
        end
      else
        reg_fail('unknown argument given to redis.register_function')
      end
    end
    if not name then reg_fail('redis.register_function must get a function name argument') end
    if not cb then reg_fail('redis.register_function must get a callback argument') end
  else
    local a, b = ...
    if not isstr(a) then reg_fail('first argument to redis.register_function must be a string') end
    if type(b) ~= 'function' then reg_fail('second argument to redis.register_function must be a function') end
    name, cb = tostring(a), b
  end
  if #name == 0 or find(name, '[^%w_]') then
    reg_fail('Library names can only contain letters, numbers, or underscores(_) and must be at least one character long')
  end
  local lname = lower(name)
  for _, r in rawnext, regs do
    if lower(r[1]) == lname then reg_fail('Function already exists in the library') end
  end
  regs[#regs + 1] = {name, desc, cb, flags}
end
-- A protected table whose missing fields raise, as Redis's error metatable does.
local function strict(t)
  local p = {}
  targets[p] = t
  rawsetmt(p, {
    __index = function(_, k)
      local v = rawget(t, k)
      if v == nil then
        error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
      end
      return v
    end,
    __newindex = ro_newindex,
    __metatable = false,
  })
  return p
end
local LR = {register_function = register, log = R.log,
            REDIS_VERSION = R.REDIS_VERSION, REDIS_VERSION_NUM = R.REDIS_VERSION_NUM}
for _, k in rawnext, {'LOG_DEBUG', 'LOG_VERBOSE', 'LOG_NOTICE', 'LOG_WARNING'} do LR[k] = R[k] end
local L = {redis = strict(LR)}

H._G = G
for k, v in rawnext, H do
  if type(v) == 'table' and v ~= G then H[k] = protect(v) end
end
-- strings' metatable: its __index is the (protected) string library
local smt = rawgetmt('')
smt.__index = H.string
smt.__metatable = protect(smt)

-- Global lookups go to H, or to the library API while FUNCTION LOAD runs a library,
-- through __index tables (resolved by the VM itself, no Lua call per lookup); a
-- name missing there raises.
local function missing(_, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end
rawsetmt(H, {__index = missing})
rawsetmt(L, {__index = missing})
local gmt = {__index = H, __newindex = ro_newindex, __metatable = false}
if functions_mode then
  -- As Redis's function engine: the globals' metatable leads to the (read-only)
  -- default globals.
  local hp = {}
  targets[hp] = H
  rawsetmt(hp, {__index = H, __newindex = ro_newindex, __metatable = false})
  metas[G] = protect({__index = hp})
else
  metas[G] = protect({__index = missing})
end
targets[G] = H
rawsetmt(G, gmt)

-- Which field gives a returned table a meaning of its own, checked in Redis's
-- order with the type each needs (0: none, a plain array); the host converts the
-- table by it. Read here, by the VM, rather than by seven lookups through the host.
-- Fields are read raw, as Redis reads them: a table without a metatable by plain
-- indexing, and `type` (which interns its answer each call) only for a field that
-- is there.
local function shape(t)
  local err, ok, double, big, verbatim, map, set
  if rawgetmt(t) == nil then
    err, ok, double, big, verbatim, map, set =
      t.err, t.ok, t.double, t.big_number, t.verbatim_string, t.map, t.set
  else
    err, ok, double, big, verbatim, map, set =
      rawget(t, 'err'), rawget(t, 'ok'), rawget(t, 'double'), rawget(t, 'big_number'),
      rawget(t, 'verbatim_string'), rawget(t, 'map'), rawget(t, 'set')
  end
  if err ~= nil and type(err) == 'string' then return 1 end
  if ok ~= nil and type(ok) == 'string' then return 2 end
  if double ~= nil and type(double) == 'number' then return 3 end
  if big ~= nil and type(big) == 'string' then return 4 end
  if verbatim ~= nil and type(verbatim) == 'table'
      and type(rawget(verbatim, 'format')) == 'string'
      and type(rawget(verbatim, 'string')) == 'string' then
    return 5
  end
  if map ~= nil and type(map) == 'table' then return 6 end
  if set ~= nil and type(set) == 'table' then return 7 end
  return 0
end

local control = {}
control.shape = shape
-- Compiled EVAL scripts by SHA, kept here rather than as references held by the
-- host (the host's reference slots are bounded: ~8000 in Lua 5.1).
local scripts = {}
control.store = function(sha, f) scripts[sha] = f end
-- A run's outcome for the host: ok, the first value, and the shape of a
-- returned table (see `shape`; 0 for anything else), found here by the VM so
-- that the host needs no call back into Lua for it.
local function outcome(ok, v)
  if ok and type(v) == 'table' then return ok, v, shape(v) end
  return ok, v, 0
end
control.runner = function(sha, h, keys, argv)
  H.KEYS = keys
  H.ARGV = argv
  return outcome(rawxpcall(scripts[sha], h))
end
-- Functions take KEYS and ARGV as their arguments, not as globals.
control.runner_fn = function(f, h, keys, argv)
  return outcome(rawxpcall(function() return f(keys, argv) end, h))
end
-- Runs a library's top-level code with the library API; returns ok, error and
-- the functions it registered.
control.load = function(f)
  registering = {}
  gmt.__index = L
  local ok, e = rawpcall(f)
  gmt.__index = H
  local regs = registering
  registering = nil
  return ok, e, regs
end
return control
"#;

/// Per-state data shared with the hook and the error handler.
#[derive(Default)]
struct Shared {
    /// The error line a run was interrupted with, once the host asked for it.
    killed: Mutex<Option<String>>,
    /// The running script's host and protocol, between `execute`'s start and end.
    /// The host functions the state was built with reach it here, so no function
    /// is made per run.
    slot: Mutex<Option<RunSlot>>,
    /// While FUNCTION LOAD runs a library's code: when it must have finished.
    load_deadline: Mutex<Option<Instant>>,
}

/// What the host functions work with during a run.
struct RunSlot {
    /// The state's argument buffers (see [`ArgScratch`]), lent for the run.
    args: ArgScratch,
    host: Box<dyn ScriptHost>,
    /// The protocol the script chose (`redis.setresp`) for its commands' replies.
    resp: Protocol,
}

struct State {
    lua: Lua,
    store: Function,
    reply_fields: convert::ReplyFields,
    runner: Function,
    runner_fn: Function,
    load: Function,
    handler: Function,
    shared: Arc<Shared>,
}

fn new_state(memory_limit: usize, functions_mode: bool) -> mlua::Result<State> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::new(),
    )?;
    let shared = Arc::new(Shared::default());
    let api = lua.create_table()?;
    api.set("redis", build_redis_table(&lua)?)?;
    api.set("cjson", cjson::build(&lua)?)?;
    api.set("cmsgpack", cmsgpack::build(&lua)?)?;
    api.set("bit", bit::build(&lua)?)?;
    api.set("struct", structlib::build(&lua)?)?;
    let (random, randomseed) = build_math_random(&lua)?;
    api.set("random", random)?;
    api.set("randomseed", randomseed)?;
    let sh = shared.clone();
    api.set(
        "killed",
        lua.create_function(move |lua, ()| match sh.killed.lock().as_deref() {
            Some(line) => Ok(Value::Table(error_table(lua, line)?)),
            None => Ok(Value::Nil),
        })?,
    )?;
    // redis.call & co. (see `PRELUDE`): made once, they find the running script's
    // host in the shared slot. call and pcall answer with the reply itself and
    // raise their errors (a `CallError`); the others return `ok, value`.
    let host = lua.create_table()?;
    for (name, raise) in [("call", true), ("pcall", false)] {
        let sh = shared.clone();
        let f = lua.create_function(move |lua, a: MultiValue| {
            with_run(&sh, lua, |run| call_command(lua, a, run, raise))
                .unwrap_or_else(|m| Err(CallError::raise(&format!("ERR {m}"), false)))
        })?;
        host.set(name, f)?;
    }
    for (name, op) in [
        ("acl", OP_ACL),
        ("setresp", OP_SETRESP),
        ("setrepl", OP_SETREPL),
    ] {
        let sh = shared.clone();
        let f = lua.create_function(move |lua, a: MultiValue| {
            with_run(&sh, lua, |run| host_op(lua, op, a, run))
                .unwrap_or_else(|m| finish(lua, Err(LibErr::Msg(m.into()))))
        })?;
        host.set(name, f)?;
    }
    let unwrap = lua.create_function(|lua, e: Value| match &e {
        Value::Error(err) => match CallError::find(err) {
            Some(c) => Ok(Value::Table(c.table(lua)?)),
            None => Ok(e),
        },
        _ => Ok(e),
    })?;
    // mlua keeps a spare error slot for its Rust functions; the first call of any
    // of them makes it, and making it needs stack room that a call with nearly
    // 8000 arguments (`redis.call('lpush', k, unpack(t))`) does not leave.
    unwrap.call::<Value>(Value::Nil)?;
    api.set("unwrap", unwrap)?;
    api.set("host", host)?;
    let control: Table = lua
        .load(PRELUDE)
        .set_name(INTERNAL)
        .set_mode(ChunkMode::Text)
        .call((lua.globals(), api, functions_mode))?;

    // The error handler: Redis's __redis__err__handler, giving the error the position
    // of the script frame that raised it.
    let sh = shared.clone();
    let handler = lua.create_function(move |lua, err: Value| {
        let t = match err {
            Value::Table(t) => t,
            Value::Error(e) => match (CallError::find(&e), sh.killed.lock().as_deref()) {
                (Some(c), _) => c.table(lua)?,
                (None, Some(line)) => error_table(lua, line)?,
                (None, None) => error_table(lua, &format!("ERR {}", root_cause(&e)))?,
            },
            other => {
                let s = match &other {
                    Value::String(s) => s.to_string_lossy(),
                    Value::Number(n) => lua_number_string(*n),
                    Value::Nil => "nil".into(),
                    Value::Boolean(b) => b.to_string(),
                    v => v.to_string().unwrap_or_else(|_| "?".into()),
                };
                let t = lua.create_table()?;
                t.raw_set("err", format!("ERR {s}"))?;
                t
            }
        };
        let mut level = 1;
        while let Some((what, source, line)) = lua.inspect_stack(level, |d| {
            let s = d.source();
            (
                s.what.to_string(),
                s.source.map(|x| x.into_owned()),
                d.current_line(),
            )
        }) {
            level += 1;
            if what == "C" || source.as_deref() == Some(INTERNAL) {
                continue;
            }
            if let Some(src) = source {
                t.raw_set("source", src)?;
            }
            if let Some(line) = line {
                t.raw_set("line", line)?;
            }
            break;
        }
        Ok(t)
    })?;

    let sh = shared.clone();
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS),
        move |lua, _| {
            if let Some(line) = sh.killed.lock().clone() {
                return Err(mlua::Error::RuntimeError(line));
            }
            let _ = lua;
            if let Some(line) = poll_interrupt(&sh) {
                *sh.killed.lock() = Some(line.clone());
                return Err(mlua::Error::RuntimeError(line));
            }
            Ok(VmState::Continue)
        },
    )?;
    lua.set_memory_limit(memory_limit)?;
    // Building the environment leaves garbage (the prelude's copies of the libraries).
    lua.gc_collect()?;
    Ok(State {
        store: control.get("store")?,
        reply_fields: convert::ReplyFields::new(&lua, control.get("shape")?)?,
        runner: control.get("runner")?,
        runner_fn: control.get("runner_fn")?,
        load: control.get("load")?,
        handler,
        lua,
        shared,
    })
}

/// One sandboxed Lua 5.1 state with Redis 7.2's globals, and the scripts compiled in it.
pub struct LuaEnv {
    state: State,
    /// SHAs of the compiled scripts (the functions themselves live in the state).
    scripts: HashSet<String, ahash::RandomState>,
    memory_limit: usize,
    /// The state runs Redis Functions (library API at load, KEYS/ARGV as arguments)
    /// rather than EVAL scripts.
    functions_mode: bool,
    /// The last run's error reply came from a command `redis.call` / `pcall` ran
    /// (or refused), which was already counted in the error stats.
    error_counted: bool,
    /// Runs since the last periodic collection ([`GC_PERIOD`]).
    runs_since_gc: u32,
    /// The argument buffers, between runs (see [`ArgScratch`]).
    args: ArgScratch,
}

/// A function a library registered with `redis.register_function` while it loaded.
pub struct Registered {
    pub name: String,
    pub description: Option<Bytes>,
    /// Flag names as given (lowercase, validated).
    pub flags: Vec<String>,
    pub callback: Function,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.name)
            .field("flags", &self.flags)
            .finish()
    }
}

/// What a run executes: an EVAL script (KEYS/ARGV as globals; found by its SHA
/// in the state) or a registered function (KEYS/ARGV as its two arguments).
enum Target<'a> {
    Script,
    Function(&'a Function),
}

impl Default for LuaEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LuaEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaEnv")
            .field("scripts", &self.scripts.len())
            .finish()
    }
}

/// The host functions' operations (see `PRELUDE`).
const OP_ACL: i64 = 3;
const OP_SETRESP: i64 = 4;
const OP_SETREPL: i64 = 5;

impl LuaEnv {
    /// A fresh sandboxed state for EVAL scripts with the default memory limit.
    pub fn new() -> LuaEnv {
        Self::build(DEFAULT_MEMORY_LIMIT, false)
    }

    /// A fresh sandboxed state for Redis Functions (FUNCTION LOAD / FCALL).
    pub fn for_functions() -> LuaEnv {
        Self::build(DEFAULT_MEMORY_LIMIT, true)
    }

    /// A fresh sandboxed EVAL state whose Lua heap may not exceed `bytes` (0: no limit).
    pub fn with_memory_limit(bytes: usize) -> LuaEnv {
        Self::build(bytes, false)
    }

    fn build(bytes: usize, functions_mode: bool) -> LuaEnv {
        // Building the state runs only our own code; failing here is a bug.
        let state = new_state(bytes, functions_mode).expect("building the Lua environment");
        LuaEnv {
            state,
            scripts: HashSet::default(),
            memory_limit: bytes,
            functions_mode,
            error_counted: false,
            runs_since_gc: 0,
            args: ArgScratch::default(),
        }
    }

    /// Changes the Lua heap limit (0: none). Takes effect at once and survives `flush`.
    pub fn set_memory_limit(&mut self, bytes: usize) {
        self.memory_limit = bytes;
        let _ = self.state.lua.set_memory_limit(bytes);
    }

    /// Compiles `body` and keeps it under `sha`. A `#!` shebang line is checked
    /// (its errors come first) and left out, keeping its line feed so that line
    /// numbers stay the user's. Errors are full error lines as Redis replies them.
    pub fn compile(&mut self, sha: &str, body: &[u8]) -> Result<(), String> {
        let sha = sha.to_ascii_lowercase();
        if self.scripts.contains(&sha) {
            return Ok(());
        }
        parse_shebang(body)?;
        let code = if body.starts_with(b"#!") {
            let nl = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            &body[nl..]
        } else {
            body
        };
        let f = self
            .compile_chunk(code, "@user_script")
            .map_err(|msg| format!("ERR Error compiling script (new function): {msg}"))?;
        self.state
            .store
            .call::<()>((sha.as_str(), f))
            .map_err(|e| format!("ERR Error compiling script (new function): {e}"))?;
        self.scripts.insert(sha);
        Ok(())
    }

    /// Compiles Lua source text (never a binary chunk) into a function; the error is
    /// Lua's message on one line.
    fn compile_chunk(&self, code: &[u8], name: &str) -> Result<Function, String> {
        if code.first() == Some(&27) {
            return Err(format!(
                "{}: bad binary format (binary chunks are not allowed)",
                name.trim_start_matches('@')
            ));
        }
        self.state
            .lua
            .load(code)
            .set_name(name)
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| {
                let msg = match &e {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    mlua::Error::MemoryError(m) => m.clone(),
                    other => other.to_string(),
                };
                msg.replace(['\r', '\n'], " ")
            })
    }

    /// FUNCTION LOAD: compiles a library's code (its shebang line already removed,
    /// its line feed kept) and runs it with the library API, collecting the
    /// functions it registers. `timeout_ms` bounds the run (0: none). Errors are
    /// Redis's messages without the `ERR ` of the reply.
    pub fn load_library(
        &mut self,
        code: &[u8],
        timeout_ms: u64,
    ) -> Result<Vec<Registered>, String> {
        let f = self
            .compile_chunk(code, "@user_function")
            .map_err(|msg| format!("Error compiling function: {msg}"))?;
        let st = &self.state;
        *st.shared.killed.lock() = None;
        *st.shared.load_deadline.lock() =
            (timeout_ms > 0).then(|| Instant::now() + std::time::Duration::from_millis(timeout_ms));
        let result = (|| -> mlua::Result<Result<Vec<Registered>, String>> {
            let (ok, err, regs): (bool, Value, Value) = st.load.call(f)?;
            if !ok {
                let msg = match err {
                    Value::String(s) => format!("ERR {}", s.to_string_lossy()),
                    Value::Table(t) => t
                        .raw_get::<Option<String>>("err")
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "ERR unknown error".into()),
                    other => match st.shared.killed.lock().clone() {
                        Some(line) => line,
                        None => format!(
                            "ERR {}",
                            other.to_string().unwrap_or_else(|_| "unknown error".into())
                        ),
                    },
                };
                return Ok(Err(format!(
                    "Error registering functions: {}",
                    msg.replace(['\r', '\n'], " ")
                )));
            }
            let Value::Table(regs) = regs else {
                return Ok(Err("Error registering functions".into()));
            };
            let mut out = Vec::new();
            for entry in regs.sequence_values::<Table>() {
                let entry = entry?;
                let name: String = entry.raw_get(1)?;
                let description: Option<mlua::LuaString> = entry.raw_get(2)?;
                let callback: Function = entry.raw_get(3)?;
                let flags: Table = entry.raw_get(4)?;
                out.push(Registered {
                    name,
                    description: description.map(|d| Bytes::copy_from_slice(&d.as_bytes())),
                    flags: flags
                        .sequence_values::<String>()
                        .collect::<mlua::Result<_>>()?,
                    callback,
                });
            }
            Ok(Ok(out))
        })();
        *st.shared.load_deadline.lock() = None;
        *st.shared.killed.lock() = None;
        match result {
            Ok(r) => r,
            Err(e) => Err(format!(
                "Error registering functions: ERR {}",
                first_line(&e.to_string())
            )),
        }
    }

    pub fn contains(&self, sha: &str) -> bool {
        if sha.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.scripts.contains(&sha.to_ascii_lowercase());
        }
        self.scripts.contains(sha)
    }

    /// SCRIPT FLUSH / FUNCTION FLUSH: forgets everything and starts a fresh state.
    pub fn flush(&mut self) {
        self.scripts.clear();
        *self = Self::build(self.memory_limit, self.functions_mode);
    }

    /// Number of cached scripts (`number_of_cached_scripts`).
    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    /// Whether the last run's error reply was a command's error that the host
    /// already counted (Redis's `ignore_error_stats_update`): the caller must not
    /// count it again as the script's own error.
    pub fn error_counted(&self) -> bool {
        self.error_counted
    }

    /// Bytes the Lua heap uses (`used_memory_lua`).
    pub fn memory_used(&self) -> usize {
        self.state.lua.used_memory()
    }

    /// Runs a compiled script with KEYS/ARGV on `host`, which the run owns and
    /// hands back. The script starts in RESP2, as in Redis (the caller's protocol
    /// only matters to the reply's encoder). Returns the script's result as a reply;
    /// errors are `Reply::Error` lines in Redis 7's format.
    pub fn run<H: ScriptHost>(
        &mut self,
        sha: &str,
        keys: &[Bytes],
        args: &[Bytes],
        host: H,
    ) -> (Reply, H) {
        let sha = sha.to_ascii_lowercase();
        if !self.scripts.contains(&sha) {
            return (
                Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into()),
                host,
            );
        }
        self.execute(Target::Script, &sha, keys, args, host)
    }

    /// Runs a registered function (FCALL): `keys` and `args` are its two arguments;
    /// errors name it as `name`.
    pub fn call_function<H: ScriptHost>(
        &mut self,
        callback: &Function,
        name: &str,
        keys: &[Bytes],
        args: &[Bytes],
        host: H,
    ) -> (Reply, H) {
        self.execute(Target::Function(callback), name, keys, args, host)
    }

    fn execute<H: ScriptHost>(
        &mut self,
        target: Target,
        label: &str,
        keys: &[Bytes],
        args: &[Bytes],
        mut host: H,
    ) -> (Reply, H) {
        let st = &self.state;
        *st.shared.killed.lock() = None;
        self.error_counted = false;
        host.set_resp(Protocol::Resp2);
        *st.shared.slot.lock() = Some(RunSlot {
            args: std::mem::take(&mut self.args),
            host: Box::new(host),
            resp: Protocol::Resp2,
        });
        let limit = self.memory_limit;
        lift_limit(&st.lua);
        let result = (|| -> mlua::Result<(Reply, bool)> {
            let lua = &st.lua;
            let keys_t = lua.create_sequence_from(keys.iter().map(|k| convert::text(k)))?;
            let args_t = lua.create_sequence_from(args.iter().map(|a| convert::text(a)))?;
            // Made now, as the tables are: once the limit is back, mlua would make
            // it through a protected call of its own.
            let label_s = lua.create_string(label)?;
            // The script's own code runs under the memory limit.
            apply_limit(lua, limit);
            let out = match target {
                Target::Script => {
                    st.runner
                        .call::<(bool, Value, u8)>((&label_s, &st.handler, keys_t, args_t))
                }
                Target::Function(f) => {
                    st.runner_fn
                        .call::<(bool, Value, u8)>((f, &st.handler, keys_t, args_t))
                }
            };
            lift_limit(lua);
            let (ok, v, shape) = out?;
            let resp = st
                .shared
                .slot
                .lock()
                .as_ref()
                .map_or(Protocol::Resp2, |r| r.resp);
            // An error reply (raised, or an error table returned) that came from a
            // command was counted when the command failed.
            let counted = (!ok || shape == convert::ERR) && convert::stats_counted(&v);
            Ok(if ok {
                (
                    convert::lua_to_reply(&v, shape, resp, &st.reply_fields),
                    counted,
                )
            } else {
                (error_reply(&v, label), counted)
            })
        })();
        apply_limit(&st.lua, limit);
        let run = st
            .shared
            .slot
            .lock()
            .take()
            .expect("the run's host stays in its slot");
        self.args = run.args;
        let host: Box<dyn std::any::Any> = run.host;
        let host = *host
            .downcast::<H>()
            .unwrap_or_else(|_| unreachable!("the slot holds the host this run put there"));
        let (reply, counted) = result.unwrap_or_else(|e| {
            let msg = match &e {
                mlua::Error::MemoryError(m) => m.clone(),
                other => other.to_string(),
            };
            (
                Reply::Error(format!(
                    "ERR Error running script {label}, {}",
                    first_line(&msg)
                )),
                false,
            )
        });
        self.runs_since_gc += 1;
        if reply.is_error() {
            self.error_counted = counted;
        }
        if reply.is_error() {
            self.runs_since_gc = 0;
            let _ = st.lua.gc_collect();
        } else if self.runs_since_gc >= GC_PERIOD {
            self.runs_since_gc = 0;
            collect_cycle(&st.lua);
        }
        (reply, host)
    }
}

/// Steps of the incremental collector one periodic collection may take before it
/// falls back to a full collection (a step is a few KB of work; a heap that needs
/// more is one a script left large, rare enough for the full one).
const MAX_GC_STEPS: usize = 1024;

/// Ends the collector's current cycle, or runs one whole cycle from the start: one
/// mark and one sweep of the heap. Lua 5.1's full collection (`gc_collect`) first
/// sweeps every object back to white and then runs a whole cycle, touching the
/// ~70 KB environment twice: it cost ~6 % of a short script's run.
fn collect_cycle(lua: &Lua) {
    for _ in 0..MAX_GC_STEPS {
        match lua.gc_step() {
            Ok(false) => {}
            Ok(true) | Err(_) => return,
        }
    }
    let _ = lua.gc_collect();
}

/// What stops a running script or library load, polled from the instruction hook.
fn poll_interrupt(sh: &Shared) -> Option<String> {
    if let Some(deadline) = *sh.load_deadline.lock() {
        return (Instant::now() > deadline).then(|| "ERR FUNCTION LOAD timeout".to_string());
    }
    let mut slot = sh.slot.try_lock()?;
    slot.as_mut()?.host.interrupt()
}

/// Runs `f` on the running script's slot with mlua's memory guards lifted (see
/// `lift_limit`; the limit in force before is put back); the error message when no
/// script runs or the slot is taken.
fn with_run<R>(
    sh: &Shared,
    lua: &Lua,
    f: impl FnOnce(&mut RunSlot) -> R,
) -> Result<R, &'static str> {
    let _lifted = LimitLifted::new(lua);
    match sh.slot.try_lock() {
        Some(mut slot) => match slot.as_mut() {
            Some(run) => Ok(f(run)),
            None => Err("the redis API is only available while a script runs"),
        },
        None => Err("redis.call re-entered"),
    }
}

/// The message of the error a Rust function raised, without the traceback mlua
/// adds to it (a reply is one line).
fn root_cause(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_cause(cause),
        other => other.to_string(),
    }
}

/// One call of redis.acl_check_cmd, redis.setresp or redis.set_repl.
fn host_op(lua: &Lua, op: i64, args: MultiValue, run: &mut RunSlot) -> mlua::Result<MultiValue> {
    let r = match op {
        OP_ACL => acl_check(lua, args, run),
        OP_SETRESP => set_resp(lua, args, run),
        OP_SETREPL => set_repl(lua, args, run),
        _ => Err(LibErr::Msg("unknown host operation".into())),
    };
    finish(lua, r)
}

/// The error redis.call raises: a Rust error (Lua sees a userdata) that the
/// prelude's `unwrap` and the error handler turn into Redis's `{err=...}` table.
/// Raised from Rust so that no Lua frame of ours sits between the script and the
/// command.
#[derive(Debug)]
pub(crate) struct CallError {
    line: String,
    /// The command's own error reply, already counted in the error stats.
    counted: bool,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

impl std::error::Error for CallError {}

impl CallError {
    fn raise(line: &str, counted: bool) -> mlua::Error {
        mlua::Error::external(CallError {
            line: line.to_string(),
            counted,
        })
    }

    /// The `CallError` an mlua error carries, if any.
    fn find(e: &mlua::Error) -> Option<&CallError> {
        match e {
            mlua::Error::CallbackError { cause, .. } => Self::find(cause),
            mlua::Error::ExternalError(x) => x.downcast_ref::<CallError>(),
            _ => None,
        }
    }

    fn table(&self, lua: &Lua) -> mlua::Result<Table> {
        let t = error_table(lua, &self.line)?;
        if self.counted {
            t.raw_set("ignore_error_stats_update", true)?;
        }
        Ok(t)
    }
}

/// redis.call (`raise`) and redis.pcall: the command's reply as a Lua value, or
/// the raised `CallError`.
fn call_command(lua: &Lua, a: MultiValue, run: &mut RunSlot, raise: bool) -> mlua::Result<Value> {
    let argv = match run.args.fill(&a) {
        Ok(v) => v,
        Err(line) if raise => return Err(CallError::raise(line, false)),
        Err(line) => return Ok(Value::Table(error_table(lua, line)?)),
    };
    drop(a);
    let reply = run.host.call(argv);
    run.args.release();
    if raise {
        if let Reply::Error(line) = &reply {
            return Err(CallError::raise(line, true));
        }
    }
    convert::reply_for_lua(lua, &reply, run.resp)
}

fn acl_check(lua: &Lua, a: MultiValue, run: &mut RunSlot) -> Result<MultiValue, LibErr> {
    let argv = run.args.fill(&a).map_err(|line| raise_err(lua, line))?;
    let allowed = run.host.acl_check(argv);
    run.args.release();
    match allowed {
        Ok(b) => Ok(MultiValue::from_vec(vec![Value::Boolean(b)])),
        Err(line) => Err(raise_err(lua, &line)),
    }
}

fn set_resp(lua: &Lua, a: MultiValue, run: &mut RunSlot) -> Result<MultiValue, LibErr> {
    if a.len() != 1 {
        return Err(raise_err(lua, "ERR redis.setresp() requires one argument."));
    }
    let p = match a.front().and_then(to_num).map(|n| n as i64) {
        Some(2) => Protocol::Resp2,
        Some(3) => Protocol::Resp3,
        _ => return Err(raise_err(lua, "ERR RESP version must be 2 or 3.")),
    };
    run.resp = p;
    run.host.set_resp(p);
    Ok(MultiValue::new())
}

fn set_repl(lua: &Lua, a: MultiValue, run: &mut RunSlot) -> Result<MultiValue, LibErr> {
    if a.len() != 1 {
        return Err(raise_err(
            lua,
            "ERR redis.set_repl() requires one argument.",
        ));
    }
    let flags = a.front().and_then(to_num).unwrap_or(0.0) as i64;
    if flags & !3 != 0 {
        return Err(raise_err(
            lua,
            "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
        ));
    }
    run.host.set_repl(flags as u8);
    Ok(MultiValue::new())
}

/// mlua guards every API call against Lua memory errors while a memory limit is
/// set (a protected call, with a new C closure, per table read or string made),
/// which costs more than the commands a script runs. The limit has to hold while
/// the script's own Lua code runs; the host's work between (arguments, replies)
/// is bounded by the data it converts, so it runs with the limit lifted.
fn lift_limit(lua: &Lua) {
    let _ = lua.set_memory_limit(0);
}

fn apply_limit(lua: &Lua, limit: usize) {
    let _ = lua.set_memory_limit(limit);
}

fn first_line(s: &str) -> String {
    let s: String = s.lines().next().unwrap_or("").chars().take(100).collect();
    s.trim_end().to_string()
}

/// The reply for a script that raised `err` (Redis's luaCallFunction error path).
fn error_reply(err: &Value, sha: &str) -> Reply {
    match err {
        Value::Table(t) => {
            let (msg, source, line) = convert::error_info(t);
            let msg = msg.unwrap_or_default();
            let mut out = msg;
            if let (Some(source), Some(line)) = (source, line) {
                out.push_str(&format!(" script: {sha}, on {source}:{line}."));
            }
            Reply::Error(out.replace(['\r', '\n'], " "))
        }
        other => {
            let msg = match other {
                Value::String(s) => s.to_string_lossy(),
                _ => "execution failure".into(),
            };
            Reply::Error(format!(
                "ERR Error running script {sha}, {}",
                first_line(&msg)
            ))
        }
    }
}
