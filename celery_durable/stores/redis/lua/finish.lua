-- Record an invocation's final outcome and start its retention clock; first writer wins.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash
-- KEYS[4]  index of all invocations             KEYS[5]  index of running ones
-- KEYS[6]  index of suspended ones              KEYS[7]  index of paused ones
-- KEYS[8]  the wake-ups sorted set of its slot (the one wake-ups set on one Redis)
-- KEYS[9]  its call (a string)                KEYS[10] its packed steps (a string)
-- ARGV[1]  task id (the index member)
-- ARGV[2]  the finisher's fencing token, or '' when the worker finishes it for a
--          holder that cannot (revoked, hard time limit): the holder is fenced out
-- ARGV[3]  final status: completed, failed, cancelled or replaced
-- ARGV[4]  the outcome, JSON text, or ''
-- ARGV[5]  now, seconds since the epoch
-- ARGV[6]  retention in milliseconds (durable_retention): the meta hash's
-- ARGV[7]  replaced_task_nesting of the request (kept for 'replaced')
-- ARGV[8]  the call, to re-publish it when resumed (JSON), or '' to keep what is stored
-- ARGV[9]  journal retention in milliseconds (durable_journal_retention), at most ARGV[6]:
--          the steps' (journal, completions, call); 0 deletes them now
-- ARGV[10] the journal's entries compressed (stores/redis/packing.py), or '' (always for
--          a status but completed): with the stored seed and call, they replace the
--          journal, the call and the seed (one string, KEYS[10]) when the steps are kept,
--          if the journal still has ARGV[11] entries (the pack was made of what is
--          stored); else all stay
-- ARGV[11] how many entries the pack holds
-- ARGV[12] the entries and the caller's call compressed together, or ''
-- ARGV[13] SHA-1 of that call: ARGV[12] is packed in place of ARGV[10] and the stored
--          call when the stored call has it
-- Fields: task status outcome fence deaths (read); status outcome updated_at nesting fence
--         steps_until (set); lease lease_until paused_reason attempt guard awaiting
--         released frontier due recovered, deaths when 0, nesting unless replaced, seed
--         and call when the steps go now (deleted); seed when packed (deleted), packed
--         when packed (set)
-- Returns  nil when this call finished the invocation,
--          else {status, outcome} that an earlier call recorded.
--          Errors: GONE (nothing is written: a forced finish would otherwise make a
--          meta hash of a few fields), FENCED (another execution holds it), NOTRUNNING
--          (its execution paused or suspended it).
local meta, journal = KEYS[1], KEYS[2]
local prior = redis.call('HMGET', meta, 'task', 'status', 'outcome', 'fence', 'deaths')
if not prior[1] then
  return redis.error_reply('GONE the invocation no longer exists (forgotten or expired)')
end
local status = prior[2]
if status == 'completed' or status == 'failed' or status == 'cancelled'
    or status == 'replaced' then
  return {status, prior[3] or ''}
end
local forced = ARGV[2] == ''
if not forced and prior[4] ~= ARGV[2] then
  return fenced(prior[4], ARGV[2])
end
-- Its own execution finishes a running invocation only: one that paused or suspended
-- it ended there. Only a forced finish (a revoke) ends a paused or suspended one.
if not forced and status ~= 'running' then
  return not_running(status)
end
local fields = {'status', ARGV[3], 'outcome', ARGV[4], 'updated_at', ARGV[5]}
if forced then
  table.insert(fields, 'fence')
  table.insert(fields, (tonumber(prior[4]) or 0) + 1)
end
if ARGV[3] == 'replaced' then
  table.insert(fields, 'nesting')
  table.insert(fields, ARGV[7])
end
local keep_ms, steps_ms = tonumber(ARGV[6]), math.min(tonumber(ARGV[9]), tonumber(ARGV[6]))
if steps_ms < keep_ms then
  -- The steps go before the outcome: show and restart say so, not that there were none.
  local t = redis.call('TIME')
  table.insert(fields, 'steps_until')
  table.insert(fields, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + steps_ms)
end
redis.call('HSET', meta, unpack(fields))
-- A running invocation finished by its own execution holds only its lease; what else a
-- finish clears (a pause, a pending attempt, what it awaited) is there otherwise.
-- What only a live invocation reads (crash loops, retries, recovery) goes too: a
-- finished one keeps what exactly-once completion and people need (deaths, when some
-- execution died).
local gone = {'lease', 'lease_until', 'frontier', 'due', 'recovered'}
if forced then
  for _, name in ipairs({'paused_reason', 'attempt', 'guard', 'awaiting', 'released'}) do
    table.insert(gone, name)
  end
end
if (tonumber(prior[5]) or 0) == 0 then
  table.insert(gone, 'deaths')
end
if ARGV[3] ~= 'replaced' then
  table.insert(gone, 'nesting')
end
redis.call('HDEL', meta, unpack(gone))
redis.call('PEXPIRE', meta, keep_ms)
if steps_ms > 0 then
  if ARGV[8] ~= '' then
    redis.call('SET', KEYS[9], ARGV[8], 'PX', steps_ms)
  else
    redis.call('PEXPIRE', KEYS[9], steps_ms)
  end
  redis.call('PEXPIRE', journal, steps_ms)
  redis.call('PEXPIRE', KEYS[3], steps_ms)
else
  -- Only the steps need the seed (a restart replays them with it); 'call' is where an
  -- invocation started by an earlier release kept its call.
  redis.call('DEL', journal, KEYS[3], KEYS[9])
  redis.call('HDEL', meta, 'seed', 'call')
end
local live = {running = KEYS[5], suspended = KEYS[6], paused = KEYS[7]}
redis.call('ZREM', live[status] or KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])  -- a timer that lost a race wakes nothing now
-- Keep the index of all invocations as long as the journals it lists.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (tonumber(ARGV[5]) - tonumber(ARGV[6]) / 1000))
-- Last, the steps of a completed invocation packed, when the caller packed them.
if ARGV[10] == '' or steps_ms == 0 then
  return false
end
-- Only if the pack is made of exactly what is stored: never lose an entry.
if redis.call('LLEN', journal) ~= tonumber(ARGV[11]) then
  return false
end
-- An invocation started by an earlier release keeps its call in meta: it stays there.
local call = redis.call('GET', KEYS[9]) or ''
local seed = redis.call('HGET', meta, 'seed') or ''
local packed = '\1' .. seed .. ':' .. #call .. ':' .. call .. ARGV[10]
if ARGV[12] ~= '' and redis.sha1hex(call) == ARGV[13] then
  packed = '\2' .. seed .. ':' .. ARGV[12]  -- the caller's call is the stored one
end
redis.call('SET', KEYS[10], packed, 'PX', steps_ms)
redis.call('DEL', journal, KEYS[9])
redis.call('HDEL', meta, 'seed')
redis.call('HSET', meta, 'packed', ARGV[11])
return false
