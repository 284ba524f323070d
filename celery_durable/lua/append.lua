-- Append one journal entry at a given index; the first writer of an index wins.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  index the entry belongs at (0-based)
-- ARGV[2]  the entry, JSON text
-- ARGV[3]  now, seconds since the epoch
-- Returns  nil when this call wrote the entry, else the entry already at that index.
--          An error when the invocation is gone or the index would leave a gap.
--          Writing an entry ends the failed attempts and the guard of its step.
local meta, journal = KEYS[1], KEYS[2]
if redis.call('EXISTS', meta) == 0 then
  return redis.error_reply('GONE the invocation no longer exists (forgotten or expired)')
end
local n = redis.call('LLEN', journal)
local i = tonumber(ARGV[1])
if n == i then
  redis.call('RPUSH', journal, ARGV[2])
  redis.call('HSET', meta, 'updated_at', ARGV[3])
  redis.call('HDEL', meta, 'attempt', 'guard')
  return false
end
if n > i then
  return redis.call('LINDEX', journal, i)
end
return redis.error_reply('GAP entry ' .. i .. ' written while the journal holds ' .. n)
