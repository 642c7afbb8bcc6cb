#!lua
-- A BullMQ-like moveToActive for bench/scripting.sh (see its header): job keys are
-- built from a prefix inside the script, not declared in KEYS, as BullMQ's are.
-- KEYS: wait, active, prioritized, events stream, meta
-- ARGV: job key prefix, lock token, lock duration (ms), now (ms)
local wait, active, prioritized, events, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, token, lockMs, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local m = redis.call("HMGET", meta, "paused", "concurrency")
if m[1] then return {0, 0} end
local id = redis.call("RPOPLPUSH", wait, active)
if not id then return {0, 0} end
local job = prefix .. id
redis.call("SET", job .. ":lock", token, "PX", lockMs)
redis.call("ZREM", prioritized, id)
redis.call("XADD", events, "MAXLEN", "~", 10000, "*", "event", "active", "jobId", id, "prev", "waiting")
redis.call("HSET", job, "processedOn", now)
redis.call("HINCRBY", job, "ats", 1)
local fields = redis.call("HGETALL", job)
-- benchmark only: the job goes back to wait so the queue never runs dry
redis.call("LPOP", active)
redis.call("LPUSH", wait, id)
redis.call("ZADD", prioritized, now, id)
return {fields, id}
