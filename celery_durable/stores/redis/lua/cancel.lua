-- Cancel an invocation gracefully (an operator's cancel, or a deadline that passed): mark
-- it, so that its execution raises InvocationCancelled at its next durable operation, and
-- make sure one comes. Nothing changes once it has finished: racing a finish, the first
-- one wins. A second cancel keeps the first reason, and wakes it again if it needs it.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  the wake-ups sorted set of its slot (the one wake-ups set on one Redis)
-- KEYS[3]  the deadlines sorted set of its slot (the one deadlines set on one Redis)
-- KEYS[4]  its call (a string)
-- ARGV[1]  task id (the wake-up and deadline member)
-- ARGV[2]  why it is cancelled
-- ARGV[3]  now, seconds since the epoch
-- Fields: status cancel lease lease_until call (read); cancel updated_at (set);
--         released deaths (set when paused)
-- Returns  {'gone'}                      no such invocation
--          {'finished', status}          it finished: nothing changed
--          {'requested', status, already (0|1), woken (0|1), call or ''}
--          woken: it was suspended or paused, and a wake-up is due now (a paused one is
--          released to its next start, as resume.lua releases it); call: it runs and no
--          live lease holds it (a retry's countdown, a lost message): publish it now.
local meta, id = KEYS[1], ARGV[1]
-- A deadline is acted on once, whatever follows: the sweep that found it due, or an
-- operator before it, cancels it now.
redis.call('ZREM', KEYS[3], id)
local f = redis.call('HMGET', meta, 'status', 'cancel', 'lease', 'lease_until')
local status = f[1]
if not status then
  return {'gone'}
end
if status == 'completed' or status == 'failed' or status == 'cancelled'
    or status == 'replaced' then
  return {'finished', status}
end
local already = 0
if f[2] then
  already = 1
else
  redis.call('HSET', meta, 'cancel', ARGV[2], 'updated_at', ARGV[3])
end
if status == 'suspended' or status == 'paused' then
  -- It runs again now, and raises the cancel where it waits. Paused means paused until an
  -- operator moves it on: a cancel does, for its compensation to run; its deaths are
  -- cleared, as resume.lua clears them, or a crash loop would pause it again at once.
  if status == 'paused' then
    redis.call('HSET', meta, 'released', 'cancel', 'deaths', 0)
  end
  redis.call('ZADD', KEYS[2], 0, id)
  return {'requested', status, already, 1, ''}
end
-- Running: its execution learns of the cancel from its next write's reply, or from its
-- lease's renewal. When no live lease holds it, no execution will soon: publish it now.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if f[3] and (tonumber(f[4]) or 0) > now_ms then
  return {'requested', status, already, 0, ''}
end
-- An invocation started before the call had a key of its own keeps it in 'call'.
return {'requested', status, already, 0,
        redis.call('GET', KEYS[4]) or redis.call('HGET', meta, 'call') or ''}
