--[[
  close: move an open session to closing (close marker at lastSeq + 1, inbound
  buffer dropped) and, if asked, take the free lease to run onClose.
  Idempotent: a closing or closed session keeps its first reason, and a
  repeat with the same lease token answers leased again.

  KEYS[1] s    session record (HASH)
  KEYS[2] in   inbound buffer (HASH)
  KEYS[3] out  server log (LIST; only its TTL may be extended)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] reason    ARGV[4] lease token ('' = do not lease)   ARGV[5] lease ms

  Returns
    {'unknown'}
    {'ok', transitioned (0/1), leased (0/1), reason, userJson, stateJson, checkAt}
      checkAt: when a sweep should look at the session again (the lease
      expiry, or now when nobody holds the lease); 0 for a closed session.
  Events: 'c' on the transition.
]]
local s, inKey = KEYS[1], KEYS[2]
local f = redis.call('HMGET', s, 'status', 'last', 'lease', 'leaseUntil', 'closeReason', 'user', 'state', 'ttl')
if not f[1] then return {'unknown'} end
local now = nowMs()
local status, reason = f[1], f[5]
local transitioned, leased = 0, 0
if status == 'open' then
  reason = ARGV[3]
  beginClose(s, inKey, reason, num(f[2]), ARGV[1], ARGV[2])
  status = 'closing'
  transitioned = 1
end
local checkAt = 0
if status == 'closing' then
  -- A lease held by this very token is this call's own, taken by a first run whose reply was lost.
  if leaseHeld(f[3], f[4], now) and f[3] ~= ARGV[4] then
    checkAt = num(f[4])
  elseif ARGV[4] ~= '' then
    checkAt = now + tonumber(ARGV[5])
    redis.call('HSET', s, 'lease', ARGV[4], 'leaseUntil', checkAt)
    leased = 1
    -- The record must outlive the lease: its holder still has onClose to run.
    touch({s, inKey, KEYS[3]}, f[8], ARGV[5])
  else
    checkAt = now
  end
end
return {'ok', transitioned, leased, reason or '', f[6], f[7], checkAt}
