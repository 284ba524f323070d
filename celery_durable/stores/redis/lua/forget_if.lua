-- Delete an invocation if it has a given status and was created before a given time
-- (an operator's purge): what it checks and what it deletes are one atomic change, so
-- an invocation that moved on since it was listed is kept. Its fence is kept in a
-- tombstone, as forget.lua keeps it.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash
-- KEYS[4..7]  the indexes: all, running, suspended, paused
-- KEYS[8]  the wake-ups sorted set of its slot (the one wake-ups set on one Redis)
-- KEYS[9]  its tombstone                       KEYS[10] its call (a string)
-- KEYS[11] its packed steps (a string)
-- ARGV[1]  task id (the index member)
-- ARGV[2]  the status it must have
-- ARGV[3]  it must have been created before this, seconds since the epoch
-- ARGV[4]  how long the tombstone is kept, milliseconds
-- Fields: status created_at fence (read)
-- Returns  1 when deleted, 0 when kept (another status, or newer), -1 when it no longer
--          existed (its id is taken out of the indexes).
local f = redis.call('HMGET', KEYS[1], 'status', 'created_at', 'fence')
if f[1] and (f[1] ~= ARGV[2] or tonumber(f[2]) >= tonumber(ARGV[3])) then
  return 0
end
if f[3] then
  redis.call('SET', KEYS[9], f[3], 'PX', ARGV[4])
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[10], KEYS[11])
for i = 4, 8 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if f[1] then return 1 end
return -1
