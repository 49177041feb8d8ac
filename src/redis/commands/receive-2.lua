--[[
  receive: client messages in. Validates the whole request first (nothing
  changes on a refusal), then trims the server log by the client's ack,
  buffers the new messages and, if the next seq is here and nobody holds the
  delivery lease, hands out the contiguous run under a new lease.

  KEYS[1] s    session record (HASH; its i<seq> fields are the inbound buffer)
  KEYS[2] out  server log (LIST)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH, else PUBLISH)
  ARGV[3] ack of the server stream ('' when the client sent none)
  ARGV[4] window: a fresh seq above clientAck + window refuses the request
  ARGV[5] bufferBytes: most bytes that may wait behind a gap
  ARGV[6] lease token   ARGV[7] lease ms   ARGV[8] maxDeliver
  ARGV[9..] seq, json, seq, json, ... (sorted by seq, unique)

  Returns
    {'unknown'} | {'closed'}
    {'invalid-ack', lastSeq}
    {'out-of-window', clientAck}
    {'ok', clientAck}   nothing to deliver (the common case: user and state stay here)
    {'ok', clientAck, userJson, stateJson, seq, json, seq, json, ...}
      the caller now holds the lease and must deliver the pairs in order
  Events: 'a' when the ack trimmed something and an append found the log full since the last 'a'.
]]
-- @include session
local s, outKey = KEYS[1], KEYS[2]
local channel, sharded = ARGV[1], ARGV[2]
-- User and state too, though only a delivery returns them: one HMGET rather than two.
local f = redis.call('HMGET', s, 'status', 'cack', 'last', 'ibytes', 'lease', 'leaseUntil', 'ttl', 'exp', 'wr', 'lbytes', 'user', 'state')
if not f[1] then return {'unknown'} end
if f[1] ~= 'open' then return {'closed'} end
local cack, last, ibytes = num(f[2]), num(f[3]), num(f[4])
-- The buffer exists exactly while it holds bytes: an empty one needs no look.
local buffered = ibytes > 0
local ack = tonumber(ARGV[3])
if ack and ack > last then return {'invalid-ack', last} end

-- Validate before changing anything.
local window, bufferBytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local fresh = {}
local freshBySeq = {}
local added = 0
for i = 9, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > cack and not freshBySeq[seq] and not (buffered and redis.call('HEXISTS', s, inField(seq)) == 1) then
    if seq > cack + window then return {'out-of-window', cack} end
    local json = ARGV[i + 1]
    freshBySeq[seq] = json
    fresh[#fresh + 1] = seq
    fresh[#fresh + 1] = json
    added = added + #json
  end
end
if added > 0 and ibytes + added > bufferBytes then
  -- Over the byte budget, a request is still accepted when it fills the gap:
  -- its first fresh seq is clientAck + 1 and every fresh message joins the
  -- run that starts there (inbound plus fresh). It leaves nothing behind a
  -- gap, and refusing it could wedge the session for good.
  local fills = fresh[1] == cack + 1
  if fills then
    local lastFresh = fresh[#fresh - 1]
    local seq = cack + 1
    while seq <= lastFresh and (freshBySeq[seq] or (buffered and redis.call('HEXISTS', s, inField(seq)) == 1)) do
      seq = seq + 1
    end
    fills = seq > lastFresh
  end
  if not fills then return {'out-of-window', cack} end
end

local now = nowMs()
-- Record fields written by this call, in one HSET at the end.
local fields = {'seen', now}
if ack then
  local trimmed, lbytes = trimLog(s, outKey, last, ack, f[10], channel, sharded, f[9])
  if trimmed > 0 then
    fields[#fields + 1] = 'lbytes'
    fields[#fields + 1] = lbytes
  end
end
if #fresh > 0 then
  -- Buffered in the record's own HSET below.
  for i = 1, #fresh, 2 do
    fields[#fields + 1] = inField(fresh[i])
    fields[#fields + 1] = fresh[i + 1]
  end
  fields[#fields + 1] = 'ibytes'
  fields[#fields + 1] = ibytes + added
end

local result = {'ok', cack}
local leaseMs = 0
-- A lease held by this very token is free to it: this call is a repeat (a resend after a lost reply).
if (not leaseHeld(f[5], f[6], now) or f[5] == ARGV[6]) and (freshBySeq[cack + 1] or (buffered and redis.call('HEXISTS', s, inField(cack + 1)) == 1)) then
  -- The caller delivers: it needs the user and the state too.
  result[3] = f[11]
  result[4] = f[12]
  takeRun(s, cack, tonumber(ARGV[8]), result, freshBySeq, buffered)
  leaseMs = tonumber(ARGV[7])
  fields[#fields + 1] = 'lease'
  fields[#fields + 1] = ARGV[6]
  fields[#fields + 1] = 'leaseUntil'
  fields[#fields + 1] = now + leaseMs
end
redis.call('HSET', s, unpack(fields))
touch({s, outKey}, f[7], leaseMs, now, f[8])
return result
