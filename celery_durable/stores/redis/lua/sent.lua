-- Note that the child at a journal index was published, so that a replay does not
-- publish it again. Refused once the invocation no longer runs: after a finish the
-- completions hash expires with the rest, and a write here would make it anew, with
-- no expiry.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its completions hash
-- ARGV[1]  the holder's fencing token
-- ARGV[2]  journal index of the call
-- Fields: fence status (read)
-- Returns  1. Errors: GONE, FENCED, NOTRUNNING, as append.lua.
local f = redis.call('HMGET', KEYS[1], 'fence', 'status')
if f[1] ~= ARGV[1] then
  return fenced(f[1], ARGV[1])
end
if f[2] ~= 'running' then
  return not_running(f[2])
end
redis.call('HSET', KEYS[2], ARGV[2] .. ':sent', 1)
return 1
