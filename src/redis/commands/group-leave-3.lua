--[[
  group-leave: the group's half of a leave or of a finished close. Removes the
  sid from the group's set; a group left empty drops its log (nobody can pull
  it; a later join starts a new epoch, see publish-3).

  KEYS[1] members (SET)   KEYS[2] log (LIST)   KEYS[3] meta (HASH)
  ARGV[1] sid

  Returns the number of members left. Safe to run twice.
]]
local removed = redis.call('SREM', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
elseif removed == 1 then
  -- publish-3's member count: its next publish counts the set again (leaves are rare next to publishes).
  redis.call('HDEL', KEYS[3], 'n')
end
return n
