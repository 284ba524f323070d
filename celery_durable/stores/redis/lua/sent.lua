-- Note that the child at a journal index was published, so that a replay does not
-- publish it again.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its completions hash
-- ARGV[1]  the holder's fencing token
-- ARGV[2]  journal index of the call
-- Fields: fence (read)
-- Returns  1. Errors: GONE, FENCED.
local f = redis.call('HGET', KEYS[1], 'fence')
if f ~= ARGV[1] then
  return fenced(f, ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[2] .. ':sent', 1)
return 1
