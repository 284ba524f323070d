-- Start an execution: create the invocation unless it exists, and return its state.
-- The caller reads the journal itself with LRANGE, pipelined after this script:
-- returning thousands of entries through Lua would copy each one twice.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  task name
-- ARGV[2]  argument fingerprint
-- ARGV[3]  seed, stored only when this call creates the invocation
-- ARGV[4]  now, seconds since the epoch
-- Returns  {created (0|1), task, fingerprint, seed, status, outcome or nil,
--           length, crashes, attempt or nil, guard or nil}
--          length is the journal's length as this script saw it.
--          crashes counts workers that died before journaling the next step: earlier
--          executions that never ended cleanly (frontier_starts counts those, and clean
--          ends take themselves off), at most one of them if the journal grew since.
--          Nothing is written for a finished invocation, or when the task or the
--          arguments differ (a reused task id). A paused invocation is set running again.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'task', 'fingerprint', 'seed', 'status', 'outcome',
                     'frontier', 'frontier_starts', 'attempt', 'guard')
if not f[1] then
  redis.call('HSET', meta, 'task', ARGV[1], 'fingerprint', ARGV[2], 'seed', ARGV[3],
             'status', 'running', 'created_at', ARGV[4], 'updated_at', ARGV[4],
             'frontier', 0, 'frontier_starts', 1)
  return {1, ARGV[1], ARGV[2], ARGV[3], 'running', false, 0, 0, false, false}
end
local status = f[4]
if status == 'completed' or status == 'failed' or f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then
  return {0, f[1], f[2], f[3], status, f[5], 0, 0, false, false}
end
local n = redis.call('LLEN', journal)
local unclean = math.max(tonumber(f[7]) or 0, 0)
if tonumber(f[6]) ~= n then
  unclean = math.min(unclean, 1)
end
local starts = unclean + 1
redis.call('HSET', meta, 'frontier', n, 'frontier_starts', starts, 'updated_at', ARGV[4])
if status == 'paused' then
  redis.call('HSET', meta, 'status', 'running')
  redis.call('HDEL', meta, 'paused_reason')
  status = 'running'
end
return {0, f[1], f[2], f[3], status, f[5], n, starts - 1, f[8], f[9]}
