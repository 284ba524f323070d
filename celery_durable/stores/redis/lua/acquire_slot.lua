-- Take a slot of a concurrency key for an invocation, or put it in line for one. The key's
-- sets live under the key's own hash tag: on a Redis Cluster another slot than the
-- invocation's, which this script does not touch (concurrency.py says how the two stay in
-- step when a worker dies between two scripts).
-- KEYS[1]  the key's holders sorted set          KEYS[2]  the key's waiting sorted set
-- ARGV[1]  the invocation's task id              ARGV[2]  the key's limit of slots
-- Returns  {'held'}       it holds a slot already (an execution after a suspension)
--          {'acquired'}   it got one now
--          {'queued', ticket, {holders}}   all are taken, or go to those before it in
--          line; ticket: when it first asked (ms), its place in line
local holders, waiting, id = KEYS[1], KEYS[2], ARGV[1]
if redis.call('ZSCORE', holders, id) then
  return {'held'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Its place in line is where it first asked: a waiter asking again keeps it.
redis.call('ZADD', waiting, 'NX', now, id)
local free = tonumber(ARGV[2]) - redis.call('ZCARD', holders)
if free > 0 and redis.call('ZRANK', waiting, id) < free then
  redis.call('ZREM', waiting, id)
  redis.call('ZADD', holders, now, id)
  return {'acquired'}
end
return {'queued', redis.call('ZSCORE', waiting, id), redis.call('ZRANGE', holders, 0, -1)}
