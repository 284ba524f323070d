-- Append one journal entry at a given index; the first writer of an index wins.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  index the entry belongs at (0-based)
-- ARGV[2]  the entry, JSON text
-- ARGV[3]  '1' when the step had failed attempts or a guard, which this entry ends
-- Returns  nil when this call wrote the entry, else the entry already at that index.
--          An error when the invocation is gone or the index would leave a gap.
-- This runs once per step, so it does as little as it can: a journal that already
-- holds i entries proves the invocation exists (forgetting it deletes both keys).
local meta, journal = KEYS[1], KEYS[2]
local n = redis.call('LLEN', journal)
local i = tonumber(ARGV[1])
if n == i and (i > 0 or redis.call('EXISTS', meta) == 1) then
  redis.call('RPUSH', journal, ARGV[2])
  if ARGV[3] == '1' then
    redis.call('HDEL', meta, 'attempt', 'guard')
  end
  return false
end
if n > i then
  return redis.call('LINDEX', journal, i)
end
if redis.call('EXISTS', meta) == 0 then
  return redis.error_reply('GONE the invocation no longer exists (forgotten or expired)')
end
return redis.error_reply('GAP entry ' .. i .. ' written while the journal holds ' .. n)
