#!lua
-- KEYS: counter of this window, counter of the previous one, [dynamic limit]
-- ARGV: limit, now (ms), window (ms), increment
local cur, prev, limitKey = KEYS[1], KEYS[2], KEYS[3]
local limit = tonumber(ARGV[1])
local now, window = ARGV[2], ARGV[3]
local inc = tonumber(ARGV[4])
if limitKey and limitKey ~= "" then
  local dyn = redis.call("GET", limitKey)
  if dyn then limit = tonumber(dyn) end
end
local inCur = redis.call("GET", cur) or 0
local inPrev = redis.call("GET", prev) or 0
-- the previous window counts in proportion to how much of it still overlaps
local elapsed = (now % window) / window
inPrev = math.floor((1 - elapsed) * inPrev)
if inc > 0 and inPrev + inCur >= limit then
  return {-1, limit}
end
local n = redis.call("INCRBY", cur, inc)
if n == inc then
  redis.call("PEXPIRE", cur, window * 2 + 1000)
end
return {limit - (n + inPrev), limit}
