--[[
  group-tail: the group's half of a pull (read-only). The entries of the
  group's log after a member's cursor, for the session script that appends
  them with a compare-and-set on that cursor (applyPulls in
  includes/session.lua). Entries never change once written, so what this
  answers stays true for as long as the cursor does.

  KEYS[1] log   entries '<time µs>|<json>', oldest first; the last one is gseq `last`
  KEYS[2] meta  HASH e (epoch), last
  ARGV[1] cursor '<epoch>:<gseq>'   ARGV[2] most entries to return

  Returns {epoch, from, state, t, json, t, json, ...}: the entries with gseq
  from + 1, from + 2, ... (from = the cursor's gseq, or 0 when the cursor is
  of another epoch: the log was dropped and begun again since), state
    'c'  every entry after the cursor is here (maybe none)
    'p'  only the first ones (ARGV[2])
    'o'  overrun: the log no longer holds the entry after the cursor
]]
local logKey, metaKey = KEYS[1], KEYS[2]
local f = redis.call('HMGET', metaKey, 'e', 'last')
local epoch, last = f[1] or '', tonumber(f[2]) or 0
local ce, cg = string.match(ARGV[1], '^(.*):(%d+)$')
local from = 0
if ce == epoch then from = tonumber(cg) end
if last <= from then return {epoch, from, 'c'} end
local len = redis.call('LLEN', logKey)
local first = last - len + 1
if first > from + 1 then return {epoch, from, 'o'} end
local skip = from + 1 - first
local max = tonumber(ARGV[2])
local items = redis.call('LRANGE', logKey, skip, skip + max - 1)
local out = {epoch, from, (skip + #items >= len) and 'c' or 'p'}
for i = 1, #items do
  local bar = string.find(items[i], '|', 1, true)
  out[#out + 1] = string.sub(items[i], 1, bar - 1)
  out[#out + 1] = string.sub(items[i], bar + 1)
end
return out
