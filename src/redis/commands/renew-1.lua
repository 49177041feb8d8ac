--[[
  renew: extend a held lease while a handler (or onClose) runs long.

  KEYS[1] s   session record (HASH)
  ARGV[1] lease token   ARGV[2] lease ms

  Returns 1 when the token holds the lease (now extended), else 0.
]]
-- @include time
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'leaseUntil', nowMs() + tonumber(ARGV[2]))
return 1
