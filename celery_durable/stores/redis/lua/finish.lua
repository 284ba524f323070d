-- Record an invocation's final outcome and start its retention clock; first writer wins.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  final status: completed or failed
-- ARGV[2]  the outcome, JSON text
-- ARGV[3]  now, seconds since the epoch
-- ARGV[4]  retention in milliseconds
-- Returns  nil when this call finished the invocation,
--          else {status, outcome} that an earlier call recorded.
--          An error when the invocation is gone: nothing is written then.
local meta, journal = KEYS[1], KEYS[2]
local prior = redis.call('HMGET', meta, 'task', 'status', 'outcome')
if not prior[1] then
  return redis.error_reply('GONE the invocation no longer exists (forgotten or expired)')
end
if prior[2] == 'completed' or prior[2] == 'failed' then
  return {prior[2], prior[3]}
end
redis.call('HSET', meta, 'status', ARGV[1], 'outcome', ARGV[2], 'updated_at', ARGV[3])
redis.call('HDEL', meta, 'paused_reason')
redis.call('PEXPIRE', meta, ARGV[4])
redis.call('PEXPIRE', journal, ARGV[4])
return false
