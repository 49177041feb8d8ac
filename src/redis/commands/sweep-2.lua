--[[
  sweep: take (or re-take, with the same token) the store-wide sweep lease and
  list the sessions due for a look: their score in the index is now or
  earlier. Each is then re-checked by expire-check on its own slot.

  KEYS[1] sessions index (ZSET sid -> when to look again, ms)
  KEYS[2] sweep lease (STRING token, PX)

  ARGV[1] token   ARGV[2] lease ms   ARGV[3] most sids to return

  Returns {'busy'} (another token holds the lease) | {'ok', sid, sid, ...}
]]
-- @include time
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {'busy'} end
local ms = tonumber(ARGV[2])
if ms > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ms)
else
  redis.call('DEL', KEYS[2])
end
local now = nowMs()
local result = {'ok'}
local limit = tonumber(ARGV[3])
if limit > 0 then
  local sids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
  for i = 1, #sids do
    result[#result + 1] = sids[i]
  end
end
return result
