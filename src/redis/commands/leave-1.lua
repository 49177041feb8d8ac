--[[
  leave: drop a group membership (and its cursor) from the session record;
  the session pulls nothing more from that group. The caller removes the sid
  from the group's set (another slot: group-leave-3).

  KEYS[1] s   session record (HASH)
  ARGV[1] group

  Returns 1 when the session was a member, else 0 (safe to run twice).
]]
if redis.call('HDEL', KEYS[1], 'g:' .. ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'gn', -1)
  return 1
end
return 0
