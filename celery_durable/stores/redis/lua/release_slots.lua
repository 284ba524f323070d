-- Take invocations out of a concurrency key (a holder that finished, one found dead, a
-- waiter that is cancelled) and hand the free slots to the earliest waiters. Each waiter
-- handed a slot holds it from now on; the caller tells it (grant_slot.lua), in its own
-- hash slot.
-- KEYS[1]  the key's holders sorted set          KEYS[2]  the key's waiting sorted set
-- ARGV[1]  the key's limit of slots
-- ARGV[2..]  task ids to take out
-- Returns  {id, ticket, id, ticket, ...}: the waiters handed a slot, in arrival order
local holders, waiting = KEYS[1], KEYS[2]
for i = 2, #ARGV do
  redis.call('ZREM', holders, ARGV[i])
  redis.call('ZREM', waiting, ARGV[i])
end
local granted = {}
local free = tonumber(ARGV[1]) - redis.call('ZCARD', holders)
if free > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local first = redis.call('ZRANGE', waiting, 0, free - 1, 'WITHSCORES')
  for i = 1, #first, 2 do
    redis.call('ZREM', waiting, first[i])
    redis.call('ZADD', holders, now, first[i])
    table.insert(granted, first[i])
    table.insert(granted, first[i + 1])
  end
end
return granted
