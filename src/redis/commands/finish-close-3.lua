--[[
  finish-close: onClose has run. The session becomes a tombstone: a new,
  small record with only what its client may still ask for — status, last
  seq, client ack, close marker (seq and reason) — plus the closer's token and one empty `g:`
  field per group it was in (for a repeat, below). User, state, lease,
  watcher, inbound buffer and group cursors are gone. The unacked log (and the
  append ids, so a resent append still answers its seqs) stays only while
  the client has not acked every message before the close marker, and not
  for a session its client closed (reason 'client': that client reads no
  more). Everything expires after the tombstone retention.

  KEYS[1] s     session record (HASH; the inbound buffer goes with it)
  KEYS[2] out   server log (LIST)
  KEYS[3] aids  append ids (STRING)

  ARGV[1] lease token

  Safe to run twice: a repeat by the same token (ioredis resends a command
  whose reply was lost) finds `closer` and answers the same groups and
  expiry, so the caller's cleanup still happens. With a tombstone retention
  of 0 the record is gone at once and a repeat answers {}.

  Returns
    {}                              the token does not hold the lease of a closing session
                                    (nor closed it): nothing changed
    {'ok', expiresAt, group, ...}   when the tombstone expires (ms; 0: no tombstone) and the
                                    groups the session was in; the caller moves it from the
                                    sessions index to the tombstone index and removes it from
                                    each group set
]]
-- @include session
local CLIENT_REASON = 'client'
local s, outKey, aidsKey = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', s, 'status', 'lease', 'tomb', 'closer', 'last', 'cack', 'closeReason', 'lbytes')
local repeated = f[1] == 'closed' and f[4] == ARGV[1]
if not repeated and (f[1] ~= 'closing' or f[2] ~= ARGV[1]) then return {} end
local now = nowMs()
local groups = {}
local fields = redis.call('HKEYS', s)
for i = 1, #fields do
  if string.sub(fields[i], 1, 2) == 'g:' then groups[#groups + 1] = string.sub(fields[i], 3) end
end
if repeated then
  local ttl = redis.call('PTTL', s)
  return {'ok', ttl > 0 and now + ttl or 0, unpack(groups)}
end
local tomb = num(f[3])
if tomb <= 0 then
  redis.call('DEL', s, outKey, aidsKey)
  return {'ok', 0, unpack(groups)}
end
local keepLog = f[7] ~= CLIENT_REASON and redis.call('LLEN', outKey) > 0
redis.call('DEL', s)
redis.call('HSET', s, 'status', 'closed', 'last', num(f[5]), 'cack', num(f[6]), 'closeSeq', num(f[5]) + 1, 'closeReason', f[7] or '', 'closer', ARGV[1])
for i = 1, #groups do
  redis.call('HSET', s, 'g:' .. groups[i], '')
end
redis.call('PEXPIRE', s, tomb)
if keepLog then
  redis.call('HSET', s, 'lbytes', num(f[8]))
  redis.call('PEXPIRE', outKey, tomb)
  redis.call('PEXPIRE', aidsKey, tomb, 'LT')
else
  redis.call('DEL', outKey, aidsKey)
end
return {'ok', now + tomb, unpack(groups)}
