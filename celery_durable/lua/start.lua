-- Start an execution: create the invocation unless it exists, and return all of it.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  task name
-- ARGV[2]  argument fingerprint
-- ARGV[3]  seed, stored only when this call creates the invocation
-- ARGV[4]  now, seconds since the epoch
-- Returns  {created (0|1), task, fingerprint, seed, status, outcome or nil, {entries...},
--           crashes, attempt or nil, guard or nil}
--          entries is empty for a finished invocation: its outcome is all that matters.
--          crashes counts workers that died before journaling the next step: earlier
--          executions that never ended cleanly (frontier_starts counts those, and clean
--          ends reset it), at most one of them if the journal grew since they started.
--          Nothing is written when the task or the arguments differ (a reused task id).
--          A paused invocation is set running again.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'task', 'fingerprint', 'seed', 'status', 'outcome',
                     'frontier', 'frontier_starts', 'attempt', 'guard')
if not f[1] then
  redis.call('HSET', meta, 'task', ARGV[1], 'fingerprint', ARGV[2], 'seed', ARGV[3],
             'status', 'running', 'created_at', ARGV[4], 'updated_at', ARGV[4],
             'frontier', 0, 'frontier_starts', 1)
  return {1, ARGV[1], ARGV[2], ARGV[3], 'running', false, {}, 0, false, false}
end
local status = f[4]
if status == 'completed' or status == 'failed' then
  return {0, f[1], f[2], f[3], status, f[5], {}, 0, false, false}
end
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then
  -- Another task or other arguments: someone else's invocation. Touch nothing.
  return {0, f[1], f[2], f[3], status, false, {}, 0, false, false}
end
local entries = redis.call('LRANGE', journal, 0, -1)
local unclean = math.max(tonumber(f[7]) or 0, 0)
if tonumber(f[6]) ~= #entries then
  unclean = math.min(unclean, 1)
end
local starts = unclean + 1
redis.call('HSET', meta, 'frontier', #entries, 'frontier_starts', starts, 'updated_at', ARGV[4])
if status == 'paused' then
  redis.call('HSET', meta, 'status', 'running')
  redis.call('HDEL', meta, 'paused_reason')
  status = 'running'
end
return {0, f[1], f[2], f[3], status, f[5], entries, starts - 1, f[8], f[9]}
