-- Prepended (scripts.py) to every script that checks its writer's fencing token.
-- The reply names both fences: errors.py tells a writer whose lease another execution
-- took (a newer fence is stored) from one whose start Redis lost (an older one). Fences
-- only go up for a task id (start.lua), so an older stored fence means lost writes.
-- A missing invocation has no fence: a fence check answers GONE for it as well.
local function fenced(stored, mine)
  if not stored then
    return redis.error_reply('GONE the invocation no longer exists (forgotten or expired)')
  end
  return redis.error_reply('FENCED another execution holds the invocation (fence '
    .. stored .. ', this one ' .. mine .. ')')
end

-- The reply to a writer that still holds the fence of an invocation that no longer
-- runs: it finished, paused or suspended (by this very execution, or one of its async
-- steps), so nothing more is written to it.
local function not_running(status)
  return redis.error_reply('NOTRUNNING the invocation is ' .. status)
end
