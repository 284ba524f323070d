-- Mark an at-most-once step as started, before it runs. If the execution dies inside
-- it, the next execution finds the guard and fails the step instead of repeating it.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  the writer's fencing token
-- ARGV[2]  index of the step (0-based); it must be the next entry of the journal
-- Fields: fence status (read); guard (set)
-- Returns  nil when marked, else the entry another execution journaled at that index.
--          Errors: GONE, FENCED, NOTRUNNING, as append.lua.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'fence', 'status')
if f[1] ~= ARGV[1] then
  return fenced(f[1], ARGV[1])
end
if f[2] ~= 'running' then
  return not_running(f[2])
end
local n = redis.call('LLEN', journal)
local i = tonumber(ARGV[2])
if n > i then
  return redis.call('LINDEX', journal, i)
end
redis.call('HSET', meta, 'guard', i)
return false
