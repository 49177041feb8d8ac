--[[
  publish: messages to a group, written once to the group's log whatever
  the group's size (its own Cluster slot). Members pull them into their own
  logs at their next read or send (group-tail-2, then applyPulls). Wake-ups
  on the group's channel, which watches of members subscribe to: one per
  call, naming the entries and carrying them when small (see the end).

  One call takes one or more messages, consecutive publishes to the group
  that RedisStore gathered in one turn (its publish batches): they get
  consecutive gseqs, in their order.

  KEYS[1] members  the group's sids (SET)
  KEYS[2] log      entries '<time µs>|<json>', oldest first (LIST)
  KEYS[3] meta     HASH: e (epoch: when this log began, so a log dropped and
                   begun again is told apart), last (gseq of the newest
                   entry), t0 (time, ms, of the oldest entry, or older),
                   ids ('|id:gseq:members' of the last 32 calls, newest
                   first; gseq of the call's first entry), idn (their count),
                   n (the member count, so a publish needs no SCARD: set here
                   from SCARD when absent, raised by group-join-2, dropped by
                   group-leave-3)

  ARGV[1] channel   ARGV[2] sharded ('1': SPUBLISH)
  ARGV[3] maxEntries   ARGV[4] maxAgeMs
  ARGV[5] publish id of the call ('' = none; otherwise [A-Za-z0-9_-]+,
          checked by the caller)
  ARGV[6 ..] the messages (JSON), at least one

  Retention: at most maxEntries entries, none older than maxAgeMs (trimmed
  here, at each publish). Safe to run twice: a known id answers as its first
  run and writes nothing.

  Returns {members, gseq}: the group's size and the gseq of the first
  message's entry (the others follow it); {0, 0} when the group has no
  members (nothing is written).
]]
-- @include time
local PUBLISH_IDS = 32
local RUN_PAYLOAD_BYTES = 32768
local membersKey, logKey, metaKey = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[5]
local f = redis.call('HMGET', metaKey, 'e', 'last', 't0', 'ids', 'idn', 'n')
if id ~= '' and f[4] then
  local at = string.find(f[4], '|' .. id .. ':', 1, true)
  if at then
    local gseq, members = string.match(f[4], '^(%d+):(%d+)', at + #id + 2)
    return {tonumber(members), tonumber(gseq)}
  end
end
-- A count too high (an older version's leave left it) only writes an entry nobody pulls, and
-- one too low only answers fewer members: the entry is written whenever the count is not 0.
local members = tonumber(f[6]) or 0
if members <= 0 then members = redis.call('SCARD', membersKey) end
if members == 0 then return {0, 0} end
local t = redis.call('TIME')
local now = msOf(t)
local epoch, last, t0, ids, idn = f[1], tonumber(f[2]) or 0, tonumber(f[3]), f[4] or '', tonumber(f[5]) or 0
if not epoch then
  epoch, last, t0, ids, idn = t[1] .. '.' .. t[2], 0, now, '', 0
  redis.call('DEL', logKey)
end
local first = last + 1
local stamp = t[1] .. string.format('%06d', tonumber(t[2]))
local entries = {}
for i = 6, #ARGV do entries[#entries + 1] = stamp .. '|' .. ARGV[i] end
last = last + #entries
local len = redis.call('RPUSH', logKey, unpack(entries))
local maxEntries, maxAge = tonumber(ARGV[3]), tonumber(ARGV[4])
if len > maxEntries then
  redis.call('LTRIM', logKey, len - maxEntries, -1)
  len = maxEntries
end
-- By age: t0 is a lower bound of the oldest entry's time, so most publishes look at nothing.
if t0 == nil or now - t0 > maxAge then
  while len > 1 do
    local head = redis.call('LINDEX', logKey, 0)
    local at = math.floor(tonumber(string.sub(head, 1, string.find(head, '|', 1, true) - 1)) / 1000)
    if now - at <= maxAge then
      t0 = at
      break
    end
    redis.call('LPOP', logKey)
    len = len - 1
  end
  if len <= 1 then t0 = now end
end
if id ~= '' then
  ids = '|' .. id .. ':' .. first .. ':' .. members .. ids
  idn = idn + 1
  if idn > PUBLISH_IDS then
    ids = string.match(ids, '^(.*)|')
    idn = PUBLISH_IDS
  end
end
redis.call('HSET', metaKey, 'e', epoch, 'last', last, 't0', t0, 'ids', ids, 'idn', idn, 'n', members)
-- The wake-ups name the entries, and carry them when small and without a newline, so that a
-- member's watch can pull them without reading the group's log first (RedisStore, "group hints"):
-- 'g<epoch> <gseq> <time µs>[ <count>][\n<json>[\n<json>...]]', one per run of consecutive entries
-- of at most RUN_PAYLOAD_BYTES in all ('<count>' when more than one); an entry too large to carry,
-- or holding a newline, gets a bare wake-up of its own.
local publish = ARGV[2] == '1' and 'SPUBLISH' or 'PUBLISH'
local function wake(from, count, texts)
  local w = 'g' .. epoch .. ' ' .. from .. ' ' .. stamp
  if count > 1 then w = w .. ' ' .. count end
  if texts then w = w .. '\n' .. table.concat(texts, '\n') end
  redis.call(publish, ARGV[1], w)
end
local runFrom, texts, size = first, {}, 0
for i = 6, #ARGV do
  local msg, gseq = ARGV[i], first + i - 6
  if #msg > RUN_PAYLOAD_BYTES or string.find(msg, '\n', 1, true) then
    if #texts > 0 then wake(runFrom, #texts, texts) end
    wake(gseq, 1, nil)
    runFrom, texts, size = gseq + 1, {}, 0
  else
    if #texts > 0 and size + #msg > RUN_PAYLOAD_BYTES then
      wake(runFrom, #texts, texts)
      runFrom, texts, size = gseq, {}, 0
    end
    texts[#texts + 1] = msg
    size = size + #msg
  end
end
if #texts > 0 then wake(runFrom, #texts, texts) end
return {members, first}
