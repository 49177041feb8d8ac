--[[
  admit: count a new session against maxSessions and enter it in the sessions
  index, atomically (so concurrent opens never overshoot the limit). Runs
  before create; the index counts open and closing sessions (and, until the
  next sweep drops them, sessions whose keys expired unswept).

  KEYS[1] sessions index (ZSET sid -> when to look again, ms)

  ARGV[1] sid   ARGV[2] maxSessions   ARGV[3] idle timeout, ms

  Returns 2 (admitted and indexed now) | 1 (already indexed) | 0 (the limit is reached)
]]
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]) + 1, ARGV[1])
return 2
