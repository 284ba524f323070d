-- Complete an awaited operation from outside the execution (a child's outcome, an
-- awakeable resolved or rejected); first completion wins. Wakes the invocation if it
-- is suspended.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash                 KEYS[4]  the wake-ups sorted set
-- ARGV[1]  task id (the wake-up member)
-- ARGV[2]  journal index of the operation
-- ARGV[3]  its kind: 'call' or 'awakeable'
-- ARGV[4]  what proves the caller may complete it: the child's task id, or the
--          awakeable's secret token
-- ARGV[5]  the outcome, JSON text
-- Fields: status (read)
-- Returns  2 when completed and the invocation was suspended (a wake-up is due now),
--          1 when completed, 0 when it was completed before, or does not exist or no
--          longer matters (the invocation is gone or finished).
local meta, journal, done = KEYS[1], KEYS[2], KEYS[3]
local status = redis.call('HGET', meta, 'status')
if not status or status == 'completed' or status == 'failed' or status == 'cancelled'
    or status == 'replaced' then
  return 0
end
local text = redis.call('LINDEX', journal, tonumber(ARGV[2]))
if not text then
  return 0
end
local entry = cjson.decode(text)
if entry['k'] ~= ARGV[3] or type(entry['v']) ~= 'table' or entry['v']['id'] ~= ARGV[4] then
  return 0
end
if redis.call('HSETNX', done, ARGV[2], ARGV[5]) == 0 then
  return 0
end
if status == 'suspended' then
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  return 2
end
return 1
