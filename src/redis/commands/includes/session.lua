--[[
  Helpers shared by the per-session scripts. src/redis/scripts.ts puts this
  file in front of each of them, so every script stays one EVAL.

  The session record (KEYS[1], a HASH) holds:
    status       'open' | 'closing' | 'closed'
    user, state  JSON text (never decoded here)
    idle, tomb   idle timeout and tombstone retention, ms
    ttl          safety TTL: how long the keys outlive the last activity, ms
    seen         last client activity, ms (Redis TIME)
    cack         client ack: highest client seq delivered to the handler
    ibytes       bytes of client messages in the inbound buffer (KEYS[2])
    last         last server seq assigned
    lbytes       bytes of unacked server messages in the log (KEYS[3])
    lease, leaseUntil          delivery / onClose lease: token and expiry, ms
    watcher                    token of the current watch
    closeSeq, closeReason, closedAt
    g:<group>                  one field per group the session joined (kept, inert, in the tombstone)
    closer                     in a tombstone: the token that finished the close
    ct                         the create call's token (a resent create answers ok)
    an                         how many ids the append-id list (KEYS aids) holds
    cs                         the last commit that carried messages: "seq:first:stored:refused"
    exp                        when the hot-path scripts last set the keys' expiry (absolute ms; see touch)
    wr                         set by an append that found the log full: the next trim publishes 'a'
  Absent number fields read as 0. Every length is in bytes (#str), which is
  the UTF-8 length of the JSON text.

  Time always comes from the Redis server (TIME), never from the caller, so
  that every instance sees the same leases; Redis 7 replicates a script's
  effects, which makes TIME safe to use before writes.
]]

local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(v)
  return tonumber(v) or 0
end

-- Wake-ups: m = message, c = close, a = ack, w:<token> = watch claim.
local function notify(channel, sharded, payload)
  if sharded == '1' then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end

local function leaseHeld(lease, leaseUntil, now)
  return lease ~= false and lease ~= nil and num(leaseUntil) > now
end

-- Activity: every key of the session lives (ttl + extra) ms from now, `ttl`
-- being the record's safety TTL (far above the idle timeout: only a sweep
-- ends an idle session, this is the last resort when none runs) and `extra`
-- a lease just taken (a closing session outlives its closer's lease). Never
-- shortens the record's current expiry; keys created by this call get the
-- same one.
--
-- The hot-path scripts pass `now` and the record's `exp` (when it last set
-- the keys' expiry, as an absolute time): while that is still at least 90% of
-- (ttl + extra) away, nothing is refreshed — saving a PTTL and a PEXPIRE per
-- key on nearly every call — and only the keys in `created` (made by this
-- call) get the record's expiry. So every key outlives the last activity by
-- at least 90% of the safety TTL. Without `now`, the keys are always refreshed.
local function touch(keys, ttl, extra, now, exp, created)
  local want = num(ttl) + num(extra)
  if want <= 0 then return end
  exp = num(exp)
  if now and exp - now >= want * 0.9 then
    if created then
      for i = 1, #created do
        redis.call('PEXPIREAT', created[i], exp)
      end
    end
    return
  end
  local current = redis.call('PTTL', keys[1])
  if current > want then want = current end
  for i = 1, #keys do
    redis.call('PEXPIRE', keys[i], want)
  end
  if now then redis.call('HSET', keys[1], 'exp', now + want) end
end

-- Trim the server log (LIST outKey, whose last element is seq `last`) up to
-- and including `ack`. Emits 'a' only when something was removed and a
-- sender may be waiting for room (`wr`, set by an append that found the log
-- full): most acks wake nobody.
local function trimLog(s, outKey, last, ack, channel, sharded, wr)
  local len = redis.call('LLEN', outKey)
  if len == 0 then return 0 end
  local n = ack - (last - len + 1) + 1
  if n <= 0 then return 0 end
  if n > len then n = len end
  local removed = redis.call('LRANGE', outKey, 0, n - 1)
  local bytes = 0
  for i = 1, #removed do
    bytes = bytes + #removed[i]
  end
  redis.call('LTRIM', outKey, n, -1)
  redis.call('HINCRBY', s, 'lbytes', -bytes)
  if wr then
    redis.call('HDEL', s, 'wr')
    notify(channel, sharded, 'a')
  end
  return n
end

-- Append the contiguous buffered run after `from` (at most `max`) to `into`
-- as seq, json pairs; returns how many.
local function takeRun(inKey, from, max, into)
  local n = 0
  while n < max do
    local json = redis.call('HGET', inKey, from + n + 1)
    if not json then break end
    into[#into + 1] = from + n + 1
    into[#into + 1] = json
    n = n + 1
  end
  return n
end

-- open -> closing: the close marker takes seq last + 1, and client messages
-- waiting behind a gap are dropped (they can never be delivered now).
local function beginClose(s, inKey, reason, last, channel, sharded)
  redis.call('HSET', s, 'status', 'closing', 'closeReason', reason, 'closeSeq', last + 1, 'ibytes', 0)
  redis.call('DEL', inKey)
  notify(channel, sharded, 'c')
end

