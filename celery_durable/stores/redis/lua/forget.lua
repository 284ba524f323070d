-- Delete an invocation and its place in the listing. An execution still running it
-- finds it gone at its next write and stops. Its fence is kept in a tombstone, so
-- that an invocation created anew under its id starts above it (start.lua, fork.lua).
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash
-- KEYS[4..7]  the indexes: all, running, suspended, paused
-- KEYS[8]  the wake-ups sorted set of its slot (the one wake-ups set on one Redis)
-- KEYS[9]  its tombstone                       KEYS[10] its call (a string)
-- KEYS[11] its packed steps (a string)
-- ARGV[1]  task id (the index member)
-- ARGV[2]  how long the tombstone is kept, milliseconds
-- Fields: fence (read)
-- Returns  1 when it existed, else 0.
local fence = redis.call('HGET', KEYS[1], 'fence')
if fence then
  redis.call('SET', KEYS[9], fence, 'PX', ARGV[2])
end
local existed = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[10], KEYS[11])
for i = 4, 8 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if existed > 0 then return 1 end
return 0
