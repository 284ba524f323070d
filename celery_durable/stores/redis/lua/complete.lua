-- Complete an awaited operation from outside the execution (a child's outcome, an
-- awakeable resolved or rejected); first completion wins. Wakes the invocation if it
-- is suspended.
-- KEYS[1]  meta hash of the invocation          KEYS[2]  its journal list
-- KEYS[3]  its completions hash                 KEYS[4]  the wake-ups sorted set
-- ARGV[1]  task id (the wake-up member)
-- ARGV[2]  journal index of the operation
-- ARGV[3]  its kind: 'call' or 'awakeable'
-- ARGV[4]  what proves the caller may complete it: the secret token journaled with
--          the operation (a call's "token", an awakeable's "id"; a call journaled
--          before calls had a token: its child's task id)
-- ARGV[5]  the outcome, JSON text
-- Fields: status (read)
-- Returns  2 when completed and the invocation was suspended (a wake-up is due now),
--          1 when completed, 0 when it was completed before, or does not exist or no
--          longer matters (the invocation is gone or finished), or the entry at that
--          index is not that kind's or does not hold that token.
local meta, journal, done = KEYS[1], KEYS[2], KEYS[3]
local kind, proof = ARGV[3], ARGV[4]
if proof == '' then
  return 0
end
local status = redis.call('HGET', meta, 'status')
if not status or status == 'completed' or status == 'failed' or status == 'cancelled'
    or status == 'replaced' then
  return 0
end
local text = redis.call('LINDEX', journal, tonumber(ARGV[2]))
-- The caller chooses the index: nothing is decoded before the entry is known to be of
-- this kind, so that naming a step's entry of megabytes costs nothing. Entries are
-- written by encode_entry: kind first, and the first ',"s":"ok","v":' is the status
-- key and the value (a '"' inside a JSON string is always escaped). A call's or an
-- awakeable's value is a few short strings: decoding it is cheap, and one that does
-- not decode (not written by celery-durable) is refused, not an error.
if not text or string.sub(text, 1, #kind + 8) ~= '{"k":"' .. kind .. '",' then
  return 0
end
local at = string.find(text, ',"s":"ok","v":', 1, true)
if not at then
  return 0
end
local ok, value = pcall(cjson.decode, string.sub(text, at + 14, -2))
if not ok or type(value) ~= 'table' then
  return 0
end
-- A call journaled before calls had a token has none: its child's id proves it.
local secret = value[kind == 'call' and 'token' or 'id'] or value['id']
if secret ~= proof then
  return 0
end
if redis.call('HSETNX', done, ARGV[2], ARGV[5]) == 0 then
  return 0
end
if status == 'suspended' then
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  return 2
end
return 1
