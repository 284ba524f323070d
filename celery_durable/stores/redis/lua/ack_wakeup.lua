-- Remove a claimed wake-up once its invocation is published, unless it was scheduled
-- again since the claim (the invocation suspended again, waiting for something else).
-- KEYS[1]  the wake-ups sorted set
-- ARGV[1]  task id
-- ARGV[2]  the score it was claimed with
-- Returns  1 when removed, else 0.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
