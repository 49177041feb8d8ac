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
          stream's first read left them: a stream lasts at most maxWait)

  Returns
    {'unknown'}
    {'invalid-ack', lastSeq}
    {'ok', clientAck, superseded (0/1), closeSeq (0 = open), closeReason, firstSeq, json, json, ...}
      the jsons carry seqs firstSeq, firstSeq + 1, ...
  Events: 'a' when the ack trimmed something and an append found the log full since the last 'a';
  'w:<token>' on a claim.
]]
local s, inKey, outKey = KEYS[1], KEYS[2], KEYS[3]
local channel, sharded = ARGV[1], ARGV[2]
local f = redis.call('HMGET', s, 'status', 'last', 'watcher', 'cack', 'closeSeq', 'closeReason', 'ttl', 'exp', 'wr')
if not f[1] then return {'unknown'} end
local last = num(f[2])
local ack = tonumber(ARGV[3])
if ack > last then return {'invalid-ack', last} end

local after = tonumber(ARGV[7])
-- A stream's re-read (`after`) is not activity: it neither marks the session seen nor extends its keys.
local now = not after and nowMs() or nil
trimLog(s, outKey, last, ack, channel, sharded, f[9])
local watcher = f[3]
if ARGV[5] == '1' then
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
  if len > skip and max > 0 then
    local msgs = redis.call('LRANGE', outKey, skip, skip + max - 1)
    for i = 1, #msgs do
      result[#result + 1] = msgs[i]
    end
  end
end
-- A tombstone keeps the expiry finish-close gave it.
if f[1] ~= 'closed' and now then touch({s, inKey, outKey}, f[7], 0, now, f[8]) end
return result
