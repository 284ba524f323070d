-- Record the failed attempts of the next step. Before a retry the execution also ends
-- cleanly: its lease is released, so the next start does not count it as a death.
-- Without the release it records deaths of workers during the step, which it counts.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  the writer's fencing token
-- ARGV[2]  index of the step (0-based); it must be the next entry of the journal
-- ARGV[3]  the attempt record, JSON text
-- ARGV[4]  now, seconds since the epoch
-- ARGV[5]  '1' to release the lease (the execution ends), '0' to keep it
-- ARGV[6]  when released: milliseconds until the retry is due (its countdown), which the
--          recovery sweep waits for
-- ARGV[7]  '1' while the execution has raised no cancel, else '0' (suspend.lua)
-- Fields: fence status cancel (read); attempt updated_at deaths (set); due (set when
--         released); guard lease lease_until (deleted when released)
-- Returns  nil when recorded ({'cancel', reason} when released while the invocation is
--          cancelled: its retry is due now, for the cancel to be raised at the step), else
--          the entry another execution journaled at that index.
--          Errors: GONE, FENCED, NOTRUNNING, as append.lua.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'fence', 'status', 'cancel')
if f[1] ~= ARGV[1] then
  return fenced(f[1], ARGV[1])
end
if f[2] ~= 'running' then
  return not_running(f[2])
end
local n = redis.call('LLEN', journal)
if n > tonumber(ARGV[2]) then
  return redis.call('LINDEX', journal, tonumber(ARGV[2]))
end
redis.call('HSET', meta, 'attempt', ARGV[3], 'updated_at', ARGV[4], 'deaths', 0)
if ARGV[5] == '1' then
  -- The step returned (by raising): an at-most-once guard has nothing left to guard.
  redis.call('HDEL', meta, 'guard', 'lease', 'lease_until')
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if f[3] and ARGV[7] == '1' then
    redis.call('HSET', meta, 'due', due)
    return {'cancel', f[3]}
  end
  redis.call('HSET', meta, 'due', due + tonumber(ARGV[6]))
end
return false
