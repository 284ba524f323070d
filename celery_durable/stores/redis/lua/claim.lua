-- Claim due wake-ups, so that one worker re-publishes each. A claim hides the wake-up
-- for a visibility window; the claimer removes it once the invocation is published
-- (ack_wakeup.lua), and a claim whose worker died comes due again.
-- KEYS[1]  the wake-ups sorted set
-- ARGV[1]  how many to claim at most
-- ARGV[2]  visibility window, ms
-- Returns  {id, claimed score, id, claimed score, ...}, then the ms until the next
--          wake-up is due (-1 when none is scheduled).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
local hidden = now + tonumber(ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], hidden, id)
  table.insert(out, id)
  table.insert(out, tostring(hidden))
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next[2] then
  table.insert(out, tostring(math.max(0, tonumber(next[2]) - now)))
else
  table.insert(out, '-1')
end
return out
