--[[
  append: server messages out. Assigns the next seqs atomically, within the
  unacked bounds (all or nothing), and wakes the session's watches.

  KEYS[1] s    session record (HASH)
  KEYS[2] out  server log (LIST)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] maxUnackedMessages   ARGV[4] maxUnackedBytes
  ARGV[5..] messages (JSON)

  Returns {'unknown'} | {'closed'} | {'full'} | {'ok', firstSeq, lastSeq}
  Events: 'm' on ok.
]]
local s, outKey = KEYS[1], KEYS[2]
local f = redis.call('HMGET', s, 'status', 'last', 'lbytes')
if not f[1] then return {'unknown'} end
if f[1] ~= 'open' then return {'closed'} end
local last, lbytes = num(f[2]), num(f[3])
local n = #ARGV - 4
local bytes = 0
for i = 5, #ARGV do
  bytes = bytes + #ARGV[i]
end
local len = redis.call('LLEN', outKey)
if len + n > tonumber(ARGV[3]) or lbytes + bytes > tonumber(ARGV[4]) then
  return {'full'}
end
for i = 5, #ARGV, 1000 do
  redis.call('RPUSH', outKey, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HSET', s, 'last', last + n, 'lbytes', lbytes + bytes)
-- Not activity (the client did nothing): the log simply lives as long as the record. A log that
-- existed already has the record's expiry (every activity extends all the session's keys together).
if len == 0 and n > 0 then
  local ttl = redis.call('PTTL', s)
  if ttl > 0 then redis.call('PEXPIRE', outKey, ttl) end
end
notify(ARGV[1], ARGV[2], 'm')
return {'ok', last + 1, last + n}
