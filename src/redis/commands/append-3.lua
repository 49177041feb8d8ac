--[[
  append: server messages out. Assigns the next seqs atomically, within the
  unacked bounds (all or nothing), and wakes the session's watches.

  Safe to run twice: with an append id, a repeat (ioredis resends a command
  whose reply was lost with its connection) finds the id among the session's
  last 32 appends and answers the seqs the first run assigned, storing
  nothing, whatever the session's state now. The ids live in their own key,
  "|id:first" entries ("|id:first:last" for several messages) newest first,
  which expires 10 minutes after the session's last append: the record's hash
  stays small (listpack-encoded), and sessions nobody sends to keep no ids.
  The record's `an` field counts the entries, so keeping 32 means dropping
  the last entry, found in one pattern match rather than by counting.

  A session in groups first pulls every group entry it has not pulled yet
  (a publish that resolved before this send comes before it): without a pull
  block the script answers {'groups', ...} and changes nothing; the caller
  reads those groups' logs and calls again with the entries (see applyPulls
  in includes/session.lua). They and the messages must all fit, or 'full'.

  KEYS[1] s     session record (HASH)
  KEYS[2] out   server log (LIST)
  KEYS[3] aids  recent append ids (STRING)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] maxUnackedMessages   ARGV[4] maxUnackedBytes
  ARGV[5] append id ('' = none; otherwise [A-Za-z0-9_-]+, checked by the caller)
  ARGV[6] k, the number of messages   ARGV[7 .. 6 + k] messages (JSON)
  ARGV[7 + k ..] pull block (absent: none given)

  Returns {'unknown'} | {'closed'} | {'full'} (and marks the record: the next trim publishes 'a')
    | {'ok', firstSeq, lastSeq, clientAck}  stored now (the messages are these, at those seqs)
    | {'ok', firstSeq, lastSeq}             a repeat: stored by the call with this id
    | {'groups', group, cursor, ...}  the session is in groups and the block is
                                      absent or out of date: nothing changed
    | {'overrun'}  a group's log dropped entries the session never pulled:
                   nothing changed; the caller closes the session
  Events: 'm' on ok (not on a repeat), with the messages (see notifyMessages).
]]
-- @include session
local APPEND_IDS, APPEND_IDS_MS = 32, 600000
local s, outKey, aidsKey = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', s, 'status', 'last', 'lbytes', 'an', 'gn', 'exp', 'cack')
if not f[1] then return {'unknown'} end
local id = ARGV[5]
local aids
if id ~= '' then
  aids = redis.call('GET', aidsKey) or ''
  -- A plain find: ids may hold '-', which a Lua pattern would read as a quantifier.
  local at = string.find(aids, '|' .. id .. ':', 1, true)
  if at then
    local first, lastSeq = string.match(aids, '^(%d+):?(%d*)', at + #id + 2)
    return {'ok', tonumber(first), tonumber(lastSeq) or tonumber(first)}
  end
end
if f[1] ~= 'open' then return {'closed'} end
local last, lbytes = num(f[2]), num(f[3])
local k = tonumber(ARGV[6])
local n = k
local bytes = 0
for i = 7, 6 + k do
  bytes = bytes + #ARGV[i]
end
-- The log exists exactly while it holds bytes: an empty one needs no LLEN.
local len = lbytes > 0 and redis.call('LLEN', outKey) or 0
local wasEmpty = len == 0
if num(f[5]) > 0 then
  if #ARGV < 7 + k then return {'groups', unpack(groupCursors(s, f[5]))} end
  local st, pn, pbytes = applyPulls(s, outKey, ARGV, 7 + k, f[5], len, lbytes, tonumber(ARGV[3]), tonumber(ARGV[4]), true, k, bytes)
  if st == 'stale' then return {'groups', unpack(groupCursors(s, f[5]))} end
  if st ~= 'ok' then return {st} end
  -- The pulled entries took seqs last + 1 .. last + pn; this send's come after them.
  last, lbytes, len = last + pn, lbytes + pbytes, len + pn
end
if len + n > tonumber(ARGV[3]) or lbytes + bytes > tonumber(ARGV[4]) then
  -- A sender may now wait for room: the next trim wakes it (see trimLog).
  redis.call('HSET', s, 'wr', 1)
  return {'full'}
end
for i = 7, 6 + k, 1000 do
  redis.call('RPUSH', outKey, unpack(ARGV, i, math.min(i + 999, 6 + k)))
end
if id ~= '' then
  -- The count restarts with the list when the list expired.
  local count = aids == '' and 0 or num(f[4])
  if n == 1 then
    aids = '|' .. id .. ':' .. (last + 1) .. aids
  else
    aids = '|' .. id .. ':' .. (last + 1) .. ':' .. (last + n) .. aids
  end
  count = count + 1
  if count > APPEND_IDS then
    -- Drop the oldest entry: everything before the last '|'.
    aids = string.match(aids, '^(.*)|')
    count = APPEND_IDS
  end
  redis.call('HSET', s, 'last', last + n, 'lbytes', lbytes + bytes, 'an', count)
  redis.call('SET', aidsKey, aids, 'PX', APPEND_IDS_MS)
else
  redis.call('HSET', s, 'last', last + n, 'lbytes', lbytes + bytes)
end
-- Not activity (the client did nothing): the log simply lives as long as the record. A log that
-- existed already has the record's expiry (every activity extends all the session's keys together).
-- With the expiry the hot-path scripts last gave the keys (`exp`, see touch), one PEXPIREAT.
if wasEmpty then
  if num(f[6]) > 0 then
    redis.call('PEXPIREAT', outKey, num(f[6]))
  else
    local ttl = redis.call('PTTL', s)
    if ttl > 0 then redis.call('PEXPIRE', outKey, ttl) end
  end
end
notifyMessages(ARGV[1], ARGV[2], last + 1, num(f[7]), ARGV, 7, 6 + k, bytes)
return {'ok', last + 1, last + n, num(f[7])}
