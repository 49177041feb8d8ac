--[[
  group-join: the group's half of a join (its own Cluster slot). Adds the sid
  to the group's set and answers where the group's log stands, which becomes
  the member's cursor (join-1): entries published after this step are the
  member's, none from before.

  KEYS[1] members  the group's sids (SET)
  KEYS[2] meta     the group log's counters (HASH, see publish-3)
  ARGV[1] sid

  Returns {epoch ('' = no log yet), last gseq}
]]
local added = redis.call('SADD', KEYS[1], ARGV[1])
local f = redis.call('HMGET', KEYS[2], 'e', 'last', 'n')
-- The member count publish-3 keeps, where it has one (else its next publish counts the set).
if added == 1 and f[3] then redis.call('HINCRBY', KEYS[2], 'n', 1) end
return {f[1] or '', tonumber(f[2]) or 0}
