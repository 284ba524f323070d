-- Start an execution: create the invocation unless it exists, and return its state.
-- The caller reads the journal itself with LRANGE, pipelined after this script:
-- returning thousands of entries through Lua would copy each one twice.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  task name
-- ARGV[2]  argument fingerprint
-- ARGV[3]  seed, stored only when this call creates the invocation
-- ARGV[4]  now, seconds since the epoch
-- ARGV[5]  the delivery's Celery retry count (request.retries)
-- Returns  {created (0|1), task, fingerprint, seed, status, outcome or nil,
--           length, crashes, attempt or nil, guard or nil}
--          length is the journal's length as this script saw it.
--          crashes counts workers that died before journaling the next step. A message
--          delivered again with the retry count of the last start is a redelivery, so
--          the executions that started with that count died (frontier_starts counts
--          them; at most one if the journal grew since). A Celery retry raises the count:
--          the execution before it ended cleanly.
--          Nothing is written for a finished invocation, or when the task or the
--          arguments differ (a reused task id). A paused invocation is set running again.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'task', 'fingerprint', 'seed', 'status', 'outcome',
                     'frontier', 'frontier_starts', 'attempt', 'guard', 'retries')
if not f[1] then
  redis.call('DEL', journal)  -- a journal without its metadata is a leftover, not ours
  redis.call('HSET', meta, 'task', ARGV[1], 'fingerprint', ARGV[2], 'seed', ARGV[3],
             'status', 'running', 'created_at', ARGV[4], 'updated_at', ARGV[4],
             'frontier', 0, 'frontier_starts', 1, 'retries', ARGV[5])
  return {1, ARGV[1], ARGV[2], ARGV[3], 'running', false, 0, 0, false, false}
end
local status = f[4]
if status == 'completed' or status == 'failed' or f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then
  return {0, f[1], f[2], f[3], status, f[5], 0, 0, false, false}
end
local n = redis.call('LLEN', journal)
local unclean = 0
if f[10] == ARGV[5] then
  unclean = math.max(tonumber(f[7]) or 0, 0)
  if tonumber(f[6]) ~= n then
    unclean = math.min(unclean, 1)
  end
end
local starts = unclean + 1
redis.call('HSET', meta, 'frontier', n, 'frontier_starts', starts, 'retries', ARGV[5],
           'updated_at', ARGV[4])
if status == 'paused' then
  redis.call('HSET', meta, 'status', 'running')
  redis.call('HDEL', meta, 'paused_reason')
  status = 'running'
end
return {0, f[1], f[2], f[3], status, f[5], n, starts - 1, f[8], f[9]}
