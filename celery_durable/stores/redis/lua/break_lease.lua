-- Expire the lease of an execution whose process is known to be dead (a prefork pool
-- child the worker saw die), so that the redelivered message starts at once. The
-- lease stays unreleased, so the next start still counts the death.
-- KEYS[1]  meta hash of the invocation
-- ARGV[1]  the dead holder (host:pid)
-- Fields: lease (read); lease_until (set)
-- Returns  1 when that holder's lease was expired, 0 when it held none.
local meta = KEYS[1]
if redis.call('HGET', meta, 'lease') ~= ARGV[1] then
  return 0
end
redis.call('HSET', meta, 'lease_until', 0)
return 1
