--[[
  commit: the handler for `seq` returned. Records the delivery (and the state
  it left), appends the server messages the handler sent without waiting for
  them (atomically with the delivery record), extends the lease, and with
  `next` hands out the next run or releases the lease.

  The messages are appended as far as they fit the unacked bounds, in order
  (as if each were its own append); the rest are refused ('full', or
  'closed' when the session is closing). Safe to run twice: only the call
  that records `seq` (moves cack from seq - 1 to seq) appends; it keeps its
  outcome in the record's `cs` field ("seq:first:stored:refused"), and a
  repeat answers that and stores nothing.

  KEYS[1] s    session record (HASH; its i<seq> fields are the inbound buffer)
  KEYS[2] out  server log (LIST)

  ARGV[1] lease token   ARGV[2] seq
  ARGV[3] '1' when ARGV[4] holds new state JSON
  ARGV[4] stateJson
  ARGV[5] lease ms   ARGV[6] next ('1' / '0')   ARGV[7] maxDeliver
  ARGV[8] channel   ARGV[9] sharded ('1': SPUBLISH)
  ARGV[10] maxUnackedMessages   ARGV[11] maxUnackedBytes
  ARGV[12] the token of a watch of this session that listens on the calling
           instance ('' = none): when it is the session's current watch, the
           caller wakes it itself, and the messages are not published
  ARGV[13..] messages the handler sent (JSON; none: no append)

  Returns
    {'lost'}   the token does not hold the lease (or the session is gone or closed); nothing stored
    {'pull'}   messages given, but the session is in groups: nothing changed (append them, which
               pulls the groups' entries first, then commit without them)
    {'closing', clientAck, reason, userJson, stateJson, stored, first, refused}   run onClose, then finish-close
    {'ok', clientAck, stored, first, refused, seq, json, ...}   pairs: keep delivering; none with next: lease released
  stored: -1 when the call carried no messages, else how many were appended
  (seqs first .. first + stored - 1); refused: '' | 'full' | 'closed', why the rest were not.
  Events: 'm' when messages were appended (with them, see notifyMessages), unless the
  session is open and ARGV[12] is its current watch (the caller wakes that one).
]]
-- @include session
local s, outKey = KEYS[1], KEYS[2]
local f = redis.call('HMGET', s, 'status', 'lease', 'cack', 'user', 'state', 'closeReason', 'ttl', 'last', 'lbytes', 'cs', 'ibytes', 'exp', 'gn', 'leaseUntil', 'seen', inField(ARGV[2]), 'watcher')
if not f[1] or f[2] ~= ARGV[1] or f[1] == 'closed' then return {'lost'} end
-- A member of groups must pull their entries before its own sends (a cross-slot step this script
-- cannot take): change nothing; the caller appends the sends, then commits without them.
if #ARGV > 12 and f[1] == 'open' and num(f[13]) > 0 and tonumber(ARGV[2]) == num(f[3]) + 1 then return {'pull'} end

local cack = num(f[3])
local seq = tonumber(ARGV[2])
local n = #ARGV - 12
local ibytes = num(f[11])
-- What became of the handler's messages: `stored` of them from seq `first`; the rest `refused`.
local stored, first, refused = -1, 0, ''
if n > 0 then stored = 0 end
local fields = {}
local created
if seq == cack + 1 then
  -- The delivered message, read with the record (nil when the buffer did not hold it).
  local json = f[16]
  if json then
    redis.call('HDEL', s, inField(seq))
    ibytes = ibytes - #json
    fields[#fields + 1] = 'ibytes'
    fields[#fields + 1] = ibytes
  end
  cack = seq
  fields[#fields + 1] = 'cack'
  fields[#fields + 1] = cack
  if n > 0 then
    -- As many as fit, in order (as if each were its own append); the rest are refused.
    local last, lbytes = num(f[8]), num(f[9])
    first = last + 1
    if f[1] ~= 'open' then
      refused = 'closed'
    else
      -- The log exists exactly while it holds bytes: an empty one needs no LLEN.
      local room = tonumber(ARGV[10]) - (lbytes > 0 and redis.call('LLEN', outKey) or 0)
      local budget = tonumber(ARGV[11]) - lbytes
      local bytes = 0
      while stored < n and stored < room and bytes + #ARGV[13 + stored] <= budget do
        bytes = bytes + #ARGV[13 + stored]
        stored = stored + 1
      end
      if stored < n then refused = 'full' end
      if stored > 0 then
        -- This call creates the log when it held none.
        if lbytes == 0 then created = {outKey} end
        for i = 13, 12 + stored, 1000 do
          redis.call('RPUSH', outKey, unpack(ARGV, i, math.min(i + 999, 12 + stored)))
        end
        fields[#fields + 1] = 'last'
        fields[#fields + 1] = last + stored
        fields[#fields + 1] = 'lbytes'
        fields[#fields + 1] = lbytes + bytes
        -- Other instances' watches of the session are older ones (superseded: the claim told them)
        -- or not yet claimed (their claiming read comes after this script, and sees the messages).
        if not (f[1] == 'open' and ARGV[12] ~= '' and ARGV[12] == f[17]) then
          notifyMessages(ARGV[8], ARGV[9], first, cack, ARGV, 13, 12 + stored, bytes)
        end
      end
    end
    fields[#fields + 1] = 'cs'
    fields[#fields + 1] = seq .. ':' .. first .. ':' .. stored .. ':' .. refused
  end
elseif n > 0 then
  -- A repeat of the call that recorded `seq`: answer what it did, store nothing.
  local cseq, cfirst, cstored, crefused = string.match(f[10] or '', '^(%d+):(%d+):(%d+):(%a*)$')
  if cseq and tonumber(cseq) == seq then
    first, stored, refused = tonumber(cfirst), tonumber(cstored), crefused
  else
    refused = 'closed'
  end
end
local state = f[5]
if ARGV[3] == '1' then
  state = ARGV[4]
  fields[#fields + 1] = 'state'
  fields[#fields + 1] = state
end

local result = {'ok', cack, stored, first, refused}
local keep = f[1] == 'closing' or ARGV[6] ~= '1' or takeRun(s, cack, tonumber(ARGV[7]), result, nil, ibytes > 0) > 0
local now, extra
if keep then
  -- The lease goes on (the next run, onClose, or next=false): extended from the server's clock.
  now = nowMs()
  extra = ARGV[5]
  fields[#fields + 1] = 'seen'
  fields[#fields + 1] = now
  fields[#fields + 1] = 'leaseUntil'
  fields[#fields + 1] = now + tonumber(extra)
else
  -- Released, in the same HSET ('-' is no token). No TIME: 'seen' and the expiry check below
  -- take the time the lease was last granted or renewed (the server's clock, at most a renewal
  -- period ago), never moving 'seen' back.
  now = math.max(num(f[14]) - tonumber(ARGV[5]), num(f[15]))
  extra = 0
  fields[#fields + 1] = 'seen'
  fields[#fields + 1] = now
  fields[#fields + 1] = 'lease'
  fields[#fields + 1] = '-'
  fields[#fields + 1] = 'leaseUntil'
  fields[#fields + 1] = 0
end
redis.call('HSET', s, unpack(fields))
touch({s, outKey}, f[7], extra, now, f[12], created)

if f[1] == 'closing' then
  return {'closing', cack, f[6], f[4], state, stored, first, refused}
end
return result
