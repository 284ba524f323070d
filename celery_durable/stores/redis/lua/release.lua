-- End an execution cleanly without finishing the invocation (a Celery retry, Ignore
-- or Reject): release the lease, so that the next start runs at once and does not
-- count this execution as a death. A retry with new arguments records their
-- fingerprint and call here. A retry that re-opens the journal's last entries (Celery's
-- retry idiom: the body retries after a step it ran) drops them in the same write.
-- KEYS[1]  meta hash of the invocation
-- KEYS[2]  journal list of the invocation
-- KEYS[3]  its call (a string)
-- ARGV[1]  the holder's fencing token
-- ARGV[2]  new argument fingerprint, or '' to keep it
-- ARGV[3]  now, seconds since the epoch
-- ARGV[4]  milliseconds until the next delivery is due (the retry's countdown), or 0:
--          the recovery sweep leaves the invocation alone until then
-- ARGV[5]  the call that re-publishes it with the new arguments (JSON, into KEYS[3]), or
--          '' to keep it
-- ARGV[6]  index of the first entry to re-open (every entry from it on is dropped), or
--          -1 to keep the journal as it is
-- ARGV[7]  the journal's last entry as the holder wrote it: nothing is dropped unless
--          it is still the last one
-- ARGV[8]  the attempt record of the re-opened step(s), JSON, set with the drop
-- ARGV[9]  '1' while the execution has raised no cancel, else '0' (suspend.lua)
-- Fields: fence status cancel (read); updated_at due fingerprint attempt (set);
--         lease lease_until (deleted)
-- Deaths before it at this frontier still count: this clean end adds none.
-- Returns  1 when released ({'cancel', reason} when the invocation is cancelled: its next
--          delivery is due now, for the cancel to be raised); 0 when the invocation is
--          gone, another execution holds it, or it no longer runs (a finished one keeps
--          the fingerprint of its outcome); then nothing changed.
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'fence', 'status', 'cancel')
if f[1] ~= ARGV[1] then
  return 0
end
if f[2] ~= 'running' then
  return 0
end
local t = redis.call('TIME')
local cancelled = f[3] and ARGV[9] == '1'
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not cancelled then
  due = due + tonumber(ARGV[4])
end
redis.call('HDEL', meta, 'lease', 'lease_until')
redis.call('HSET', meta, 'updated_at', ARGV[3], 'due', due)
if ARGV[2] ~= '' then
  redis.call('HSET', meta, 'fingerprint', ARGV[2])
end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[3], ARGV[5])
end
local start = tonumber(ARGV[6])
if start >= 0 and start < redis.call('LLEN', journal)
    and redis.call('LINDEX', journal, -1) == ARGV[7] then
  if start == 0 then
    redis.call('DEL', journal)
  else
    redis.call('LTRIM', journal, 0, start - 1)
  end
  redis.call('HSET', meta, 'attempt', ARGV[8])
end
if cancelled then
  return {'cancel', f[3]}
end
return 1
