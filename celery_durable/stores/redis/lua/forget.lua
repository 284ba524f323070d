-- Delete an invocation and its place in the listing. An execution still running it
-- finds it gone at its next write and stops.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3..6]  the indexes: all, running, suspended, paused
-- ARGV[1]  task id (the index member)
-- Returns  1 when it existed, else 0.
local existed = redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, 6 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if existed > 0 then return 1 end
return 0
