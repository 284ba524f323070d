-- Renew the lease of a running execution (from its heartbeat, not on the step path).
-- KEYS[1]  meta hash of the invocation
-- ARGV[1]  the holder's fencing token
-- ARGV[2]  lease ttl, milliseconds
-- Fields: fence lease cancel (read); lease_until (set)
-- Returns  1 when renewed (the cancel's reason when the invocation is cancelled, so that
--          a long step can see it: ctx.cancelled), 0 when the lease is no longer this
--          execution's: another execution took it (a newer fence), the invocation is
--          gone, or it no longer runs (a lease is held only while it runs: a finish,
--          pause, suspension or release deletes it). Also 1, with nothing renewed, when the stored fence is
--          older than the holder's: fences only go up (start.lua), so Redis lost writes
--          (the start that gave it), nobody else took the invocation, and the holder's
--          next write learns it and retries (errors.py), rather than stop as one that
--          lost its lease and leave the invocation to nobody.
local meta = KEYS[1]
local f = redis.call('HMGET', meta, 'fence', 'lease', 'cancel')
if f[1] and tonumber(f[1]) < tonumber(ARGV[1]) then
  return 1
end
if f[1] ~= ARGV[1] then
  return 0
end
if not f[2] then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', meta, 'lease_until', now_ms + tonumber(ARGV[2]))
if f[3] then
  return f[3]
end
return 1
