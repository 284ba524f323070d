-- Suspend a running invocation until something it awaits completes: release its lease
-- and, for a timer, schedule its wake-up. Nothing is suspended when what it awaits has
-- completed in the meantime: the caller then delivers it again at once.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its completions hash
-- KEYS[3]  index of running ones                KEYS[4]  index of suspended ones
-- KEYS[5]  the wake-ups sorted set               KEYS[6]  its call (a string)
-- ARGV[1]  task id (the index and wake-up member)
-- ARGV[2]  the holder's fencing token
-- ARGV[3]  what it awaits, JSON for people (the meta's 'awaiting')
-- ARGV[4]  the journal indexes of the awaited completions, comma-separated, or ''
-- ARGV[5]  when the earliest awaited timer is due, ms of Redis's clock, or 0
-- ARGV[6]  the call a wake-up re-publishes (JSON, into KEYS[6]): this delivery's, which a retry
--          with new arguments may have changed since the last suspension
-- ARGV[7]  now, seconds since the epoch
-- ARGV[8]  '1' while the execution has raised no cancel (a cancel would be news to it),
--          else '0': it raised it already, and runs its compensation
-- Fields: fence status created_at cancel (read); status awaiting updated_at (set);
--         lease lease_until (deleted)
-- Returns  'suspended', or 'ready' when an awaited completion is there, the timer is due,
--          or the invocation was cancelled meanwhile (the lease is released either way).
--          Errors: GONE, FENCED, NOTRUNNING, as append.lua.
local meta, done = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'fence', 'status', 'created_at', 'cancel')
if f[1] ~= ARGV[2] then
  return fenced(f[1], ARGV[2])
end
if f[2] ~= 'running' then
  return not_running(f[2])
end
redis.call('HDEL', meta, 'lease', 'lease_until')
redis.call('HSET', meta, 'updated_at', ARGV[7])
redis.call('SET', KEYS[6], ARGV[6])
-- A cancel that came while it ran woke nothing (cancel.lua wakes only the suspended): it
-- runs again now, and raises the cancel where it waits.
if f[4] and ARGV[8] == '1' then
  return 'ready'
end
for index in string.gmatch(ARGV[4], '[^,]+') do
  if redis.call('HEXISTS', done, index) == 1 then
    return 'ready'
  end
end
local wake = tonumber(ARGV[5])
if wake > 0 then
  local t = redis.call('TIME')
  if wake <= tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
    return 'ready'
  end
  redis.call('ZADD', KEYS[5], 'LT', wake, ARGV[1])
end
redis.call('HSET', meta, 'status', 'suspended', 'awaiting', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], f[3], ARGV[1])
return 'suspended'
