--[[
  expire-check: the sweep's look at one candidate from the sessions index,
  re-checked here with the server's clock. An idle open session starts
  closing ('expired'); a closing session whose lease is free (never taken, or
  its holder died) is leased to the sweeper.

  KEYS[1] s    session record (HASH)
  KEYS[2] out  server log (LIST; only its TTL may be extended)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] sweep lease token   ARGV[4] lease ms

  Returns
    {'gone'}     no record (expired by TTL): drop it from the index
    {'closed'}   a tombstone: drop it from the index
    {'wait', at} nothing to do before `at` (ms): re-score it in the index
    {'closing', reason, userJson, stateJson, leaseUntil}  the sweeper holds the lease: run onClose
  Events: 'c' when an idle session starts closing.
]]
-- @include session
local s, outKey = KEYS[1], KEYS[2]
local f = redis.call('HMGET', s, 'status', 'seen', 'idle', 'last', 'lease', 'leaseUntil', 'closeReason', 'user', 'state', 'ttl', 'ibytes')
if not f[1] then return {'gone'} end
if f[1] == 'closed' then return {'closed'} end
local now = nowMs()
local reason = f[7]
if f[1] == 'open' then
  local expiresAfter = num(f[2]) + num(f[3])
  if now <= expiresAfter then return {'wait', expiresAfter + 1} end
  reason = 'expired'
  beginClose(s, f[11], reason, num(f[4]), ARGV[1], ARGV[2])
end
if leaseHeld(f[5], f[6], now) then return {'wait', num(f[6])} end
local leaseUntil = now + tonumber(ARGV[4])
redis.call('HSET', s, 'lease', ARGV[3], 'leaseUntil', leaseUntil)
-- The record must outlive the sweeper's lease: it still has onClose to run.
touch({s, outKey}, f[10], ARGV[4])
return {'closing', reason, f[8], f[9], leaseUntil}
