-- Pause a finished invocation whose stored outcome a worker refused to read (it is not
-- what celery-durable writes, or names a codec that neither the task nor the app uses):
-- kept, without expiry, until an operator resumes it (its body runs again from its
-- journal and records its outcome anew) or forgets it. Only while it still has the
-- status and the outcome that were refused: anything that changed it since wins.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash
-- KEYS[4]  index of all invocations             KEYS[5]  index of paused ones
-- KEYS[6]  its call (a string)                KEYS[7]  its packed steps (a string)
-- ARGV[1]  task id (the index member)
-- ARGV[2]  the status it was read with: completed or failed
-- ARGV[3]  the outcome that was refused, JSON text
-- ARGV[4]  why it is paused
-- ARGV[5]  now, seconds since the epoch
-- ARGV[6]  SHA-1 of the packed steps the caller read and unpacked, or ''
-- ARGV[7]  their seed         ARGV[8]  their call         ARGV[9 ..]  their entries
--          (a resume needs them as a list, a string and a field: they are put back,
--          and the pack goes, if it is still the one read)
-- Fields: status outcome created_at steps_until packed (read); status paused_reason
--         updated_at, seed when unpacked (set); steps_until while the steps are kept,
--         packed (deleted)
-- Returns  'paused', the status it has now when that or its outcome changed since it
--          was read (nothing changed), or '' when it does not exist.
local meta = KEYS[1]
local f = redis.call('HMGET', meta, 'status', 'outcome', 'created_at', 'steps_until', 'packed')
if not f[1] then
  return ''
end
if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then
  return f[1]
end
local pack = f[5] and redis.call('GET', KEYS[7])
if pack and redis.sha1hex(pack) ~= ARGV[6] then
  return f[1]  -- not the pack the caller read: nothing changed
end
if f[5] then
  if pack then
    redis.call('DEL', KEYS[2], KEYS[7])
    for i = 9, #ARGV do
      redis.call('RPUSH', KEYS[2], ARGV[i])
    end
    if ARGV[7] ~= '' then
      redis.call('HSET', meta, 'seed', ARGV[7])
    end
    if ARGV[8] ~= '' then
      redis.call('SET', KEYS[6], ARGV[8])
    end
  end
  redis.call('HDEL', meta, 'packed')
end
redis.call('HSET', meta, 'status', 'paused', 'paused_reason', ARGV[4], 'updated_at', ARGV[5])
redis.call('PERSIST', meta)
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
redis.call('PERSIST', KEYS[6])
-- Steps still kept stay with it now (resume needs them); ones already dropped stay gone.
local t = redis.call('TIME')
if f[4] and tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) < tonumber(f[4]) then
  redis.call('HDEL', meta, 'steps_until')
end
redis.call('ZADD', KEYS[4], f[3], ARGV[1])
redis.call('ZADD', KEYS[5], f[3], ARGV[1])
return 'paused'
