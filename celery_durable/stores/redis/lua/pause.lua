-- Pause a running invocation (its code and journal disagree, or a step's policy was
-- exhausted with on_exhausted='pause'): kept, without expiry, until an operator
-- resumes, restarts or forgets it (a later delivery runs nothing: start.lua). Only the
-- execution holding the fence pauses it.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  index of running ones
-- KEYS[3]  index of paused ones
-- KEYS[4]  its call (a string)
-- ARGV[1]  task id (the index member)
-- ARGV[2]  the holder's fencing token
-- ARGV[3]  why it is paused
-- ARGV[4]  now, seconds since the epoch
-- ARGV[5]  the call, to re-publish it when resumed (JSON, into KEYS[4]), or ''
-- ARGV[6]  the failed attempts of the step that paused it (JSON), or '' (optional)
-- Fields: fence status created_at (read); status paused_reason updated_at attempt
--         (set); lease lease_until (deleted)
-- Returns  the status after the call: 'paused', or the status it had when it was not
--          running (nothing changed). Errors: GONE, FENCED.
local meta = KEYS[1]
local f = redis.call('HMGET', meta, 'fence', 'status', 'created_at')
if f[1] ~= ARGV[2] then
  return fenced(f[1], ARGV[2])
end
if f[2] ~= 'running' then
  return f[2]
end
redis.call('HSET', meta, 'status', 'paused', 'paused_reason', ARGV[3], 'updated_at', ARGV[4])
redis.call('HDEL', meta, 'lease', 'lease_until')
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[4], ARGV[5])
end
if ARGV[6] and ARGV[6] ~= '' then
  redis.call('HSET', meta, 'attempt', ARGV[6])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], f[3], ARGV[1])
return 'paused'
