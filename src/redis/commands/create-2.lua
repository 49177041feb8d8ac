--[[
  create: a new open session with its user, state and initial server messages.

  KEYS[1] s    session record (HASH)
  KEYS[2] out  server log (LIST)

  ARGV[1] userJson
  ARGV[2] stateJson
  ARGV[3] idle timeout, ms
  ARGV[4] tombstone retention, ms
  ARGV[5] safety TTL, ms: the keys expire this long after the last activity
          (a last resort: a sweep ends idle sessions long before)
  ARGV[6] create token ('' = none): a repeat of this very call (ioredis
          resends a command whose reply was lost) answers ok again
  ARGV[7..] initial server messages (JSON), seqs 1..n

  Returns
    {'exists', status}  the sid is in use (status open, closing or closed:
                        a tombstone); nothing changed
    {'ok'}
]]
-- @include session
local s, outKey = KEYS[1], KEYS[2]
local f = redis.call('HMGET', s, 'status', 'ct')
if f[1] then
  if ARGV[6] ~= '' and f[2] == ARGV[6] then return {'ok'} end
  return {'exists', f[1]}
end

local n = #ARGV - 6
local bytes = 0
for i = 7, #ARGV do
  bytes = bytes + #ARGV[i]
end
redis.call('DEL', outKey)
for i = 7, #ARGV, 1000 do
  redis.call('RPUSH', outKey, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HSET', s,
  'status', 'open', 'user', ARGV[1], 'state', ARGV[2],
  'idle', ARGV[3], 'tomb', ARGV[4], 'ttl', ARGV[5], 'seen', nowMs(),
  'cack', 0, 'ibytes', 0, 'last', n, 'lbytes', bytes)
if ARGV[6] ~= '' then redis.call('HSET', s, 'ct', ARGV[6]) end
touch({s, outKey}, ARGV[5], 0)
return {'ok'}
