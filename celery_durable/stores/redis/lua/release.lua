-- End an execution cleanly without finishing the invocation (a Celery retry, Ignore
-- or Reject): release the lease, so that the next start runs at once and does not
-- count this execution as a death. A retry with new arguments records their
-- fingerprint and call here.
-- KEYS[1]  meta hash of the invocation
-- ARGV[1]  the holder's fencing token
-- ARGV[2]  new argument fingerprint, or '' to keep it
-- ARGV[3]  now, seconds since the epoch
-- ARGV[4]  milliseconds until the next delivery is due (the retry's countdown), or 0:
--          the recovery sweep leaves the invocation alone until then
-- ARGV[5]  the call that re-publishes it with the new arguments (JSON), or '' to keep it
-- Fields: fence (read); updated_at due fingerprint call (set); lease lease_until (deleted)
-- Deaths before it at this frontier still count: this clean end adds none.
-- Returns  1 when released, 0 when the invocation is gone or another execution holds it.
local meta = KEYS[1]
if redis.call('HGET', meta, 'fence') ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[4])
redis.call('HDEL', meta, 'lease', 'lease_until')
redis.call('HSET', meta, 'updated_at', ARGV[3], 'due', due)
if ARGV[2] ~= '' then
  redis.call('HSET', meta, 'fingerprint', ARGV[2])
end
if ARGV[5] ~= '' then
  redis.call('HSET', meta, 'call', ARGV[5])
end
return 1
