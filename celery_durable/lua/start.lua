-- Start an execution: create the invocation unless it exists, and return all of it.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  task name
-- ARGV[2]  argument fingerprint
-- ARGV[3]  seed, stored only when this call creates the invocation
-- ARGV[4]  now, seconds since the epoch
-- Returns  {created (0|1), task, fingerprint, seed, status, outcome or nil, {entries...}}
--          A paused invocation whose task and arguments match is set running again.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'task', 'fingerprint', 'seed', 'status', 'outcome')
if not f[1] then
  redis.call('HSET', meta, 'task', ARGV[1], 'fingerprint', ARGV[2], 'seed', ARGV[3],
             'status', 'running', 'created_at', ARGV[4], 'updated_at', ARGV[4])
  return {1, ARGV[1], ARGV[2], ARGV[3], 'running', false, {}}
end
local status = f[4]
if status == 'paused' and f[1] == ARGV[1] and f[2] == ARGV[2] then
  redis.call('HSET', meta, 'status', 'running', 'updated_at', ARGV[4])
  redis.call('HDEL', meta, 'paused_reason')
  status = 'running'
end
return {0, f[1], f[2], f[3], status, f[5], redis.call('LRANGE', journal, 0, -1)}
