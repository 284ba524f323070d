-- Check that an invocation listed as holding a slot of a concurrency key still holds it:
-- holders are checked lazily, when a waiter finds every slot taken. One that died keeps
-- its slot no longer than its lease.
-- KEYS[1]  meta hash of the invocation
-- Fields: status lease lease_until (read); fence (raised when its lease ran out)
-- Returns  -1  it no longer holds a slot: gone, finished, or running with a lease that ran
--              out (its execution died; it is fenced out now, so that one still running
--              past its lease writes nothing more, and its next start counts a death)
--          -2  it holds its slot with no lease to watch: suspended, paused, or waiting
--              for a retry
--          else the milliseconds until its lease runs out
local meta = KEYS[1]
local f = redis.call('HMGET', meta, 'status', 'lease', 'lease_until')
local status = f[1]
if not status or status == 'completed' or status == 'failed' or status == 'cancelled'
    or status == 'replaced' then
  return -1
end
if status ~= 'running' or not f[2] then
  return -2
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = (tonumber(f[3]) or 0) - now
if left <= 0 then
  redis.call('HINCRBY', meta, 'fence', 1)
  return -1
end
return left
