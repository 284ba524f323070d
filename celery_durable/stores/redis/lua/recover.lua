-- Claim a lost invocation for the recovery sweep: one still running whose lease ran
-- out, and whose retry (if it waits for one) was due, more than ARGV[1] ms ago, so that
-- no delivery is coming any more. The caller publishes the call it returns again. While
-- no execution takes the lease after a claim (the fence stays the same), the next claim
-- waits ARGV[1] ms, then twice, four times ... 32 times as long: a message stuck in a
-- long queue is published again now and then, not at every sweep.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its call (a string)
-- ARGV[1]  durable_recovery_after, milliseconds
-- Fields: status lease_until due fence recovered call (read); recovered (set)
-- Returns  the stored call (JSON), '' when there is none (claimed all the same), or
--          false when it is gone, not running, or not lost: its lease is live, its retry
--          is not ARGV[1] ms past due, or the last claim is too recent
local meta = KEYS[1]
local f = redis.call('HMGET', meta, 'status', 'lease_until', 'due', 'fence', 'recovered')
if f[1] ~= 'running' then
  return false
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local after = tonumber(ARGV[1])
if now_ms < math.max(tonumber(f[2]) or 0, tonumber(f[3]) or 0) + after then
  return false
end
local fence = f[4] or '0'
local count = 1
local last_fence, last_count, next_ms = string.match(f[5] or '', '^(%d+):(%d+):(%d+)$')
if last_fence == fence then
  if now_ms < tonumber(next_ms) then
    return false
  end
  count = tonumber(last_count) + 1
end
local wait = after * 2 ^ math.min(count - 1, 5)
redis.call('HSET', meta, 'recovered', fence .. ':' .. count .. ':' .. (now_ms + wait))
-- An invocation started before the call had a key of its own keeps it in 'call'.
return redis.call('GET', KEYS[2]) or redis.call('HGET', meta, 'call') or ''
