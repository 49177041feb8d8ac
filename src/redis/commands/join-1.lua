--[[
  join: record group membership on an open session, with its cursor (the
  caller added the sid to the group's own set, which lives on another slot,
  and read the group's log position there in the same step: see
  group-join-2). Joining again keeps the cursor it has.

  KEYS[1] s   session record (HASH)
  ARGV[1] group
  ARGV[2] cursor '<epoch>:<gseq>': the group log's epoch and last gseq when
          the sid entered the set ('' epoch: the group had no log)
  ARGV[3] channel   ARGV[4] sharded ('1': SPUBLISH)

  Returns
    1    joined (or was a member)
    0    refused: unknown, closing or closed, and not a member
    -1   refused: closing, but a member from before (its group entry stays
         until finish-close, so onClose can still publish to the group)
  Events: 'm' on a new membership, so that a waiting watch reads again and
  learns of the group (and subscribes to its wake-ups).
]]
local field = 'g:' .. ARGV[1]
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'open' then
  -- A tombstone keeps its group fields (see finish-close) but is in no group.
  if status == 'closing' and redis.call('HEXISTS', KEYS[1], field) == 1 then return -1 end
  return 0
end
if redis.call('HSETNX', KEYS[1], field, ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'gn', 1)
  if ARGV[3] ~= '' then
    if ARGV[4] == '1' then
      redis.call('SPUBLISH', ARGV[3], 'm')
    else
      redis.call('PUBLISH', ARGV[3], 'm')
    end
  end
end
return 1
