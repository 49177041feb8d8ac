--[[
  admit: count a new session against maxSessions and enter it in the sessions
  index, atomically (so concurrent opens never overshoot the limit). Runs
  before create; the index counts open and closing sessions (and, until the
  next sweep drops them, sessions whose keys expired unswept).

  Also bounds the tombstones: the tombstone index loses the entries whose
  keys have expired, then, while it holds more than maxSessions, its oldest
  (the soonest to expire; at most 1000 per call), which the caller deletes.

  KEYS[1] sessions index (ZSET sid -> when to look again, ms)
  KEYS[2] tombstone index (ZSET sid -> when its keys expire, ms)

  ARGV[1] sid   ARGV[2] maxSessions   ARGV[3] idle timeout, ms

  Returns {admitted, sid, sid, ...}: admitted 2 (admitted and indexed now) |
  1 (already indexed) | 0 (the limit is reached), then the tombstones to delete
]]
-- @include time
local max = tonumber(ARGV[2])
local now = nowMs()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local result = {0}
local over = redis.call('ZCARD', KEYS[2]) - max
if over > 0 then
  local evicted = redis.call('ZRANGE', KEYS[2], 0, math.min(over, 1000) - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #evicted - 1)
  for i = 1, #evicted do
    result[#result + 1] = evicted[i]
  end
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  result[1] = 1
elseif redis.call('ZCARD', KEYS[1]) < max then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]) + 1, ARGV[1])
  result[1] = 2
end
return result
