-- Make a paused or failed invocation resumable, for an operator who fixed the cause:
-- it stays paused, released to the next start of its task id, which runs it again
-- from its journal (and consumes the release: start.lua). A failed one keeps
-- its completed steps and loses its failure: its final outcome, and its last entry
-- when that is a failed step (which then runs again). The fence is raised, so that
-- nothing still holding the old one can write; deaths and recorded attempts are
-- cleared, so that the resumed steps get a fresh set of attempts.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash
-- KEYS[4]  index of all invocations             KEYS[5]  index of paused ones
-- KEYS[6]  its call (a string)
-- ARGV[1]  task id (the index member)
-- ARGV[2]  now, seconds since the epoch
-- ARGV[3]  the paused reason to record (why it waits now)
-- ARGV[4]  '1' to refuse an invocation that has no stored call, '0' to go on
-- Fields: status created_at steps_until call (read); status paused_reason updated_at deaths fence
--         released (set); outcome attempt guard lease lease_until awaiting steps_until
--         (deleted)
-- Returns  {'resumed', status before, call or '', the dropped entry or '', its index or -1}
--          {'refused', status}   it is neither paused nor failed: nothing changed
--          {'no-call', status}   ARGV[4] is '1' and it has no call: nothing changed
--          {'dropped', status}   its steps were dropped (durable_journal_retention):
--                                running it again would run them again; nothing changed
--          {'gone'}              it does not exist (forgotten or expired)
local meta, journal, done = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', meta, 'status', 'steps_until', 'created_at')
if not f[1] then
  return {'gone'}
end
local status = f[1]
if status ~= 'paused' and status ~= 'failed' then
  return {'refused', status}
end
if f[2] then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= tonumber(f[2]) then
    return {'dropped', status}
  end
end
-- An invocation started before the call had a key of its own keeps it in 'call'.
local call = redis.call('GET', KEYS[6]) or redis.call('HGET', meta, 'call')
if ARGV[4] == '1' and not call then
  return {'no-call', status}
end
local dropped, dropped_at = '', -1
if status == 'failed' then
  local last = redis.call('LINDEX', journal, -1)
  -- Entries are written by encode_entry: kind first, and the first ',"s":"' is the
  -- status key (a '"' inside a JSON string is always escaped). No need to decode a
  -- value that may be megabytes long.
  if last and string.sub(last, 1, 11) == '{"k":"run",' then
    local at = string.find(last, ',"s":"', 1, true)
    if at and string.sub(last, at + 6, at + 11) == 'error"' then
      redis.call('RPOP', journal)
      dropped, dropped_at = last, redis.call('LLEN', journal)
    end
  end
end
redis.call('HINCRBY', meta, 'fence', 1)
redis.call('HSET', meta, 'status', 'paused', 'paused_reason', ARGV[3], 'updated_at', ARGV[2],
           'deaths', 0, 'released', 'resume')
redis.call('HDEL', meta, 'outcome', 'attempt', 'guard', 'lease', 'lease_until', 'awaiting',
           'steps_until')
-- A failed invocation was on its way out after its retention: it stays now.
redis.call('PERSIST', meta)
redis.call('PERSIST', journal)
redis.call('PERSIST', done)
redis.call('PERSIST', KEYS[6])
redis.call('ZADD', KEYS[4], f[3], ARGV[1])
redis.call('ZADD', KEYS[5], f[3], ARGV[1])
return {'resumed', status, call or '', dropped, dropped_at}
