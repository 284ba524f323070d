-- Create an invocation as a fork of another: its journal is a copy of the other's
-- first entries (and their completions), with the same task, arguments and seed. It
-- is created paused and released (an operator's restart), so that the first start of
-- its task id runs it from there. Its first fence is chosen as start.lua chooses it
-- for a new invocation: above any an earlier invocation of that id handed out.
-- The caller read the source (one invocation per script, as on a Redis Cluster).
-- KEYS[1]  meta hash of the new invocation      KEYS[2]  its journal list
-- KEYS[3]  its completions hash
-- KEYS[4]  index of all invocations             KEYS[5]  index of paused ones
-- KEYS[6]  its tombstone (forget.lua)          KEYS[7]  its call (a string)
-- ARGV[1]  the new task id (the index member)   ARGV[2]  task name
-- ARGV[3]  argument fingerprint                 ARGV[4]  seed
-- ARGV[5]  now, seconds since the epoch         ARGV[6]  the call that publishes it (JSON)
-- ARGV[7]  the paused reason to record          ARGV[8]  n, the number of entries
-- ARGV[9 .. 8+n]        the entries, in order
-- ARGV[9+n ..]          completions: field, value, field, value, ...
-- Fields: task fingerprint seed status created_at updated_at fence frontier deaths
--         nesting paused_reason released (set)
-- Returns  1 when created, 0 when the new task id names an invocation already.
local meta, journal, done = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 1 then
  return 0
end
redis.call('DEL', journal, done, KEYS[7])  -- a journal without its metadata is a leftover
local n = tonumber(ARGV[8])
local t = redis.call('TIME')
local fence = math.max((tonumber(redis.call('GET', KEYS[6])) or 0) + 1,
                       tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('HSET', meta, 'task', ARGV[2], 'fingerprint', ARGV[3], 'seed', ARGV[4],
           'status', 'paused', 'created_at', ARGV[5], 'updated_at', ARGV[5], 'fence', fence,
           'frontier', n, 'deaths', 0, 'nesting', 0, 'paused_reason', ARGV[7],
           'released', 'restart')
redis.call('SET', KEYS[7], ARGV[6])
for i = 9, 8 + n do
  redis.call('RPUSH', journal, ARGV[i])
end
for i = 9 + n, #ARGV, 2 do
  redis.call('HSET', done, ARGV[i], ARGV[i + 1])
end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
return 1
