--[[
  Time, always from the Redis server (TIME), never from the caller, so that
  every instance sees the same leases and expiries; Redis 7 replicates a
  script's effects, which makes TIME safe to use before writes.
]]

-- A TIME reply {seconds, microseconds} in ms.
local function msOf(t)
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function nowMs()
  return msOf(redis.call('TIME'))
end
