-- Append one journal entry at a given index, for the execution holding the fence.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  the writer's fencing token
-- ARGV[2]  index the entry belongs at (0-based)
-- ARGV[3]  the entry, JSON text
-- ARGV[4]  '1' when the step had failed attempts or a guard, which this entry ends
-- Fields: fence status cancel (read); attempt guard (deleted when ARGV[4] is '1')
-- Returns  nil when this call wrote the entry ({'cancel', reason} when the invocation was
--          cancelled: cancel.lua), else the entry already at that index (first writer
--          wins). Errors: GONE (the invocation no longer exists),
--          FENCED (another execution took the lease), NOTRUNNING (it finished, paused
--          or suspended), GAP (the index skips entries).
-- This runs once per step, so it does as little as it can: fence, status and the cancel
-- mark come in one HMGET. The mark rides on the reply, so that an execution learns of a
-- cancel without a round trip of its own.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'fence', 'status', 'cancel')
if f[1] ~= ARGV[1] then
  return fenced(f[1], ARGV[1])
end
if f[2] ~= 'running' then
  return not_running(f[2])
end
local n = redis.call('LLEN', journal)
local i = tonumber(ARGV[2])
if n == i then
  redis.call('RPUSH', journal, ARGV[3])
  if ARGV[4] == '1' then
    redis.call('HDEL', meta, 'attempt', 'guard')
  end
  if f[3] then
    return {'cancel', f[3]}
  end
  return false
end
if n > i then
  return redis.call('LINDEX', journal, i)
end
return redis.error_reply('GAP entry ' .. i .. ' written while the journal holds ' .. n)
