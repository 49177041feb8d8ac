--[[
  read: one watch step. Trims the server log by the client's ack, pulls group
  entries the caller passes (see applyPulls in includes/session.lua),
  optionally claims the session's watch (superseding older ones), returns
  what follows. Works on closing and closed sessions too: the client still
  needs the messages sent before the close, then the close marker. A
  tombstone (closed) is never superseded and takes no claim (nothing waits
  on it: every watch is answered at once); the ack that empties its log
  leaves it its few fields (finish-close-4).

  A session in groups is read in up to two calls (docs/REDIS.md, "Groups"):
  the first, without a pull block, also answers the session's groups and
  cursors; the caller reads the entries after those cursors from the groups'
  logs and, if there are any, calls again with them (claim '0').

  KEYS[1] s    session record (HASH)
  KEYS[2] in   inbound buffer (HASH; only its TTL is refreshed)
  KEYS[3] out  server log (LIST)
  KEYS[4] aids append ids (STRING; deleted with a tombstone's last message)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] ack   ARGV[4] watch token   ARGV[5] claim ('1' / '0')   ARGV[6] maxMessages
  ARGV[7] after ('' = none): a streaming watch's re-read. Return only messages
          with a seq above it (the stream sent the ones before); trims
          nothing, and is not activity ('seen' and the TTLs stay as the
          stream's first read left them: a stream lasts at most maxWait)
  ARGV[8] maxUnackedMessages   ARGV[9] maxUnackedBytes (bounds for pulled entries)
  ARGV[10] maxBytes: stop once the returned JSON reaches this many bytes (the
          message that reaches it comes, so the first always does); 0 = none
  ARGV[11..] pull block (absent: pull nothing, answer the groups)

  Returns
    {'unknown'}
    {'invalid-ack', lastSeq}
    {'ok', clientAck, superseded (0/1), closeSeq (0 = open), closeReason, overrunAt,
     G, group, cursor, ... (G pairs), firstSeq, json, json, ...}
      overrunAt: 0, or the time (ms) this call closed the session because a
      group's log dropped entries it had not pulled; G: the session's groups
      (0 with a pull block, or when it is not open); the jsons carry seqs
      firstSeq, firstSeq + 1, ...
  Events: 'a' when the ack trimmed something and an append found the log full since the last 'a';
  'w:<token>' on a claim; 'c' on an overrun close.
]]
-- @include session
local OVERRUN_REASON = 'group-overrun'
local s, inKey, outKey = KEYS[1], KEYS[2], KEYS[3]
local channel, sharded = ARGV[1], ARGV[2]
local f = redis.call('HMGET', s, 'status', 'last', 'watcher', 'cack', 'closeSeq', 'closeReason', 'ttl', 'lbytes', 'gn', 'exp', 'wr')
if not f[1] then return {'unknown'} end
local last = num(f[2])
local ack = tonumber(ARGV[3])
if ack > last then return {'invalid-ack', last} end

local after = tonumber(ARGV[7])
-- With a pull block this is the second call of one read: the first did the activity, the trim
-- and the claim (and refreshed the TTLs), and does not need doing again.
local continued = #ARGV >= 11
-- A stream's re-read (`after`) is not activity: it neither marks the session seen nor extends its keys.
local now = (not after and not continued) and nowMs() or nil
local trimmed = 0
if not continued then trimmed = trimLog(s, outKey, last, ack, channel, sharded, f[11]) end
local status = f[1]
local overrunAt = 0
local groups = {}
if status == 'open' and num(f[9]) > 0 then
  if continued then
    local len = redis.call('LLEN', outKey)
    local lbytes = num(f[8])
    if trimmed > 0 then lbytes = num(redis.call('HGET', s, 'lbytes')) end
    local st, n, bytes = applyPulls(s, outKey, ARGV, 11, f[9], len, lbytes, tonumber(ARGV[8]), tonumber(ARGV[9]), false, 0, 0)
    if st == 'overrun' then
      beginClose(s, inKey, OVERRUN_REASON, last, channel, sharded)
      status = 'closing'
      f[5] = last + 1
      f[6] = OVERRUN_REASON
      overrunAt = nowMs()
    elseif n > 0 then
      last = last + n
      redis.call('HSET', s, 'last', last, 'lbytes', lbytes + bytes)
      -- A log this call created gets the record's expiry (activity below extends both).
      if len == 0 then
        local ttl = redis.call('PTTL', s)
        if ttl > 0 then redis.call('PEXPIRE', outKey, ttl) end
      end
    end
  else
    groups = groupCursors(s, f[9])
  end
end
local watcher = f[3]
if status == 'closed' then
  watcher = ARGV[4]
  if trimmed > 0 and redis.call('LLEN', outKey) == 0 then
    redis.call('HDEL', s, 'lbytes')
    redis.call('DEL', KEYS[4])
  end
elseif ARGV[5] == '1' then
  watcher = ARGV[4]
  if now then
    redis.call('HSET', s, 'seen', now, 'watcher', watcher)
  else
    redis.call('HSET', s, 'watcher', watcher)
  end
  notify(channel, sharded, 'w:' .. watcher)
elseif now then
  redis.call('HSET', s, 'seen', now)
end
local superseded = watcher ~= ARGV[4]

local result = {'ok', num(f[4]), superseded and 1 or 0, 0, '', overrunAt, #groups / 2}
if status ~= 'open' then
  result[4] = num(f[5])
  result[5] = f[6]
end
for i = 1, #groups do
  result[#result + 1] = groups[i]
end
if superseded then
  result[#result + 1] = 0
else
  local len = redis.call('LLEN', outKey)
  local first = last - len + 1
  local skip = 0
  if after and after >= first then skip = after - first + 1 end
  result[#result + 1] = first + skip
  local max = tonumber(ARGV[6])
  local maxBytes = tonumber(ARGV[10]) or 0
  if len > skip and max > 0 and maxBytes <= 0 then
    local msgs = redis.call('LRANGE', outKey, skip, skip + max - 1)
    for i = 1, #msgs do
      result[#result + 1] = msgs[i]
    end
  elseif len > skip and max > 0 then
    -- In slices, so a large log is never copied whole for a small budget.
    local bytes, n, i, full = 0, 0, skip, false
    while not full and n < max and i < len do
      local msgs = redis.call('LRANGE', outKey, i, i + math.min(max - n, 16) - 1)
      if #msgs == 0 then break end
      for j = 1, #msgs do
        if bytes >= maxBytes then
          full = true
          break
        end
        bytes = bytes + #msgs[j]
        result[#result + 1] = msgs[j]
        n = n + 1
      end
      i = i + #msgs
    end
  end
end
-- A tombstone keeps the expiry finish-close gave it.
if f[1] ~= 'closed' and now then touch({s, inKey, outKey}, f[7], 0, now, f[10]) end
return result
