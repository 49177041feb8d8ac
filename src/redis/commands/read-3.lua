--[[
  read: one watch step. Trims the server log by the client's ack, optionally
  claims the session's watch (superseding older ones), returns what follows.
  Works on closing and closed sessions too: the client still needs the
  messages sent before the close, then the close marker.

  KEYS[1] s    session record (HASH)
  KEYS[2] in   inbound buffer (HASH; only its TTL is refreshed)
  KEYS[3] out  server log (LIST)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] ack   ARGV[4] watch token   ARGV[5] claim ('1' / '0')   ARGV[6] maxMessages
  ARGV[7] after (optional): a streaming watch's re-read. Return only messages
          with a seq above it (the stream sent the ones before); trims
          nothing, and is not activity ('seen' and the TTLs stay as the
          stream's first read left them: a stream lasts at most maxWait); '' = none
  ARGV[8] maxBytes: stop once the returned JSON reaches this many bytes (the
          message that reaches it comes, so the first always does); 0 = none

  Returns
    {'unknown'}
    {'invalid-ack', lastSeq}
    {'ok', clientAck, superseded (0/1), closeSeq (0 = open), closeReason, firstSeq, json, json, ...}
      the jsons carry seqs firstSeq, firstSeq + 1, ...
  Events: 'a' when the ack trimmed something, 'w:<token>' on a claim.
]]
local s, inKey, outKey = KEYS[1], KEYS[2], KEYS[3]
local channel, sharded = ARGV[1], ARGV[2]
local f = redis.call('HMGET', s, 'status', 'last', 'watcher', 'cack', 'closeSeq', 'closeReason', 'ttl')
if not f[1] then return {'unknown'} end
local last = num(f[2])
local ack = tonumber(ARGV[3])
if ack > last then return {'invalid-ack', last} end

local after = tonumber(ARGV[7])
if not after then redis.call('HSET', s, 'seen', nowMs()) end
trimLog(s, outKey, last, ack, channel, sharded)
local watcher = f[3]
if ARGV[5] == '1' then
  watcher = ARGV[4]
  redis.call('HSET', s, 'watcher', watcher)
  notify(channel, sharded, 'w:' .. watcher)
end
local superseded = watcher ~= ARGV[4]

local result = {'ok', num(f[4]), superseded and 1 or 0, 0, ''}
if f[1] ~= 'open' then
  result[4] = num(f[5])
  result[5] = f[6]
end
if superseded then
  result[6] = 0
else
  local len = redis.call('LLEN', outKey)
  local first = last - len + 1
  local skip = 0
  if after and after >= first then skip = after - first + 1 end
  result[6] = first + skip
  local max = tonumber(ARGV[6])
  local maxBytes = tonumber(ARGV[8]) or 0
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
if f[1] ~= 'closed' and not after then touch({s, inKey, outKey}, f[7], 0) end
return result
