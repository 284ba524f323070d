-- Start an execution: create the invocation or resume it, and take its lease.
-- Runs inside MULTI with an LRANGE of the journal and an HGETALL of the completions
-- after it, so that the caller reads exactly what this script saw (one round trip).
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash (read by the caller with HGETALL in the same MULTI)
-- KEYS[4]  index of all invocations             KEYS[5]  index of running ones
-- KEYS[6]  index of suspended ones              KEYS[7]  index of paused ones
-- KEYS[8]  the wake-ups sorted set of its slot (the one wake-ups set on one Redis)
-- KEYS[9]  its tombstone: the last fence of a forgotten incarnation (forget.lua)
-- KEYS[10] the deadlines sorted set of its slot (the one deadlines set on one Redis)
-- KEYS[11] its call (a string)
-- ARGV[1]  task id (the index member)           ARGV[2]  task name
-- ARGV[3]  argument fingerprint                 ARGV[4]  seed, stored on creation only
-- ARGV[5]  now, seconds since the epoch         ARGV[6]  lease ttl, milliseconds
-- ARGV[7]  who takes the lease (host:pid)       ARGV[8]  replaced_task_nesting of the request
-- ARGV[9]  the call to store on creation (JSON, in KEYS[11]), or ''
-- ARGV[10] the fence of an execution that ended in an outage unable to release its
--          lease (a header of the retry it published), or 0: that lease counts as
--          released, neither live nor a death
-- ARGV[11] milliseconds from creation to its deadline (durable_timeout), or 0: stored on
--          creation, with the deadline in KEYS[10]
-- ARGV[12] '<limit>:<key>' of its concurrency key, or '': stored on creation
-- Fields: task fingerprint seed status outcome created_at updated_at fence lease
--         lease_until frontier deaths attempt guard nesting paused_reason released
--         cancel (read); deadline ckey (set on creation)
-- Returns one of
--   {'run', fence, status, seed, length, deaths, attempt|false, guard|false, created,
--    cancel|false}
--        this execution holds the lease; deaths counts executions that died in a row
--        with the journal at this length (an expired lease never released); cancel is
--        the reason of a cancel (cancel.lua), which it raises at its next operation
--   {'done', status, outcome|false}   finished, or replaced by a later request
--   {'busy', remaining ms, holder}    another execution holds a live lease
--   {'conflict', task, fingerprint, status}   the id names another task or arguments
--   {'paused'}   paused, and no operator released it: this delivery runs nothing
--
-- Fences only go up for a task id. Every start raises the stored fence by one; an
-- invocation created anew (its id never used, forgotten, expired, purged, or replaced
-- by Task.replace) starts at the larger of Redis's clock in milliseconds and one more
-- than the fence it replaces (a replaced incarnation's, or the tombstone a forget left).
-- An earlier incarnation handed out fences no larger than the clock when it gave them
-- (plus one per start within the same millisecond), so a stale holder from before
-- always meets a newer fence and learns that it lost its lease (errors.py), never one
-- older than its own, which only lost writes can cause. The tombstone covers what the
-- clock cannot: a re-creation within the millisecond of the last start, and Redis's
-- clock set back (a time step, a failover to a server whose clock is behind) while it
-- lives. A Redis that lost its data has neither meta nor tombstone: its holders learn
-- that from the data set's epoch key (errors.py), not from a fence.
local meta, journal = KEYS[1], KEYS[2]
local id = ARGV[1]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now_ms + tonumber(ARGV[6])

local function create(floor)
  local fence = math.max(floor + 1, now_ms)
  -- A journal without its metadata is a leftover.
  redis.call('DEL', meta, journal, KEYS[3], KEYS[11])
  redis.call('HSET', meta, 'task', ARGV[2], 'fingerprint', ARGV[3], 'seed', ARGV[4],
             'status', 'running', 'created_at', ARGV[5], 'updated_at', ARGV[5],
             'fence', fence, 'lease', ARGV[7], 'lease_until', until_ms,
             'frontier', 0, 'deaths', 0, 'nesting', ARGV[8])
  if ARGV[9] ~= '' then
    redis.call('SET', KEYS[11], ARGV[9])
  end
  -- Flow control, on creation only: the deadline counts from here, whatever comes after.
  if tonumber(ARGV[11]) > 0 then
    redis.call('HSET', meta, 'deadline', now_ms + tonumber(ARGV[11]))
    redis.call('ZADD', KEYS[10], now_ms + tonumber(ARGV[11]), id)
  end
  if ARGV[12] ~= '' then
    redis.call('HSET', meta, 'ckey', ARGV[12])
  end
  redis.call('ZADD', KEYS[4], ARGV[5], id)
  redis.call('ZADD', KEYS[5], ARGV[5], id)
  return {'run', fence, 'running', ARGV[4], 0, 0, false, false, 1, false}
end

local f = redis.call('HMGET', meta, 'task', 'fingerprint', 'seed', 'status', 'outcome',
                     'fence', 'lease', 'lease_until', 'frontier', 'deaths', 'attempt',
                     'guard', 'nesting', 'created_at', 'released', 'cancel')
if not f[1] then
  return create(tonumber(redis.call('GET', KEYS[9])) or 0)
end
local status = f[4]
if status == 'replaced' then
  -- Task.replace hands the id on: the replacement comes with a deeper nesting and
  -- starts a journal of its own; the replaced request, delivered again, is done.
  if tonumber(ARGV[8]) > (tonumber(f[13]) or 0) then
    redis.call('ZREM', KEYS[5], id)
    return create(tonumber(f[6]) or 0)
  end
  return {'done', status, false}
end
if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then
  return {'conflict', f[1], f[2], status}
end
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return {'done', status, f[5]}
end
-- Paused means paused: only an operator moves it on (resume.lua, fork.lua), by
-- releasing it to the next start, which consumes the release below.
if status == 'paused' and not f[15] then
  return {'paused'}
end
local held = f[7] and tonumber(f[6]) ~= tonumber(ARGV[10])
if held and (tonumber(f[8]) or 0) > now_ms then
  return {'busy', tonumber(f[8]) - now_ms, f[7]}
end

local n = redis.call('LLEN', journal)
local deaths = tonumber(f[10]) or 0
if held then
  -- The lease expired without being released: the execution that held it died.
  if tonumber(f[9]) == n then deaths = deaths + 1 else deaths = 1 end
elseif tonumber(f[9]) ~= n then
  deaths = 0
end
-- One HSET for the lot: every call into Redis from a script costs a microsecond or more.
local fence = (tonumber(f[6]) or 0) + 1
redis.call('HSET', meta, 'fence', fence, 'lease', ARGV[7], 'lease_until', until_ms,
           'frontier', n, 'deaths', deaths, 'updated_at', ARGV[5], 'status', 'running')
if status ~= 'running' then
  -- A paused invocation that an operator released runs; a suspended one wakes.
  redis.call('HDEL', meta, 'awaiting', 'paused_reason', 'released')
  redis.call('ZREM', KEYS[6], id)
  redis.call('ZREM', KEYS[7], id)
  redis.call('ZREM', KEYS[8], id)  -- it is awake: a wake-up due later is not needed
  redis.call('ZADD', KEYS[5], f[14] or ARGV[5], id)
end
return {'run', fence, status, f[3], n, deaths, f[11] or false, f[12] or false, 0,
        f[16] or false}
