-- The invocations whose deadline has passed, for the workers' sweep to cancel them
-- (cancel.lua takes each out of the set). Read-only: one sweep runs at a time.
-- KEYS[1]  the deadlines sorted set
-- ARGV[1]  how many at most
-- Returns  {id, deadline (ms), id, deadline, ..., ms until the next deadline (-1 when none
--          is kept)}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
                      tonumber(ARGV[1]))
local following = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES',
                             'LIMIT', 0, 1)
local wait = '-1'
if following[2] then
  wait = tostring(tonumber(following[2]) - now)
end
table.insert(due, wait)
return due
