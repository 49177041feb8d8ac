--[[
  finish-close: onClose has run. The session becomes a tombstone: closed,
  lease released, inbound buffer dropped; the record and
  the log (the client may still fetch messages sent before the close, and the
  marker) expire after the tombstone retention.

  KEYS[1] s    session record (HASH)
  KEYS[2] in   inbound buffer (HASH)
  KEYS[3] out  server log (LIST)

  ARGV[1] lease token

  Safe to run twice: the tombstone keeps its group fields (inert: join refuses
  a closed session) and the closer's token, so a repeat by the same token
  (ioredis resends a command whose reply was lost) answers the groups again
  and the caller's cleanup still happens. With a tombstone retention of 0 the
  record is gone at once and a repeat answers {}.

  Returns
    {}                      the token does not hold the lease of a closing session
                            (nor closed it): nothing changed
    {'ok', group, group, ...}  the groups the session was in; the caller removes
                               it from each group set and from the sessions index
]]
local s, inKey, outKey = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', s, 'status', 'lease', 'tomb', 'closer')
local repeated = f[1] == 'closed' and f[4] == ARGV[1]
if not repeated and (f[1] ~= 'closing' or f[2] ~= ARGV[1]) then return {} end
local result = {'ok'}
local fields = redis.call('HKEYS', s)
for i = 1, #fields do
  if string.sub(fields[i], 1, 2) == 'g:' then
    result[#result + 1] = string.sub(fields[i], 3)
  end
end
if repeated then return result end
redis.call('HSET', s, 'status', 'closed', 'closedAt', nowMs(), 'ibytes', 0, 'closer', ARGV[1])
redis.call('HDEL', s, 'lease', 'leaseUntil')
redis.call('DEL', inKey)
local tomb = num(f[3])
if tomb > 0 then
  redis.call('PEXPIRE', s, tomb)
  redis.call('PEXPIRE', outKey, tomb)
else
  redis.call('DEL', s, outKey)
end
return result
