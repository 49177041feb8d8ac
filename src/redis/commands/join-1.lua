--[[
  join: record group membership on an open session (the caller adds the sid
  to the group's own set, which lives on another slot).

  KEYS[1] s   session record (HASH)
  ARGV[1] group

  Returns
    1    joined (or was a member)
    0    refused: unknown, closing or closed, and not a member
    -1   refused: closing, but a member from before (its group entry stays
         until finish-close, so onClose can still publish to the group)
]]
local field = 'g:' .. ARGV[1]
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'open' then
  -- A tombstone keeps its group fields (see finish-close) but is in no group.
  if status == 'closing' and redis.call('HEXISTS', KEYS[1], field) == 1 then return -1 end
  return 0
end
redis.call('HSET', KEYS[1], field, '')
return 1
