-- End an execution cleanly without finishing the invocation (a Celery retry, Ignore
-- or Reject): release the lease, so that the next start runs at once and does not
-- count this execution as a death. A retry with new arguments records their
-- fingerprint here.
-- KEYS[1]  meta hash of the invocation
-- ARGV[1]  the holder's fencing token
-- ARGV[2]  new argument fingerprint, or '' to keep it
-- ARGV[3]  now, seconds since the epoch
-- Fields: fence status (read); updated_at fingerprint (set); lease lease_until (deleted)
-- Deaths before it at this frontier still count: this clean end adds none.
-- Returns  1 when released; 0 when the invocation is gone, another execution holds it,
--          or it no longer runs (a finished one keeps the fingerprint of its outcome).
local meta = KEYS[1]
local f = redis.call('HMGET', meta, 'fence', 'status')
if f[1] ~= ARGV[1] then
  return 0
end
if f[2] ~= 'running' then
  return 0
end
redis.call('HDEL', meta, 'lease', 'lease_until')
redis.call('HSET', meta, 'updated_at', ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', meta, 'fingerprint', ARGV[2])
end
return 1
