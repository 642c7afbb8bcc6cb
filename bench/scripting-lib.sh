# Sourced by bench/scripting.sh and bench/instructions.sh: the scripting benchmark's
# scripts (bench/lua/), starting data and EVALSHA arguments, the same for both
# servers.
#  ratelimit     bench/lua/sliding-window.lua, @upstash/ratelimit's sliding window
#  move-active   bench/lua/move-active.lua, a BullMQ-like moveToActive on one queue
# Env: JOBS (move-active's queue length, default 1000).
JOBS="${JOBS:-1000}"
NOW=1765000030000 # fixed "now" (ms): half way through a 60 s window

scripting_file() { # test -> its script
  case $1 in
    ratelimit) echo bench/lua/sliding-window.lua;;
    move-active) echo bench/lua/move-active.lua;;
    *) echo "unknown test $1" >&2; return 1;;
  esac
}
scripting_load() { # port test -> sha
  redis-cli -p "$1" -x SCRIPT LOAD < "$(scripting_file "$2")"
}
scripting_prepare() { # port test: the same starting data every time
  redis-cli -p "$1" FLUSHALL >/dev/null
  if [ "$2" = move-active ]; then
    awk -v n="$JOBS" -v now="$NOW" 'BEGIN {
      for (i = 1; i <= n; i++) {
        printf "HSET bull:q:%d name send-email data \047{\"to\":\"user%d@example.com\",\"subject\":\"Welcome\",\"body\":\"Hello there\"}\047 opts \047{\"attempts\":3,\"backoff\":1000}\047 timestamp %s delay 0 priority 0\n", i, i, now
        printf "LPUSH bull:q:wait %d\n", i
        printf "ZADD bull:q:prioritized %s %d\n", now, i
      }
      for (i = 1; i <= 10; i++) printf "LPUSH bull:q:active stalled-%d\n", i
      print "HSET bull:q:meta opts.maxLenEvents 10000"
    }' | redis-cli -p "$1" >/dev/null
  fi
}
scripting_args() { # test -> EVALSHA arguments after the SHA
  case $1 in
    ratelimit) echo "2 rl:__rand_int__:29416667 rl:__rand_int__:29416666 1000000000 $NOW 60000 1";;
    move-active) echo "5 bull:q:wait bull:q:active bull:q:prioritized bull:q:events bull:q:meta bull:q: tok-__rand_int__ 30000 $NOW";;
  esac
}
