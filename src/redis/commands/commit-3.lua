--[[
  commit: the handler for `seq` returned. Records the delivery (and the state
  it left), extends the lease, and with `next` hands out the next run or
  releases the lease.

  KEYS[1] s    session record (HASH)
  KEYS[2] in   inbound buffer (HASH seq -> json)
  KEYS[3] out  server log (LIST; only its TTL is refreshed)

  ARGV[1] lease token   ARGV[2] seq
  ARGV[3] '1' when ARGV[4] holds new state JSON
  ARGV[4] stateJson
  ARGV[5] lease ms   ARGV[6] next ('1' / '0')   ARGV[7] maxDeliver

  Returns
    {'lost'}   the token does not hold the lease (or the session is gone or closed)
    {'closing', clientAck, reason, userJson, stateJson}   run onClose, then finish-close
    {'ok', clientAck, seq, json, ...}   pairs: keep delivering; none with next: lease released
]]
local s, inKey, outKey = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', s, 'status', 'lease', 'cack', 'user', 'state', 'closeReason', 'ttl')
if not f[1] or f[2] ~= ARGV[1] or f[1] == 'closed' then return {'lost'} end

local cack = num(f[3])
local seq = tonumber(ARGV[2])
if seq == cack + 1 then
  local json = redis.call('HGET', inKey, seq)
  if json then
    redis.call('HDEL', inKey, seq)
    redis.call('HINCRBY', s, 'ibytes', -#json)
  end
  cack = seq
  redis.call('HSET', s, 'cack', cack)
end
local state = f[5]
if ARGV[3] == '1' then
  state = ARGV[4]
  redis.call('HSET', s, 'state', state)
end
local now = nowMs()
redis.call('HSET', s, 'seen', now, 'leaseUntil', now + tonumber(ARGV[5]))
touch({s, inKey, outKey}, f[7], ARGV[5])

if f[1] == 'closing' then
  return {'closing', cack, f[6], f[4], state}
end
local result = {'ok', cack}
if ARGV[6] ~= '1' then return result end
if takeRun(inKey, cack, tonumber(ARGV[7]), result) == 0 then
  redis.call('HDEL', s, 'lease', 'leaseUntil')
end
return result
