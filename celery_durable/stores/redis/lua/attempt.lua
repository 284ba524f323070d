-- Record the failed attempts of the step about to be journaled, before a retry.
-- The execution then ends cleanly, so it does not count as a crash at the next start.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  index of the step (0-based); it must be the next entry of the journal
-- ARGV[2]  the attempt record, JSON text
-- ARGV[3]  now, seconds since the epoch
-- Returns  nil when recorded, else the entry another execution journaled at that index.
local meta, journal = KEYS[1], KEYS[2]
if redis.call('EXISTS', meta) == 0 then
  return redis.error_reply('GONE the invocation no longer exists (forgotten or expired)')
end
local n = redis.call('LLEN', journal)
local i = tonumber(ARGV[1])
if n > i then
  return redis.call('LINDEX', journal, i)
end
redis.call('HSET', meta, 'attempt', ARGV[2], 'frontier_starts', 0, 'updated_at', ARGV[3])
-- The step returned (by raising): an at-most-once guard has nothing left to guard.
redis.call('HDEL', meta, 'guard')
return false
