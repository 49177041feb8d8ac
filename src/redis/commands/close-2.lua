--[[
  close: move an open session to closing (close marker at lastSeq + 1, inbound
  buffer dropped) and, if asked, take the free lease to run onClose.
  Idempotent: a closing or closed session keeps its first reason, and a
  repeat with the same lease token answers leased again.

  KEYS[1] s    session record (HASH)
  KEYS[2] out  server log (LIST; only its TTL may be extended)

  An open session in groups first pulls every pending group entry (a
  publish that resolved before the close comes before the marker), whatever
  the unacked bounds (the group logs' retention bounds them): without a pull
  block the script answers {'groups', ...} and changes nothing; the caller
  reads those groups' logs and calls again with the entries (applyPulls in
  includes/session.lua). An overrun found there closes with reason
  'group-overrun' (the first reason: the member had lost entries already).

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] reason    ARGV[4] lease token ('' = do not lease)   ARGV[5] lease ms
  ARGV[6..] pull block (absent: none given)

  Returns
    {'unknown'}
    {'groups', group, cursor, ...}  an open session in groups, and the block is
                                    absent or out of date: nothing changed
    {'ok', transitioned (0/1), leased (0/1), reason, userJson, stateJson, checkAt}
      checkAt: when a sweep should look at the session again (the lease
      expiry, or now when nobody holds the lease); 0 for a closed session.
  Events: 'c' on the transition.
]]
-- @include session
local s, outKey = KEYS[1], KEYS[2]
local f = redis.call('HMGET', s, 'status', 'last', 'lease', 'leaseUntil', 'closeReason', 'user', 'state', 'ttl', 'gn', 'lbytes', 'ibytes')
if not f[1] then return {'unknown'} end
local now = nowMs()
local status, reason = f[1], f[5]
local transitioned, leased = 0, 0
if status == 'open' then
  reason = ARGV[3]
  local last = num(f[2])
  if num(f[9]) > 0 then
    if #ARGV < 6 then return {'groups', unpack(groupCursors(s, f[9]))} end
    local len = redis.call('LLEN', outKey)
    local st, n, bytes = applyPulls(s, outKey, ARGV, 6, f[9], len, num(f[10]), math.huge, math.huge, true, 0, 0)
    if st ~= 'ok' and st ~= 'overrun' then return {'groups', unpack(groupCursors(s, f[9]))} end
    if st == 'overrun' then
      reason = 'group-overrun'
    elseif n > 0 then
      last = last + n
      redis.call('HSET', s, 'last', last, 'lbytes', num(f[10]) + bytes)
      if len == 0 then
        local ttl = redis.call('PTTL', s)
        if ttl > 0 then redis.call('PEXPIRE', outKey, ttl) end
      end
    end
  end
  beginClose(s, f[11], reason, last, ARGV[1], ARGV[2])
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
    touch({s, outKey}, f[8], ARGV[5])
  else
    checkAt = now
  end
end
return {'ok', transitioned, leased, reason or '', f[6], f[7], checkAt}
