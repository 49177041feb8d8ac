--[[
  Helpers shared by the per-session scripts, which include this file
  (`-- @include session`, resolved by src/redis/scripts.ts when the module
  loads), so every script stays one EVAL.

  The session record (KEYS[1], a HASH) holds:
    status       'open' | 'closing' | 'closed'
    user, state  JSON text (never decoded here)
    idle, tomb   idle timeout and tombstone retention, ms
    ttl          safety TTL: how long the keys outlive the last activity, ms
    seen         last client activity, ms (Redis TIME)
    cack         client ack: highest client seq delivered to the handler
    ibytes       bytes of client messages in the inbound buffer (the i<seq> fields)
    i<seq>       the inbound buffer: a client message not yet committed (waiting for the lease
                 holder, or behind a gap), one field per seq. In the record, not a key of its own:
                 buffering and committing a message then ride on the record's own HSET and HMGET,
                 and need no expiry of their own
    last         last server seq assigned
    lbytes       bytes of unacked server messages in the log (the session's LIST)
    lease, leaseUntil          delivery / onClose lease: token and expiry, ms; a commit that
                               releases it writes '-' and 0 (no token is '-': in the same HSET
                               as the delivery record, where an HDEL would be one command more)
    watcher                    token of the current watch
    closeSeq, closeReason, closedAt
    g:<group>                  one field per group the session joined, holding its cursor
                               '<epoch>:<gseq>': the last entry of that group's log pulled
                               into this session's log (kept, inert, in the tombstone)
    gn                         how many groups the session is in (0: reads skip groups)
    closer                     in a tombstone: the token that finished the close
    ct                         the create call's token (a resent create answers ok)
    an                         how many ids the append-id list (KEYS aids) holds
    cs                         the last commit that carried messages: "seq:first:stored:refused"
    exp                        when the hot-path scripts last set the keys' expiry (absolute ms; see touch)
    wr                         set by an append that found the log full: the next trim publishes 'a'
  Absent number fields read as 0. Every length is in bytes (#str), which is
  the UTF-8 length of the JSON text.
]]
-- @include time

local function num(v)
  return tonumber(v) or 0
end

-- Wake-ups: m = message (see notifyMessages), c = close, a = ack, w:<token> = watch claim.
local function notify(channel, sharded, payload)
  if sharded == '1' then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end

-- A message wake-up: 'm', followed, when they are small, by the messages it announces, so that a
-- watch that has sent everything before them writes them without reading the log (a round trip and
-- a script less per message): 'm<first seq> <client ack>\n<json>\n<json>...'. The messages are
-- args[from .. to], stored at seqs first ...; JSON from core never holds a newline, and one that
-- does (or more than RUN_PAYLOAD_BYTES of them) gets the bare 'm'.
local RUN_PAYLOAD_BYTES = 32768
local function notifyMessages(channel, sharded, first, cack, args, from, to, bytes)
  if bytes <= RUN_PAYLOAD_BYTES then
    local plain = true
    for i = from, to do
      if string.find(args[i], '\n', 1, true) then
        plain = false
        break
      end
    end
    if plain then
      notify(channel, sharded, 'm' .. first .. ' ' .. cack .. '\n' .. table.concat(args, '\n', from, to))
      return
    end
  end
  notify(channel, sharded, 'm')
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
-- and including `ack`, without LLEN: the log holds seqs first..last, seq q at
-- index -(last - q + 1). `lbytes` is the log's bytes now (the log exists
-- exactly while it holds bytes). Returns how many were removed (0 or more;
-- any positive count when it emptied the log) and the log's bytes after; the
-- caller writes 'lbytes' when the count is positive. Emits 'a' only when
-- something was removed and a sender may be waiting for room (`wr`, set by
-- an append that found the log full): most acks wake nobody.
local function trimLog(s, outKey, last, ack, lbytes, channel, sharded, wr)
  lbytes = num(lbytes)
  if lbytes <= 0 or ack <= 0 then return 0, lbytes end
  local n
  if ack >= last then
    -- Everything goes: its bytes are all of them.
    redis.call('DEL', outKey)
    n, lbytes = 1, 0
  else
    local removed = redis.call('LRANGE', outKey, 0, -(last - ack + 1))
    n = #removed
    if n == 0 then return 0, lbytes end
    redis.call('LTRIM', outKey, -(last - ack), -1)
    for i = 1, n do
      lbytes = lbytes - #removed[i]
    end
  end
  if wr then
    redis.call('HDEL', s, 'wr')
    notify(channel, sharded, 'a')
  end
  return n, lbytes
end

-- The inbound buffer's field for client seq `seq`.
local function inField(seq)
  return 'i' .. seq
end

-- Drop every buffered client message (`ibytes`: the buffer's bytes; 0: there are none).
local function dropInbound(s, ibytes)
  if num(ibytes) <= 0 then return end
  local fields = redis.call('HKEYS', s)
  local drop = {}
  for i = 1, #fields do
    if string.match(fields[i], '^i%d+$') then drop[#drop + 1] = fields[i] end
  end
  if #drop > 0 then redis.call('HDEL', s, unpack(drop)) end
end

-- Append the contiguous run after `from` (at most `max`) to `into` as seq,
-- json pairs; returns how many. `known`: seq -> json of messages this call
-- has in hand (nil: none); `buffered`: whether the inbound buffer may hold
-- any (`ibytes` > 0), else only `known` is looked at.
local function takeRun(s, from, max, into, known, buffered)
  local n = 0
  while n < max do
    local seq = from + n + 1
    local json = known and known[seq]
    if not json and buffered then json = redis.call('HGET', s, inField(seq)) end
    if not json then break end
    into[#into + 1] = seq
    into[#into + 1] = json
    n = n + 1
  end
  return n
end

-- open -> closing: the close marker takes seq last + 1, and client messages
-- waiting behind a gap are dropped (they can never be delivered now).
local function beginClose(s, ibytes, reason, last, channel, sharded)
  redis.call('HSET', s, 'status', 'closing', 'closeReason', reason, 'closeSeq', last + 1, 'ibytes', 0)
  dropInbound(s, ibytes)
  notify(channel, sharded, 'c')
end


-- The session's groups and cursors as a flat list name, cursor, ... ({} when it is in none).
local function groupCursors(s, gn)
  local out = {}
  if num(gn) <= 0 then return out end
  local fields = redis.call('HKEYS', s)
  local names = {}
  for i = 1, #fields do
    if string.sub(fields[i], 1, 2) == 'g:' then names[#names + 1] = fields[i] end
  end
  if #names == 0 then return out end
  local cursors = redis.call('HMGET', s, unpack(names))
  for i = 1, #names do
    out[#out + 1] = string.sub(names[i], 3)
    out[#out + 1] = cursors[i]
  end
  return out
end

--[[
  Group entries into the session's log: the compare-and-set half of a pull
  (docs/STORE.md, "Groups"). The caller read the entries after the session's
  cursors from the groups' own logs (other Cluster slots) and passes them as
  a pull block in args from index i:

    P, then P x (group, cursor it read, group epoch, state), state 'c' (the
       block holds every entry after the cursor), 'p' (only the first ones: the
       caller reads at most the unacked bound) or 'o' (overrun: the group's
       log dropped entries after the cursor),
    R, then R runs x (group index 1..P, first gseq, n, json x n): each run
       consecutive entries of one group, ascending within each group, groups
       interleaved in publish-time order (one group's block is one run: one
       argument per entry, which is what the caller and Redis pay for)

  A group whose cursor is no longer the one the caller read (another pull got
  there first, or the session left) is skipped: nothing is pulled twice, so a
  resent call changes nothing more. Entries go in block order while they fit
  the unacked bounds (`all`: every entry of every group the session is in,
  plus `extraN` messages of `extraB` bytes, must fit, else nothing moves).

  `gn`: the session's group count; `len`, `lbytes`: its log's length and
  bytes now. The caller records the new last seq and bytes.

  Returns status, messages added, bytes added, and how many of the block's groups
  had the cursor it was read at (the session's current groups among them):
    'ok'       entries (maybe none) appended at seqs last + 1 ..., cursors moved
    'full'     (`all`) not everything fits: nothing changed
    'stale'    (`all`) the block does not cover the session's groups with their
               current cursors: nothing changed, read the groups again
    'overrun'  a group's log no longer holds entries this session never pulled:
               nothing changed; the caller closes the session
]]
local function applyPulls(s, outKey, args, i, gn, len, lbytes, maxN, maxB, all, extraN, extraB)
  local P = tonumber(args[i])
  i = i + 1
  local hdr = {}
  local current = 0
  for g = 1, P do
    local cur = redis.call('HGET', s, 'g:' .. args[i])
    local h = { name = args[i], epoch = args[i + 2], ok = cur == args[i + 1], upto = nil }
    if h.ok then
      current = current + 1
      if args[i + 3] == 'o' then return 'overrun', 0, 0 end
      if all and args[i + 3] ~= 'c' then return 'full', 0, 0 end
    end
    hdr[g] = h
    i = i + 4
  end
  if all and current < num(gn) then return 'stale', 0, 0 end
  local R = tonumber(args[i])
  i = i + 1
  local take, n, bytes, stopped = {}, 0, 0, false
  for r = 1, R do
    local h = hdr[tonumber(args[i])]
    local first, count = tonumber(args[i + 1]), tonumber(args[i + 2])
    i = i + 3
    if h.ok and not stopped then
      for k = 0, count - 1 do
        local json = args[i + k]
        if len + n + 1 > maxN or lbytes + bytes + #json > maxB then
          if all then return 'full', 0, 0 end
          -- Stop at the first entry that does not fit: what is taken stays a prefix of every group's entries.
          stopped = true
          break
        end
        take[#take + 1] = json
        n = n + 1
        bytes = bytes + #json
        h.upto = first + k
      end
    end
    i = i + count
  end
  if all and (len + n + extraN > maxN or lbytes + bytes + extraB > maxB) then return 'full', 0, 0, current end
  for k = 1, #take, 1000 do
    redis.call('RPUSH', outKey, unpack(take, k, math.min(k + 999, #take)))
  end
  for g = 1, P do
    local h = hdr[g]
    -- %d: a number concatenated as is would turn to exponent notation past 1e14.
    if h.ok and h.upto then redis.call('HSET', s, 'g:' .. h.name, h.epoch .. ':' .. string.format('%d', h.upto)) end
  end
  return 'ok', n, bytes, current
end
