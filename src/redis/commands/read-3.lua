--[[
  read: one watch step. Trims the server log by the client's ack, pulls group
  entries the caller passes (see applyPulls in includes/session.lua),
  optionally claims the session's watch (superseding older ones), returns
  what follows. Works on closing and closed sessions too: the client still
  needs the messages sent before the close, then the close marker. A
  tombstone (closed) is never superseded and takes no claim (nothing waits
  on it: every watch is answered at once); the ack that empties its log
  leaves it its few fields (finish-close-3).

  A session in groups is read in up to two calls (docs/REDIS.md, "Groups"):
  the first, without a pull block, also answers the session's groups and
  cursors; the caller reads the entries after those cursors from the groups'
  logs and, if there are any, calls again with them (claim '0'). A call with
  a block whose groups and cursors are not all the session's current ones
  pulls what it can and answers the cursors too (so a caller may start with
  a block it guessed: RedisStore's group hints).

  KEYS[1] s    session record (HASH)
  KEYS[2] out  server log (LIST)
  KEYS[3] aids append ids (STRING; deleted with a tombstone's last message)

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
      (with a pull block: 0, unless the block missed some, see above; 0 when it
      is not open); the jsons carry seqs
      firstSeq, firstSeq + 1, ...
  Events: 'a' when the ack trimmed something and an append found the log full since the last 'a';
  'w:<token>' on a claim; 'c' on an overrun close.
]]
-- @include session
local OVERRUN_REASON = 'group-overrun'
local s, outKey = KEYS[1], KEYS[2]
local channel, sharded = ARGV[1], ARGV[2]
local f = redis.call('HMGET', s, 'status', 'last', 'watcher', 'cack', 'closeSeq', 'closeReason', 'ttl', 'lbytes', 'gn', 'exp', 'wr', 'ibytes')
if not f[1] then return {'unknown'} end
local last = num(f[2])
local ack = tonumber(ARGV[3])
if ack > last then return {'invalid-ack', last} end

local after = tonumber(ARGV[7])
-- With a pull block this is the second call of one read (the first did the activity, the trim
-- and the claim, and refreshed the TTLs), or a watch's re-read that starts with a block it
-- guessed (RedisStore's group hints), which has none of those to do.
local continued = #ARGV >= 11
-- A stream's re-read (`after`) is not activity: it neither marks the session seen nor extends its keys.
local now = (not after and not continued) and nowMs() or nil
-- Record fields written by this call, in one HSET.
local fields = {}
local trimmed, lbytes = 0, num(f[8])
if not continued then
  trimmed, lbytes = trimLog(s, outKey, last, ack, lbytes, channel, sharded, f[11])
end
local status = f[1]
local overrunAt = 0
local groups = {}
if status == 'open' and num(f[9]) > 0 then
  if continued then
    local len = lbytes > 0 and redis.call('LLEN', outKey) or 0
    local st, n, bytes, current = applyPulls(s, outKey, ARGV, 11, f[9], len, lbytes, tonumber(ARGV[8]), tonumber(ARGV[9]), false, 0, 0)
    if st == 'overrun' then
      beginClose(s, f[12], OVERRUN_REASON, last, channel, sharded)
      status = 'closing'
      f[5] = last + 1
      f[6] = OVERRUN_REASON
      overrunAt = nowMs()
    else
      if n > 0 then
        last = last + n
        lbytes = lbytes + bytes
        redis.call('HSET', s, 'last', last, 'lbytes', lbytes)
        -- A log this call created gets the record's expiry (activity below extends both).
        if len == 0 then
          local ttl = redis.call('PTTL', s)
          if ttl > 0 then redis.call('PEXPIRE', outKey, ttl) end
        end
      end
      -- The block did not cover every group of the session at its cursor (a guess from an earlier
      -- read, or another pull got there first): answer the cursors now, so the caller can pull the rest.
      if current < num(f[9]) then groups = groupCursors(s, f[9]) end
    end
  else
    groups = groupCursors(s, f[9])
  end
end
if trimmed > 0 then
  if status == 'closed' and lbytes <= 0 then
    -- A tombstone's last message acked: it keeps only its few fields.
    redis.call('HDEL', s, 'lbytes')
    redis.call('DEL', KEYS[3])
  else
    fields[#fields + 1] = 'lbytes'
    fields[#fields + 1] = lbytes
  end
end
local watcher = f[3]
if status == 'closed' then
  watcher = ARGV[4]
elseif ARGV[5] == '1' then
  watcher = ARGV[4]
  fields[#fields + 1] = 'watcher'
  fields[#fields + 1] = watcher
  notify(channel, sharded, 'w:' .. watcher)
end
if now and status ~= 'closed' then
  fields[#fields + 1] = 'seen'
  fields[#fields + 1] = now
end
if #fields > 0 then redis.call('HSET', s, unpack(fields)) end
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
  -- The messages after the ack (and after `after`), without LLEN: seq q sits at index
  -- -(last - q + 1). The first seq goes at `at`; none: last + 1.
  local at = #result + 1
  result[at] = last + 1
  local max = tonumber(ARGV[6])
  local maxBytes = tonumber(ARGV[10]) or 0
  local seq = math.max(ack, after or 0) + 1
  local n, bytes, fellBack = 0, 0, false
  -- With a byte budget, in slices, so a large log is never copied whole for a small budget.
  while lbytes > 0 and seq <= last and n < max do
    local want = max - n
    if maxBytes > 0 and want > 16 then want = 16 end
    local i = -(last - seq + 1)
    local j = math.min(i + want - 1, -1)
    local msgs = redis.call('LRANGE', outKey, i, j)
    if #msgs < j - i + 1 and j < -1 then
      -- Fewer than asked, short of the end: the log begins after `seq` (an ack older than the
      -- last trim). Go on from its first entry.
      if fellBack then break end
      fellBack = true
      seq = last - redis.call('LLEN', outKey) + 1
    else
      if #msgs == 0 then break end
      local endSeq = last + j + 1
      if n == 0 then result[at] = endSeq - #msgs + 1 end
      local full = false
      for k = 1, #msgs do
        if maxBytes > 0 and bytes >= maxBytes then
          full = true
          break
        end
        bytes = bytes + #msgs[k]
        result[#result + 1] = msgs[k]
        n = n + 1
      end
      if full or j == -1 then break end
      seq = endSeq + 1
    end
  end
end
-- A tombstone keeps the expiry finish-close gave it.
if f[1] ~= 'closed' and now then touch({s, outKey}, f[7], 0, now, f[10]) end
return result
