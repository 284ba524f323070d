-- Record an invocation's final outcome and start its retention clock; first writer wins.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- ARGV[1]  final status: completed or failed
-- ARGV[2]  the outcome, JSON text
-- ARGV[3]  now, seconds since the epoch
-- ARGV[4]  retention in milliseconds
-- Returns  nil when this call finished the invocation,
--          else {status, outcome} that an earlier call recorded.
local meta, journal = KEYS[1], KEYS[2]
local prior = redis.call('HMGET', meta, 'status', 'outcome')
if prior[1] == 'completed' or prior[1] == 'failed' then
  return {prior[1], prior[2]}
end
redis.call('HSET', meta, 'status', ARGV[1], 'outcome', ARGV[2], 'updated_at', ARGV[3])
redis.call('HDEL', meta, 'paused_reason')
redis.call('PEXPIRE', meta, ARGV[4])
redis.call('PEXPIRE', journal, ARGV[4])
return false
