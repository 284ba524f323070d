-- Tell an invocation that it got a slot of its concurrency key (release_slots.lua handed it
-- one): a mark in its completions, which its suspension waits for (suspend.lua sees it
-- there even if it comes before the suspension), and a wake-up if it is suspended.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its completions hash
-- KEYS[3]  the wake-ups sorted set of its slot (the one wake-ups set on one Redis)
-- ARGV[1]  task id (the wake-up member)         ARGV[2]  the mark: 'slot:<ticket>'
-- Fields: status (read)
-- Returns  2 when marked and a wake-up is due now (it was suspended), 1 when marked,
--          0 when it is gone or finished: its slot must go on to the next waiter
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'completed' or status == 'failed' or status == 'cancelled'
    or status == 'replaced' then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], 1)
if status == 'suspended' then
  redis.call('ZADD', KEYS[3], 0, ARGV[1])
  return 2
end
return 1
